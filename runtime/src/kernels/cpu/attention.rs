//! Scaled dot-product attention on `[rows*seq, heads*head_dim]` activations,
//! forward and backward, without materializing per-head copies: each
//! (sequence, head) reads its slices in place. Grouped-query heads, learned
//! key/value prefixes, key padding, causal masking and attention dropout
//! (mask regenerated in backward from its key).

use super::simd_fn;
use crate::rng;
use rayon::prelude::*;

/// Shapes and masking of one attention call.
#[derive(Debug, Clone)]
pub struct AttnShape {
    pub rows: usize,
    pub seq: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// Learned prefix positions (keys before the sequence, always visible).
    pub prefix: usize,
    pub causal: bool,
    /// `[rows * seq]`, 1 where a key may be attended.
    pub key_mask: std::sync::Arc<Vec<u8>>,
    pub dropout: f32,
    pub dropout_key: u64,
}

impl AttnShape {
    pub fn keys(&self) -> usize {
        self.prefix + self.seq
    }

    fn rep(&self) -> usize {
        self.heads / self.kv_heads
    }

    fn visible(&self, b: usize, i: usize, j: usize) -> bool {
        if j < self.prefix {
            return true;
        }
        let js = j - self.prefix;
        self.key_mask[b * self.seq + js] == 1 && !(self.causal && js > i)
    }

    fn drop_index(&self, b: usize, h: usize, i: usize, j: usize) -> u64 {
        (((b * self.heads + h) * self.seq + i) * self.keys() + j) as u64
    }

    /// Dropout factor of one probability (1 when dropout is off).
    fn keep(&self, b: usize, h: usize, i: usize, j: usize) -> f32 {
        if self.dropout <= 0.0 {
            return 1.0;
        }
        if rng::uniform(self.dropout_key, self.drop_index(b, h, i, j)) >= self.dropout {
            1.0 / (1.0 - self.dropout)
        } else {
            0.0
        }
    }
}

#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

#[inline(always)]
fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    for (o, v) in y.iter_mut().zip(x) {
        *o += alpha * *v;
    }
}

/// Key/value vector `j` (prefix first) of kv head `g` in sequence `b`.
#[inline(always)]
fn kv_row<'a>(
    s: &AttnShape,
    seq: &'a [f32],
    prefix: &'a [f32],
    b: usize,
    g: usize,
    j: usize,
) -> &'a [f32] {
    let (hd, w) = (s.head_dim, s.kv_heads * s.head_dim);
    if j < s.prefix {
        &prefix[j * w + g * hd..j * w + (g + 1) * hd]
    } else {
        let r = b * s.seq + (j - s.prefix);
        &seq[r * w + g * hd..r * w + (g + 1) * hd]
    }
}

simd_fn! {
    /// One (sequence, head): probabilities `p` (`[seq, keys]`) and the output
    /// rows `[seq, head_dim]`.
    fn forward_task(q: &[f32], k: &[f32], v: &[f32], pk: &[f32], pv: &[f32], s: &AttnShape, task: usize, p: &mut [f32]) -> Vec<f32> {
        let (hd, t, n) = (s.head_dim, s.keys(), s.seq);
        let scale = (hd as f32).powf(-0.5);
        let qw = s.heads * hd;
        let (b, h) = (task / s.heads, task % s.heads);
        let g = h / s.rep();
        let mut out = vec![0f32; n * hd];
        for i in 0..n {
            let qi = &q[(b * n + i) * qw + h * hd..(b * n + i) * qw + (h + 1) * hd];
            let row = &mut p[i * t..(i + 1) * t];
            let mut max = f32::NEG_INFINITY;
            for (j, pj) in row.iter_mut().enumerate() {
                *pj = if s.visible(b, i, j) {
                    let sc = dot(qi, kv_row(s, k, pk, b, g, j)) * scale;
                    max = max.max(sc);
                    sc
                } else {
                    f32::NEG_INFINITY
                };
            }
            let mut sum = 0f32;
            for pj in row.iter_mut() {
                *pj = if *pj == f32::NEG_INFINITY { 0.0 } else { (*pj - max).exp() };
                sum += *pj;
            }
            let inv = if sum > 0.0 { 1.0 / sum } else { 0.0 };
            let oi = &mut out[i * hd..(i + 1) * hd];
            for (j, pj) in row.iter_mut().enumerate() {
                *pj *= inv;
                if *pj != 0.0 {
                    axpy(*pj * s.keep(b, h, i, j), kv_row(s, v, pv, b, g, j), oi);
                }
            }
        }
        out
    }
}

/// Forward. Returns the output `[rows*seq, heads*head_dim]` and the softmax
/// probabilities `[rows, heads, seq, keys]` (before dropout) for backward.
pub fn forward(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    pk: &[f32],
    pv: &[f32],
    s: &AttnShape,
) -> (Vec<f32>, Vec<f32>) {
    let (hd, t, n) = (s.head_dim, s.keys(), s.seq);
    let qw = s.heads * hd;
    let mut probs = vec![0f32; s.rows * s.heads * n * t];
    let outs: Vec<Vec<f32>> = probs
        .par_chunks_mut(n * t)
        .enumerate()
        .map(|(task, p)| forward_task(q, k, v, pk, pv, s, task, p))
        .collect();
    let mut o = vec![0f32; s.rows * n * qw];
    for (task, part) in outs.into_iter().enumerate() {
        let (b, h) = (task / s.heads, task % s.heads);
        for i in 0..n {
            o[(b * n + i) * qw + h * hd..(b * n + i) * qw + (h + 1) * hd]
                .copy_from_slice(&part[i * hd..(i + 1) * hd]);
        }
    }
    (o, probs)
}

