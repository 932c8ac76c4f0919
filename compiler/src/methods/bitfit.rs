//! BitFit (Ben Zaken et al. 2022): the bias terms under the selected modules
//! train. It adds no node and no tensor of its own: the biases are the base
//! model's, declared trainable by the plan.

use super::method::{Capabilities, Lowering, SiteMethod};
use super::spec::{ENABLED, MethodSpec, ON, TargetKind, enabled, no_check, no_target_check};
use super::table::{MethodConfig, MethodKind};
use super::tensors::TensorDecl;
use crate::model::{Dims, Module, Role};
use crate::plan::Site;

pub const SPEC: MethodSpec = MethodSpec {
    kind: MethodKind::Bitfit,
    name: "bitfit",
    placements: ON,
    target: TargetKind::Biased,
    args: &[ENABLED],
    gateable: false,
    doc: "train the bias terms of the selected modules (Ben Zaken et al. 2022)",
    placement_note: "`bitfit` modifies the module itself",
    exclusive: "bitfit",
    single_target: false,
    scales_ffn_input: false,
    once_per_block: None,
    configure: |args, _| enabled(args).then_some(MethodConfig::Bitfit),
    check: no_check,
    check_targets: no_target_check,
};

/// BitFit has no arguments beyond `enabled`.
pub struct Bitfit;

impl Bitfit {
    /// The biases under a statement's `targets` (the task head's excluded).
    pub fn biases(targets: &[&Module], all: &[Module]) -> Vec<String> {
        targets
            .iter()
            .flat_map(|m| crate::check::biases_under(m, all))
            .filter(|b| b.role != Some(Role::Head))
            .map(|b| b.path.clone())
            .collect()
    }
}

impl SiteMethod for Bitfit {
    fn name(&self) -> &'static str {
        "bitfit"
    }

    fn tensors(&self, _: &Site, _: &Dims) -> Vec<TensorDecl> {
        Vec::new()
    }

    fn lowering(&self, _: &Site, _: &Dims) -> Option<Lowering> {
        None
    }

    fn capabilities(&self, _: &Site) -> Capabilities {
        Capabilities {
            merge: true,
            hf: false,
            routable: false,
        }
    }
}
