//! Bottleneck adapters: serial (Houlsby et al. 2019) with `after`, parallel
//! (He et al. 2022) with `beside`: `res + s·up(act(down(x)))`.

use super::args::Args;
use super::method::{Capabilities, Lowering, SiteMethod, Wiring, gate_tensors};
use super::spec::{
    ArgSpec, ArgType, Default, MethodSpec, POSITIVE, SERIAL_OR_PARALLEL, SIZE, TargetKind, choice,
    float, no_check, no_target_check, size,
};
use super::table::{MethodConfig, MethodKind};
use super::tensors::{Init, TensorDecl, TensorKind, site_name};
use crate::ir::Op;
use crate::model::Dims;
use crate::plan::Site;
use peftc_grammar::ast::Placement;
use serde::{Deserialize, Serialize};

/// The bottleneck's activations (`act=`, one per [`Activation`]), shared
/// with CoDA's light branch.
pub const ACTIVATIONS: ArgType = ArgType::Choice(&["relu", "gelu", "silu", "tanh"]);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    Relu,
    Gelu,
    Silu,
    Tanh,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdapterConfig {
    pub bottleneck: usize,
    pub act: Activation,
    pub scale: f64,
    /// `beside` (parallel) rather than `after` (serial).
    pub parallel: bool,
    /// SparseAdapter (He et al. 2022): the fraction of each projection's
    /// weights pruned at initialization and kept at zero.
    #[serde(default)]
    pub sparsity: f64,
    #[serde(default)]
    pub prune: Prune,
}

/// How a SparseAdapter chooses the weights it keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Prune {
    /// Seeded, uniformly.
    Random,
    /// The largest |w| at initialization (at random where the projection
    /// starts at zero, as the up projection does).
    #[default]
    Magnitude,
    /// SNIP (Lee et al. 2019): the largest connection sensitivity |g ⊙ w|
    /// summed over [`SNIP_BATCHES`] batches of the training data before the
    /// first step (|g| where the projection starts at zero).
    Snip,
}

/// Training batches SNIP's scores are summed over.
pub const SNIP_BATCHES: usize = 4;

/// A pruned weight's mask, as its [`Init`] carries it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PruneSelect {
    /// The adapter weight the mask prunes (declared just before it).
    pub weight: String,
    pub by: Prune,
    /// Entries kept.
    pub kept: usize,
}

/// Entries of `numel` a projection keeps at `sparsity`: at least one.
pub fn kept(sparsity: f64, numel: usize) -> usize {
    let pruned = (sparsity * numel as f64).round() as usize;
    numel.saturating_sub(pruned).max(1)
}

impl AdapterConfig {
    /// The prefix of the adapter's tensor names at its module.
    pub fn tag(&self) -> &'static str {
        if self.parallel {
            "adapter_beside"
        } else {
            "adapter_after"
        }
    }
}

pub const SPEC: MethodSpec = MethodSpec {
    kind: MethodKind::Adapter,
    name: "adapter",
    placements: SERIAL_OR_PARALLEL,
    target: TargetKind::Block,
    args: &[
        ArgSpec {
            name: "bottleneck",
            ty: SIZE,
            default: None,
            doc: "bottleneck width",
        },
        ArgSpec {
            name: "act",
            ty: ACTIVATIONS,
            default: Some(Default::Name("relu")),
            doc: "activation between down and up projections",
        },
        ArgSpec {
            name: "scale",
            ty: POSITIVE,
            default: Some(Default::Float(1.0)),
            doc: "scale of the adapter's output",
        },
        ArgSpec {
            name: "sparsity",
            ty: ArgType::Float {
                lo: 0.0,
                hi: 1.0,
                lo_open: false,
                hi_open: true,
            },
            default: Some(Default::Float(0.0)),
            doc: "SparseAdapter: fraction of each projection's weights pruned at initialization",
        },
        ArgSpec {
            name: "prune",
            ty: ArgType::Choice(&["magnitude", "random", "snip"]),
            default: Some(Default::Name("magnitude")),
            doc: "how pruned weights are chosen: smallest |w|, at random, or by SNIP's sensitivity",
        },
    ],
    gateable: true,
    doc: "bottleneck adapter, serial (Houlsby 2019) with `after` or parallel (He et al. 2022) with `beside`",
    placement_note: "an adapter runs after (serial) or beside (parallel) a module",
    exclusive: "adapter at the same place",
    single_target: false,
    scales_ffn_input: false,
    once_per_block: None,
    configure,
    check: no_check,
    check_targets: no_target_check,
};

