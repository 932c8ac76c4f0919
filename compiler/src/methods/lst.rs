//! LST (Sung et al. 2022, "LST: Ladder Side-Tuning for Parameter and Memory
//! Efficient Transfer Learning"), beside the backbone's layers:
//!
//! ```text
//! s_0  = embed_down(x_0)                         x_0: the first ladder layer's input
//! s_i  = block_i(μ_i · s_{i−1} + (1 − μ_i) · down_i(x_i)),   μ_i = sigmoid(gate_i / T)
//! out  = x_L + up(s_n)                           x_L: the backbone's last layer output
//! ```
//!
//! `x_i` is the output of the `i`-th layer the statement selects. Each side
//! block is the backbone's own layer class (BERT's post-norm layer, LLaMA's
//! pre-norm RMSNorm / RoPE / SwiGLU layer) at `1/reduction` of its widths:
//! hidden `d/r`, head size `head_dim/r` with the backbone's head counts, MLP
//! `intermediate/r`. Only the side network and its ladders train, and no
//! trainable tensor sits inside the backbone, so the backward pass never
//! enters it: the backbone runs as at inference and keeps nothing for a
//! backward but the layer outputs the ladders read.
//!
//! The gates start at 0 (`μ = 0.5`) with the paper's temperature `T = 0.1`;
//! `up` starts at zero, so step 0 is the base model (peftc adds the side
//! network's output to the backbone's instead of replacing it, which keeps
//! that property; the paper feeds the head the side network's state alone).
//! The side blocks start as PyTorch's `nn.Linear` defaults (uniform in
//! ±1/√fan_in), norms at one and zero; the paper's initialization from a
//! pruned backbone is not implemented.

use super::args::Args;
use super::method::{Capabilities, Lowering, SiteMethod, Wiring};
use super::spec::{
    ArgSpec, Default, MethodSpec, SIZE, TargetKind, no_check, no_target_check, size,
};
use super::table::{MethodConfig, MethodKind};
use super::tensors::{Init, TensorDecl, site_name};
use crate::ir::{DeltaCost, Op};
use crate::model::{Dims, Family};
use crate::plan::Site;
use peftc_grammar::ast::Placement;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LstConfig {
    /// The side network is `1/reduction` of the backbone's widths.
    pub reduction: usize,
}

/// The gates' temperature (the paper's `T`).
pub const GATE_TEMPERATURE: f64 = 0.1;

pub const SPEC: MethodSpec = MethodSpec {
    kind: MethodKind::Lst,
    name: "lst",
    placements: &[Placement::Beside],
    target: TargetKind::Layer,
    args: &[ArgSpec {
        name: "reduction",
        ty: SIZE,
        default: Some(Default::Int(8)),
        doc: "how many times narrower than the backbone the side network is",
    }],
    gateable: false,
    doc: "ladder side-tuning (LST, Sung et al. 2022): a narrow side network fed by the layers' outputs; backward never enters the backbone",
    placement_note: "`lst` runs a side network beside the layers, reading their outputs",
    exclusive: "ladder side network",
    single_target: false,
    scales_ffn_input: false,
    once_per_block: Some("its layers form one side network"),
    configure,
    check: no_check,
    check_targets: no_target_check,
};

fn configure(args: &Args, _: Placement) -> Option<MethodConfig> {
    Some(MethodConfig::Lst(LstConfig {
        reduction: size(args, "reduction")?,
    }))
}

/// The widths of a side block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SideDims {
    pub hidden: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub intermediate: usize,
}

impl SideDims {
    fn q(&self) -> usize {
        self.heads * self.head_dim
    }

    fn kv(&self) -> usize {
        self.kv_heads * self.head_dim
    }
}

impl LstConfig {
    /// The side blocks' widths for a backbone of `d`.
    pub fn side(&self, d: &Dims) -> SideDims {
        let r = self.reduction.max(1);
        SideDims {
            hidden: d.hidden / r,
            heads: d.heads,
            kv_heads: d.kv_heads,
            head_dim: d.head_dim / r,
            intermediate: d.intermediate / r,
        }
    }

