//! Products with a packed (GGUF-quantized) frozen weight `W: [out, in]`,
//! never expanding all of `W`: rows of `W` are dequantized a tile at a time
//! into a buffer that stays in the core's cache and fed to single-threaded
//! BLAS, the cores splitting the rows of `x` (each dequantizes every tile,
//! which costs `out·in` against the product's `2·rows·out·in`). With a few
//! rows (decoding) the cores split `W`'s rows instead, each row read once
//! and dotted with every row of `x` in its blocks (`qdot.rs`).

use super::blas::gemm_st;
use super::qdot;
use super::simd_fn;
use crate::weights::PackedMatrix;
use rayon::prelude::*;

/// Bytes of f32 tile per core: well inside L2 beside the product's panels.
const TILE_BYTES: usize = 256 << 10;
/// Up to this many rows of `x`, the row-dot path. (16 here doubled serve's
/// 16-client throughput, 114 against 61 tok/s on 2026-12-06, but the cached
/// decoding steps of `runtime/tests/generate.rs` then missed the full
/// forward pass by 3e-5 relative, beyond the test's 2e-5; not yet understood,
/// since a row's fused dot does not depend on how many rows share it.)
const FEW_ROWS: usize = 4;

/// Rows of `W` per dequantized tile.
fn tile_rows(cols: usize, out: usize) -> usize {
    (TILE_BYTES / 4 / cols.max(1))
        .clamp(16, 1024)
        .min(out.max(1))
}

/// Rows of `x` per task when the cores split `x`: one share per core.
fn x_rows_per_task(n: usize) -> usize {
    n.div_ceil(rayon::current_num_threads().max(1)).max(1)
}

simd_fn! {
    fn dot(a: &[f32], b: &[f32]) -> f32 {
        let mut acc = [0f32; 16];
        let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
        let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
        for (x, y) in ca.zip(cb) {
            for l in 0..16 {
                acc[l] += x[l] * y[l];
            }
        }
        acc.iter().sum::<f32>() + tail
    }
}

simd_fn! {
    /// Rows `start..` of `w` into `out` (the decoding loops vectorize here).
    fn dequantize_tile(w: &PackedMatrix, start: usize, out: &mut [f32]) {
        w.dequantize_rows(start, out)
    }
}

/// `y += x @ Wᵀ` (`y` holds zeros or the bias rows): `x: [n, in]`, `y: [n, out]`.
pub fn linear(x: &[f32], n: usize, w: &PackedMatrix, y: &mut [f32]) {
    let (o, k) = (w.rows(), w.cols());
    assert!(
        x.len() == n * k && y.len() == n * o,
        "packed linear: x [{n}, {}] and y [{n}, {}] against W [{o}, {k}]",
        x.len() / n.max(1),
        y.len() / n.max(1)
    );
    if n == 0 || o == 0 {
        return;
    }
    if n <= FEW_ROWS {
        return linear_few_rows(x, n, w, y);
    }
    let per = x_rows_per_task(n);
    y.par_chunks_mut(per * o)
        .zip(x.par_chunks(per * k))
        .for_each(|(yc, xc)| {
            let m = xc.len() / k;
            over_tiles(w, |t0, rows, tile| {
                gemm_st(
                    false,
                    true,
                    m,
                    rows,
                    k,
                    1.0,
                    xc,
                    k,
                    tile,
                    k,
                    1.0,
                    &mut yc[t0..],
                    o,
                )
            });
        });
}

/// Calls `f(first_row, rows, tile)` for each tile of `W`'s rows, dequantized
/// into one buffer that the task reuses.
fn over_tiles(w: &PackedMatrix, mut f: impl FnMut(usize, usize, &[f32])) {
    let (o, k) = (w.rows(), w.cols());
    let tr = tile_rows(k, o);
    let mut buf = vec![0f32; tr * k];
    for t0 in (0..o).step_by(tr) {
        let rows = tr.min(o - t0);
        let tile = &mut buf[..rows * k];
        dequantize_tile(w, t0, tile);
        f(t0, rows, tile);
    }
}

