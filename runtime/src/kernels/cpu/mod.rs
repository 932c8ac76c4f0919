//! The fused ops for burn's Flex (CPU) backend: contiguous f32 views of the
//! inputs, parallel kernels, outputs wrapped without copies.

pub mod attention;
pub(crate) mod blas;
mod elementwise;
mod epilogue;
mod erf;
mod loss;
mod norm;
mod packed;
mod qdot;
pub mod rope;

/// Whether this CPU has AVX2 and FMA (checked once).
pub(crate) fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *HAS.get_or_init(|| {
            std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Defines `fn $name(...)` twice over — for the build's baseline CPU and for
/// AVX2+FMA — and dispatches at run time, so the same Rust body vectorizes 8
/// lanes wide where the CPU allows without requiring it of every CPU.
macro_rules! simd_fn {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$m])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn inner($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                inner($($arg),*)
            }
            #[cfg(target_arch = "x86_64")]
            if $crate::kernels::cpu::has_avx2_fma() {
                // SAFETY: the CPU was checked to have the features `avx2` needs.
                return unsafe { avx2($($arg),*) };
            }
            inner($($arg),*)
        }
    };
}
pub(crate) use simd_fn;

use super::{AdapterFn, AdapterParams, AttnInputs, AttnShape, PeftKernels, RopeShape};
use burn::backend::Flex;
use burn::tensor::{Shape, TensorData};
use burn_flex::FlexTensor;
use peftc_compiler::methods::Activation;
use rayon::prelude::*;
use std::sync::Arc;

type T = FlexTensor;

/// A contiguous version of `t` (no copy when it already is).
fn contiguous(t: T) -> T {
    if t.is_contiguous() {
        t
    } else {
        t.to_contiguous()
    }
}

fn f32s(t: &T) -> &[f32] {
    // Every tensor reaching a kernel was made contiguous f32 by `contiguous`;
    // peftc creates no other float dtype on this backend.
    t.as_slice::<f32>()
        .expect("peftc kernels run on contiguous f32 tensors")
}

/// The tensor's own elements, writable, when nothing else holds its buffer
/// (a kernel may then write its result over an input it consumes).
fn f32s_mut(t: &mut T) -> Option<&mut [f32]> {
    let (start, end) = t.layout().contiguous_offsets()?;
    t.try_storage_mut::<f32>()
        .and_then(|s| s.get_mut(start..end))
}

fn dims(t: &T) -> Vec<usize> {
    t.layout().shape().to_vec()
}

fn make(data: Vec<f32>, shape: Vec<usize>) -> T {
    T::from_data(TensorData::new(data, Shape::from(shape)))
}

/// `[n, o]` holding the bias row in every row (zeros without a bias): the
/// buffer a product accumulates onto.
fn bias_rows(b: Option<T>, n: usize, o: usize) -> Vec<f32> {
    match b {
        Some(b) => {
            let b = contiguous(b);
            let row = f32s(&b);
            let mut y = Vec::with_capacity(n * o);
            for _ in 0..n {
                y.extend_from_slice(row);
            }
            y
        }
        None => vec![0f32; n * o],
    }
}

impl PeftKernels for Flex {
    const FUSED: bool = true;
    const PACKED: bool = true;

    fn k_linear(x: T, w: T, b: Option<T>) -> T {
        let (x, w) = (contiguous(x), contiguous(w));
        let (xs, ws) = (dims(&x), dims(&w));
        let (n, k, o) = (xs[0], xs[1], ws[0]);
        let mut y = bias_rows(b, n, o);
        let beta = if y.iter().any(|&v| v != 0.0) {
            1.0
        } else {
            0.0
        };
        blas::sgemm(n, o, k, f32s(&x), f32s(&w), true, beta, &mut y);
        make(y, vec![n, o])
    }

    fn k_packed_linear(x: T, w: &crate::weights::PackedMatrix, b: Option<T>) -> T {
        let x = contiguous(x);
        let n = dims(&x)[0];
        let mut y = bias_rows(b, n, w.rows());
        packed::linear(f32s(&x), n, w, &mut y);
        make(y, vec![n, w.rows()])
    }

