//! LST at run time (see `peftc_compiler::methods::LstConfig` for the
//! method): the family's forward pass hands the side network each selected
//! layer's output; the side network runs a narrow copy of the family's
//! layer on the gated mix of its own state and that output, and its last
//! state, projected back, is added to the backbone's last hidden state.
//!
//! Nothing here feeds the backbone, so with no other method in the block no
//! backbone tensor requires a gradient and autodiff records none of its
//! operations: the backbone runs as at inference.

use crate::error::Result;
use crate::kernels::PeftKernels;
use crate::model::attention::{Heads, attention};
use crate::model::ctx::site_id;
use crate::model::ops::{gelu, layer_norm, linear_pt, rms_norm, silu_mul};
use crate::model::{Ctx, Params};
use burn::tensor::{Tensor, activation};
use peftc_compiler::methods::{LST_EMBED_DOWN, LST_GATE_TEMPERATURE, LST_UP, LstConfig, SideDims};
use peftc_compiler::model::{Dims, Family};
use peftc_compiler::plan::Plan;

/// BERT's dropout rates, which its side blocks keep.
const HIDDEN_DROPOUT: f64 = 0.1;
const ATTN_DROPOUT: f64 = 0.1;

/// The side network of a plan.
pub struct Ladder {
    side: SideDims,
    family: Family,
    norm_eps: f64,
    rope_theta: f64,
    /// By layer index: the path of the layer the side network reads there.
    layers: Vec<Option<String>>,
}

/// Where the side network's tokens sit: `seq` positions per row (`n_prompt`
/// of them a soft prompt's), RoPE positions from `offset`.
pub struct SideAt {
    pub seq: usize,
    pub n_prompt: usize,
    pub offset: usize,
}

pub fn at(c: &LstConfig, plan: &Plan) -> Ladder {
    let d: &Dims = &plan.model.dims;
    let mut layers = vec![None; d.layers];
    for s in &plan.sites {
        if let (peftc_compiler::methods::MethodConfig::Lst(_), Some(i)) = (&s.method, s.layer())
            && let Some(slot) = layers.get_mut(i)
        {
            *slot = Some(s.module.clone());
        }
    }
    Ladder {
        side: c.side(d),
        family: d.family,
        norm_eps: d.norm_eps,
        rope_theta: d.rope_theta,
        layers,
    }
}

/// `x @ w.T + b` with the side network's tensor `{path}.{name}.weight` (and
/// its bias, when the plan has one).
fn lin<B: PeftKernels>(
    x: Tensor<B, 2>,
    path: &str,
    name: &str,
    p: &Params<B>,
) -> Result<Tensor<B, 2>> {
    let w = p.get(&format!("{path}.{name}.weight"))?;
    let bias = format!("{path}.{name}.bias");
    let b = if p.has(&bias) {
        Some(p.get(&bias)?)
    } else {
        None
    };
    Ok(linear_pt(x, w, b))
}

impl Ladder {
    /// Whether the side network reads layer `li`'s output.
    pub fn reads(&self, li: usize) -> bool {
        self.layers.get(li).is_some_and(Option::is_some)
    }

    /// The first side state, from the first ladder layer's input `x`.
    pub fn start<B: PeftKernels>(&self, x: Tensor<B, 2>, p: &Params<B>) -> Result<Tensor<B, 2>> {
        Ok(linear_pt(
            x,
            p.get(&format!("{LST_EMBED_DOWN}.weight"))?,
            Some(p.get(&format!("{LST_EMBED_DOWN}.bias"))?),
        ))
    }

    /// The side state after layer `li`, whose output is `x`, from the state
    /// `s` before it.
    pub fn step<B: PeftKernels>(
        &self,
        li: usize,
        x: Tensor<B, 2>,
        s: Tensor<B, 2>,
        at: &SideAt,
        p: &Params<B>,
        ctx: &Ctx<B>,
    ) -> Result<Tensor<B, 2>> {
        let Some(Some(path)) = self.layers.get(li) else {
            return Ok(s);
        };
        let base = format!("{path}.lst");
        let down = lin(x, &base, "down", p)?;
        let mu = activation::sigmoid(p.get(&format!("{base}.gate"))? / LST_GATE_TEMPERATURE);
        let mixed = s * mu.clone() + down * (mu.neg() + 1.0);
        let side = format!("{base}.side");
        match self.family {
            Family::Bert => self.bert_block(mixed, &side, at, p, ctx),
            Family::Llama => self.llama_block(mixed, &side, at, p, ctx),
        }
    }

