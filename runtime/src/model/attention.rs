//! Attention of one layer: the fused kernel (`crate::kernels::attention`), or
//! its reference composition when a UniPELT gate scales the prefix's share.

use super::ctx::Ctx;
use crate::kernels::{self, AttnShape, PeftKernels, reference};
use burn::tensor::Tensor;

pub struct Heads {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

/// Learned keys and values `[len, kv_heads*head_dim]` prepended to a layer's,
/// and an optional per-token gate `[rows*seq, 1]` on what they contribute.
pub struct Prefix<B: PeftKernels> {
    pub k: Tensor<B, 2>,
    pub v: Tensor<B, 2>,
    pub gate: Option<Tensor<B, 2>>,
}

/// Attention of `q` over `k`, `v` (all `[rows*seq, ...]`, `seq` including
/// `n_prompt` leading soft-prompt positions) plus an optional prefix.
#[allow(clippy::too_many_arguments)]
pub fn attention<B: PeftKernels>(
    q: Tensor<B, 2>,
    k: Tensor<B, 2>,
    v: Tensor<B, 2>,
    shape: &Heads,
    seq: usize,
    n_prompt: usize,
    prefix: Option<Prefix<B>>,
    causal: bool,
    dropout: f64,
    dropout_site: u64,
    ctx: &Ctx<B>,
) -> Tensor<B, 2> {
    let train_dropout = if ctx.train { dropout as f32 } else { 0.0 };
    let s = AttnShape {
        rows: ctx.rows,
        seq,
        heads: shape.heads,
        kv_heads: shape.kv_heads,
        head_dim: shape.head_dim,
        prefix: prefix.as_ref().map(|p| p.k.dims()[0]).unwrap_or(0),
        causal,
        key_mask: ctx.key_mask(n_prompt),
        dropout: train_dropout,
        dropout_key: ctx.site_key(dropout_site),
    };
    match prefix {
        Some(Prefix {
            k: pk,
            v: pv,
            gate: Some(g),
        }) => reference::attention(q, k, v, Some(pk), Some(pv), Some(g), &s).0,
        Some(Prefix {
            k: pk,
            v: pv,
            gate: None,
        }) => kernels::attention(q, k, v, Some((pk, pv)), &s),
        None => kernels::attention(q, k, v, None, &s),
    }
}
