//! SSF (Lian et al. 2022, "Scaling & Shifting Your Features"): after a
//! module, a learned scale and shift per output channel, `y ⊙ γ + β`. After
//! a linear layer with a bias it folds into it (`W ← diag(γ)·W`,
//! `b ← γ ⊙ b + β`), after a LayerNorm into its weight and bias, so
//! inference costs nothing; after an RMSNorm (no bias to take the shift)
//! or a block it stays an adapter.

use super::method::{Capabilities, Lowering, SiteMethod, Wiring};
use super::spec::{ENABLED, MethodSpec, TargetKind, enabled, no_check, no_target_check};
use super::table::{MethodConfig, MethodKind};
use super::tensors::{Init, TensorDecl, site_name};
use crate::ir::Op;
use crate::model::{Dims, ModuleKind};
use crate::plan::Site;
use peftc_grammar::ast::Placement;

pub const SPEC: MethodSpec = MethodSpec {
    kind: MethodKind::Ssf,
    name: "ssf",
    placements: &[Placement::After],
    target: TargetKind::Weighted,
    args: &[ENABLED],
    gateable: false,
    doc: "a learned per-channel scale and shift after a module (SSF, Lian et al. 2022)",
    placement_note: "`ssf` transforms the module's output",
    exclusive: "scale and shift",
    single_target: false,
    scales_ffn_input: false,
    once_per_block: None,
    configure: |args, _| enabled(args).then_some(MethodConfig::Ssf),
    check: no_check,
    check_targets: no_target_check,
};

/// SSF has no arguments beyond `enabled`.
pub struct Ssf;

/// The scale's and the shift's names at `module`.
pub fn names(module: &str) -> (String, String) {
    (
        site_name(module, "ssf_scale"),
        site_name(module, "ssf_shift"),
    )
}

impl SiteMethod for Ssf {
    fn name(&self) -> &'static str {
        "ssf"
    }

    /// Scale ones, shift zeros: the module is unchanged until it trains
    /// (the paper draws them near 1 and 0; starting exact keeps step 0 the
    /// base model's).
    fn tensors(&self, site: &Site, _: &Dims) -> Vec<TensorDecl> {
        let (scale, shift) = names(&site.module);
        let d = site.out_dim;
        vec![
            TensorDecl::trainable(scale, vec![d], Init::Ones),
            TensorDecl::trainable(shift, vec![d], Init::Zeros),
        ]
    }

    fn lowering(&self, site: &Site, _: &Dims) -> Option<Lowering> {
        Some(Lowering {
            op: Op::ScaleShift { dim: site.out_dim },
            wiring: Wiring::Output,
        })
    }

    /// Folds into a linear layer or a norm that has a bias to take the shift.
    fn capabilities(&self, site: &Site) -> Capabilities {
        Capabilities {
            merge: matches!(
                site.kind,
                ModuleKind::Linear { bias: true, .. } | ModuleKind::LayerNorm { .. }
            ),
            hf: false,
            routable: false,
        }
    }
}
