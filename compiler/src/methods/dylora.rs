//! DyLoRA (Valipour et al. 2023): a LoRA of rank `r` trained so that every
//! prefix of its ranks is a usable adapter. Each training pass samples a
//! rank `b` in `min_r..=r` and uses the first `b` rows of `A` and columns of
//! `B`, scaled by `alpha / b`; one run then serves any rank, cut with
//! `--rank K` (`export`, `eval`, `infer`, `merge`), where the adapter is
//! exactly a LoRA of rank `K` (and exports as one to Hugging Face PEFT).

use super::args::Args;
use super::method::{Capabilities, Lowering, SiteMethod, Wiring};
use super::spec::{
    ArgSpec, Default, MethodSpec, ON, POSITIVE, PROB, SIZE, TargetKind, float, no_target_check,
    size,
};
use super::table::{MethodConfig, MethodKind};
use super::tensors::{Init, TensorDecl, site_name};
use crate::ir::{DeltaCost, Op};
use crate::model::Dims;
use crate::plan::{Plan, Site};
use peftc_grammar::{Diagnostic, Span};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DyloraConfig {
    pub r: usize,
    pub min_r: usize,
    pub alpha: f64,
    pub dropout: f64,
    /// The rank evaluation, inference and export use (`--rank`); `None`: `r`.
    #[serde(default)]
    pub cut: Option<usize>,
}

impl DyloraConfig {
    /// The rank outside training.
    pub fn rank(&self) -> usize {
        self.cut.unwrap_or(self.r)
    }

    /// The factor on the first `b` ranks' product.
    pub fn scale(&self, b: usize) -> f64 {
        self.alpha / b.max(1) as f64
    }
}

pub const SPEC: MethodSpec = MethodSpec {
    kind: MethodKind::Dylora,
    name: "dylora",
    placements: ON,
    target: TargetKind::Linear,
    args: &[
        ArgSpec {
            name: "r",
            ty: SIZE,
            default: Some(Default::Int(8)),
            doc: "the largest rank",
        },
        ArgSpec {
            name: "min_r",
            ty: SIZE,
            default: Some(Default::Int(1)),
            doc: "the smallest rank a training pass samples",
        },
        ArgSpec {
            name: "alpha",
            ty: POSITIVE,
            default: Some(Default::Float(16.0)),
            doc: "scale numerator: rank b is scaled by alpha/b",
        },
        ArgSpec {
            name: "dropout",
            ty: PROB,
            default: Some(Default::Float(0.0)),
            doc: "dropout on the input",
        },
    ],
    gateable: false,
    doc: "LoRA trained at every rank at once: one run, any rank (DyLoRA, Valipour et al. 2023)",
    placement_note: "`dylora` reparameterizes the module itself",
    exclusive: "low-rank update (dylora)",
    single_target: false,
    scales_ffn_input: false,
    once_per_block: None,
    configure: |args, _| configure(args),
    check,
    check_targets: no_target_check,
};

fn configure(args: &Args) -> Option<MethodConfig> {
    let r = size(args, "r")?;
    Some(MethodConfig::Dylora(DyloraConfig {
        r,
        min_r: size(args, "min_r").unwrap_or(1).min(r),
        alpha: float(args, "alpha"),
        dropout: float(args, "dropout"),
        cut: None,
    }))
}

fn check(args: &Args, call: Span) -> Vec<Diagnostic> {
    let r = |n: &str| args.fixed(n).and_then(|v| v.as_i64());
    match (r("min_r"), r("r")) {
        (Some(m), Some(r)) if m > r => vec![
            Diagnostic::error(format!("`min_r = {m}` is above `r = {r}`"))
                .at(args.span("min_r").unwrap_or(call), "above r")
                .with_help(format!("use a `min_r` of at most {r}")),
        ],
        _ => Vec::new(),
    }
}

/// Cuts every DyLoRA site of `plan` to rank `k` (`--rank K`). Refused when
/// the plan has no DyLoRA, or `k` is outside a site's `min_r..=r`.
pub fn cut(plan: &mut Plan, k: usize) -> Result<(), String> {
    let mut found = false;
    for s in &mut plan.sites {
        if let MethodConfig::Dylora(c) = &mut s.method {
            if k < c.min_r || k > c.r {
                return Err(format!(
                    "`--rank {k}` is outside `{}`'s trained ranks {}..={}",
                    s.module, c.min_r, c.r
                ));
            }
            c.cut = Some(k);
            found = true;
        }
    }
    if found {
        Ok(())
    } else {
        Err("`--rank` cuts a `dylora` adapter; this block has none".into())
    }
}

impl SiteMethod for DyloraConfig {
    fn name(&self) -> &'static str {
        "dylora"
    }

    /// LoRA's names and inits (A kaiming-uniform, B zeros) at rank `r`.
    fn tensors(&self, site: &Site, _: &Dims) -> Vec<TensorDecl> {
        let (i, o, m) = (site.in_dim, site.out_dim, &site.module);
        vec![
            TensorDecl::trainable(
                site_name(m, "lora_A.weight"),
                vec![self.r, i],
                Init::Uniform(1.0 / (i as f32).sqrt()),
            ),
            TensorDecl::trainable(site_name(m, "lora_B.weight"), vec![o, self.r], Init::Zeros),
        ]
    }

    /// Costed at the largest rank (a training pass's upper bound).
    fn lowering(&self, site: &Site, _: &Dims) -> Option<Lowering> {
        let (i, o, r) = (site.in_dim as u64, site.out_dim as u64, self.r as u64);
        Some(Lowering {
            op: Op::Delta {
                method: "dylora",
                in_f: site.in_dim,
                out_f: site.out_dim,
                cost: DeltaCost {
                    row_flops: 2 * r * (i + o),
                    row_saved: r,
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
