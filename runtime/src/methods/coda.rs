//! CoDA at run time (see `peftc_compiler::methods::CodaConfig` for the
//! method): a layer scores its tokens with the router, runs its frozen
//! self on the top-k of each sequence gathered into a sub-batch, scales
//! what the layer added by the soft top-k weights, scatters it back, and
//! adds the light branch (a fused parallel adapter) for every token.
//!
//! The choice of tokens is made on the host from the scores (it is
//! discrete); the weights `λ` are then built from the score tensor in
//! closed form so the router trains through them.

use crate::error::{Result, RuntimeError};
use crate::kernels::{self, AdapterFn, AdapterParams, PeftKernels};
use crate::model::{Ctx, Params};
use burn::tensor::{IndexingUpdateOp, Int, Tensor, TensorData};
use peftc_compiler::methods::{Activation, CodaConfig, coda_name};

/// CoDA beside one layer.
pub struct Coda {
    path: String,
    k: usize,
    eps: f64,
    act: Activation,
}

pub fn at(c: &CodaConfig, path: &str) -> Coda {
    Coda {
        path: path.to_string(),
        k: c.k,
        eps: c.eps,
        act: c.act,
    }
}

/// The tokens each sequence routes through the heavy branch, and what the
/// closed-form soft top-k needs of each row.
#[derive(Debug, Clone, PartialEq)]
pub struct Selection {
    /// Routed tokens per row in the sub-batch (the most any row routes).
    pub width: usize,
    /// `[rows * width]`: each slot's token, an index into `[rows * seq]`;
    /// slots past a short row's tokens repeat its first one.
    pub index: Vec<i64>,
    /// `[rows * width]`: each slot's position in its sequence.
    pub positions: Vec<usize>,
    /// `[rows * width]`: 1 for a slot holding a routed token.
    pub valid: Vec<u8>,
    /// `[rows * seq]`: 1 where λ is clipped at 1.
    pub clipped: Vec<f32>,
    /// `[rows * seq]`: 1 for the real tokens whose λ is below 1.
    pub open: Vec<f32>,
    /// `[rows]`: the largest score among the open tokens (a stable shift).
    pub shift: Vec<f32>,
    /// `[rows]`: the weight the open tokens share, `k - |clipped|`.
    pub mass: Vec<f32>,
}

/// The soft top-k of scores `z: [rows * seq]` (already divided by `eps`)
/// over the real tokens of `mask`: the entropy-regularized optimum of
/// `max λ·z + H(λ)` with `Σλ = k`, `0 ≤ λ ≤ 1`, which is
/// `λ = min(1, exp(z + b))`; its clipped set is a top set of the scores,
/// found by clipping the largest while it would exceed 1.
pub fn select(z: &[f32], mask: &[u8], rows: usize, seq: usize, k: usize) -> Selection {
    let mut per_row = Vec::with_capacity(rows);
    for r in 0..rows {
        let real: Vec<usize> = (0..seq).filter(|&j| mask[r * seq + j] == 1).collect();
        let zr = |j: usize| z[r * seq + j];
        let mut order = real.clone();
        order.sort_by(|&a, &b| zr(b).total_cmp(&zr(a)).then(a.cmp(&b)));
        let kr = k.min(real.len());
        let mut c = 0;
        while c < kr {
            let top = zr(order[c]) as f64;
            let sum: f64 = order[c..].iter().map(|&j| (zr(j) as f64 - top).exp()).sum();
            if (kr - c) as f64 / sum <= 1.0 {
                break;
            }
            c += 1;
        }
        let mut chosen = order[..kr].to_vec();
        chosen.sort_unstable();
        let shift = order.get(c).map_or(0.0, |&j| zr(j));
        per_row.push((chosen, order, c, kr, shift));
    }
    let width = per_row.iter().map(|r| r.0.len()).max().unwrap_or(0).max(1);
    let mut s = Selection {
        width,
        index: Vec::with_capacity(rows * width),
        positions: Vec::with_capacity(rows * width),
        valid: Vec::with_capacity(rows * width),
        clipped: vec![0.0; rows * seq],
        open: vec![0.0; rows * seq],
        shift: Vec::with_capacity(rows),
        mass: Vec::with_capacity(rows),
    };
    for (r, (chosen, order, c, kr, shift)) in per_row.into_iter().enumerate() {
        for slot in 0..width {
            let (j, ok) = match chosen.get(slot) {
                Some(&j) => (j, 1),
                None => (0, 0),
            };
            s.index.push((r * seq + j) as i64);
            s.positions.push(j);
            s.valid.push(ok);
        }
        for &j in &order[..c] {
            s.clipped[r * seq + j] = 1.0;
        }
        for &j in &order[c..] {
            s.open[r * seq + j] = 1.0;
        }
        s.shift.push(shift);
        s.mass.push((kr - c) as f32);
    }
    s
}

