//! VeRA (Kopiczko et al. 2024): one pair of frozen random projections shared
//! by every targeted linear layer of the block, and per layer two trained
//! scaling vectors: `y + λ_b ⊙ (B (λ_d ⊙ (A · drop(x))))`, with A and B the
//! shared projections cut to the layer's size (HF PEFT's `VERA`).

use super::args::Args;
use super::method::{Capabilities, Lowering, SiteMethod, Wiring};
use super::spec::{
    ArgSpec, ArgType, Default, MethodSpec, ON, PROB, SIZE, TargetKind, float, no_check,
    no_target_check, size,
};
use super::table::{MethodConfig, MethodKind};
use super::tensors::{Init, TensorDecl, TensorKind, site_name};
use crate::ir::{DeltaCost, Op};
use crate::model::Dims;
use crate::plan::Site;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VeraConfig {
    pub r: usize,
    pub d_initial: f64,
    pub dropout: f64,
    /// Seed of the projections (HF PEFT's `projection_prng_key`).
    pub seed: u64,
}

pub const SPEC: MethodSpec = MethodSpec {
    kind: MethodKind::Vera,
    name: "vera",
    placements: ON,
    target: TargetKind::Linear,
    args: &[
        ArgSpec {
            name: "r",
            ty: SIZE,
            default: Some(Default::Int(256)),
            doc: "rank of the shared projections",
        },
        ArgSpec {
            name: "d_initial",
            ty: ArgType::Float {
                lo: 0.0,
                hi: f64::INFINITY,
                lo_open: false,
                hi_open: true,
            },
            default: Some(Default::Float(0.1)),
            doc: "initial value of every λ_d",
        },
        ArgSpec {
            name: "dropout",
            ty: PROB,
            default: Some(Default::Float(0.0)),
            doc: "dropout on the input",
        },
        ArgSpec {
            name: "seed",
            ty: ArgType::Int {
                min: 0,
                max: i64::MAX,
                zero_absent: false,
            },
            default: Some(Default::Int(0)),
            doc: "seed of the frozen projections (HF's projection_prng_key)",
        },
    ],
    gateable: false,
    doc: "shared frozen random projections scaled by trained vectors (Kopiczko et al. 2024)",
    placement_note: "`vera` reparameterizes the module itself",
    exclusive: "low-rank update (vera)",
    single_target: false,
    scales_ffn_input: false,
    once_per_block: Some("its layers share one pair of projections"),
    configure: |args, _| configure(args),
    check: no_check,
    check_targets: no_target_check,
};

fn configure(args: &Args) -> Option<MethodConfig> {
    Some(MethodConfig::Vera(VeraConfig {
        r: size(args, "r")?,
        d_initial: float(args, "d_initial"),
        dropout: float(args, "dropout"),
        seed: args
            .fixed("seed")
            .and_then(|v| v.as_i64())
            .and_then(|v| u64::try_from(v).ok())
            .unwrap_or(0),
    }))
}

impl VeraConfig {
    /// The projections' shape: the largest `(out, in)` over the sites.
    pub fn projection_dims(statement: &[&Site]) -> (usize, usize) {
        statement
            .iter()
            .fold((0, 0), |(o, i), s| (o.max(s.out_dim), i.max(s.in_dim)))
    }
}

impl SiteMethod for VeraConfig {
    fn name(&self) -> &'static str {
        "vera"
    }

    fn tensors(&self, site: &Site, _: &Dims) -> Vec<TensorDecl> {
        let m = &site.module;
        vec![
            TensorDecl::trainable(
                site_name(m, "vera_lambda_b"),
                vec![site.out_dim],
                Init::Zeros,
            ),
            TensorDecl::trainable(
                site_name(m, "vera_lambda_d"),
                vec![self.r],
                Init::Constant(self.d_initial as f32),
            ),
        ]
    }

    /// `vera_A [r, in_max]` then `vera_B [out_max, r]`, drawn in that order
    /// from one generator, uniform in ±√(6 / fan) with fan their second
    /// dimension (HF PEFT's `_kaiming_init`); frozen buffers.
    fn shared_tensors(&self, statement: &[&Site], _: &Dims) -> Vec<TensorDecl> {
        let (out, inp) = VeraConfig::projection_dims(statement);
        let r = self.r;
        // As HF computes it: gain √2, std = gain/√fan, bound = √3·std.
        let bound = |fan: usize| (3f64.sqrt() * (2f64.sqrt() / (fan as f64).sqrt())) as f32;
        let frozen = TensorKind::Frozen { in_total: false };
        vec![
            TensorDecl {
                name: "vera_A".into(),
                shape: vec![r, inp],
                kind: frozen,
                init: Init::TorchUniform {
                    seed: self.seed,
                    skip: 0,
                    bound: bound(inp),
                },
            },
            TensorDecl {
                name: "vera_B".into(),
                shape: vec![out, r],
                kind: frozen,
                init: Init::TorchUniform {
                    seed: self.seed,
                    skip: (r * inp) as u64,
                    bound: bound(r),
                },
            },
        ]
    }

    fn lowering(&self, site: &Site, _: &Dims) -> Option<Lowering> {
        let (i, o, r) = (site.in_dim as u64, site.out_dim as u64, self.r as u64);
        Some(Lowering {
            op: Op::Delta {
                method: "vera",
                in_f: site.in_dim,
                out_f: site.out_dim,
                cost: DeltaCost {
                    row_flops: 2 * r * (i + o),
                    step_flops: 0,
                    row_saved: r,
                    step_saved: 0,
                    selection_bytes: 0,
                    ..DeltaCost::default()
                },
            },
            wiring: Wiring::DeltaSum,
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