    fn k_packed_linear_dx(w: &crate::weights::PackedMatrix, dy: T) -> T {
        let dy = contiguous(dy);
        let n = dims(&dy)[0];
        make(packed::linear_dx(f32s(&dy), n, w), vec![n, w.cols()])
    }

    fn k_linear_backward(
        x: Option<T>,
        w: T,
        dy: T,
        need: [bool; 3],
    ) -> (Option<T>, Option<T>, Option<T>) {
        let (w, dy) = (contiguous(w), contiguous(dy));
        let (ws, ds) = (dims(&w), dims(&dy));
        let (o, k, n) = (ws[0], ws[1], ds[0]);
        let dx = need[0].then(|| {
            let mut dx = vec![0f32; n * k];
            blas::sgemm(n, k, o, f32s(&dy), f32s(&w), false, 0.0, &mut dx);
            make(dx, vec![n, k])
        });
        let dw = match (need[1], x) {
            (true, Some(x)) => {
                let x = contiguous(x);
                let mut dw = vec![0f32; o * k];
                blas::sgemm_at(o, k, n, f32s(&dy), f32s(&x), 0.0, &mut dw);
                Some(make(dw, vec![o, k]))
            }
            _ => None,
        };
        let db = need[2].then(|| {
            let mut db = vec![0f64; o];
            for row in f32s(&dy).chunks(o) {
                db.iter_mut().zip(row).for_each(|(a, &v)| *a += v as f64);
            }
            make(db.into_iter().map(|v| v as f32).collect(), vec![1, o])
        });
        (dx, dw, db)
    }

    fn k_lora_expand(y: T, u: T, b: T, scale: f64) -> T {
        let (mut y, u, b) = (contiguous(y), contiguous(u), contiguous(b));
        let (n, r, o) = (dims(&u)[0], dims(&u)[1], dims(&b)[0]);
        // Scale the thin factor, then accumulate its product onto `y` (beta = 1).
        let us: Vec<f32> = f32s(&u).iter().map(|v| v * scale as f32).collect();
        if let Some(buf) = f32s_mut(&mut y) {
            blas::sgemm(n, o, r, &us, f32s(&b), true, 1.0, buf);
            return y;
        }
        let mut out = f32s(&y).to_vec();
        blas::sgemm(n, o, r, &us, f32s(&b), true, 1.0, &mut out);
        make(out, vec![n, o])
    }

    fn k_lora_expand_backward(
        u: Option<T>,
        b: Option<T>,
        dy: T,
        scale: f64,
    ) -> (Option<T>, Option<T>) {
        let dy = contiguous(dy);
        let (n, o) = (dims(&dy)[0], dims(&dy)[1]);
        let s = scale as f32;
        let du = b.map(|b| {
            let b = contiguous(b);
            let r = dims(&b)[1];
            let mut du = vec![0f32; n * r];
            blas::sgemm(n, r, o, f32s(&dy), f32s(&b), false, 0.0, &mut du);
            du.iter_mut().for_each(|v| *v *= s);
            make(du, vec![n, r])
        });
        let db = u.map(|u| {
            let u = contiguous(u);
            let r = dims(&u)[1];
            let mut db = vec![0f32; o * r];
            blas::sgemm_at(o, r, n, f32s(&dy), f32s(&u), 0.0, &mut db);
            db.iter_mut().for_each(|v| *v *= s);
            make(db, vec![o, r])
        });
        (du, db)
    }

    fn k_sparse_delta(y: T, x: T, values: T, idx: &super::SparseIndex) -> T {
        let (mut y, x, v) = (contiguous(y), contiguous(x), contiguous(values));
        let (o, i) = (dims(&y)[1], dims(&x)[1]);
        if let Some(buf) = f32s_mut(&mut y) {
            super::sparse::host::forward(buf, o, f32s(&x), i, f32s(&v), idx);
            return y;
        }
        let mut out = f32s(&y).to_vec();
        super::sparse::host::forward(&mut out, o, f32s(&x), i, f32s(&v), idx);
        make(out, dims(&y))
    }

