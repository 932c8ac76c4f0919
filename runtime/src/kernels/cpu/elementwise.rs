//! Elementwise kernels, parallel over chunks, each chunk compiled for AVX2
//! where available: exact-form GELU (erf), SiLU·mul (SwiGLU), and dropout
//! whose mask is a pure function of (key, index), so backward regenerates it
//! instead of storing it.

use super::erf::erf;
use super::simd_fn;
use crate::rng;
use peftc_compiler::methods::Activation;
use rayon::prelude::*;

const CHUNK: usize = 1 << 14;
const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
/// 1 / sqrt(2 pi)
const INV_SQRT_2PI: f32 = 0.398_942_3;

#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

simd_fn! {
    fn gelu_chunk(x: &[f32], y: &mut [f32]) {
        for (o, &v) in y.iter_mut().zip(x) {
            *o = 0.5 * v * (1.0 + erf(v * FRAC_1_SQRT_2));
        }
    }
}

simd_fn! {
    fn gelu_backward_chunk(x: &[f32], dy: &[f32], dx: &mut [f32]) {
        for ((o, &v), &g) in dx.iter_mut().zip(x).zip(dy) {
            let cdf = 0.5 * (1.0 + erf(v * FRAC_1_SQRT_2));
            let pdf = (-0.5 * v * v).exp() * INV_SQRT_2PI;
            *o = g * (cdf + v * pdf);
        }
    }
}

simd_fn! {
    fn silu_mul_chunk(g: &[f32], u: &[f32], y: &mut [f32]) {
        for ((o, &a), &b) in y.iter_mut().zip(g).zip(u) {
            *o = a * sigmoid(a) * b;
        }
    }
}

simd_fn! {
    fn silu_mul_backward_chunk(g: &[f32], u: &[f32], dy: &[f32], dg: &mut [f32], du: &mut [f32]) {
        for i in 0..dg.len() {
            let s = sigmoid(g[i]);
            du[i] = dy[i] * g[i] * s;
            dg[i] = dy[i] * u[i] * s * (1.0 + g[i] * (1.0 - s));
        }
    }
}

simd_fn! {
    fn dropout_chunk(x: &[f32], p: f32, key: u64, base: u64, y: &mut [f32]) {
        // `base` is a multiple of 4 (chunks are), so lanes line up with `rng::uniform`.
        let keep = 1.0 / (1.0 - p);
        for (q, (o4, x4)) in y.chunks_mut(4).zip(x.chunks(4)).enumerate() {
            let u = rng::uniform4(key, (base >> 2) + q as u64);
            for l in 0..o4.len() {
                o4[l] = if u[l] >= p { x4[l] * keep } else { 0.0 };
            }
        }
    }
}

pub fn gelu(x: &[f32], y: &mut [f32]) {
    y.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .for_each(|(y, x)| gelu_chunk(x, y));
}

/// d gelu(x) / dx = Phi(x) + x phi(x).
pub fn gelu_backward(x: &[f32], dy: &[f32], dx: &mut [f32]) {
    dx.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK).zip(dy.par_chunks(CHUNK)))
        .for_each(|(dx, (x, dy))| gelu_backward_chunk(x, dy, dx));
}

/// `silu(g) * u`.
pub fn silu_mul(g: &[f32], u: &[f32], y: &mut [f32]) {
    y.par_chunks_mut(CHUNK)
        .zip(g.par_chunks(CHUNK).zip(u.par_chunks(CHUNK)))
        .for_each(|(y, (g, u))| silu_mul_chunk(g, u, y));
}

pub fn silu_mul_backward(g: &[f32], u: &[f32], dy: &[f32], dg: &mut [f32], du: &mut [f32]) {
    dg.par_chunks_mut(CHUNK)
        .zip(du.par_chunks_mut(CHUNK))
        .zip(
            g.par_chunks(CHUNK)
                .zip(u.par_chunks(CHUNK))
                .zip(dy.par_chunks(CHUNK)),
        )
        .for_each(|((dg, du), ((g, u), dy))| silu_mul_backward_chunk(g, u, dy, dg, du));
}

/// `y = x * mask / (1 - p)` with `mask[i] = uniform(key, i) >= p`.
pub fn dropout(x: &[f32], p: f32, key: u64, y: &mut [f32]) {
    y.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .enumerate()
        .for_each(|(c, (y, x))| dropout_chunk(x, p, key, (c * CHUNK) as u64, y));
}

/// A bottleneck adapter's activation `h = act(z)`.
pub fn activation(act: Activation, z: &[f32], h: &mut [f32]) {
    if act == Activation::Gelu {
        return gelu(z, h);
    }
    let f = match act {
        Activation::Relu => |v: f32| v.max(0.0),
        Activation::Silu => |v: f32| v * sigmoid(v),
        Activation::Tanh | Activation::Gelu => f32::tanh,
    };
    h.par_chunks_mut(CHUNK)
        .zip(z.par_chunks(CHUNK))
        .for_each(|(h, z)| h.iter_mut().zip(z).for_each(|(o, &v)| *o = f(v)));
}

/// `dz = dh ⊙ act'(z)` (ReLU's derivative at 0 is 0, as in PyTorch).
pub fn activation_backward(act: Activation, z: &[f32], dh: &[f32], dz: &mut [f32]) {
    if act == Activation::Gelu {
        return gelu_backward(z, dh, dz);
    }
    let f = match act {
        Activation::Relu => |v: f32| if v > 0.0 { 1.0 } else { 0.0 },
        Activation::Silu => |v: f32| {
            let s = sigmoid(v);
            s * (1.0 + v * (1.0 - s))
        },
        Activation::Tanh | Activation::Gelu => |v: f32| 1.0 - v.tanh().powi(2),
    };
    dz.par_chunks_mut(CHUNK)
        .zip(z.par_chunks(CHUNK).zip(dh.par_chunks(CHUNK)))
        .for_each(|(dz, (z, dh))| {
            for ((o, &v), &g) in dz.iter_mut().zip(z).zip(dh) {
                *o = g * f(v);
            }
        });
}
