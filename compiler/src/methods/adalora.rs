//! AdaLoRA (Zhang et al. 2023; HF PEFT's `ADALORA`): an SVD-shaped update
//! `ΔW = B·diag(E)·A · alpha/(ranknum + 1e-5)` whose triplets (a row of A, an
//! entry of E, a column of B) are pruned during training by importance, from
//! `init_r` per layer towards a budget of `target_r` (the runtime's rank
//! allocator), with an orthogonality regularizer on A and B in the loss.

use super::args::Args;
use super::method::{Capabilities, Lowering, SiteMethod, Wiring};
use super::spec::{
    ArgSpec, ArgType, Default, MethodSpec, ON, POSITIVE, PROB, SIZE, TargetKind, float,
    no_target_check, size,
};
use super::table::{MethodConfig, MethodKind};
use super::tensors::{Init, TensorDecl, TensorKind, site_name};
use crate::ir::{DeltaCost, Op};
use crate::model::Dims;
use crate::plan::Site;
use peftc_grammar::{Diagnostic, Span};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdaloraConfig {
    pub init_r: usize,
    pub target_r: usize,
    pub alpha: f64,
    pub dropout: f64,
    /// Steps of full rank before pruning starts.
    pub tinit: usize,
    /// Final steps at the target budget, the pattern fixed.
    pub tfinal: usize,
    /// Prune every `delta_t` steps in between.
    pub delta_t: usize,
    /// Smoothing of the sensitivity and of its uncertainty.
    pub beta1: f64,
    pub beta2: f64,
    pub orth_reg_weight: f64,
}

const fn steps(min: i64) -> ArgType {
    ArgType::Int {
        min,
        max: i64::MAX,
        zero_absent: false,
    }
}

const OPEN_UNIT: ArgType = ArgType::Float {
    lo: 0.0,
    hi: 1.0,
    lo_open: true,
    hi_open: true,
};

pub const SPEC: MethodSpec = MethodSpec {
    kind: MethodKind::Adalora,
    name: "adalora",
    placements: ON,
    target: TargetKind::Linear,
    args: &[
        ArgSpec {
            name: "init_r",
            ty: SIZE,
            default: Some(Default::Int(12)),
            doc: "rank each layer starts with",
        },
        ArgSpec {
            name: "target_r",
            ty: SIZE,
            default: Some(Default::Int(8)),
            doc: "average rank the budget ends at",
        },
        ArgSpec {
            name: "alpha",
            ty: POSITIVE,
            default: Some(Default::Float(32.0)),
            doc: "scale numerator: the update is scaled by alpha/(init_r + 1e-5), as in HF (whose default is 8)",
        },
        ArgSpec {
            name: "dropout",
            ty: PROB,
            default: Some(Default::Float(0.0)),
            doc: "dropout on the input",
        },
        ArgSpec {
            name: "tinit",
            ty: steps(0),
            default: Some(Default::Int(0)),
            doc: "steps of full rank before pruning",
        },
        ArgSpec {
            name: "tfinal",
            ty: steps(0),
            default: Some(Default::Int(0)),
            doc: "final steps at the target budget",
        },
        ArgSpec {
            name: "delta_t",
            ty: steps(1),
            default: Some(Default::Int(1)),
            doc: "steps between two prunings",
        },
        ArgSpec {
            name: "beta1",
            ty: OPEN_UNIT,
            default: Some(Default::Float(0.85)),
            doc: "smoothing of the sensitivity",
        },
        ArgSpec {
            name: "beta2",
            ty: OPEN_UNIT,
            default: Some(Default::Float(0.85)),
            doc: "smoothing of the sensitivity's uncertainty",
        },
        ArgSpec {
            name: "orth_reg_weight",
            ty: ArgType::Float {
                lo: 0.0,
                hi: f64::INFINITY,
                lo_open: false,
                hi_open: true,
            },
            default: Some(Default::Float(0.5)),
            doc: "weight of the orthogonality regularizer in the loss",
        },
    ],
    gateable: false,
    doc: "SVD-shaped update pruned by importance to a rank budget (AdaLoRA, Zhang et al. 2023)",
    placement_note: "`adalora` reparameterizes the module itself",
    exclusive: "low-rank update (adalora)",
    single_target: false,
    scales_ffn_input: false,
    once_per_block: Some("its layers share one rank budget"),
    configure: |args, _| configure(args),
    check,
    check_targets: no_target_check,
};

