//! The reference compositions: every fused op written with plain burn ops, as
//! PyTorch defines it. Backends without their own kernels run these (and burn
//! differentiates them); the tests hold every kernel to them.

use super::bottleneck::{AdapterFn, AdapterGrads, AdapterNeed, AdapterParams};
use super::{AttnShape, RopeShape};
use crate::rng;
use crate::weights::PackedMatrix;
use burn::tensor::Int;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData, activation};
use peftc_compiler::methods::Activation;
use std::sync::Arc;

pub fn gelu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    activation::gelu(x)
}

/// `dy * (Phi(x) + x * phi(x))`.
pub fn gelu_backward<B: Backend>(x: Tensor<B, 2>, dy: Tensor<B, 2>) -> Tensor<B, 2> {
    let cdf = x
        .clone()
        .mul_scalar(std::f64::consts::FRAC_1_SQRT_2)
        .erf()
        .add_scalar(1.0)
        .mul_scalar(0.5);
    let pdf = x
        .clone()
        .powf_scalar(2.0)
        .mul_scalar(-0.5)
        .exp()
        .mul_scalar(1.0 / (2.0 * std::f64::consts::PI).sqrt());
    dy * (cdf + x * pdf)
}

pub fn silu_mul<B: Backend>(g: Tensor<B, 2>, u: Tensor<B, 2>) -> Tensor<B, 2> {
    activation::silu(g) * u
}

pub fn silu_mul_backward<B: Backend>(
    g: Tensor<B, 2>,
    u: Tensor<B, 2>,
    dy: Tensor<B, 2>,
) -> (Tensor<B, 2>, Tensor<B, 2>) {
    let s = activation::sigmoid(g.clone());
    let du = dy.clone() * g.clone() * s.clone();
    let one_minus = s.clone().neg().add_scalar(1.0);
    let dg = dy * u * s * (g * one_minus).add_scalar(1.0);
    (dg, du)
}

/// LayerNorm (biased variance) and `[n, 2]` statistics (mean, rstd).
pub fn layer_norm_with_stats<B: Backend>(
    x: Tensor<B, 2>,
    gamma: Tensor<B, 2>,
    beta: Tensor<B, 2>,
    eps: f64,
) -> (Tensor<B, 2>, Tensor<B, 2>) {
    let mean = x.clone().mean_dim(1);
    let centered = x - mean.clone();
    let var = centered.clone().powf_scalar(2.0).mean_dim(1);
    let rstd = var.add_scalar(eps).sqrt().recip();
    let y = centered * rstd.clone() * gamma + beta;
    (y, Tensor::cat(vec![mean, rstd], 1))
}

pub fn layer_norm<B: Backend>(
    x: Tensor<B, 2>,
    gamma: Tensor<B, 2>,
    beta: Tensor<B, 2>,
    eps: f64,
) -> Tensor<B, 2> {
    layer_norm_with_stats(x, gamma, beta, eps).0
}

pub fn layer_norm_backward<B: Backend>(
    x: Tensor<B, 2>,
    gamma: Tensor<B, 2>,
    stats: Tensor<B, 2>,
    dy: Tensor<B, 2>,
) -> (Tensor<B, 2>, Tensor<B, 2>, Tensor<B, 2>) {
    let [n, _] = stats.dims();
    let mean = stats.clone().slice([0..n, 0..1]);
    let rstd = stats.slice([0..n, 1..2]);
    let xhat = (x - mean) * rstd.clone();
    let g = dy.clone() * gamma;
    let mg = g.clone().mean_dim(1);
    let mgx = (g.clone() * xhat.clone()).mean_dim(1);
    let dx = (g - mg - xhat.clone() * mgx) * rstd;
    let dgamma = (dy.clone() * xhat).sum_dim(0);
    let dbeta = dy.sum_dim(0);
    (dx, dgamma, dbeta)
}

/// `x * rsqrt(mean(x^2) + eps) * w` (transformers' LlamaRMSNorm).
pub fn rms_norm<B: Backend>(x: Tensor<B, 2>, w: Tensor<B, 2>, eps: f64) -> Tensor<B, 2> {
    let ms = x.clone().powf_scalar(2.0).mean_dim(1);
    x * ms.add_scalar(eps).sqrt().recip() * w
}

