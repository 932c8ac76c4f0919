//! The sparse delta of a mask: `y + x·ΔWᵀ` where `ΔW [out, in]` is zero
//! except at `k` positions `(rows[e], cols[e])`, holding `values[e]`.
//!
//! The kernel never forms `ΔW` nor an `[n, k]` product: forward and backward
//! walk the `k` positions once per input row, so a mask's activation memory is
//! nothing beyond the input the base product keeps. The reference (plain burn:
//! gather the columns, scale, scatter-add into the rows) is what backends
//! without their own kernel differentiate, and what the tests hold the
//! kernel to.

use burn::tensor::backend::Backend;
use burn::tensor::{IndexingUpdateOp, Int, Tensor, TensorData};

/// A mask's positions on the host, in the order of its values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SparseIndex {
    pub rows: Vec<u32>,
    pub cols: Vec<u32>,
}

impl SparseIndex {
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    fn ints<B: Backend>(v: &[u32], device: &B::Device) -> Tensor<B, 1, Int> {
        let d: Vec<i64> = v.iter().map(|&i| i as i64).collect();
        Tensor::from_data(TensorData::new(d, [v.len()]), device)
    }
}

/// `y + x·ΔWᵀ` with plain burn ops: `x: [n, in]`, `y: [n, out]`,
/// `values: [1, k]`.
pub fn reference<B: Backend>(
    y: Tensor<B, 2>,
    x: Tensor<B, 2>,
    values: Tensor<B, 2>,
    idx: &SparseIndex,
) -> Tensor<B, 2> {
    let device = x.device();
    let cols = SparseIndex::ints::<B>(&idx.cols, &device);
    let rows = SparseIndex::ints::<B>(&idx.rows, &device);
    let contrib = x.select(1, cols) * values;
    y.select_assign(1, rows, contrib, IndexingUpdateOp::Add)
}

/// `(dx, dvalues)` of [`reference`]'s delta, each when its operand is given:
/// `dvalues[e] = Σ_t dy[t, rows[e]] · x[t, cols[e]]` (needs `x`),
/// `dx[t, cols[e]] += values[e] · dy[t, rows[e]]` (needs `values`).
pub fn reference_backward<B: Backend>(
    x: Option<Tensor<B, 2>>,
    values: Option<Tensor<B, 2>>,
    idx: &SparseIndex,
    dy: Tensor<B, 2>,
    in_f: usize,
) -> (Option<Tensor<B, 2>>, Option<Tensor<B, 2>>) {
    let device = dy.device();
    let cols = SparseIndex::ints::<B>(&idx.cols, &device);
    let rows = SparseIndex::ints::<B>(&idx.rows, &device);
    let dy_rows = dy.select(1, rows);
    let dv = x.map(|x| (dy_rows.clone() * x.select(1, cols.clone())).sum_dim(0));
    let dx = values.map(|v| {
        let n = dy_rows.dims()[0];
        Tensor::<B, 2>::zeros([n, in_f], &device).select_assign(
            1,
            cols,
            dy_rows * v,
            IndexingUpdateOp::Add,
        )
    });
    (dx, dv)
}

/// The CPU kernels over contiguous row-major slices (`n` rows).
pub mod host {
    use super::SparseIndex;
    use rayon::prelude::*;

    /// Rows handled by one task.
    const CHUNK: usize = 16;

    /// `y[t, rows[e]] += values[e] · x[t, cols[e]]` for every row `t`.
    pub fn forward(
        y: &mut [f32],
        out_f: usize,
        x: &[f32],
        in_f: usize,
        v: &[f32],
        idx: &SparseIndex,
    ) {
        y.par_chunks_mut(out_f * CHUNK)
            .zip(x.par_chunks(in_f * CHUNK))
            .for_each(|(ys, xs)| {
                for (yr, xr) in ys.chunks_exact_mut(out_f).zip(xs.chunks_exact(in_f)) {
                    for ((&r, &c), &w) in idx.rows.iter().zip(&idx.cols).zip(v) {
                        yr[r as usize] += w * xr[c as usize];
                    }
                }
            });
    }

    /// `dvalues[e] = Σ_t dy[t, rows[e]] · x[t, cols[e]]`, summed per chunk of
    /// rows and then over chunks.
    pub fn dvalues(
        dy: &[f32],
        out_f: usize,
        x: &[f32],
        in_f: usize,
        idx: &SparseIndex,
    ) -> Vec<f32> {
        let k = idx.len();
        dy.par_chunks(out_f * CHUNK)
            .zip(x.par_chunks(in_f * CHUNK))
            .map(|(ds, xs)| {
                let mut acc = vec![0f32; k];
                for (dr, xr) in ds.chunks_exact(out_f).zip(xs.chunks_exact(in_f)) {
                    for (a, (&r, &c)) in acc.iter_mut().zip(idx.rows.iter().zip(&idx.cols)) {
                        *a += dr[r as usize] * xr[c as usize];
                    }
                }
                acc
            })
            .reduce(
                || vec![0f32; k],
                |mut a, b| {
                    a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
                    a
                },
            )
    }

    /// `dx[t, cols[e]] += values[e] · dy[t, rows[e]]`.
    pub fn dx(dy: &[f32], out_f: usize, v: &[f32], idx: &SparseIndex, in_f: usize) -> Vec<f32> {
        let n = dy.len() / out_f.max(1);
        let mut dx = vec![0f32; n * in_f];
        dx.par_chunks_mut(in_f * CHUNK)
            .zip(dy.par_chunks(out_f * CHUNK))
            .for_each(|(xs, ds)| {
                for (xr, dr) in xs.chunks_exact_mut(in_f).zip(ds.chunks_exact(out_f)) {
                    for ((&r, &c), &w) in idx.rows.iter().zip(&idx.cols).zip(v) {
                        xr[c as usize] += w * dr[r as usize];
                    }
                }
            });
        dx
    }
}