    /// The side block's tensors under `{module}.lst.side.` in the names of
    /// the family's own layer (`attention.self.query.weight`,
    /// `self_attn.q_proj.weight`, ...), with their shapes and biases.
    pub fn block_tensors(&self, d: &Dims) -> Vec<(&'static str, Vec<usize>, BlockInit)> {
        let s = self.side(d);
        let (h, q, kv, f) = (s.hidden, s.q(), s.kv(), s.intermediate);
        let lin = |out: usize, inp: usize| (vec![out, inp], BlockInit::Linear(inp));
        let bias = |out: usize, inp: usize| (vec![out], BlockInit::Linear(inp));
        let mut t: Vec<(&'static str, Vec<usize>, BlockInit)> = Vec::new();
        let mut push = |name: &'static str, (shape, init): (Vec<usize>, BlockInit)| {
            t.push((name, shape, init));
        };
        match d.family {
            Family::Bert => {
                push("attention.self.query.weight", lin(q, h));
                push("attention.self.query.bias", bias(q, h));
                push("attention.self.key.weight", lin(q, h));
                push("attention.self.key.bias", bias(q, h));
                push("attention.self.value.weight", lin(q, h));
                push("attention.self.value.bias", bias(q, h));
                push("attention.output.dense.weight", lin(h, q));
                push("attention.output.dense.bias", bias(h, q));
                push(
                    "attention.output.LayerNorm.weight",
                    (vec![h], BlockInit::One),
                );
                push(
                    "attention.output.LayerNorm.bias",
                    (vec![h], BlockInit::Zero),
                );
                push("intermediate.dense.weight", lin(f, h));
                push("intermediate.dense.bias", bias(f, h));
                push("output.dense.weight", lin(h, f));
                push("output.dense.bias", bias(h, f));
                push("output.LayerNorm.weight", (vec![h], BlockInit::One));
                push("output.LayerNorm.bias", (vec![h], BlockInit::Zero));
            }
            Family::Llama => {
                push("input_layernorm.weight", (vec![h], BlockInit::One));
                push("self_attn.q_proj.weight", lin(q, h));
                push("self_attn.k_proj.weight", lin(kv, h));
                push("self_attn.v_proj.weight", lin(kv, h));
                if d.qkv_bias {
                    push("self_attn.q_proj.bias", bias(q, h));
                    push("self_attn.k_proj.bias", bias(kv, h));
                    push("self_attn.v_proj.bias", bias(kv, h));
                }
                push("self_attn.o_proj.weight", lin(h, q));
                if d.o_bias {
                    push("self_attn.o_proj.bias", bias(h, q));
                }
                push("post_attention_layernorm.weight", (vec![h], BlockInit::One));
                push("mlp.gate_proj.weight", lin(f, h));
                push("mlp.up_proj.weight", lin(f, h));
                push("mlp.down_proj.weight", lin(h, f));
                if d.mlp_bias {
                    push("mlp.gate_proj.bias", bias(f, h));
                    push("mlp.up_proj.bias", bias(f, h));
                    push("mlp.down_proj.bias", bias(h, f));
                }
            }
        }
        t
    }

    /// Elements a side block keeps for its backward per token (its inputs
    /// of the products, norms and activations, as the runtime saves them),
    /// beside the attention probabilities (`heads` per token and position).
    fn saved_per_token(&self, d: &Dims) -> u64 {
        let s = self.side(d);
        let (h, q, kv, f) = (s.hidden, s.q(), s.kv(), s.intermediate);
        // The gate's mix keeps both of its inputs, the block's input is the
        // mix's output.
        let mix = 3 * h;
        let block = match d.family {
            // q, k, v, the attention output, both norms' inputs, the
            // intermediate before and after GELU.
            Family::Bert => 3 * q + q + 2 * h + h + 2 * f,
            // the normed inputs, q, k, v, the attention output, the
            // residual, gate and up, their SwiGLU product.
            Family::Llama => 2 * h + q + 2 * kv + q + h + 3 * f,
        };
        (mix + block) as u64
    }

    /// Multiply-add FLOPs of a side block and its ladder per token (`×2`),
    /// without the attention's (per position, see [`DeltaCost::seq_flops`]).
    fn flops_per_token(&self, d: &Dims) -> u64 {
        let s = self.side(d);
        let (h, q, kv, f) = (s.hidden, s.q(), s.kv(), s.intermediate);
        let ladder = d.hidden * h;
        let attn = h * q * 2 + h * kv * 2;
        let mlp = match d.family {
            Family::Bert => 2 * h * f,
            Family::Llama => 3 * h * f,
        };
        2 * (ladder + attn + mlp) as u64
    }