pub fn rms_norm_backward<B: Backend>(
    x: Tensor<B, 2>,
    w: Tensor<B, 2>,
    eps: f64,
    dy: Tensor<B, 2>,
) -> (Tensor<B, 2>, Tensor<B, 2>) {
    let r = x
        .clone()
        .powf_scalar(2.0)
        .mean_dim(1)
        .add_scalar(eps)
        .sqrt()
        .recip();
    let xhat = x * r.clone();
    let g = dy.clone() * w;
    let m = (g.clone() * xhat.clone()).mean_dim(1);
    let dx = (g - xhat.clone() * m) * r;
    let dw = (dy * xhat).sum_dim(0);
    (dx, dw)
}

/// The dropout multiplier (0 or 1/(1-p)) of every element, from `key`.
pub fn dropout_mask(n: usize, p: f64, key: u64) -> Vec<f32> {
    let keep = 1.0 / (1.0 - p) as f32;
    (0..n as u64)
        .map(|i| {
            if rng::uniform(key, i) >= p as f32 {
                keep
            } else {
                0.0
            }
        })
        .collect()
}

pub fn dropout<B: Backend, const D: usize>(x: Tensor<B, D>, p: f64, key: u64) -> Tensor<B, D> {
    let dims = x.dims();
    let mask = dropout_mask(dims.iter().product(), p, key);
    let m = Tensor::<B, D>::from_data(TensorData::new(mask, dims), &x.device());
    x * m
}

/// Additive scores bias `[rows, 1, seq, keys]`: 0 where visible, -inf where not.
fn score_bias<B: Backend>(s: &AttnShape, device: &B::Device) -> Tensor<B, 4> {
    let (n, t) = (s.seq, s.keys());
    let mut v = vec![0f32; s.rows * n * t];
    for b in 0..s.rows {
        for i in 0..n {
            for j in s.prefix..t {
                let js = j - s.prefix;
                if s.key_mask[b * n + js] == 0 || (s.causal && js > i) {
                    v[(b * n + i) * t + j] = f32::NEG_INFINITY;
                }
            }
        }
    }
    Tensor::from_data(TensorData::new(v, [s.rows, 1, n, t]), device)
}

fn heads<B: Backend>(x: Tensor<B, 2>, rows: usize, seq: usize, h: usize, d: usize) -> Tensor<B, 4> {
    x.reshape([rows, seq, h, d]).swap_dims(1, 2)
}

fn with_prefix<B: Backend>(
    x: Tensor<B, 4>,
    p: Option<Tensor<B, 2>>,
    s: &AttnShape,
) -> Tensor<B, 4> {
    match p {
        Some(p) => {
            let (kv, d) = (s.kv_heads, s.head_dim);
            let p4 = p
                .reshape([1, s.prefix, kv, d])
                .swap_dims(1, 2)
                .expand([s.rows, kv, s.prefix, d]);
            Tensor::cat(vec![p4, x], 2)
        }
        None => x,
    }
}

fn repeat_kv<B: Backend>(x: Tensor<B, 4>, rep: usize) -> Tensor<B, 4> {
    if rep == 1 {
        return x;
    }
    let [r, kv, t, d] = x.dims();
    x.reshape([r, kv, 1, t, d])
        .expand([r, kv, rep, t, d])
        .reshape([r, kv * rep, t, d])
}

fn attention_dropout_mask<B: Backend>(s: &AttnShape, device: &B::Device) -> Option<Tensor<B, 4>> {
    if s.dropout <= 0.0 {
        return None;
    }
    let n = s.rows * s.heads * s.seq * s.keys();
    let m = dropout_mask(n, s.dropout as f64, s.dropout_key);
    Some(Tensor::from_data(
        TensorData::new(m, [s.rows, s.heads, s.seq, s.keys()]),
        device,
    ))
}

