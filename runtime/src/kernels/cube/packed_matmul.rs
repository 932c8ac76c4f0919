//! Products with a packed frozen weight `W: [rows, cols]` whose codes stay
//! on the device as the host holds them (`dequant.rs` decodes each value):
//! `out = a Wᵀ` (the forward, `a: [n, cols]`) or, `transposed`, `out = a W`
//! (the input gradient, `a: [n, rows]`). Tiled through shared memory: a cube
//! computes a `TILE × TILE` block of `out`, each step decoding a `TILE × TILE`
//! tile of `W` once (one value per unit) for all its rows of `a`, so a value
//! is decoded `n / TILE` times in all, never expanded into a buffer.

use super::dequant::value;
use cubecl::prelude::*;

/// Rows and columns of `out` per cube, and the depth of each step.
pub const TILE: usize = 16;

#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn packed_matmul<F: Float>(
    a: &Tensor<F>,
    words: &Tensor<u32>,
    aux: &Tensor<f32>,
    out: &mut Tensor<F>,
    cols: u32,
    row_bytes: u32,
    #[comptime] format: u32,
    #[comptime] transposed: bool,
) {
    let n = a.shape(0);
    let k = a.shape(1);
    let m = out.shape(1);
    let (cols, row_bytes) = (cols as usize, row_bytes as usize);
    let tx = UNIT_POS_X as usize;
    let ty = UNIT_POS_Y as usize;
    let r0 = CUBE_POS_Y as usize * TILE;
    let c0 = CUBE_POS_X as usize * TILE;
    let mut a_tile = SharedMemory::<F>::new(TILE * TILE);
    // b_tile[kk * TILE + c] = B[k0 + kk, c0 + c], B = Wᵀ or W.
    let mut b_tile = SharedMemory::<F>::new(TILE * TILE);
    let mut acc = F::new(0.0);
    let mut k0 = 0;
    while k0 < k {
        let mut av = F::new(0.0);
        if r0 + ty < n && k0 + tx < k {
            av = a[(r0 + ty) * k + k0 + tx];
        }
        a_tile[ty * TILE + tx] = av;
        // Neighbouring units decode neighbouring values of one row of W.
        let mut bv = F::new(0.0);
        if comptime!(transposed) {
            // B[k0 + ty, c0 + tx] = W[k0 + ty, c0 + tx].
            if k0 + ty < k && c0 + tx < m {
                bv = F::cast_from(value(words, aux, k0 + ty, c0 + tx, cols, row_bytes, format));
            }
            b_tile[ty * TILE + tx] = bv;
        } else {
            // B[k0 + tx, c0 + ty] = W[c0 + ty, k0 + tx].
            if k0 + tx < k && c0 + ty < m {
                bv = F::cast_from(value(words, aux, c0 + ty, k0 + tx, cols, row_bytes, format));
            }
            b_tile[tx * TILE + ty] = bv;
        }
        sync_cube();
        for kk in 0..TILE {
            acc += a_tile[ty * TILE + kk] * b_tile[kk * TILE + tx];
        }
        sync_cube();
        k0 += TILE;
    }
    if r0 + ty < n && c0 + tx < m {
        out[(r0 + ty) * m + c0 + tx] = acc;
    }
}