/// The checked `act` argument (`relu | gelu | silu | tanh`).
pub(super) fn activation(args: &Args) -> Activation {
    match choice(args, "act") {
        "gelu" => Activation::Gelu,
        "silu" => Activation::Silu,
        "tanh" => Activation::Tanh,
        _ => Activation::Relu,
    }
}

fn configure(args: &Args, placement: Placement) -> Option<MethodConfig> {
    Some(MethodConfig::Adapter(AdapterConfig {
        bottleneck: size(args, "bottleneck")?,
        act: activation(args),
        scale: float(args, "scale"),
        parallel: placement == Placement::Beside,
        sparsity: float(args, "sparsity"),
        prune: match choice(args, "prune") {
            "random" => Prune::Random,
            "snip" => Prune::Snip,
            _ => Prune::Magnitude,
        },
    }))
}

/// The mask of the pruned adapter weight `weight`.
pub fn mask_name(weight: &str) -> String {
    format!("{}.mask", weight.trim_end_matches(".weight"))
}

impl SiteMethod for AdapterConfig {
    fn name(&self) -> &'static str {
        "adapter"
    }

    fn tensors(&self, site: &Site, _: &Dims) -> Vec<TensorDecl> {
        // Serial: d_out -> b -> d_out. Parallel: d_in -> b -> d_out.
        let input = if self.parallel {
            site.in_dim
        } else {
            site.out_dim
        };
        let (o, b) = (site.out_dim, self.bottleneck);
        let n = |s: &str| site_name(&site.module, &format!("{}.{s}", self.tag()));
        let bd = 1.0 / (input as f32).sqrt();
        let mut out = vec![
            TensorDecl::trainable(n("down.weight"), vec![b, input], Init::Uniform(bd)),
            TensorDecl::trainable(n("down.bias"), vec![b], Init::Uniform(bd)),
            TensorDecl::trainable(n("up.weight"), vec![o, b], Init::Zeros),
            TensorDecl::trainable(n("up.bias"), vec![o], Init::Zeros),
        ];
        if self.sparsity > 0.0 {
            // Each projection's weight trains only its kept entries; its
            // mask (frozen, saved with the adapter) follows it.
            let mut pruned = Vec::new();
            for d in out.drain(..) {
                let is_weight = d.name.ends_with(".weight");
                let (name, shape) = (d.name.clone(), d.shape.clone());
                let kept = kept(self.sparsity, d.shape.iter().product());
                pruned.push(if is_weight {
                    TensorDecl {
                        kind: TensorKind::Pruned { kept: kept as u64 },
                        ..d
                    }
                } else {
                    d
                });
                if is_weight {
                    pruned.push(TensorDecl {
                        name: mask_name(&name),
                        shape,
                        kind: TensorKind::Frozen { in_total: false },
                        init: Init::PruneMask(PruneSelect {
                            weight: name,
                            by: self.prune,
                            kept,
                        }),
                    });
                }
            }
            out = pruned;
        }
        out.extend(gate_tensors(site, self.tag(), input));
        out
    }

    fn lowering(&self, site: &Site, _: &Dims) -> Option<Lowering> {
        Some(Lowering {
            op: Op::Adapter {
                d_in: if self.parallel {
                    site.in_dim
                } else {
                    site.out_dim
                },
                bottleneck: self.bottleneck,
                d_out: site.out_dim,
                act: self.act.into(),
                scale: self.scale,
                parallel: self.parallel,
                gated: site.gated,
            },
            wiring: if self.parallel {
                Wiring::InputAndOutput
            } else {
                Wiring::Output
            },
        })
    }

    fn capabilities(&self, _: &Site) -> Capabilities {
        Capabilities {
            merge: false,
            hf: false,
            routable: false,
        }
    }
}
