//! Scaled dot-product attention over `[rows*seq, heads*head_dim]` activations:
//! grouped-query heads, learned key/value prefixes (with an optional UniPELT
//! gate on their contribution), padding and causal masks, attention dropout.

use super::ctx::Ctx;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, activation};

pub struct Heads {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

/// Learned keys and values `[len, kv_heads*head_dim]` prepended to a layer's,
/// and an optional per-token gate `[rows*seq, 1]` on what they contribute.
pub struct Prefix<B: Backend> {
    pub k: Tensor<B, 2>,
    pub v: Tensor<B, 2>,
    pub gate: Option<Tensor<B, 2>>,
}

/// `[n, h*d]` -> `[rows, h, seq, d]`.
fn split_heads<B: Backend>(
    x: Tensor<B, 2>,
    rows: usize,
    seq: usize,
    h: usize,
    d: usize,
) -> Tensor<B, 4> {
    x.reshape([rows, seq, h, d]).swap_dims(1, 2)
}

/// Repeats each of `kv` heads `rep` times: `[rows, kv, t, d]` -> `[rows, kv*rep, t, d]`
/// (kv head j serves query heads j*rep .. j*rep+rep-1, as HF's `repeat_kv`).
fn repeat_kv<B: Backend>(x: Tensor<B, 4>, rep: usize) -> Tensor<B, 4> {
    if rep == 1 {
        return x;
    }
    let [r, kv, t, d] = x.dims();
    x.reshape([r, kv, 1, t, d])
        .expand([r, kv, rep, t, d])
        .reshape([r, kv * rep, t, d])
}

/// Attention of `q` over `k`, `v` (all `[rows*seq, ...]`) with `extra_keys`
/// always-visible leading keys already in `k`/`v` (a soft prompt) plus an
/// optional prefix. `causal` masks future positions.
#[allow(clippy::too_many_arguments)]
pub fn attention<B: Backend>(
    q: Tensor<B, 2>,
    k: Tensor<B, 2>,
    v: Tensor<B, 2>,
    shape: &Heads,
    seq: usize,
    extra_keys: usize,
    prefix: Option<Prefix<B>>,
    causal: bool,
    dropout: f64,
    dropout_site: u64,
    ctx: &Ctx<B>,
) -> Tensor<B, 2> {
    let rows = ctx.rows;
    let (h, kvh, d) = (shape.heads, shape.kv_heads, shape.head_dim);
    let rep = h / kvh;
    let q4 = split_heads(q, rows, seq, h, d);
    let mut k4 = split_heads(k, rows, seq, kvh, d);
    let mut v4 = split_heads(v, rows, seq, kvh, d);
    let (prefix_len, gate) = match prefix {
        Some(p) => {
            let len = p.k.dims()[0];
            let pk =
                p.k.reshape([1, len, kvh, d])
                    .swap_dims(1, 2)
                    .expand([rows, kvh, len, d]);
            let pv =
                p.v.reshape([1, len, kvh, d])
                    .swap_dims(1, 2)
                    .expand([rows, kvh, len, d]);
            k4 = Tensor::cat(vec![pk, k4], 2);
            v4 = Tensor::cat(vec![pv, v4], 2);
            (len, p.gate)
        }
        None => (0, None),
    };
    let t = prefix_len + seq;
    let k4 = repeat_kv(k4, rep);
    let v4 = repeat_kv(v4, rep);
    let scale = (d as f64).powf(-0.5);
    let mut scores = q4.matmul(k4.swap_dims(2, 3)).mul_scalar(scale);
    // Padding: the batch mask covers the last `seq - extra_keys` keys.
    scores = scores + ctx.key_bias(prefix_len + extra_keys);
    if causal {
        scores = scores + ctx.causal_bias(seq, t);
    }
    let probs = activation::softmax(scores, 3);
    let probs = ctx.dropout(probs, dropout, dropout_site);
    let out = match gate {
        None => probs.matmul(v4),
        Some(g) => {
            let p_prefix = probs.clone().slice([0..rows, 0..h, 0..seq, 0..prefix_len]);
            let p_rest = probs.slice([0..rows, 0..h, 0..seq, prefix_len..t]);
            let v_prefix = v4.clone().slice([0..rows, 0..h, 0..prefix_len, 0..d]);
            let v_rest = v4.slice([0..rows, 0..h, prefix_len..t, 0..d]);
            let g = g.reshape([rows, 1, seq, 1]);
            p_prefix.matmul(v_prefix) * g + p_rest.matmul(v_rest)
        }
    };
    out.swap_dims(1, 2).reshape([rows * seq, h * d])
}