/// Attention output `[rows*seq, heads*head_dim]` and probabilities. With
/// `gate` (`[rows*seq, 1]`, UniPELT), the prefix's contribution is scaled by it.
pub fn attention<B: Backend>(
    q: Tensor<B, 2>,
    k: Tensor<B, 2>,
    v: Tensor<B, 2>,
    pk: Option<Tensor<B, 2>>,
    pv: Option<Tensor<B, 2>>,
    gate: Option<Tensor<B, 2>>,
    s: &AttnShape,
) -> (Tensor<B, 2>, Tensor<B, 4>) {
    let device = q.device();
    let (rows, n, h, kv, d) = (s.rows, s.seq, s.heads, s.kv_heads, s.head_dim);
    let t = s.keys();
    let q4 = heads(q, rows, n, h, d);
    let k4 = repeat_kv(with_prefix(heads(k, rows, n, kv, d), pk, s), h / kv);
    let v4 = repeat_kv(with_prefix(heads(v, rows, n, kv, d), pv, s), h / kv);
    let scores = q4
        .matmul(k4.swap_dims(2, 3))
        .mul_scalar((d as f64).powf(-0.5))
        + score_bias::<B>(s, &device);
    let probs = activation::softmax(scores, 3);
    let dropped = match attention_dropout_mask::<B>(s, &device) {
        Some(m) => probs.clone() * m,
        None => probs.clone(),
    };
    let out = match gate {
        None => dropped.matmul(v4),
        Some(g) => {
            let p = s.prefix;
            let pp = dropped.clone().slice([0..rows, 0..h, 0..n, 0..p]);
            let pr = dropped.slice([0..rows, 0..h, 0..n, p..t]);
            let vp = v4.clone().slice([0..rows, 0..h, 0..p, 0..d]);
            let vr = v4.slice([0..rows, 0..h, p..t, 0..d]);
            pp.matmul(vp) * g.reshape([rows, 1, n, 1]) + pr.matmul(vr)
        }
    };
    (out.swap_dims(1, 2).reshape([rows * n, h * d]), probs)
}

/// Gradients of [`attention`] (no gate): `(dq, dk, dv, dpk, dpv)`.
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
pub fn attention_backward<B: Backend>(
    q: Tensor<B, 2>,
    k: Tensor<B, 2>,
    v: Tensor<B, 2>,
    pk: Option<Tensor<B, 2>>,
    pv: Option<Tensor<B, 2>>,
    probs: Tensor<B, 4>,
    dout: Tensor<B, 2>,
    s: &AttnShape,
) -> (
    Tensor<B, 2>,
    Tensor<B, 2>,
    Tensor<B, 2>,
    Option<Tensor<B, 2>>,
    Option<Tensor<B, 2>>,
) {
    let device = q.device();
    let (rows, n, h, kv, d, p) = (s.rows, s.seq, s.heads, s.kv_heads, s.head_dim, s.prefix);
    let (t, rep) = (s.keys(), h / kv);
    let scale = (d as f64).powf(-0.5);
    let has_prefix = pk.is_some();
    let q4 = heads(q, rows, n, h, d);
    let k4 = repeat_kv(with_prefix(heads(k, rows, n, kv, d), pk, s), rep);
    let v4 = repeat_kv(with_prefix(heads(v, rows, n, kv, d), pv, s), rep);
    let do4 = heads(dout, rows, n, h, d);
    let mask = attention_dropout_mask::<B>(s, &device);
    let dropped = match &mask {
        Some(m) => probs.clone() * m.clone(),
        None => probs.clone(),
    };
    let dv_full = dropped.swap_dims(2, 3).matmul(do4.clone()); // [rows, h, t, d]
    let mut dp = do4.matmul(v4.swap_dims(2, 3)); // [rows, h, n, t]
    if let Some(m) = mask {
        dp = dp * m;
    }
    let sum = (dp.clone() * probs.clone()).sum_dim(3);
    let ds = (probs * (dp - sum)).mul_scalar(scale);
    let dq = ds
        .clone()
        .matmul(k4)
        .swap_dims(1, 2)
        .reshape([rows * n, h * d]);
    let dk_full = ds.swap_dims(2, 3).matmul(q4); // [rows, h, t, d]
    // Sum the query heads sharing a kv head, then split prefix from sequence.
    let fold = |x: Tensor<B, 4>| {
        x.reshape([rows, kv, rep, t, d])
            .sum_dim(2)
            .reshape([rows, kv, t, d])
    };
    let (dk_full, dv_full) = (fold(dk_full), fold(dv_full));
    let seq_part = |x: Tensor<B, 4>| {
        x.slice([0..rows, 0..kv, p..t, 0..d])
            .swap_dims(1, 2)
            .reshape([rows * n, kv * d])
    };
    let prefix_part = |x: Tensor<B, 4>| {
        x.slice([0..rows, 0..kv, 0..p, 0..d])
            .sum_dim(0)
            .reshape([kv, p, d])
            .swap_dims(0, 1)
            .reshape([p, kv * d])
    };
    let (dpk, dpv) = if has_prefix {
        (
            Some(prefix_part(dk_full.clone())),
            Some(prefix_part(dv_full.clone())),
        )
    } else {
        (None, None)
    };
    (dq, seq_part(dk_full), seq_part(dv_full), dpk, dpv)
}