    fn k_sparse_delta_backward(
        x: Option<T>,
        values: Option<T>,
        idx: &super::SparseIndex,
        dy: T,
        in_f: usize,
    ) -> (Option<T>, Option<T>) {
        let dy = contiguous(dy);
        let (n, o) = (dims(&dy)[0], dims(&dy)[1]);
        let dx = values.map(|v| {
            let v = contiguous(v);
            make(
                super::sparse::host::dx(f32s(&dy), o, f32s(&v), idx, in_f),
                vec![n, in_f],
            )
        });
        let dv = x.map(|x| {
            let x = contiguous(x);
            make(
                super::sparse::host::dvalues(f32s(&dy), o, f32s(&x), in_f, idx),
                vec![1, idx.len()],
            )
        });
        (dx, dv)
    }

    fn k_act(act: Activation, z: T) -> T {
        let z = contiguous(z);
        let mut h = vec![0f32; f32s(&z).len()];
        elementwise::activation(act, f32s(&z), &mut h);
        make(h, dims(&z))
    }

    fn k_act_backward(act: Activation, z: T, dh: T) -> T {
        let (z, dh) = (contiguous(z), contiguous(dh));
        let mut dz = vec![0f32; f32s(&z).len()];
        elementwise::activation_backward(act, f32s(&z), f32s(&dh), &mut dz);
        make(dz, dims(&z))
    }

    fn k_adapter(res: T, x: T, w: AdapterParams<T>, f: AdapterFn) -> (T, T) {
        let z = Self::k_linear(x, w.down, Some(w.down_bias));
        let (n, r) = (dims(&z)[0], dims(&z)[1]);
        // `s·act(z)`: the up product then accumulates straight onto the output.
        let s = f.scale as f32;
        let mut h = vec![0f32; n * r];
        elementwise::activation(f.act, f32s(&z), &mut h);
        h.iter_mut().for_each(|v| *v *= s);
        let (up, up_bias, mut res) = (contiguous(w.up), contiguous(w.up_bias), contiguous(res));
        let o = dims(&up)[0];
        let bias: Vec<f32> = f32s(&up_bias).iter().map(|&b| s * b).collect();
        // `res + s·b_up` (in place when `res` is ours, else in the copy's
        // single pass), then the up product accumulated onto it (beta = 1).
        if let Some(buf) = f32s_mut(&mut res) {
            buf.par_chunks_mut(o).for_each(|row| {
                row.iter_mut().zip(&bias).for_each(|(v, b)| *v += b);
            });
            blas::sgemm(n, o, r, &h, f32s(&up), true, 1.0, buf);
            return (res, z);
        }
        let mut out = vec![0f32; n * o];
        out.par_chunks_mut(o)
            .zip(f32s(&res).par_chunks(o))
            .for_each(|(row, src)| {
                for ((v, &x), b) in row.iter_mut().zip(src).zip(&bias) {
                    *v = x + b;
                }
            });
        blas::sgemm(n, o, r, &h, f32s(&up), true, 1.0, &mut out);
        (make(out, vec![n, o]), z)
    }

    fn k_scale_cols(x: T, l: T) -> T {
        let (x, l) = (contiguous(x), contiguous(l));
        let shape = dims(&x);
        let d = *shape.last().unwrap_or(&1);
        make(epilogue::scale_cols(f32s(&x), f32s(&l), d), shape)
    }

    fn k_col_dot(a: T, b: T) -> T {
        let (a, b) = (contiguous(a), contiguous(b));
        let d = *dims(&a).last().unwrap_or(&1);
        make(epilogue::col_dot(f32s(&a), f32s(&b), d), vec![1, d])
    }