/// Gradients of one (sequence, kv group): query rows of its heads, key/value
/// rows of the sequence, and prefix key/value rows.
struct GroupGrads {
    dq: Vec<f32>,
    dk: Vec<f32>,
    dv: Vec<f32>,
    dpk: Vec<f32>,
    dpv: Vec<f32>,
}

simd_fn! {
    /// One (sequence, kv group): gradients of its query heads, its key/value
    /// rows and its share of the prefix's.
    fn backward_task(q: &[f32], k: &[f32], v: &[f32], pk: &[f32], pv: &[f32], probs: &[f32], dout: &[f32], s: &AttnShape, task: usize) -> GroupGrads {
        let (hd, t, n, rep) = (s.head_dim, s.keys(), s.seq, s.rep());
        let scale = (hd as f32).powf(-0.5);
        let qw = s.heads * hd;
    let (b, g) = (task / s.kv_heads, task % s.kv_heads);
    let mut gg = GroupGrads {
        dq: vec![0f32; rep * n * hd],
        dk: vec![0f32; n * hd],
        dv: vec![0f32; n * hd],
        dpk: vec![0f32; s.prefix * hd],
        dpv: vec![0f32; s.prefix * hd],
    };
    let mut dp = vec![0f32; t];
    for r in 0..rep {
        let h = g * rep + r;
        let p_head = &probs[(b * s.heads + h) * n * t..(b * s.heads + h + 1) * n * t];
        for i in 0..n {
            let p = &p_head[i * t..(i + 1) * t];
            let row = (b * n + i) * qw + h * hd;
            let doi = &dout[row..row + hd];
            let qi = &q[row..row + hd];
            let mut sum = 0f32;
            for j in 0..t {
                if p[j] == 0.0 {
                    dp[j] = 0.0;
                    continue;
                }
                let keep = s.keep(b, h, i, j);
                let vj = kv_row(s, v, pv, b, g, j);
                // dV_j += (dropped p) dO_i
                let dvj = if j < s.prefix {
                    &mut gg.dpv[j * hd..(j + 1) * hd]
                } else {
                    &mut gg.dv[(j - s.prefix) * hd..(j - s.prefix + 1) * hd]
                };
                axpy(p[j] * keep, doi, dvj);
                dp[j] = dot(doi, vj) * keep;
                sum += p[j] * dp[j];
            }
            let dqi = &mut gg.dq[(r * n + i) * hd..(r * n + i + 1) * hd];
            for j in 0..t {
                if p[j] == 0.0 {
                    continue;
                }
                let ds = p[j] * (dp[j] - sum) * scale;
                axpy(ds, kv_row(s, k, pk, b, g, j), dqi);
                let dkj = if j < s.prefix {
                    &mut gg.dpk[j * hd..(j + 1) * hd]
                } else {
                    &mut gg.dk[(j - s.prefix) * hd..(j - s.prefix + 1) * hd]
                };
                axpy(ds, qi, dkj);
            }
        }
    }
    gg
    }
}

/// Backward: `(dq, dk, dv, dpk, dpv)` for upstream gradient `dout`.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    pk: &[f32],
    pv: &[f32],
    probs: &[f32],
    dout: &[f32],
    s: &AttnShape,
) -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) {
    let (hd, n, rep) = (s.head_dim, s.seq, s.rep());
    let qw = s.heads * hd;
    let groups: Vec<GroupGrads> = (0..s.rows * s.kv_heads)
        .into_par_iter()
        .map(|task| backward_task(q, k, v, pk, pv, probs, dout, s, task))
        .collect();
    let kw = s.kv_heads * hd;
    let mut dq = vec![0f32; s.rows * n * qw];
    let mut dk = vec![0f32; s.rows * n * kw];
    let mut dv = vec![0f32; s.rows * n * kw];
    let mut dpk = vec![0f32; s.prefix * kw];
    let mut dpv = vec![0f32; s.prefix * kw];
    for (task, gg) in groups.into_iter().enumerate() {
        let (b, g) = (task / s.kv_heads, task % s.kv_heads);
        for r in 0..rep {
            let h = g * rep + r;
            for i in 0..n {
                dq[(b * n + i) * qw + h * hd..(b * n + i) * qw + (h + 1) * hd]
                    .copy_from_slice(&gg.dq[(r * n + i) * hd..(r * n + i + 1) * hd]);
            }
        }
        for i in 0..n {
            let at = (b * n + i) * kw + g * hd;
            dk[at..at + hd].copy_from_slice(&gg.dk[i * hd..(i + 1) * hd]);
            dv[at..at + hd].copy_from_slice(&gg.dv[i * hd..(i + 1) * hd]);
        }
        for j in 0..s.prefix {
            let at = j * kw + g * hd;
            dpk[at..at + hd]
                .iter_mut()
                .zip(&gg.dpk[j * hd..(j + 1) * hd])
                .for_each(|(a, b)| *a += b);
            dpv[at..at + hd]
                .iter_mut()
                .zip(&gg.dpv[j * hd..(j + 1) * hd])
                .for_each(|(a, b)| *a += b);
        }
    }
    (dq, dk, dv, dpk, dpv)
}