fn configure(args: &Args) -> Option<MethodConfig> {
    let int = |n: &str| {
        args.fixed(n)
            .and_then(|v| v.as_i64())
            .and_then(|v| usize::try_from(v).ok())
            .unwrap_or(0)
    };
    Some(MethodConfig::Adalora(AdaloraConfig {
        init_r: size(args, "init_r")?,
        target_r: size(args, "target_r")?,
        alpha: float(args, "alpha"),
        dropout: float(args, "dropout"),
        tinit: int("tinit"),
        tfinal: int("tfinal"),
        delta_t: int("delta_t").max(1),
        beta1: float(args, "beta1"),
        beta2: float(args, "beta2"),
        orth_reg_weight: float(args, "orth_reg_weight"),
    }))
}

fn check(args: &Args, call: Span) -> Vec<Diagnostic> {
    let r = |n: &str| args.fixed(n).and_then(|v| v.as_i64());
    match (r("init_r"), r("target_r")) {
        (Some(i), Some(t)) if t > i => vec![
            Diagnostic::error(format!(
                "`target_r = {t}` is above `init_r = {i}`: the budget only prunes"
            ))
            .at(args.span("target_r").unwrap_or(call), "above init_r")
            .with_help(format!("use `target_r` of at most {i}")),
        ],
        _ => Vec::new(),
    }
}

impl AdaloraConfig {
    /// The factor on `B·diag(E)·A·x`, computed as HF does in f32:
    /// `alpha / (ranknum + 1e-5)` with `ranknum = init_r`.
    pub fn scale(&self) -> f32 {
        self.alpha as f32 / (self.init_r as f32 + 1e-5)
    }
}

impl SiteMethod for AdaloraConfig {
    fn name(&self) -> &'static str {
        "adalora"
    }

    /// HF's names and inits: `lora_A [r, in]` and `lora_B [out, r]`
    /// N(0, 0.02), `lora_E [r, 1]` zeros (so the update starts at zero),
    /// `ranknum` a frozen parameter holding `init_r`; and peftc's
    /// `rank_pattern [r]`, the allocator's kept triplets (1) and pruned ones
    /// (0), saved with the adapter.
    fn tensors(&self, site: &Site, _: &Dims) -> Vec<TensorDecl> {
        let (i, o, r, m) = (site.in_dim, site.out_dim, self.init_r, &site.module);
        vec![
            TensorDecl::trainable(site_name(m, "lora_A"), vec![r, i], Init::Normal(0.02)),
            TensorDecl::trainable(site_name(m, "lora_E"), vec![r, 1], Init::Zeros),
            TensorDecl::trainable(site_name(m, "lora_B"), vec![o, r], Init::Normal(0.02)),
            TensorDecl {
                name: site_name(m, "ranknum"),
                shape: vec![1],
                kind: TensorKind::Frozen { in_total: true },
                init: Init::Constant(r as f32),
            },
            TensorDecl {
                name: site_name(m, "rank_pattern"),
                shape: vec![r],
                kind: TensorKind::Frozen { in_total: false },
                init: Init::Ones,
            },
        ]
    }

    fn lowering(&self, site: &Site, _: &Dims) -> Option<Lowering> {
        let (i, o, r) = (site.in_dim as u64, site.out_dim as u64, self.init_r as u64);
        Some(Lowering {
            op: Op::Delta {
                method: "adalora",
                in_f: site.in_dim,
                out_f: site.out_dim,
                cost: DeltaCost {
                    row_flops: 2 * r * (i + o),
                    step_flops: r * i + 2 * r * r * (i + o),
                    row_saved: r,
                    step_saved: r * i,
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
