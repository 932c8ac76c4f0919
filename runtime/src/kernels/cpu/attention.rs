//! Scaled dot-product attention on `[rows*seq, heads*head_dim]` activations,
//! forward and backward, without materializing per-head copies: each
//! (sequence, head) reads its slices in place. Grouped-query heads, learned
//! key/value prefixes, key padding, causal masking and attention dropout
//! (mask regenerated in backward from its key).

use super::blas::gemm_st;
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
}

/// `[rows*seq, heads*head_dim]` strided views: where head `h` of sequence `b` starts.
fn head_at(s: &AttnShape, b: usize, h: usize, width: usize) -> usize {
    b * s.seq * width + h * s.head_dim
}

/// Masks invisible keys of row `i` and turns its scores into probabilities.
#[inline(always)]
fn softmax_row(s: &AttnShape, b: usize, i: usize, row: &mut [f32]) {
    let mut max = f32::NEG_INFINITY;
    for (j, v) in row.iter_mut().enumerate() {
        if s.visible(b, i, j) {
            max = max.max(*v);
        } else {
            *v = f32::NEG_INFINITY;
        }
    }
    let mut sum = 0f32;
    for v in row.iter_mut() {
        *v = if *v == f32::NEG_INFINITY {
            0.0
        } else {
            (*v - max).exp()
        };
        sum += *v;
    }
    let inv = if sum > 0.0 { 1.0 / sum } else { 0.0 };
    row.iter_mut().for_each(|v| *v *= inv);
}

/// Dropout factors (0 or 1/(1-p)) of every probability of head `h` of
/// sequence `b`, `[seq, keys]`, or `None` without dropout.
fn keep_factors(s: &AttnShape, b: usize, h: usize) -> Option<Vec<f32>> {
    if s.dropout <= 0.0 {
        return None;
    }
    let n = s.seq * s.keys();
    let mut u = vec![0f32; n];
    rng::uniforms(s.dropout_key, s.drop_index(b, h, 0, 0), &mut u);
    let (p, keep) = (s.dropout, 1.0 / (1.0 - s.dropout));
    u.iter_mut()
        .for_each(|v| *v = if *v >= p { keep } else { 0.0 });
    Some(u)
}

/// The probabilities with dropout applied (a copy), or `None` without dropout.
fn dropped(p: &[f32], keep: Option<&[f32]>) -> Option<Vec<f32>> {
    keep.map(|k| p.iter().zip(k).map(|(a, b)| a * b).collect())
}

simd_fn! {
    fn softmax_rows(s: &AttnShape, b: usize, p: &mut [f32]) {
        let t = s.keys();
        for (i, row) in p.chunks_mut(t).enumerate() {
            softmax_row(s, b, i, row);
        }
    }
}