    fn k_dora_mix(y: T, base: T, delta: T, mag: T) -> T {
        let (y, base, delta, mag) = (
            contiguous(y),
            contiguous(base),
            contiguous(delta),
            contiguous(mag),
        );
        let shape = dims(&y);
        let d = *shape.last().unwrap_or(&1);
        make(
            epilogue::dora_mix(f32s(&y), f32s(&base), f32s(&delta), f32s(&mag), d),
            shape,
        )
    }

    fn k_rope(x: T, s: &RopeShape, inverse: bool) -> T {
        let x = contiguous(x);
        let y = rope::apply(f32s(&x), s, inverse);
        make(y, dims(&x))
    }

    fn k_cross_entropy(logits: T, targets: &Arc<Vec<i64>>, weights: &Arc<Vec<f32>>) -> (T, T) {
        let logits = contiguous(logits);
        let shape = dims(&logits);
        let c = *shape.last().unwrap_or(&1);
        let (loss, lse) = loss::forward(f32s(&logits), c, targets, weights);
        let n = lse.len();
        (make(vec![loss], vec![1]), make(lse, vec![n, 1]))
    }

    fn k_cross_entropy_backward(
        logits: T,
        lse: T,
        targets: &Arc<Vec<i64>>,
        weights: &Arc<Vec<f32>>,
        dloss: T,
    ) -> T {
        let (mut logits, lse, dloss) = (contiguous(logits), contiguous(lse), contiguous(dloss));
        let shape = dims(&logits);
        let c = *shape.last().unwrap_or(&1);
        let g = f32s(&dloss).first().copied().unwrap_or(0.0);
        // The autodiff node hands over its saved logits: reuse their buffer
        // when nothing else holds it.
        if let Some(buf) = f32s_mut(&mut logits) {
            loss::backward_in_place(buf, c, f32s(&lse), targets, weights, g);
            return logits;
        }
        let d = loss::backward(f32s(&logits), c, f32s(&lse), targets, weights, g);
        make(d, shape)
    }

    fn k_gelu(x: T) -> T {
        let x = contiguous(x);
        let mut y = vec![0f32; f32s(&x).len()];
        elementwise::gelu(f32s(&x), &mut y);
        make(y, dims(&x))
    }

    fn k_gelu_backward(x: T, dy: T) -> T {
        let (x, dy) = (contiguous(x), contiguous(dy));
        let mut dx = vec![0f32; f32s(&x).len()];
        elementwise::gelu_backward(f32s(&x), f32s(&dy), &mut dx);
        make(dx, dims(&x))
    }

    fn k_silu_mul(g: T, u: T) -> T {
        let (g, u) = (contiguous(g), contiguous(u));
        let mut y = vec![0f32; f32s(&g).len()];
        elementwise::silu_mul(f32s(&g), f32s(&u), &mut y);
        make(y, dims(&g))
    }

    fn k_silu_mul_backward(g: T, u: T, dy: T) -> (T, T) {
        let (g, u, dy) = (contiguous(g), contiguous(u), contiguous(dy));
        let n = f32s(&g).len();
        let (mut dg, mut du) = (vec![0f32; n], vec![0f32; n]);
        elementwise::silu_mul_backward(f32s(&g), f32s(&u), f32s(&dy), &mut dg, &mut du);
        (make(dg, dims(&g)), make(du, dims(&g)))
    }

    fn k_layer_norm(x: T, gamma: T, beta: T, eps: f64) -> (T, T) {
        let (x, gamma, beta) = (contiguous(x), contiguous(gamma), contiguous(beta));
        let shape = dims(&x);
        let d = *shape.last().unwrap_or(&1);
        let n = f32s(&x).len() / d.max(1);
        let (mut y, mut stats) = (vec![0f32; n * d], vec![0f32; n * 2]);
        norm::layer_norm(
            f32s(&x),
            f32s(&gamma),
            f32s(&beta),
            eps,
            d,
            &mut y,
            &mut stats,
        );
        (make(y, shape), make(stats, vec![n, 2]))
    }

