//! Prefix tuning (Li & Liang 2021): trainable keys and values prepended in
//! every selected attention layer, directly or through a reparameterization
//! MLP shared by the statement's layers (HF PEFT's `prefix_projection`).

use super::args::Args;
use super::method::{Capabilities, Lowering, SiteMethod, Wiring, gate_tensors};
use super::spec::{
    ArgSpec, ArgType, Default, MethodSpec, ON, SIZE, TargetKind, no_check, no_target_check, size,
};
use super::table::{MethodConfig, MethodKind};
use super::tensors::{Init, TensorDecl};
use crate::ir::Op;
use crate::model::Dims;
use crate::plan::Site;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrefixConfig {
    pub len: usize,
    /// Hidden width of the reparameterization MLP; 0 for none.
    pub projection: usize,
}

pub const SPEC: MethodSpec = MethodSpec {
    kind: MethodKind::Prefix,
    name: "prefix",
    placements: ON,
    target: TargetKind::Attention,
    args: &[
        ArgSpec {
            name: "len",
            ty: SIZE,
            default: None,
            doc: "number of prefix positions",
        },
        ArgSpec {
            name: "projection",
            ty: ArgType::Int {
                min: 0,
                max: 1 << 20,
                zero_absent: false,
            },
            default: Some(Default::Int(0)),
            doc: "hidden size of the reparameterization MLP (0: none)",
        },
    ],
    gateable: true,
    doc: "trainable key/value prefixes in every attention layer (Li & Liang 2021)",
    placement_note: "`prefix` modifies the module itself",
    exclusive: "prefix",
    single_target: false,
    scales_ffn_input: false,
    once_per_block: None,
    configure: |args, _| configure(args),
    check: no_check,
    check_targets: no_target_check,
};

fn configure(args: &Args) -> Option<MethodConfig> {
    Some(MethodConfig::Prefix(PrefixConfig {
        len: size(args, "len")?,
        projection: args
            .fixed("projection")
            .and_then(|v| v.as_i64())
            .and_then(|v| usize::try_from(v).ok())
            .unwrap_or(0),
    }))
}

/// Keys plus values per position: `2 * kv_heads * head_dim`.
fn kv_width(dims: &Dims) -> usize {
    dims.kv_heads * dims.head_dim
}

impl SiteMethod for PrefixConfig {
    fn name(&self) -> &'static str {
        "prefix"
    }

    fn tensors(&self, site: &Site, dims: &Dims) -> Vec<TensorDecl> {
        let mut out = Vec::new();
        if self.projection == 0 {
            let layer = site.layer().unwrap_or(0);
            out.push(TensorDecl::trainable(
                format!("prefix.{layer}.kv"),
                vec![self.len, 2 * kv_width(dims)],
                Init::Normal(1.0),
            ));
        }
        out.extend(gate_tensors(site, "prefix", dims.hidden));
        out
    }

    /// The projection MLP of one statement: an embedding `[len, kv]`, then
    /// `Linear(kv, projection)`, tanh, `Linear(projection, layers * 2 * kv)`.
    fn shared_tensors(&self, statement: &[&Site], dims: &Dims) -> Vec<TensorDecl> {
        let Some(first) = statement.first() else {
            return Vec::new();
        };
        if self.projection == 0 {
            return Vec::new();
        }
        let (kv, h, n, st) = (
            kv_width(dims),
            self.projection,
            statement.len(),
            first.statement,
        );
        let name = |x: &str| format!("prefix_encoder.{st}.{x}");
        let (b1, b2) = (1.0 / (kv as f32).sqrt(), 1.0 / (h as f32).sqrt());
        vec![
            TensorDecl::trainable(name("embedding"), vec![self.len, kv], Init::Normal(1.0)),
            TensorDecl::trainable(name("0.weight"), vec![h, kv], Init::Uniform(b1)),
            TensorDecl::trainable(name("0.bias"), vec![h], Init::Uniform(b1)),
            TensorDecl::trainable(name("2.weight"), vec![n * 2 * kv, h], Init::Uniform(b2)),
            TensorDecl::trainable(name("2.bias"), vec![n * 2 * kv], Init::Uniform(b2)),
        ]
    }

    fn lowering(&self, site: &Site, _: &Dims) -> Option<Lowering> {
        Some(Lowering {
            op: Op::PrefixKv {
                len: self.len,
                kv_dim: 0, // filled by shape inference from the attention it feeds
                gated: site.gated,
            },
            wiring: Wiring::AttentionKv,
        })
    }

    fn capabilities(&self, site: &Site) -> Capabilities {
        Capabilities {
            merge: false,
            hf: !site.gated,
            routable: false,
        }
    }
}
