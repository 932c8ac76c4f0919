//! The epilogues that follow a frozen linear: (IA)³'s column scale, DoRA's
//! magnitude mix, LoRA's expand-and-add, and the column reduction their
//! backward needs. All operands are contiguous `[n, d]` row-major; `[1, d]`
//! vectors broadcast over rows. The purely elementwise ones take vectors of
//! `N` elements (`N` divides `d`, chosen at launch).

use super::elementwise::splat;
use cubecl::prelude::*;

/// The `[1, d]` row vector's element (a vector of `N`) for vector `pos` of
/// an `[n, d]` tensor, `d` a multiple of `N`.
#[cube]
fn col<F: Float, N: Size>(
    row: &Tensor<Vector<F, N>>,
    like: &Tensor<Vector<F, N>>,
    pos: usize,
) -> Vector<F, N> {
    row[pos % (like.shape(1) / like.vector_size())]
}

/// `y = x * l[col]`.
#[cube(launch)]
pub fn scale_cols<F: Float, N: Size>(
    x: &Tensor<Vector<F, N>>,
    l: &Tensor<Vector<F, N>>,
    y: &mut Tensor<Vector<F, N>>,
) {
    if ABSOLUTE_POS >= y.len() {
        terminate!();
    }
    y[ABSOLUTE_POS] = x[ABSOLUTE_POS] * col::<F, N>(l, x, ABSOLUTE_POS);
}

/// `out = y + base * (mag[col] - 1) + delta * mag[col]`.
#[cube(launch)]
pub fn dora_mix<F: Float, N: Size>(
    y: &Tensor<Vector<F, N>>,
    base: &Tensor<Vector<F, N>>,
    delta: &Tensor<Vector<F, N>>,
    mag: &Tensor<Vector<F, N>>,
    out: &mut Tensor<Vector<F, N>>,
) {
    if ABSOLUTE_POS >= out.len() {
        terminate!();
    }
    let m = col::<F, N>(mag, y, ABSOLUTE_POS);
    out[ABSOLUTE_POS] =
        y[ABSOLUTE_POS] + base[ABSOLUTE_POS] * (m - splat::<F, N>(1.0)) + delta[ABSOLUTE_POS] * m;
}

/// `out[i, o] = y[i, o] + s * sum_k u[i, k] b[o, k]`: LoRA's second product,
/// scale and residual add in one pass, `u = x Aᵀ: [n, r]`, `b: [out, r]`.
/// The `[n, out]` delta never exists.
#[cube(launch)]
pub fn lora_expand<F: Float>(
    y: &Tensor<F>,
    u: &Tensor<F>,
    b: &Tensor<F>,
    out: &mut Tensor<F>,
    scale: f32,
) {
    if ABSOLUTE_POS >= out.len() {
        terminate!();
    }
    let d = out.shape(1);
    let r = u.shape(1);
    let acc = row_dot::<F>(u, b, ABSOLUTE_POS / d, ABSOLUTE_POS % d, r);
    out[ABSOLUTE_POS] = y[ABSOLUTE_POS] + acc * F::cast_from(scale);
}

/// A bottleneck adapter's epilogue after its up projection `u = act(z) W_upᵀ`:
/// `out = res + s (u + bias[col])`, the bias, scale and residual add in one
/// pass. (The up projection itself is a matmul: a bottleneck of 64-256 is too
/// deep a reduction for one unit per output, unlike LoRA's rank.)
#[cube(launch)]
pub fn adapter_out<F: Float, N: Size>(
    res: &Tensor<Vector<F, N>>,
    u: &Tensor<Vector<F, N>>,
    bias: &Tensor<Vector<F, N>>,
    out: &mut Tensor<Vector<F, N>>,
    scale: f32,
) {
    if ABSOLUTE_POS >= out.len() {
        terminate!();
    }
    let b = col::<F, N>(bias, u, ABSOLUTE_POS);
    out[ABSOLUTE_POS] =
        res[ABSOLUTE_POS] + (u[ABSOLUTE_POS] + b) * Vector::new(F::cast_from(scale));
}

/// `sum_k u[i, k] b[o, k]` over the rank `r`.
#[cube]
fn row_dot<F: Float>(u: &Tensor<F>, b: &Tensor<F>, i: usize, o: usize, r: usize) -> F {
    let mut acc = F::new(0.0);
    for k in 0..r {
        acc += u[i * r + k] * b[o * r + k];
    }
    acc
}

/// Partial column sums of `a * b` over blocks of `rows_per` rows:
/// `partial[blk, c] = sum_{i in blk} a[i, c] b[i, c]` (one unit per
/// `(blk, c)`, neighbouring units on neighbouring columns).
#[cube(launch)]
pub fn col_dot_partial<F: Float>(
    a: &Tensor<F>,
    b: &Tensor<F>,
    partial: &mut Tensor<F>,
    rows_per: u32,
) {
    if ABSOLUTE_POS >= partial.len() {
        terminate!();
    }
    let n = a.shape(0);
    let d = a.shape(1);
    let blk = ABSOLUTE_POS / d;
    let c = ABSOLUTE_POS % d;
    let per = rows_per as usize;
    let start = blk * per;
    let mut end = start + per;
    if end > n {
        end = n;
    }
    let mut acc = F::new(0.0);
    for i in start..end {
        acc += a[i * d + c] * b[i * d + c];
    }
    partial[ABSOLUTE_POS] = acc;
}

/// `out[c] = sum_blk partial[blk, c]`.
#[cube(launch)]
pub fn col_sum<F: Float>(partial: &Tensor<F>, out: &mut Tensor<F>) {
    if ABSOLUTE_POS >= out.len() {
        terminate!();
    }
    let blocks = partial.shape(0);
    let d = partial.shape(1);
    let mut acc = F::new(0.0);
    for blk in 0..blocks {
        acc += partial[blk * d + ABSOLUTE_POS];
    }
    out[ABSOLUTE_POS] = acc;
}