/// One (sequence, head): probabilities `p` (`[seq, keys]`, before dropout) and
/// the output rows `[seq, head_dim]`, with BLAS for the products.
#[allow(clippy::too_many_arguments)]
fn forward_task(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    pk: &[f32],
    pv: &[f32],
    s: &AttnShape,
    task: usize,
    p: &mut [f32],
) -> Vec<f32> {
    let (hd, t, n, pre) = (s.head_dim, s.keys(), s.seq, s.prefix);
    let (qw, kw) = (s.heads * hd, s.kv_heads * hd);
    let scale = (hd as f32).powf(-0.5);
    let (b, h) = (task / s.heads, task % s.heads);
    let g = h / s.rep();
    let qa = &q[head_at(s, b, h, qw)..];
    let ka = &k[head_at(s, b, g, kw)..];
    let va = &v[head_at(s, b, g, kw)..];
    // scores = scale * Q Kᵀ: prefix columns, then the sequence's.
    if pre > 0 {
        gemm_st(
            false,
            true,
            n,
            pre,
            hd,
            scale,
            qa,
            qw,
            &pk[g * hd..],
            kw,
            0.0,
            p,
            t,
        );
    }
    gemm_st(
        false,
        true,
        n,
        n,
        hd,
        scale,
        qa,
        qw,
        ka,
        kw,
        0.0,
        &mut p[pre..],
        t,
    );
    softmax_rows(s, b, p);
    let keep = keep_factors(s, b, h);
    let d = dropped(p, keep.as_deref());
    let pd: &[f32] = d.as_deref().unwrap_or(p);
    let mut out = vec![0f32; n * hd];
    let mut beta = 0.0;
    if pre > 0 {
        gemm_st(
            false,
            false,
            n,
            hd,
            pre,
            1.0,
            pd,
            t,
            &pv[g * hd..],
            kw,
            0.0,
            &mut out,
            hd,
        );
        beta = 1.0;
    }
    gemm_st(
        false,
        false,
        n,
        hd,
        n,
        1.0,
        &pd[pre..],
        t,
        va,
        kw,
        beta,
        &mut out,
        hd,
    );
    out
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

/// One (sequence, kv group): gradients of its query heads, its key/value rows
/// and its share of the prefix's, with BLAS for the products.
#[allow(clippy::too_many_arguments)]
fn backward_task(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    pk: &[f32],
    pv: &[f32],
    probs: &[f32],
    dout: &[f32],
    s: &AttnShape,
    task: usize,
) -> GroupGrads {
    let (hd, t, n, rep, pre) = (s.head_dim, s.keys(), s.seq, s.rep(), s.prefix);
    let (qw, kw) = (s.heads * hd, s.kv_heads * hd);
    let scale = (hd as f32).powf(-0.5);
    let (b, g) = (task / s.kv_heads, task % s.kv_heads);
    let mut gg = GroupGrads {
        dq: vec![0f32; rep * n * hd],
        dk: vec![0f32; n * hd],
        dv: vec![0f32; n * hd],
        dpk: vec![0f32; pre * hd],
        dpv: vec![0f32; pre * hd],
    };
    let ka = &k[head_at(s, b, g, kw)..];
    let va = &v[head_at(s, b, g, kw)..];
    let mut dp = vec![0f32; n * t];
    for r in 0..rep {
        let h = g * rep + r;
        let p = &probs[(b * s.heads + h) * n * t..(b * s.heads + h + 1) * n * t];
        let doa = &dout[head_at(s, b, h, qw)..];
        let qa = &q[head_at(s, b, h, qw)..];
        let keep = keep_factors(s, b, h);
        let d = dropped(p, keep.as_deref());
        let pd: &[f32] = d.as_deref().unwrap_or(p);
        // dV += P_droppedᵀ dO (prefix rows, then the sequence's).
        if pre > 0 {
            gemm_st(
                true,
                false,
                pre,
                hd,
                n,
                1.0,
                pd,
                t,
                doa,
                qw,
                1.0,
                &mut gg.dpv,
                hd,
            );
        }
        gemm_st(
            true,
            false,
            n,
            hd,
            n,
            1.0,
            &pd[pre..],
            t,
            doa,
            qw,
            1.0,
            &mut gg.dv,
            hd,
        );
        // dP = dO Vᵀ (dropout's factor applied), then dS = P (dP - rowsum(P dP)) * scale.
        if pre > 0 {
            gemm_st(
                false,
                true,
                n,
                pre,
                hd,
                1.0,
                doa,
                qw,
                &pv[g * hd..],
                kw,
                0.0,
                &mut dp,
                t,
            );
        }
        gemm_st(
            false,
            true,
            n,
            n,
            hd,
            1.0,
            doa,
            qw,
            va,
            kw,
            0.0,
            &mut dp[pre..],
            t,
        );
        if let Some(k) = &keep {
            dp.iter_mut().zip(k).for_each(|(d, f)| *d *= f);
        }
        softmax_backward_rows(s, p, &mut dp, scale);
        // dQ = dS K;  dK += dSᵀ Q.
        let dq = &mut gg.dq[r * n * hd..(r + 1) * n * hd];
        let mut beta = 0.0;
        if pre > 0 {
            gemm_st(
                false,
                false,
                n,
                hd,
                pre,
                1.0,
                &dp,
                t,
                &pk[g * hd..],
                kw,
                0.0,
                dq,
                hd,
            );
            gemm_st(
                true,
                false,
                pre,
                hd,
                n,
                1.0,
                &dp,
                t,
                qa,
                qw,
                1.0,
                &mut gg.dpk,
                hd,
            );
            beta = 1.0;
        }
        gemm_st(
            false,
            false,
            n,
            hd,
            n,
            1.0,
            &dp[pre..],
            t,
            ka,
            kw,
            beta,
            dq,
            hd,
        );
        gemm_st(
            true,
            false,
            n,
            hd,
            n,
            1.0,
            &dp[pre..],
            t,
            qa,
            qw,
            1.0,
            &mut gg.dk,
            hd,
        );
    }
    gg
}

simd_fn! {
    /// `dp <- p * (dp - rowsum(p * dp)) * scale`, row by row (dropout's
    /// factors already applied to `dp`).
    fn softmax_backward_rows(s: &AttnShape, p: &[f32], dp: &mut [f32], scale: f32) {
        let t = s.keys();
        for i in 0..s.seq {
            let (pr, dr) = (&p[i * t..(i + 1) * t], &mut dp[i * t..(i + 1) * t]);
            let mut sum = 0f32;
            for j in 0..t {
                sum += pr[j] * dr[j];
            }
            for j in 0..t {
                dr[j] = pr[j] * (dr[j] - sum) * scale;
            }
        }
    }
}

/// Gradients of attention's inputs: `(dq, dk, dv, dpk, dpv)`.
pub type AttnGrads = (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>);

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
) -> AttnGrads {
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
