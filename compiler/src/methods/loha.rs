//! LoHa (Hyeon-Woo et al. 2022; HF PEFT's LyCORIS `LOHA`): the update is a
//! Hadamard product of two low-rank products, `ΔW = (w1a·w1b) ⊙ (w2a·w2b) ·
//! alpha/r`, applied as `y + x·ΔWᵀ`.

use super::args::Args;
use super::method::{Capabilities, Lowering, SiteMethod, Wiring};
use super::spec::{
    ArgSpec, Default, MethodSpec, ON, POSITIVE, SIZE, TargetKind, float, no_check, no_target_check,
    size,
};
use super::table::{MethodConfig, MethodKind};
use super::tensors::{Init, TensorDecl, site_name};
use crate::ir::{DeltaCost, Op};
use crate::model::Dims;
use crate::plan::Site;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LohaConfig {
    pub r: usize,
    pub alpha: f64,
}

impl LohaConfig {
    pub fn scale(&self) -> f64 {
        self.alpha / self.r as f64
    }
}

/// `r` and `alpha`, as LoHa and LoKr both take them (HF's defaults 8, 8).
pub const RANK_ARGS: [ArgSpec; 2] = [
    ArgSpec {
        name: "r",
        ty: SIZE,
        default: Some(Default::Int(8)),
        doc: "rank of each factor",
    },
    ArgSpec {
        name: "alpha",
        ty: POSITIVE,
        default: Some(Default::Float(8.0)),
        doc: "scale numerator: the update is scaled by alpha/r",
    },
];

pub const SPEC: MethodSpec = MethodSpec {
    kind: MethodKind::Loha,
    name: "loha",
    placements: ON,
    target: TargetKind::Linear,
    args: &RANK_ARGS,
    gateable: false,
    doc: "Hadamard product of two low-rank updates (LyCORIS LoHa, Hyeon-Woo et al. 2022)",
    placement_note: "`loha` reparameterizes the module itself",
    exclusive: "low-rank update (loha)",
    single_target: false,
    scales_ffn_input: false,
    once_per_block: None,
    configure: |args, _| configure(args),
    check: no_check,
    check_targets: no_target_check,
};

fn configure(args: &Args) -> Option<MethodConfig> {
    Some(MethodConfig::Loha(LohaConfig {
        r: size(args, "r")?,
        alpha: float(args, "alpha"),
    }))
}

/// Cost of a delta built as a full `[out, in]` weight each step from
/// factors whose products take `build` FLOPs: `x·ΔWᵀ` per row.
pub fn weight_delta(method: &'static str, site: &Site, build: u64) -> Lowering {
    let (i, o) = (site.in_dim as u64, site.out_dim as u64);
    Lowering {
        op: Op::Delta {
            method,
            in_f: site.in_dim,
            out_f: site.out_dim,
            cost: DeltaCost {
                row_flops: 2 * i * o,
                step_flops: build,
                row_saved: 0,
                step_saved: i * o,
                selection_bytes: 0,
                ..DeltaCost::default()
            },
        },
        wiring: Wiring::DeltaSum,
    }
}

impl SiteMethod for LohaConfig {
    fn name(&self) -> &'static str {
        "loha"
    }

    /// HF's init: `w1a`, `w1b`, `w2a` kaiming-uniform (±1/√fan_in), `w2b`
    /// zeros, so the update starts at zero.
    fn tensors(&self, site: &Site, _: &Dims) -> Vec<TensorDecl> {
        let (i, o, r, m) = (site.in_dim, site.out_dim, self.r, &site.module);
        let k = |fan: usize| Init::Uniform(1.0 / (fan as f32).sqrt());
        vec![
            TensorDecl::trainable(site_name(m, "hada_w1_a"), vec![o, r], k(r)),
            TensorDecl::trainable(site_name(m, "hada_w1_b"), vec![r, i], k(i)),
            TensorDecl::trainable(site_name(m, "hada_w2_a"), vec![o, r], k(r)),
            TensorDecl::trainable(site_name(m, "hada_w2_b"), vec![r, i], Init::Zeros),
        ]
    }

    fn lowering(&self, site: &Site, _: &Dims) -> Option<Lowering> {
        let (i, o, r) = (site.in_dim as u64, site.out_dim as u64, self.r as u64);
        Some(weight_delta("loha", site, 4 * o * r * i + 2 * o * i))
    }

    fn capabilities(&self, _: &Site) -> Capabilities {
        Capabilities {
            merge: true,
            hf: true,
            routable: false,
        }
    }
}
