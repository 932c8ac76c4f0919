//! CoDA (Lei et al. 2023, "Conditional Adapters: Parameter-efficient
//! Transfer Learning with Fast Inference"), beside a transformer layer:
//!
//! ```text
//! λ   = soft_top_k(x·w_router / eps, k)        per sequence, Σλ = k, 0 ≤ λ ≤ 1
//! I   = the k tokens of largest score          (kept in their order)
//! out = x + up(act(down(x)))                   every token: the light branch
//! out[I] += λ[I] ⊙ (layer(x[I]) − x[I])        only I: the frozen heavy branch
//! ```
//!
//! The heavy branch is the pretrained layer run on the gathered sub-sequence
//! `x[I]` alone (its attention among the selected tokens, causal by their
//! original positions, RoPE at those positions), so its cost falls with `k`.
//! The soft top-k is the entropy-regularized solution of `max λ·s` under
//! `Σλ = k, 0 ≤ λ ≤ 1` (the paper's relaxation), in closed form
//! (`λ = 1` on the clipped set, `(k − |C|)·softmax(s/eps)` elsewhere); its
//! gradient trains the router. With `k` at least the sequence's length every
//! λ is 1 and CoDA is a parallel adapter beside the layer.
//!
//! One router selects the tokens that are both the heavy attention's queries
//! and its keys (the paper's query and key-value routers share it here).

use super::Activation;
use super::args::Args;
use super::method::{Capabilities, Lowering, SiteMethod, Wiring};
use super::spec::{
    ArgSpec, ArgType, Default, MethodSpec, POSITIVE, SIZE, TargetKind, float, no_check,
    no_target_check, size,
};
use super::table::{MethodConfig, MethodKind};
use super::tensors::{Init, TensorDecl, site_name};
use crate::ir::Op;
use crate::model::Dims;
use crate::plan::Site;
use peftc_grammar::ast::Placement;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CodaConfig {
    /// The light branch's bottleneck width.
    pub bottleneck: usize,
    /// Tokens per sequence through the heavy (frozen) layer.
    pub k: usize,
    /// The soft top-k's entropy weight (its temperature).
    pub eps: f64,
    pub act: Activation,
}

pub const SPEC: MethodSpec = MethodSpec {
    kind: MethodKind::Coda,
    name: "coda",
    placements: &[Placement::Beside],
    target: TargetKind::Layer,
    args: &[
        ArgSpec {
            name: "bottleneck",
            ty: SIZE,
            default: None,
            doc: "the light branch's bottleneck width",
        },
        ArgSpec {
            name: "k",
            ty: ArgType::Int {
                min: 1,
                max: 1 << 20,
                zero_absent: false,
            },
            default: None,
            doc: "tokens per sequence that pass through the frozen layer",
        },
        ArgSpec {
            name: "eps",
            ty: POSITIVE,
            default: Some(Default::Float(1.0)),
            doc: "temperature of the router's soft top-k",
        },
        ArgSpec {
            name: "act",
            ty: super::adapter::ACTIVATIONS,
            default: Some(Default::Name("relu")),
            doc: "activation of the light branch",
        },
    ],
    gateable: false,
    doc: "conditional adapter (CoDA, Lei et al. 2023): a parallel adapter for every token, the frozen layer for the top-k routed ones",
    placement_note: "`coda` runs beside a layer, routing tokens around it",
    exclusive: "conditional adapter",
    single_target: false,
    scales_ffn_input: false,
    once_per_block: None,
    configure,
    check: no_check,
    check_targets: no_target_check,
};

fn configure(args: &Args, _: Placement) -> Option<MethodConfig> {
    Some(MethodConfig::Coda(CodaConfig {
        bottleneck: size(args, "bottleneck")?,
        k: size(args, "k")?,
        eps: float(args, "eps"),
        act: super::adapter::activation(args),
    }))
}

/// The name of CoDA's tensor `suffix` (`router.weight`, `down.bias`, ...) at
/// the layer `module`.
pub fn name(module: &str, suffix: &str) -> String {
    site_name(module, &format!("coda.{suffix}"))
}

impl SiteMethod for CodaConfig {
    fn name(&self) -> &'static str {
        "coda"
    }

    /// The router starts at zero (every token scores alike, the first `k`
    /// are chosen), the light branch as a parallel adapter's: `down`
    /// uniform, `up` zero, so step 0 is the base model wherever `k` covers
    /// the sequence.
    fn tensors(&self, site: &Site, _: &Dims) -> Vec<TensorDecl> {
        let (h, b) = (site.in_dim, self.bottleneck);
        let n = |s: &str| name(&site.module, s);
        let bd = 1.0 / (h as f32).sqrt();
        vec![
            TensorDecl::trainable(n("router.weight"), vec![h], Init::Zeros),
            TensorDecl::trainable(n("down.weight"), vec![b, h], Init::Uniform(bd)),
            TensorDecl::trainable(n("down.bias"), vec![b], Init::Uniform(bd)),
            TensorDecl::trainable(n("up.weight"), vec![site.out_dim, b], Init::Zeros),
            TensorDecl::trainable(n("up.bias"), vec![site.out_dim], Init::Zeros),
        ]
    }

    /// The light branch costs a parallel adapter's; the router's product
    /// (`h` per token) and the heavy branch's saving are not modelled.
    fn lowering(&self, site: &Site, _: &Dims) -> Option<Lowering> {
        Some(Lowering {
            op: Op::Adapter {
                d_in: site.in_dim,
                bottleneck: self.bottleneck,
                d_out: site.out_dim,
                act: self.act.into(),
                scale: 1.0,
                parallel: true,
                gated: false,
            },
            wiring: Wiring::InputAndOutput,
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