/// Rotary embedding composed of slices and elementwise ops.
pub fn rope<B: Backend>(x: Tensor<B, 2>, s: &RopeShape, inverse: bool) -> Tensor<B, 2> {
    let device = x.device();
    let [n, _] = x.dims();
    let rows = n / s.seq;
    let (hd, half) = (s.head_dim, s.head_dim / 2);
    let (cos, sin) = super::cpu::rope::tables(s);
    let dup = |t: Vec<f32>| -> Vec<f32> {
        t.chunks(half)
            .flat_map(|c| c.iter().chain(c.iter()).copied().collect::<Vec<_>>())
            .collect()
    };
    let sign = if inverse { -1.0 } else { 1.0 };
    let cos = Tensor::<B, 4>::from_data(TensorData::new(dup(cos), [1, s.seq, 1, hd]), &device);
    let sin = Tensor::<B, 4>::from_data(TensorData::new(dup(sin), [1, s.seq, 1, hd]), &device)
        .mul_scalar(sign);
    let x4 = x.reshape([rows, s.seq, s.heads, hd]);
    let x1 = x4.clone().slice([0..rows, 0..s.seq, 0..s.heads, 0..half]);
    let x2 = x4.clone().slice([0..rows, 0..s.seq, 0..s.heads, half..hd]);
    let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
    (x4 * cos + rotated * sin).reshape([n, s.heads * hd])
}

/// Rotary embedding of `x: [n, heads*head_dim]` whose row `i` sits at
/// position `positions[i]` (tokens gathered out of their sequences, as CoDA
/// routes them), composed of elementwise ops.
pub fn rope_at<B: Backend>(
    x: Tensor<B, 2>,
    positions: &[usize],
    heads: usize,
    head_dim: usize,
    theta: f64,
) -> Tensor<B, 2> {
    let device = x.device();
    let [n, _] = x.dims();
    let half = head_dim / 2;
    let (cos, sin) = super::cpu::rope::tables_at(positions, head_dim, theta);
    let per_token = |t: &[f32]| -> Vec<f32> {
        t.chunks(half)
            .flat_map(|c| c.iter().chain(c.iter()).copied().collect::<Vec<_>>())
            .collect()
    };
    let cos =
        Tensor::<B, 3>::from_data(TensorData::new(per_token(&cos), [n, 1, head_dim]), &device);
    let sin =
        Tensor::<B, 3>::from_data(TensorData::new(per_token(&sin), [n, 1, head_dim]), &device);
    let x3 = x.reshape([n, heads, head_dim]);
    let x1 = x3.clone().slice([0..n, 0..heads, 0..half]);
    let x2 = x3.clone().slice([0..n, 0..heads, half..head_dim]);
    let rotated = Tensor::cat(vec![x2.neg(), x1], 2);
    (x3 * cos + rotated * sin).reshape([n, heads * head_dim])
}

/// Cross-entropy `[1]` and per-row log-sum-exp `[n, 1]`.
pub fn cross_entropy<B: Backend>(
    logits: Tensor<B, 2>,
    targets: &Arc<Vec<i64>>,
    weights: &Arc<Vec<f32>>,
) -> (Tensor<B, 1>, Tensor<B, 2>) {
    let device = logits.device();
    let n = targets.len();
    let count: f32 = weights.iter().sum::<f32>().max(1.0);
    let lse = {
        // max-shifted for stability: lse = m + log(sum(exp(x - m)))
        let m = logits.clone().max_dim(1);
        (logits.clone() - m.clone()).exp().sum_dim(1).log() + m
    };
    let idx = Tensor::<B, 2, Int>::from_data(
        TensorData::new(
            targets
                .iter()
                .map(|t| t.max(&0))
                .copied()
                .collect::<Vec<_>>(),
            [n, 1],
        ),
        &device,
    );
    let w = Tensor::<B, 2>::from_data(TensorData::new(weights.to_vec(), [n, 1]), &device);
    let picked = logits.gather(1, idx);
    let loss = ((lse.clone() - picked) * w).sum().div_scalar(count);
    (loss, lse)
}

