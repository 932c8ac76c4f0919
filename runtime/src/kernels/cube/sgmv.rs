//! Segmented multi-adapter LoRA (Punica's SGMV / BGMV): every row of a batch
//! goes through its own adapter's `A` and `B`, in one launch per product
//! whatever the number of adapters.
//!
//! The adapters are stacked: `a: [K * r, in]` (adapter `k`'s `A` in rows
//! `k*r .. (k+1)*r`), `b: [K * out, r]`, `scales: [K]`, `ids: [n]` (u32); an
//! adapter of a smaller rank is zero-padded to `r`, which adds nothing.

use cubecl::prelude::*;

/// `u[i, k] = sum_j x[i, j] a[ids[i] * r + k, j]`, `u: [n, r]`: one cube
/// per output element, its `BLOCK` units striding over `j` (coalesced reads
/// of the long `in` axis), then a tree reduction in shared memory. A decode
/// batch has few outputs (`n * r`) and long dot products, so one unit per
/// output would leave most of a GPU idle.
#[cube(launch)]
pub fn shrink<F: Float>(
    x: &Tensor<F>,
    ids: &Tensor<u32>,
    a: &Tensor<F>,
    u: &mut Tensor<F>,
    #[comptime] block: usize,
) {
    let out = CUBE_POS;
    if out >= u.len() {
        terminate!();
    }
    let t = UNIT_POS as usize;
    let r = u.shape(1);
    let d = x.shape(1);
    let i = out / r;
    let k = out % r;
    let row = ids[i] as usize * r + k;
    let mut acc = F::new(0.0);
    let mut j = t;
    while j < d {
        acc += x[i * d + j] * a[row * d + j];
        j += block;
    }
    let mut partial = SharedMemory::<F>::new(block);
    partial[t] = acc;
    sync_cube();
    // A runtime counter: the comptime `block` cannot be mutated.
    let mut half = CUBE_DIM as usize / 2;
    while half > 0 {
        if t < half {
            partial[t] = partial[t] + partial[t + half];
        }
        sync_cube();
        half /= 2;
    }
    if t == 0 {
        u[out] = partial[0];
    }
}

/// `out[i, o] = y[i, o] + scales[ids[i]] * sum_k u[i, k] b[ids[i] * out + o, k]`.
#[cube(launch)]
pub fn expand<F: Float>(
    y: &Tensor<F>,
    u: &Tensor<F>,
    ids: &Tensor<u32>,
    b: &Tensor<F>,
    scales: &Tensor<F>,
    out: &mut Tensor<F>,
) {
    if ABSOLUTE_POS >= out.len() {
        terminate!();
    }
    let d = out.shape(1);
    let r = u.shape(1);
    let i = ABSOLUTE_POS / d;
    let o = ABSOLUTE_POS % d;
    let id = ids[i] as usize;
    let row = id * d + o;
    let mut acc = F::new(0.0);
    for k in 0..r {
        acc += u[i * r + k] * b[row * r + k];
    }
    out[ABSOLUTE_POS] = y[ABSOLUTE_POS] + acc * scales[id];
}
