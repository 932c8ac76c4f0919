//! LN tuning (Zhao et al. 2023; HF PEFT's `LN_TUNING`): a trained copy of a
//! norm's weight (and bias, for LayerNorm) replaces it; nothing else changes.

use super::method::{Capabilities, Lowering, SiteMethod, Wiring};
use super::spec::{ENABLED, MethodSpec, ON, TargetKind, enabled, no_check, no_target_check};
use super::table::{MethodConfig, MethodKind};
use super::tensors::{Init, TensorDecl, site_name};
use crate::ir::Op;
use crate::model::{Dims, ModuleKind};
use crate::plan::Site;

pub const SPEC: MethodSpec = MethodSpec {
    kind: MethodKind::Ln,
    name: "ln",
    placements: ON,
    target: TargetKind::Norm,
    args: &[ENABLED],
    gateable: false,
    doc: "train a copy of each selected norm's weight and bias (LN tuning, Zhao et al. 2023)",
    placement_note: "`ln` retrains the norm itself",
    exclusive: "ln tuning",
    single_target: false,
    scales_ffn_input: false,
    once_per_block: None,
    configure: |args, _| enabled(args).then_some(MethodConfig::Ln),
    check: no_check,
    check_targets: no_target_check,
};

/// LN tuning has no arguments beyond `enabled`.
pub struct Ln;

impl SiteMethod for Ln {
    fn name(&self) -> &'static str {
        "ln"
    }

    /// HF's names (`ln_tuning_layers.weight`), starting from the pretrained
    /// values: the copy is exact until it trains.
    fn tensors(&self, site: &Site, _: &Dims) -> Vec<TensorDecl> {
        let m = &site.module;
        let d = site.out_dim;
        let weight = TensorDecl::trainable(
            site_name(m, "ln_tuning_layers.weight"),
            vec![d],
            Init::FromBase(site_name(m, "weight")),
        );
        match site.kind {
            ModuleKind::LayerNorm { .. } => vec![
                weight,
                TensorDecl::trainable(
                    site_name(m, "ln_tuning_layers.bias"),
                    vec![d],
                    Init::FromBase(site_name(m, "bias")),
                ),
            ],
            _ => vec![weight],
        }
    }

    fn lowering(&self, _: &Site, _: &Dims) -> Option<Lowering> {
        Some(Lowering {
            op: Op::Add, // unused: `Own` adds no node
            wiring: Wiring::Own,
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