pub fn cross_entropy_backward<B: Backend>(
    logits: Tensor<B, 2>,
    lse: Tensor<B, 2>,
    targets: &Arc<Vec<i64>>,
    weights: &Arc<Vec<f32>>,
    dloss: Tensor<B, 1>,
) -> Tensor<B, 2> {
    let device = logits.device();
    let [n, c] = logits.dims();
    let count: f32 = weights.iter().sum::<f32>().max(1.0);
    let scale: Vec<f32> = weights.iter().map(|w| w / count).collect();
    let scale =
        Tensor::<B, 2>::from_data(TensorData::new(scale, [n, 1]), &device) * dloss.reshape([1, 1]);
    let mut onehot = vec![0f32; n * c];
    for (r, &t) in targets.iter().enumerate() {
        onehot[r * c + (t.max(0) as usize).min(c - 1)] = 1.0;
    }
    let onehot = Tensor::<B, 2>::from_data(TensorData::new(onehot, [n, c]), &device);
    ((logits - lse).exp() - onehot) * scale
}

pub fn linear<B: Backend>(
    x: Tensor<B, 2>,
    w: Tensor<B, 2>,
    b: Option<Tensor<B, 2>>,
) -> Tensor<B, 2> {
    let y = x.matmul(w.transpose());
    match b {
        Some(b) => y + b,
        None => y,
    }
}

/// The packed weight expanded to a dense `[out, in]` tensor on `device`.
pub fn packed_dense<B: Backend>(w: &PackedMatrix, device: &B::Device) -> Tensor<B, 2> {
    let d = w.to_dense();
    Tensor::from_data(TensorData::new(d.data, [w.rows(), w.cols()]), device)
}

/// `x @ w.T + b` with the packed `w` expanded first.
pub fn packed_linear<B: Backend>(
    x: Tensor<B, 2>,
    w: &PackedMatrix,
    b: Option<Tensor<B, 2>>,
) -> Tensor<B, 2> {
    let dense = packed_dense::<B>(w, &x.device());
    linear(x, dense, b)
}

/// `dy @ w` with the packed `w` expanded first.
pub fn packed_linear_dx<B: Backend>(w: &PackedMatrix, dy: Tensor<B, 2>) -> Tensor<B, 2> {
    let dense = packed_dense::<B>(w, &dy.device());
    dy.matmul(dense)
}

#[allow(clippy::type_complexity)]
pub fn linear_backward<B: Backend>(
    x: Option<Tensor<B, 2>>,
    w: Tensor<B, 2>,
    dy: Tensor<B, 2>,
    need: [bool; 3],
) -> (
    Option<Tensor<B, 2>>,
    Option<Tensor<B, 2>>,
    Option<Tensor<B, 2>>,
) {
    let dx = need[0].then(|| dy.clone().matmul(w));
    let dw = match (need[1], x) {
        (true, Some(x)) => Some(dy.clone().transpose().matmul(x)),
        _ => None,
    };
    let db = need[2].then(|| dy.sum_dim(0));
    (dx, dw, db)
}

pub fn scale_cols<B: Backend>(x: Tensor<B, 2>, l: Tensor<B, 2>) -> Tensor<B, 2> {
    x * l
}

pub fn dora_mix<B: Backend>(
    y: Tensor<B, 2>,
    base: Tensor<B, 2>,
    delta: Tensor<B, 2>,
    mag: Tensor<B, 2>,
) -> Tensor<B, 2> {
    y + base * (mag.clone().sub_scalar(1.0)) + delta * mag
}

/// LoRA's expand-and-add: `y + scale * u @ b.T` (`u = x A.T: [n, r]`, `b: [out, r]`).
pub fn lora_expand<B: Backend>(
    y: Tensor<B, 2>,
    u: Tensor<B, 2>,
    b: Tensor<B, 2>,
    scale: f64,
) -> Tensor<B, 2> {
    y + u.matmul(b.transpose()).mul_scalar(scale)
}

/// Gradients of [`lora_expand`]: `du` (needs `b`) and `db` (needs `u`),
/// each computed only when its operand is given.
pub fn lora_expand_backward<B: Backend>(
    u: Option<Tensor<B, 2>>,
    b: Option<Tensor<B, 2>>,
    dy: Tensor<B, 2>,
    scale: f64,
) -> (Option<Tensor<B, 2>>, Option<Tensor<B, 2>>) {
    let du = b.map(|b| dy.clone().matmul(b).mul_scalar(scale));
    let db = u.map(|u| dy.transpose().matmul(u).mul_scalar(scale));
    (du, db)
}

