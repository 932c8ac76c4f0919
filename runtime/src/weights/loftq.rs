//! LoftQ (Li et al. 2023) for `lora(..., init=loftq, loftq_iter=T)` on a base
//! quantized at load: for each such site's weight `W`, starting from
//! `res = W`, `T` times: `Q = quantize(res)`, `(B, A)` the rank-r factors of
//! the SVD of `W − deq(Q)` (`B = U_r √S_r`, `A = √S_r V_rᵀ`, as HF PEFT's
//! `loftq_utils`), and `res = W − B·A` for the next round. The base weight
//! becomes the last `Q`; `A` and `B` are left beside it under
//! `{module}.loftq_A` / `loftq_B` for the LoRA factors' `Init::FromBase`.
//! With `T = 1`, `Q` is the load's own coding of `W` and this is HF PEFT's
//! `replace_lora_weights_loftq` on a QLoRA model.

use super::quantize_load::code_matrix;
use super::{HostTensor, HostWeight, Weights, base_name, for_each_safetensor};
use crate::error::{Result, RuntimeError};
use peftc_compiler::methods::{LOFTQ_A, LOFTQ_B, site_name};
use peftc_compiler::plan::Plan;
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Runs LoftQ for every site of `plan` that asks for it, on `weights` (the
/// base as loaded, already quantized).
pub fn prepare(plan: &Plan, weights: &mut Weights) -> Result<()> {
    let mut wanted: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for s in &plan.sites {
        if let Some(l) = s.method.site().loftq() {
            wanted.insert(site_name(&s.module, "weight"), (l.r, l.iters));
        }
    }
    if wanted.is_empty() {
        return Ok(());
    }
    let q = plan.model.quantize.ok_or_else(|| {
        RuntimeError::Invalid("`init=loftq` needs `quantize nf4` (or `int8`) on the model".into())
    })?;
    let file = weights.file.clone();
    if file.extension().and_then(|e| e.to_str()) != Some("safetensors") {
        return Err(RuntimeError::Invalid(format!(
            "`init=loftq` reads the full-precision weights again from a safetensors checkpoint; `{}` is not one",
            file.display()
        )));
    }
    // The full-precision weights, read again (the load kept only their codes).
    let mut originals: Vec<(String, HostTensor)> = Vec::new();
    for_each_safetensor(&file, |name, t| {
        let name = base_name(plan.model.family, name);
        if wanted.contains_key(&name) {
            originals.push((name, t));
        }
        Ok(())
    })?;
    if let Some(missing) = wanted
        .keys()
        .find(|k| !originals.iter().any(|(n, _)| n == *k))
    {
        return Err(RuntimeError::MissingTensor {
            file: file.clone(),
            tensor: missing.clone(),
            hint: " (init=loftq reads it again in full precision)".into(),
        });
    }
    let done: Vec<Result<(String, HostWeight, HostTensor, HostTensor)>> = originals
        .into_par_iter()
        .map(|(name, w)| {
            let (r, iters) = wanted[&name];
            let err = |what: String| RuntimeError::Tensor {
                file: file.clone(),
                tensor: name.clone(),
                what,
            };
            let (coded, a, b) = loftq(&w, r, iters, |res| code_matrix(q, res)).map_err(err)?;
            Ok((name, HostWeight::Packed(Arc::new(coded)), a, b))
        })
        .collect();
    for d in done {
        let (name, coded, a, b) = d?;
        let module = name.strip_suffix(".weight").unwrap_or(&name).to_string();
        weights.insert(name, coded);
        weights.insert(site_name(&module, LOFTQ_A), HostWeight::Dense(a));
        weights.insert(site_name(&module, LOFTQ_B), HostWeight::Dense(b));
    }
    Ok(())
}

/// LoftQ on one `[out, in]` weight: the final coding and the factors
/// `A: [r, in]`, `B: [out, r]`.
pub fn loftq<Q>(
    w: &HostTensor,
    r: usize,
    iters: usize,
    code: impl Fn(&HostTensor) -> std::result::Result<Q, String>,
) -> std::result::Result<(Q, HostTensor, HostTensor), String>
where
    Q: Dequantize,
{
    let (out, inp) = (w.shape[0], w.shape[1]);
    if r > out.min(inp) {
        return Err(format!(
            "cannot take {r} factors of a {out} x {inp} matrix (init=loftq with r above its rank)"
        ));
    }
    let mut res = w.clone();
    let mut round = 0;
    loop {
        let coded = code(&res)?;
        let deq = coded.dense();
        let err: Vec<f32> = w.data.iter().zip(&deq.data).map(|(x, q)| x - q).collect();
        let (a, b) = low_rank(&err, out, inp, r)?;
        round += 1;
        if round == iters {
            return Ok((coded, a, b));
        }
        // res = W − B·A
        let mut next = w.data.clone();
        for (i, row) in next.chunks_exact_mut(inp).enumerate() {
            for k in 0..r {
                let bik = b.data[i * r + k];
                for (v, &akj) in row.iter_mut().zip(&a.data[k * inp..(k + 1) * inp]) {
                    *v -= bik * akj;
                }
            }
        }
        res = HostTensor::new(vec![out, inp], next);
    }
}

/// What LoftQ needs of a coding: its values.
pub trait Dequantize {
    fn dense(&self) -> HostTensor;
}

impl Dequantize for super::PackedMatrix {
    fn dense(&self) -> HostTensor {
        self.to_dense()
    }
}

/// The rank-`r` factors of `m: [out, inp]` from its SVD (in f64): `A =
/// √S_r V_rᵀ` `[r, inp]` and `B = U_r √S_r` `[out, r]`, the singular values
/// in descending order.
fn low_rank(
    m: &[f32],
    out: usize,
    inp: usize,
    r: usize,
) -> std::result::Result<(HostTensor, HostTensor), String> {
    let mat = nalgebra::DMatrix::<f64>::from_fn(out, inp, |i, j| m[i * inp + j] as f64);
    let svd = mat.svd(true, true);
    let (Some(u), Some(vt)) = (svd.u, svd.v_t) else {
        return Err("internal: the SVD returned no singular vectors".into());
    };
    let s = svd.singular_values;
    let mut order: Vec<usize> = (0..s.len()).collect();
    order.sort_by(|&x, &y| s[y].total_cmp(&s[x]));
    let mut a = vec![0f32; r * inp];
    let mut b = vec![0f32; out * r];
    for (k, &j) in order.iter().take(r).enumerate() {
        let root = s[j].sqrt();
        for c in 0..inp {
            a[k * inp + c] = (root * vt[(j, c)]) as f32;
        }
        for i in 0..out {
            b[i * r + k] = (u[(i, j)] * root) as f32;
        }
    }
    Ok((
        HostTensor::new(vec![r, inp], a),
        HostTensor::new(vec![out, r], b),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Rounded(HostTensor);
    impl Dequantize for Rounded {
        fn dense(&self) -> HostTensor {
            self.0.clone()
        }
    }

    /// With a "quantizer" that rounds to integers, the factors are the best
    /// rank-r fit of the rounding error (Eckart–Young): on a rank-1 error
    /// they reproduce it exactly.
    #[test]
    fn factors_fit_the_quantization_error() {
        // W = round part + 0.25 * u vᵀ, with |0.25 u_i v_j| < 0.5.
        let (u, v) = ([1.0f32, -0.5, 0.8], [0.6f32, 0.2, -1.0, 0.4]);
        let data: Vec<f32> = (0..12)
            .map(|e| (e as f32 - 5.0) + 0.25 * u[e / 4] * v[e % 4])
            .collect();
        let w = HostTensor::new(vec![3, 4], data);
        let round = |t: &HostTensor| {
            Ok::<_, String>(Rounded(HostTensor::new(
                t.shape.clone(),
                t.data.iter().map(|x| x.round()).collect(),
            )))
        };
        let (q, a, b) = loftq(&w, 1, 1, round).unwrap();
        for i in 0..3 {
            for j in 0..4 {
                let ba = b.data[i] * a.data[j];
                let want = w.data[i * 4 + j] - q.0.data[i * 4 + j];
                assert!((ba - want).abs() < 1e-6, "({i}, {j}): {ba} vs {want}");
            }
        }
        assert!(loftq(&w, 4, 1, round).is_err());
    }
}
