//! LayerNorm and RMSNorm over rows of `d`, forward and backward, each row
//! compiled for AVX2 where available. Row statistics accumulate in f64.

use super::simd_fn;
use rayon::prelude::*;

simd_fn! {
    fn layer_norm_row(x: &[f32], gamma: &[f32], beta: &[f32], eps: f64, y: &mut [f32], st: &mut [f32]) {
        let d = x.len();
        let mean = x.iter().map(|&v| v as f64).sum::<f64>() / d as f64;
        let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / d as f64;
        let (m, r) = (mean as f32, (1.0 / (var + eps).sqrt()) as f32);
        for i in 0..d {
            y[i] = (x[i] - m) * r * gamma[i] + beta[i];
        }
        st[0] = m;
        st[1] = r;
    }
}

simd_fn! {
    fn layer_norm_backward_row(x: &[f32], gamma: &[f32], st: &[f32], dy: &[f32], dx: &mut [f32], dg: &mut [f32], db: &mut [f32]) {
        let d = x.len();
        let (m, r) = (st[0], st[1]);
        let mut sum_g = 0f64;
        let mut sum_gx = 0f64;
        for i in 0..d {
            let xhat = (x[i] - m) * r;
            let g = dy[i] * gamma[i];
            sum_g += g as f64;
            sum_gx += (g * xhat) as f64;
            dg[i] += dy[i] * xhat;
            db[i] += dy[i];
        }
        let (mg, mgx) = ((sum_g / d as f64) as f32, (sum_gx / d as f64) as f32);
        for i in 0..d {
            let xhat = (x[i] - m) * r;
            dx[i] = r * (dy[i] * gamma[i] - mg - xhat * mgx);
        }
    }
}

simd_fn! {
    fn rms_norm_row(x: &[f32], w: &[f32], eps: f64, y: &mut [f32]) {
        let r = rstd_of(x, eps);
        for i in 0..x.len() {
            y[i] = x[i] * r * w[i];
        }
    }
}

simd_fn! {
    fn rms_norm_backward_row(x: &[f32], w: &[f32], eps: f64, dy: &[f32], dx: &mut [f32], dw: &mut [f32]) {
        let d = x.len();
        let r = rstd_of(x, eps);
        let mut sum = 0f64;
        for i in 0..d {
            let xhat = x[i] * r;
            sum += (dy[i] * w[i] * xhat) as f64;
            dw[i] += dy[i] * xhat;
        }
        let m = (sum / d as f64) as f32;
        for i in 0..d {
            dx[i] = r * (dy[i] * w[i] - x[i] * r * m);
        }
    }
}

#[inline(always)]
fn rstd_of(x: &[f32], eps: f64) -> f32 {
    let ms = x.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>() / x.len() as f64;
    (1.0 / (ms + eps).sqrt()) as f32
}

fn add_into(mut a: Vec<f32>, b: Vec<f32>) -> Vec<f32> {
    a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
    a
}

/// `y = (x - mean) * rstd * gamma + beta`; `stats` gets (mean, rstd) per row.
pub fn layer_norm(
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f64,
    d: usize,
    y: &mut [f32],
    stats: &mut [f32],
) {
    y.par_chunks_mut(d)
        .zip(x.par_chunks(d))
        .zip(stats.par_chunks_mut(2))
        .for_each(|((y, x), st)| layer_norm_row(x, gamma, beta, eps, y, st));
}

/// Rows per block whose weight-gradient partials are summed together; blocks
/// are then summed in order, so results do not depend on thread scheduling.
const BLOCK: usize = 64;

/// Gradients of LayerNorm: `dx`, and `(dgamma, dbeta)` summed over rows.
pub fn layer_norm_backward(
    x: &[f32],
    gamma: &[f32],
    stats: &[f32],
    dy: &[f32],
    d: usize,
    dx: &mut [f32],
) -> (Vec<f32>, Vec<f32>) {
    let parts: Vec<(Vec<f32>, Vec<f32>)> = dx
        .par_chunks_mut(d * BLOCK)
        .zip(
            x.par_chunks(d * BLOCK)
                .zip(dy.par_chunks(d * BLOCK))
                .zip(stats.par_chunks(2 * BLOCK)),
        )
        .map(|(dx, ((x, dy), st))| {
            let (mut dg, mut db) = (vec![0f32; d], vec![0f32; d]);
            for (r, dxr) in dx.chunks_mut(d).enumerate() {
                let rows = r * d..(r + 1) * d;
                layer_norm_backward_row(
                    &x[rows.clone()],
                    gamma,
                    &st[2 * r..2 * r + 2],
                    &dy[rows],
                    dxr,
                    &mut dg,
                    &mut db,
                );
            }
            (dg, db)
        })
        .collect();
    parts
        .into_iter()
        .fold((vec![0f32; d], vec![0f32; d]), |(a, b), (c, e)| {
            (add_into(a, c), add_into(b, e))
        })
}

/// `y = x * rstd * w`, LLaMA's RMSNorm.
pub fn rms_norm(x: &[f32], w: &[f32], eps: f64, d: usize, y: &mut [f32]) {
    y.par_chunks_mut(d)
        .zip(x.par_chunks(d))
        .for_each(|(y, x)| rms_norm_row(x, w, eps, y));
}

/// Gradients of RMSNorm: `dx`, and `dw` summed over rows.
pub fn rms_norm_backward(
    x: &[f32],
    w: &[f32],
    eps: f64,
    dy: &[f32],
    d: usize,
    dx: &mut [f32],
) -> Vec<f32> {
    let parts: Vec<Vec<f32>> = dx
        .par_chunks_mut(d * BLOCK)
        .zip(x.par_chunks(d * BLOCK).zip(dy.par_chunks(d * BLOCK)))
        .map(|(dx, (x, dy))| {
            let mut dw = vec![0f32; d];
            for (r, dxr) in dx.chunks_mut(d).enumerate() {
                let rows = r * d..(r + 1) * d;
                rms_norm_backward_row(&x[rows.clone()], w, eps, &dy[rows], dxr, &mut dw);
            }
            dw
        })
        .collect();
    parts.into_iter().fold(vec![0f32; d], add_into)
}
