//! Rotary position embedding in Hugging Face LLaMA's half-split form on
//! `[rows*seq, heads*head_dim]`, in place of six elementwise passes. The
//! backward is the inverse rotation.

use super::simd_fn;
use rayon::prelude::*;

#[derive(Debug, Clone, PartialEq)]
pub struct RopeShape {
    pub seq: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub theta: f64,
    /// Position of the first token.
    pub offset: usize,
}

/// `cos` and `sin` of every (position, frequency), `[seq, head_dim/2]`, in
/// f32 as transformers computes them.
pub fn tables(s: &RopeShape) -> (Vec<f32>, Vec<f32>) {
    let positions: Vec<usize> = (s.offset..s.offset + s.seq).collect();
    tables_at(&positions, s.head_dim, s.theta)
}

/// The cosines and sines `[positions.len(), head_dim/2]` of the given
/// positions (one token per sequence while decoding, CoDA's gathered tokens).
pub fn tables_at(positions: &[usize], head_dim: usize, theta: f64) -> (Vec<f32>, Vec<f32>) {
    let half = head_dim / 2;
    let inv: Vec<f32> = (0..half)
        .map(|i| 1.0 / (theta as f32).powf((2 * i) as f32 / head_dim as f32))
        .collect();
    let mut cos = Vec::with_capacity(positions.len() * half);
    let mut sin = Vec::with_capacity(positions.len() * half);
    for &p in positions {
        for f in &inv {
            let a = p as f32 * f;
            cos.push(a.cos());
            sin.push(a.sin());
        }
    }
    (cos, sin)
}

simd_fn! {
    fn rotate_row(x: &[f32], cos: &[f32], sin: &[f32], heads: usize, hd: usize, sign: f32, y: &mut [f32]) {
        let half = hd / 2;
        for h in 0..heads {
            let (xh, yh) = (&x[h * hd..(h + 1) * hd], &mut y[h * hd..(h + 1) * hd]);
            for i in 0..half {
                let (c, s) = (cos[i], sign * sin[i]);
                let (a, b) = (xh[i], xh[i + half]);
                yh[i] = a * c - b * s;
                yh[i + half] = b * c + a * s;
            }
        }
    }
}

/// Rotates (`inverse`: rotates back) every row of `x`.
pub fn apply(x: &[f32], s: &RopeShape, inverse: bool) -> Vec<f32> {
    let (cos, sin) = tables(s);
    let w = s.heads * s.head_dim;
    let half = s.head_dim / 2;
    let sign = if inverse { -1.0 } else { 1.0 };
    let mut y = vec![0f32; x.len()];
    y.par_chunks_mut(w)
        .zip(x.par_chunks(w))
        .enumerate()
        .for_each(|(r, (y, x))| {
            let p = r % s.seq;
            rotate_row(
                x,
                &cos[p * half..(p + 1) * half],
                &sin[p * half..(p + 1) * half],
                s.heads,
                s.head_dim,
                sign,
                y,
            );
        });
    y
}