    /// `x + up(s)`: the side network's last state into the backbone's last
    /// hidden state.
    pub fn finish<B: PeftKernels>(
        &self,
        x: Tensor<B, 2>,
        s: Tensor<B, 2>,
        p: &Params<B>,
    ) -> Result<Tensor<B, 2>> {
        Ok(x + linear_pt(
            s,
            p.get(&format!("{LST_UP}.weight"))?,
            Some(p.get(&format!("{LST_UP}.bias"))?),
        ))
    }

    fn heads(&self) -> Heads {
        Heads {
            heads: self.side.heads,
            kv_heads: self.side.kv_heads,
            head_dim: self.side.head_dim,
        }
    }

    /// BERT's post-norm layer at the side network's widths.
    fn bert_block<B: PeftKernels>(
        &self,
        x: Tensor<B, 2>,
        path: &str,
        at: &SideAt,
        p: &Params<B>,
        ctx: &Ctx<B>,
    ) -> Result<Tensor<B, 2>> {
        let eps = self.norm_eps;
        let norm = |x: Tensor<B, 2>, name: &str| -> Result<Tensor<B, 2>> {
            Ok(layer_norm(
                x,
                p.get(&format!("{path}.{name}.weight"))?,
                p.get(&format!("{path}.{name}.bias"))?,
                eps,
            ))
        };
        let q = lin(x.clone(), path, "attention.self.query", p)?;
        let k = lin(x.clone(), path, "attention.self.key", p)?;
        let v = lin(x.clone(), path, "attention.self.value", p)?;
        let core = attention(
            q,
            k,
            v,
            &self.heads(),
            at.seq,
            at.n_prompt,
            None,
            false,
            ATTN_DROPOUT,
            site_id(&format!("{path}.attention.dropout")),
            ctx,
        );
        let o = lin(core, path, "attention.output.dense", p)?;
        let o = ctx.dropout(
            o,
            HIDDEN_DROPOUT,
            site_id(&format!("{path}.attention.output.dropout")),
        );
        let a1 = norm(o + x, "attention.output.LayerNorm")?;
        let u = gelu(lin(a1.clone(), path, "intermediate.dense", p)?);
        let dn = lin(u, path, "output.dense", p)?;
        let dn = ctx.dropout(
            dn,
            HIDDEN_DROPOUT,
            site_id(&format!("{path}.output.dropout")),
        );
        norm(dn + a1, "output.LayerNorm")
    }

    /// The LLaMA family's pre-norm layer (RMSNorm, RoPE at the side head
    /// size, grouped-query causal attention, SwiGLU) at the side widths.
    fn llama_block<B: PeftKernels>(
        &self,
        x: Tensor<B, 2>,
        path: &str,
        at: &SideAt,
        p: &Params<B>,
        ctx: &Ctx<B>,
    ) -> Result<Tensor<B, 2>> {
        let eps = self.norm_eps;
        let s = &self.side;
        let rms = |x: Tensor<B, 2>, name: &str| -> Result<Tensor<B, 2>> {
            Ok(rms_norm(x, p.get(&format!("{path}.{name}.weight"))?, eps))
        };
        let n1 = rms(x.clone(), "input_layernorm")?;
        let q = lin(n1.clone(), path, "self_attn.q_proj", p)?;
        let k = lin(n1.clone(), path, "self_attn.k_proj", p)?;
        let v = lin(n1, path, "self_attn.v_proj", p)?;
        let rope = |t, heads| {
            crate::model::rope::apply(t, at.seq, heads, s.head_dim, self.rope_theta, at.offset)
        };
        let (q, k) = (rope(q, s.heads), rope(k, s.kv_heads));
        let core = attention(
            q,
            k,
            v,
            &self.heads(),
            at.seq,
            at.n_prompt,
            None,
            true,
            0.0,
            site_id(path),
            ctx,
        );
        let a1 = x + lin(core, path, "self_attn.o_proj", p)?;
        let n2 = rms(a1.clone(), "post_attention_layernorm")?;
        let g = lin(n2.clone(), path, "mlp.gate_proj", p)?;
        let u = lin(n2, path, "mlp.up_proj", p)?;
        Ok(a1 + lin(silu_mul(g, u), path, "mlp.down_proj", p)?)
    }
}
