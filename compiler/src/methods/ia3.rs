//! (IA)³ (Liu et al. 2022): a learned vector scaling a linear layer's output,
//! or its input on a feed-forward down projection (HF PEFT's
//! `feedforward_modules`).

use super::method::{Capabilities, Lowering, SiteMethod, Wiring};
use super::spec::{ENABLED, MethodSpec, ON, TargetKind, enabled, no_check, no_target_check};
use super::table::{MethodConfig, MethodKind};
use super::tensors::{Init, TensorDecl, site_name};
use crate::ir::Op;
use crate::model::Dims;
use crate::plan::Site;

pub const SPEC: MethodSpec = MethodSpec {
    kind: MethodKind::Ia3,
    name: "ia3",
    placements: ON,
    target: TargetKind::Linear,
    args: &[ENABLED],
    gateable: false,
    doc: "learned vector scaling a projection's output (its input on mlp.down) (Liu et al. 2022)",
    placement_note: "`ia3` modifies the module itself",
    exclusive: "ia3 scaling",
    single_target: false,
    scales_ffn_input: true,
    once_per_block: None,
    configure: |args, _| enabled(args).then_some(MethodConfig::Ia3),
    check: no_check,
    check_targets: no_target_check,
};

/// (IA)³ has no arguments beyond `enabled`.
pub struct Ia3;

impl Ia3 {
    /// The scaled width: the input on a feed-forward site, else the output.
    fn width(site: &Site) -> usize {
        if site.feedforward {
            site.in_dim
        } else {
            site.out_dim
        }
    }
}

impl SiteMethod for Ia3 {
    fn name(&self) -> &'static str {
        "ia3"
    }

    fn tensors(&self, site: &Site, _: &Dims) -> Vec<TensorDecl> {
        vec![TensorDecl::trainable(
            site_name(&site.module, "ia3_l"),
            vec![Ia3::width(site)],
            Init::Ones,
        )]
    }

    fn lowering(&self, site: &Site, _: &Dims) -> Option<Lowering> {
        Some(Lowering {
            op: Op::Ia3 {
                dim: Ia3::width(site),
            },
            wiring: if site.feedforward {
                Wiring::Input
            } else {
                Wiring::Output
            },
        })
    }

    fn capabilities(&self, _: &Site) -> Capabilities {
        Capabilities {
            merge: true,
            hf: true,
            routable: false,
        }
    }
}