/// [`linear`] for a few rows of `x`: the cores split `W`'s rows. Each row's
/// blocks are decoded in registers and met by every row of `x` ([`qdot`])
/// where the CPU and type have a fused kernel; else the row is dequantized
/// into a buffer of the task (it stays in L1) and dotted.
fn linear_few_rows(x: &[f32], n: usize, w: &PackedMatrix, y: &mut [f32]) {
    let (o, k) = (w.rows(), w.cols());
    let tr = tile_rows(k, o).min(o.div_ceil(4 * rayon::current_num_threads()).max(1));
    let fused = w
        .ggml_blocks()
        .and_then(|(ty, row_bytes, bytes)| Some((qdot::row_dots(ty)?, row_bytes, bytes)));
    let sums = match fused {
        Some(_) => qdot::block_sums(x),
        None => Vec::new(),
    };
    // Rows `t0..t0 + out.len() / n` of `W` against every row of `x`, into
    // `out: [rows, n]`.
    let rows_into = |t0: usize, out: &mut [f32]| match fused {
        Some((dots, row_bytes, bytes)) => {
            let rows = out.len() / n;
            let w_rows = &bytes[t0 * row_bytes..(t0 + rows) * row_bytes];
            dots(w_rows, row_bytes, x, &sums, n, out)
        }
        None => {
            let mut row = vec![0f32; k];
            for (r, o) in out.chunks_exact_mut(n).enumerate() {
                dequantize_tile(w, t0 + r, &mut row);
                for (i, v) in o.iter_mut().enumerate() {
                    *v = dot(&row, &x[i * k..(i + 1) * k]);
                }
            }
        }
    };
    if n == 1 {
        // `y: [1, out]` is the tasks' `[rows, 1]` side by side.
        let mut part = vec![0f32; o];
        part.par_chunks_mut(tr)
            .enumerate()
            .for_each(|(t, out)| rows_into(t * tr, out));
        for (yv, v) in y.iter_mut().zip(&part) {
            *yv += v;
        }
        return;
    }
    // Each task's results `[rows, n]`, then scattered into `y: [n, out]`.
    let parts: Vec<(usize, Vec<f32>)> = (0..o.div_ceil(tr))
        .into_par_iter()
        .map(|t| {
            let t0 = t * tr;
            let mut out = vec![0f32; tr.min(o - t0) * n];
            rows_into(t0, &mut out);
            (t0, out)
        })
        .collect();
    for (t0, out) in parts {
        for (r, vals) in out.chunks_exact(n).enumerate() {
            for (i, v) in vals.iter().enumerate() {
                y[i * o + t0 + r] += v;
            }
        }
    }
}

/// `dx = dy @ W`: `dy: [n, out]`, `dx: [n, in]`.
pub fn linear_dx(dy: &[f32], n: usize, w: &PackedMatrix) -> Vec<f32> {
    let (o, k) = (w.rows(), w.cols());
    assert!(
        dy.len() == n * o,
        "packed linear backward: dy has {} values, not [{n}, {o}]",
        dy.len()
    );
    let mut dx = vec![0f32; n * k];
    if n == 0 || o == 0 {
        return dx;
    }
    let per = x_rows_per_task(n);
    dx.par_chunks_mut(per * k)
        .zip(dy.par_chunks(per * o))
        .for_each(|(dxc, dyc)| {
            let m = dyc.len() / o;
            over_tiles(w, |t0, rows, tile| {
                let beta = if t0 == 0 { 0.0 } else { 1.0 };
                gemm_st(
                    false,
                    false,
                    m,
                    k,
                    rows,
                    1.0,
                    &dyc[t0..],
                    o,
                    tile,
                    k,
                    beta,
                    dxc,
                    k,
                )
            });
        });
    dx
}
