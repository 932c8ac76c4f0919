//! Row-broadcast epilogues of a linear layer: (IA)³'s per-column scale and
//! DoRA's magnitude mix, forward and backward, rows in parallel. Column sums
//! for the vector gradients go through fixed row blocks summed in order, so
//! they do not depend on thread scheduling.

use super::simd_fn;
use rayon::prelude::*;

const BLOCK: usize = 64;

simd_fn! {
    fn scale_row(x: &[f32], l: &[f32], y: &mut [f32]) {
        for i in 0..y.len() {
            y[i] = x[i] * l[i];
        }
    }
}

simd_fn! {
    fn mix_row(y: &[f32], base: &[f32], delta: &[f32], mag: &[f32], out: &mut [f32]) {
        for i in 0..out.len() {
            out[i] = y[i] + base[i] * (mag[i] - 1.0) + delta[i] * mag[i];
        }
    }
}

simd_fn! {
    /// `acc += a * b` elementwise.
    fn fma_row(a: &[f32], b: &[f32], acc: &mut [f32]) {
        for i in 0..acc.len() {
            acc[i] += a[i] * b[i];
        }
    }
}

/// `y = x * l` with `l` broadcast over rows of `d`.
pub fn scale_cols(x: &[f32], l: &[f32], d: usize) -> Vec<f32> {
    let mut y = vec![0f32; x.len()];
    y.par_chunks_mut(d)
        .zip(x.par_chunks(d))
        .for_each(|(y, x)| scale_row(x, l, y));
    y
}

/// `sum over rows of a * b`, `[d]`.
pub fn col_dot(a: &[f32], b: &[f32], d: usize) -> Vec<f32> {
    let parts: Vec<Vec<f32>> = a
        .par_chunks(d * BLOCK)
        .zip(b.par_chunks(d * BLOCK))
        .map(|(a, b)| {
            let mut acc = vec![0f32; d];
            for (ar, br) in a.chunks(d).zip(b.chunks(d)) {
                fma_row(ar, br, &mut acc);
            }
            acc
        })
        .collect();
    parts.into_iter().fold(vec![0f32; d], |mut s, p| {
        s.iter_mut().zip(p).for_each(|(x, y)| *x += y);
        s
    })
}

/// `out = y + base * (mag - 1) + delta * mag`.
pub fn dora_mix(y: &[f32], base: &[f32], delta: &[f32], mag: &[f32], d: usize) -> Vec<f32> {
    let mut out = vec![0f32; y.len()];
    out.par_chunks_mut(d)
        .zip(
            y.par_chunks(d)
                .zip(base.par_chunks(d))
                .zip(delta.par_chunks(d)),
        )
        .for_each(|(o, ((y, b), dl))| mix_row(y, b, dl, mag, o));
    out
}