impl Coda {
    fn get<B: PeftKernels>(&self, p: &Params<B>, suffix: &str) -> Result<Tensor<B, 2>> {
        p.get(&coda_name(&self.path, suffix))
    }

    /// The layer's output for its input `x: [rows * seq, h]` (`ctx`'s
    /// batch), `heavy` being the frozen layer run on a sub-batch: the
    /// gathered tokens `[rows * width, h]`, a context whose mask marks the
    /// valid slots, and each slot's position in its sequence.
    pub fn forward<B: PeftKernels>(
        &self,
        x: Tensor<B, 2>,
        p: &Params<B>,
        ctx: &Ctx<B>,
        heavy: impl FnOnce(Tensor<B, 2>, &Ctx<B>, &[usize]) -> Result<Tensor<B, 2>>,
    ) -> Result<Tensor<B, 2>> {
        let [n, h] = x.dims();
        let (rows, seq) = (ctx.rows, ctx.seq);
        if n != rows * seq {
            return Err(RuntimeError::Invalid(format!(
                "internal: CoDA at `{}` got {n} tokens for {rows} rows of {seq}",
                self.path
            )));
        }
        let dev = &ctx.device;
        let router = self.get(p, "router.weight")?.reshape([h, 1]);
        let z = x.clone().matmul(router).div_scalar(self.eps);
        let zh: Vec<f32> = z
            .clone()
            .into_data()
            .into_vec()
            .map_err(|e| RuntimeError::Invalid(format!("internal: router scores: {e:?}")))?;
        let sel = select(&zh, &ctx.mask, rows, seq, self.k);
        let w = sel.width;
        let host = |v: Vec<f32>, shape: [usize; 2]| {
            Tensor::<B, 2>::from_data(TensorData::new(v, shape), dev)
        };

        // λ = clipped + mass · softmax over the open tokens.
        let open = host(sel.open.clone(), [rows, seq]);
        let shift = host(sel.shift.clone(), [rows, 1]);
        let z2 = z.reshape([rows, seq]);
        let shut = open.clone().neg().add_scalar(1.0);
        let zs = z2 * open.clone() + shut * shift.clone();
        let e = (zs - shift).exp() * open;
        let empty: Vec<f32> = sel
            .mass
            .iter()
            .map(|&m| if m > 0.0 { 0.0 } else { 1.0 })
            .collect();
        let denom = e.clone().sum_dim(1) + host(empty, [rows, 1]);
        let lambda =
            host(sel.clipped.clone(), [rows, seq]) + e / denom * host(sel.mass.clone(), [rows, 1]);

        let idx =
            Tensor::<B, 1, Int>::from_data(TensorData::new(sel.index.clone(), [rows * w]), dev);
        let valid: Vec<f32> = sel.valid.iter().map(|&v| v as f32).collect();
        let lambda = lambda.reshape([n, 1]).select(0, idx.clone()) * host(valid, [rows * w, 1]);
        let xs = x.clone().select(0, idx.clone());
        let sub = Ctx {
            device: dev.clone(),
            rows,
            seq: w,
            mask: sel.valid.clone(),
            train: ctx.train,
            dropout_key: ctx.dropout_key,
            routes: None,
            adapter_drop: ctx.adapter_drop,
        };
        let ys = heavy(xs.clone(), &sub, &sel.positions)?;
        let routed = Tensor::<B, 2>::zeros([n, h], dev).select_assign(
            0,
            idx,
            (ys - xs) * lambda,
            IndexingUpdateOp::Add,
        );

        let light = AdapterParams {
            down: self.get(p, "down.weight")?,
            down_bias: self.get(p, "down.bias")?,
            up: self.get(p, "up.weight")?,
            up_bias: self.get(p, "up.bias")?,
        };
        let f = AdapterFn {
            act: self.act,
            scale: 1.0,
        };
        Ok(kernels::adapter(x.clone() + routed, x, light, f))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// λ of one row from a selection, on the host.
    fn lambda(z: &[f32], s: &Selection) -> Vec<f64> {
        let m = s.shift[0] as f64;
        let sum: f64 = (0..z.len())
            .filter(|&j| s.open[j] == 1.0)
            .map(|j| (z[j] as f64 - m).exp())
            .sum();
        (0..z.len())
            .map(|j| {
                if s.clipped[j] == 1.0 {
                    1.0
                } else if s.open[j] == 1.0 {
                    s.mass[0] as f64 * (z[j] as f64 - m).exp() / sum
                } else {
                    0.0
                }
            })
            .collect()
    }

    /// The closed form against the optimum's definition: `Σλ = k`,
    /// `λ ∈ [0, 1]`, and `λ = min(1, exp(z + b))` for one `b`, found here
    /// by bisection.
    #[test]
    fn soft_top_k_is_the_regularized_optimum() {
        let cases: [(&[f32], usize); 4] = [
            (&[0.0, 0.0, 0.0, 0.0, 0.0], 2),
            (&[5.0, 4.0, -1.0, 0.3, 0.2, -3.0], 3),
            (&[30.0, 29.0, 0.0, 0.0], 2),
            (&[1.0, -2.0, 0.5], 3),
        ];
        for (z, k) in cases {
            let n = z.len();
            let s = select(z, &vec![1; n], 1, n, k);
            let l = lambda(z, &s);
            let total: f64 = l.iter().sum();
            assert!((total - k as f64).abs() < 1e-5, "{z:?}: Σλ = {total}");
            let f = |b: f64| -> f64 { z.iter().map(|&v| (v as f64 + b).exp().min(1.0)).sum() };
            let (mut lo, mut hi) = (-200.0, 200.0);
            for _ in 0..200 {
                let mid = 0.5 * (lo + hi);
                if f(mid) < k as f64 {
                    lo = mid
                } else {
                    hi = mid
                }
            }
            for (j, &v) in z.iter().enumerate() {
                let want = (v as f64 + lo).exp().min(1.0);
                assert!(
                    (l[j] - want).abs() < 1e-5,
                    "{z:?} k={k}: λ[{j}] {} vs {want}",
                    l[j]
                );
            }
            // The routed tokens are the k largest, in their order.
            let mut top: Vec<usize> = (0..n).collect();
            top.sort_by(|&a, &b| z[b].total_cmp(&z[a]).then(a.cmp(&b)));
            let mut top = top[..k].to_vec();
            top.sort_unstable();
            let got: Vec<usize> = s.index.iter().map(|&i| i as usize).collect();
            assert_eq!(got, top);
        }
    }

    /// Padding is never routed; a row shorter than `k` routes all its
    /// tokens with λ = 1, and its spare slots are marked invalid.
    #[test]
    fn short_rows_route_every_real_token() {
        let z = [0.5, 2.0, 1.0, 0.0, 3.0, 1.0, -1.0, 9.0];
        let mask = [1, 1, 0, 0, 1, 1, 1, 0];
        let s = select(&z, &mask, 2, 4, 3);
        assert_eq!(s.width, 3);
        assert_eq!(s.index, vec![0, 1, 0, 4, 5, 6]);
        assert_eq!(s.valid, vec![1, 1, 0, 1, 1, 1]);
        assert_eq!(s.positions, vec![0, 1, 0, 0, 1, 2]);
        assert_eq!(s.clipped[2] + s.open[2] + s.clipped[7] + s.open[7], 0.0);
        assert_eq!(s.mass, vec![1.0, 1.0]);
    }
}