    fn k_layer_norm_backward(x: T, gamma: T, stats: T, dy: T) -> (T, T, T) {
        let (x, gamma, stats, dy) = (
            contiguous(x),
            contiguous(gamma),
            contiguous(stats),
            contiguous(dy),
        );
        let shape = dims(&x);
        let d = *shape.last().unwrap_or(&1);
        let mut dx = vec![0f32; f32s(&x).len()];
        let (dg, db) =
            norm::layer_norm_backward(f32s(&x), f32s(&gamma), f32s(&stats), f32s(&dy), d, &mut dx);
        (make(dx, shape), make(dg, vec![1, d]), make(db, vec![1, d]))
    }

    fn k_rms_norm(x: T, w: T, eps: f64) -> T {
        let (x, w) = (contiguous(x), contiguous(w));
        let shape = dims(&x);
        let d = *shape.last().unwrap_or(&1);
        let mut y = vec![0f32; f32s(&x).len()];
        norm::rms_norm(f32s(&x), f32s(&w), eps, d, &mut y);
        make(y, shape)
    }

    fn k_rms_norm_backward(x: T, w: T, eps: f64, dy: T) -> (T, T) {
        let (x, w, dy) = (contiguous(x), contiguous(w), contiguous(dy));
        let shape = dims(&x);
        let d = *shape.last().unwrap_or(&1);
        let mut dx = vec![0f32; f32s(&x).len()];
        let dw = norm::rms_norm_backward(f32s(&x), f32s(&w), eps, f32s(&dy), d, &mut dx);
        (make(dx, shape), make(dw, vec![1, d]))
    }

    fn k_dropout(x: T, p: f64, key: u64) -> T {
        let x = contiguous(x);
        let mut y = vec![0f32; f32s(&x).len()];
        elementwise::dropout(f32s(&x), p as f32, key, &mut y);
        make(y, dims(&x))
    }

    fn k_attention(x: AttnInputs<Self>, s: &AttnShape) -> (T, T) {
        let (q, k, v) = (contiguous(x.q), contiguous(x.k), contiguous(x.v));
        let pk = x.pk.map(contiguous);
        let pv = x.pv.map(contiguous);
        let empty: &[f32] = &[];
        let (o, probs) = attention::forward(
            f32s(&q),
            f32s(&k),
            f32s(&v),
            pk.as_ref().map(f32s).unwrap_or(empty),
            pv.as_ref().map(f32s).unwrap_or(empty),
            s,
        );
        (
            make(o, vec![s.rows * s.seq, s.heads * s.head_dim]),
            make(probs, vec![s.rows, s.heads, s.seq, s.keys()]),
        )
    }

    fn k_attention_backward(
        x: AttnInputs<Self>,
        probs: T,
        dout: T,
        s: &AttnShape,
    ) -> (T, T, T, Option<T>, Option<T>) {
        let (q, k, v) = (contiguous(x.q), contiguous(x.k), contiguous(x.v));
        let pk = x.pk.map(contiguous);
        let pv = x.pv.map(contiguous);
        let (probs, dout) = (contiguous(probs), contiguous(dout));
        let empty: &[f32] = &[];
        let has_prefix = pk.is_some();
        let (dq, dk, dv, dpk, dpv) = attention::backward(
            f32s(&q),
            f32s(&k),
            f32s(&v),
            pk.as_ref().map(f32s).unwrap_or(empty),
            pv.as_ref().map(f32s).unwrap_or(empty),
            f32s(&probs),
            f32s(&dout),
            s,
        );
        let (n, kw) = (s.rows * s.seq, s.kv_heads * s.head_dim);
        let prefix = |g: Vec<f32>| has_prefix.then(|| make(g, vec![s.prefix, kw]));
        (
            make(dq, vec![n, s.heads * s.head_dim]),
            make(dk, vec![n, kw]),
            make(dv, vec![n, kw]),
            prefix(dpk),
            prefix(dpv),
        )
    }
}