    /// Why the backbone `d` cannot carry this side network, if it cannot.
    pub fn misfit(&self, d: &Dims) -> Option<String> {
        let r = self.reduction;
        let widths = [
            ("hidden size", d.hidden),
            ("head size", d.head_dim),
            ("intermediate size", d.intermediate),
        ];
        let bad: Vec<String> = widths
            .iter()
            .filter(|(_, w)| !w.is_multiple_of(r) || *w < r)
            .map(|(what, w)| format!("{what} {w}"))
            .collect();
        (!bad.is_empty()).then(|| {
            format!(
                "`reduction={r}` must divide the backbone's widths; it does not divide its {}",
                bad.join(", ")
            )
        })
    }
}

/// How a side block's tensor starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockInit {
    /// `nn.Linear`'s default for this fan-in: uniform in ±1/√fan_in.
    Linear(usize),
    One,
    Zero,
}

/// The name of LST's tensor `suffix` at the layer `module`
/// (`encoder.layer.3.lst.down.weight`, `…lst.side.output.dense.bias`).
pub fn name(module: &str, suffix: &str) -> String {
    site_name(module, &format!("lst.{suffix}"))
}

/// The names of the tensors the side network shares: the embedding's
/// down-projection and the closing up-projection.
pub const EMBED_DOWN: &str = "lst.embed_down";
pub const UP: &str = "lst.up";

fn uniform(fan_in: usize) -> Init {
    Init::Uniform(1.0 / (fan_in.max(1) as f32).sqrt())
}

impl SiteMethod for LstConfig {
    fn name(&self) -> &'static str {
        "lst"
    }

    fn tensors(&self, site: &Site, dims: &Dims) -> Vec<TensorDecl> {
        let (d, h) = (dims.hidden, self.side(dims).hidden);
        let n = |s: &str| name(&site.module, s);
        let mut t = vec![
            TensorDecl::trainable(n("down.weight"), vec![h, d], uniform(d)),
            TensorDecl::trainable(n("down.bias"), vec![h], uniform(d)),
            TensorDecl::trainable(n("gate"), vec![1], Init::Zeros),
        ];
        for (suffix, shape, init) in self.block_tensors(dims) {
            let init = match init {
                BlockInit::Linear(fan_in) => uniform(fan_in),
                BlockInit::One => Init::Ones,
                BlockInit::Zero => Init::Zeros,
            };
            t.push(TensorDecl::trainable(
                n(&format!("side.{suffix}")),
                shape,
                init,
            ));
        }
        t
    }

    /// The embedding's down-projection opens the side network; the
    /// up-projection, zero at first, closes it into the backbone's output.
    fn shared_tensors(&self, _: &[&Site], dims: &Dims) -> Vec<TensorDecl> {
        let (d, h) = (dims.hidden, self.side(dims).hidden);
        vec![
            TensorDecl::trainable(format!("{EMBED_DOWN}.weight"), vec![h, d], uniform(d)),
            TensorDecl::trainable(format!("{EMBED_DOWN}.bias"), vec![h], uniform(d)),
            TensorDecl::trainable(format!("{UP}.weight"), vec![d, h], Init::Zeros),
            TensorDecl::trainable(format!("{UP}.bias"), vec![d], Init::Zeros),
        ]
    }

    /// One side block with its ladder: reads the layer's output (and the
    /// side state before it), writes the next side state `[.., d/r]`.
    fn lowering(&self, site: &Site, d: &Dims) -> Option<Lowering> {
        Some(Lowering {
            op: Op::Delta {
                method: "lst",
                in_f: site.out_dim,
                out_f: self.side(d).hidden,
                cost: DeltaCost {
                    row_flops: self.flops_per_token(d),
                    row_saved: self.saved_per_token(d),
                    // QKᵀ and the probabilities' product with V, and the
                    // probabilities kept.
                    seq_flops: 4 * self.side(d).q() as u64,
                    seq_saved: d.heads as u64,
                    ..DeltaCost::default()
                },
            },
            wiring: Wiring::Ladder,
        })
    }

    fn capabilities(&self, _: &Site) -> Capabilities {
        Capabilities {
            merge: false,
            hf: false,
            routable: false,
        }
    }

    fn misfit(&self, dims: &Dims) -> Option<String> {
        LstConfig::misfit(self, dims)
    }
}