/// Batched multi-adapter LoRA as a loop over adapters: the rows of adapter
/// `k` (`ids[row] == k`) get `scales[k] * (x A_k.T) B_k.T` added, with
/// `A_k = a[k*r..(k+1)*r]` and `B_k = b[k*out..(k+1)*out]` (see `cube::sgmv`).
pub fn sgmv<B: Backend>(
    y: Tensor<B, 2>,
    x: Tensor<B, 2>,
    ids: &[u32],
    a: Tensor<B, 2>,
    b: Tensor<B, 2>,
    scales: &[f32],
) -> Tensor<B, 2> {
    let [_, d] = x.dims();
    let [_, out] = y.dims();
    let r = b.dims()[1];
    let device = y.device();
    let mut y = y;
    for (k, &s) in scales.iter().enumerate() {
        let rows: Vec<i64> = (0..ids.len())
            .filter(|&i| ids[i] as usize == k)
            .map(|i| i as i64)
            .collect();
        if rows.is_empty() {
            continue;
        }
        let idx =
            Tensor::<B, 1, Int>::from_data(TensorData::new(rows.clone(), [rows.len()]), &device);
        let ak = a.clone().slice([k * r..(k + 1) * r, 0..d]);
        let bk = b.clone().slice([k * out..(k + 1) * out, 0..r]);
        let delta = x
            .clone()
            .select(0, idx.clone())
            .matmul(ak.transpose())
            .matmul(bk.transpose())
            .mul_scalar(s as f64);
        y = y.select_assign(0, idx, delta, burn::tensor::IndexingUpdateOp::Add);
    }
    y
}

/// A bottleneck adapter's activation, as PyTorch defines it.
pub fn activation<B: Backend>(act: Activation, z: Tensor<B, 2>) -> Tensor<B, 2> {
    match act {
        Activation::Relu => activation::relu(z),
        Activation::Gelu => gelu(z),
        Activation::Silu => activation::silu(z),
        Activation::Tanh => z.tanh(),
    }
}

/// `dh ⊙ act'(z)` (ReLU's derivative at 0 is 0, as in PyTorch).
pub fn activation_backward<B: Backend>(
    act: Activation,
    z: Tensor<B, 2>,
    dh: Tensor<B, 2>,
) -> Tensor<B, 2> {
    match act {
        Activation::Relu => dh.mask_fill(z.lower_equal_elem(0.0), 0.0),
        Activation::Gelu => gelu_backward(z, dh),
        Activation::Silu => {
            let s = activation::sigmoid(z.clone());
            let one_minus = s.clone().neg().add_scalar(1.0);
            dh * s * (z * one_minus).add_scalar(1.0)
        }
        Activation::Tanh => dh * z.tanh().powf_scalar(2.0).neg().add_scalar(1.0),
    }
}

/// The bottleneck adapter added onto `res` (see `kernels::bottleneck`), and
/// its pre-activation `z = x W_downᵀ + b_down`.
pub fn adapter<B: Backend>(
    res: Tensor<B, 2>,
    x: Tensor<B, 2>,
    w: AdapterParams<Tensor<B, 2>>,
    f: AdapterFn,
) -> (Tensor<B, 2>, Tensor<B, 2>) {
    let z = linear(x, w.down, Some(w.down_bias));
    let u = linear(activation(f.act, z.clone()), w.up, Some(w.up_bias));
    (res + u.mul_scalar(f.scale), z)
}

/// The gradients of [`adapter`] that `need` asks for, by the chain rule
/// written out with plain burn ops.
pub fn adapter_backward<B: Backend>(
    x: Tensor<B, 2>,
    z: Tensor<B, 2>,
    w: AdapterParams<Tensor<B, 2>>,
    dy: Tensor<B, 2>,
    f: AdapterFn,
    need: AdapterNeed,
) -> AdapterGrads<Tensor<B, 2>> {
    let du = dy.mul_scalar(f.scale);
    let h = activation(f.act, z.clone());
    let dz = activation_backward(f.act, z, du.clone().matmul(w.up));
    AdapterGrads {
        x: need[0].then(|| dz.clone().matmul(w.down)),
        params: AdapterParams {
            down: need[1].then(|| dz.clone().transpose().matmul(x)),
            down_bias: need[2].then(|| dz.sum_dim(0)),
            up: need[3].then(|| du.clone().transpose().matmul(h)),
            up_bias: need[4].then(|| du.sum_dim(0)),
        },
    }
}
