//! QLoRA's 4-bit NormalFloat (NF4) with double quantization, value for value
//! as bitsandbytes' `quantize_4bit(W, blocksize=64, quant_type="nf4",
//! compress_statistics=True)` stores a weight and `dequantize_4bit` reads it.
//!
//! Layout of an `[rows, cols]` matrix (values taken row-major, `cols` a
//! multiple of 64 so that no block straddles two rows):
//! - `codes`: two values per byte, the first in the high nibble, each an index
//!   into [`NF4_CODE`] of the value divided by its block's absmax;
//! - `qabsmax`: one byte per 64-value block, the block's absmax minus `offset`
//!   (the mean of all absmaxes) as an index into the signed 8-bit dynamic code
//!   ([`dynamic_code`]) scaled by its 256-block group's `absmax2`;
//! - `absmax2`: one f32 per group of 256 blocks (the last group may be short).
//!
//! A value is `NF4_CODE[nibble] * (DYN[qabsmax[b]] * absmax2[b / 256] + offset)`,
//! in f32 in that order: 0.5 bytes per value plus 1/64 + 4/16384.

use super::HostTensor;
use rayon::prelude::*;
use std::sync::OnceLock;

/// Values per block of the 4-bit codes.
pub const NF4_BLOCK: usize = peftc_compiler::model::NF4_BLOCK;
/// Blocks per group of the double quantization of the block scales.
pub const SCALE_GROUP: usize = peftc_compiler::model::NF4_SCALE_GROUP;

/// bitsandbytes' NF4 code book (`get_4bit_type("nf4")`): the quantiles of a
/// standard normal normalized to [-1, 1], with an exact 0.
pub const NF4_CODE: [f32; 16] = [
    -1.0,
    -0.696_192_8,
    -0.525_073_05,
    -0.394_917_5,
    -0.284_441_38,
    -0.184_773_43,
    -0.091_050_036,
    0.0,
    0.079_580_3,
    0.160_930_2,
    0.246_112_3,
    0.337_915_24,
    0.440_709_83,
    0.562_617,
    0.722_956_84,
    1.0,
];

/// The signed 8-bit dynamic code of bitsandbytes' `create_dynamic_map()`
/// (7 exponent bits, 256 sorted values in [-1, 1]) that quantizes the block
/// scales.
pub fn dynamic_code() -> &'static [f32; 256] {
    static CODE: OnceLock<[f32; 256]> = OnceLock::new();
    CODE.get_or_init(|| {
        let (exp_bits, non_sign_bits) = (7i32, 7i32);
        let mut data: Vec<f64> = Vec::with_capacity(256);
        for i in 0..exp_bits {
            let items = (1usize << (i + non_sign_bits - exp_bits)) + 1;
            let pow = 10f64.powi(-(exp_bits - 1) + i);
            for m in linspace_means(items) {
                data.push(pow * m);
                data.push(-pow * m);
            }
        }
        // 2^(non_sign_bits - exp_bits) - 1 = 0 additional items.
        data.push(0.0);
        data.push(1.0);
        data.resize(256, 0.0);
        data.sort_by(f64::total_cmp);
        let mut out = [0f32; 256];
        for (o, v) in out.iter_mut().zip(data) {
            *o = v as f32;
        }
        out
    })
}

/// Midpoints of `torch.linspace(0.1, 1, n, dtype=float32)`, in f32 as torch
/// computes them (`start + i * step` for the first half, `end - (n-1-i) *
/// step` for the rest).
fn linspace_means(n: usize) -> Vec<f64> {
    let (start, end) = (0.1f32, 1.0f32);
    let step = (end - start) / (n - 1) as f32;
    let half = n / 2;
    let b: Vec<f32> = (0..n)
        .map(|i| {
            if i < half {
                start + step * i as f32
            } else {
                end - step * (n - 1 - i) as f32
            }
        })
        .collect();
    b.windows(2).map(|w| ((w[0] + w[1]) / 2.0) as f64).collect()
}

/// The index of the code value nearest `x` in a sorted code book: the number
/// of midpoints below `x` (torch.bucketize over the midpoints, as
/// bitsandbytes' Python quantizers do; its native CPU 8-bit quantizer, which
/// encodes the block scales, does not split neighbours at their midpoint but
/// anywhere from 0.498 to 0.526 of the way (measured), so a few scales within
/// that band take the other code: see `tests/quant.rs`).
fn nearest(code: &[f32], x: f32) -> u8 {
    let below = code.windows(2).filter(|w| (w[0] + w[1]) / 2.0 < x).count();
    below as u8
}

/// An NF4 matrix with double-quantized block scales.
#[derive(Debug, Clone, PartialEq)]
pub struct Nf4Matrix {
    rows: usize,
    cols: usize,
    codes: Vec<u8>,
    qabsmax: Vec<u8>,
    absmax2: Vec<f32>,
    offset: f32,
}

impl Nf4Matrix {
    /// Quantizes `[rows, cols]` values; `Err` says why the shape cannot be.
    pub fn quantize(t: &HostTensor) -> Result<Nf4Matrix, String> {
        let &[rows, cols] = t.shape.as_slice() else {
            return Err(format!("has shape {:?}, not a matrix", t.shape));
        };
        if cols == 0 || !cols.is_multiple_of(NF4_BLOCK) {
            return Err(format!(
                "has rows of {cols} values, not a whole number of {NF4_BLOCK}-value NF4 blocks"
            ));
        }
        let absmax: Vec<f32> = t
            .data
            .par_chunks_exact(NF4_BLOCK)
            .map(|b| b.iter().fold(0f32, |m, v| m.max(v.abs())))
            .collect();
        let codes: Vec<u8> = t
            .data
            .par_chunks_exact(NF4_BLOCK)
            .zip(absmax.par_iter())
            .flat_map_iter(|(block, &am)| {
                let inv = 1.0 / am.max(1e-38);
                let q = move |v: f32| nearest(&NF4_CODE, (v * inv).clamp(-1.0, 1.0));
                block.chunks_exact(2).map(move |p| (q(p[0]) << 4) | q(p[1]))
            })
            .collect();
        // Double quantization: the absmaxes less their mean, 8-bit dynamic
        // code, one f32 scale per 256 blocks.
        let offset = (absmax.iter().map(|&v| v as f64).sum::<f64>() / absmax.len() as f64) as f32;
        let dyn_code = dynamic_code();
        let mut qabsmax = Vec::with_capacity(absmax.len());
        let mut absmax2 = Vec::with_capacity(absmax.len().div_ceil(SCALE_GROUP));
        for group in absmax.chunks(SCALE_GROUP) {
            let centered: Vec<f32> = group.iter().map(|&a| a - offset).collect();
            let a2 = centered.iter().fold(0f32, |m, v| m.max(v.abs()));
            // As bitsandbytes' default `quantize_blockwise`: whole groups
            // times the inverse, a short last group divided.
            let div = a2.max(1e-38);
            let (inv, whole) = (1.0 / div, group.len() == SCALE_GROUP);
            qabsmax.extend(centered.iter().map(|&c| {
                let x = if whole { c * inv } else { c / div };
                nearest(dyn_code, x.clamp(-1.0, 1.0))
            }));
            absmax2.push(a2);
        }
        Ok(Nf4Matrix {
            rows,
            cols,
            codes,
            qabsmax,
            absmax2,
            offset,
        })
    }

    pub fn shape(&self) -> [usize; 2] {
        [self.rows, self.cols]
    }

    /// Bytes held: codes, block scales, group scales and the offset.
    pub fn byte_len(&self) -> usize {
        self.codes.len() + self.qabsmax.len() + 4 * self.absmax2.len() + 4
    }

    /// The packed nibbles, the block scales' codes, the group scales and the
    /// offset, as bitsandbytes' `QuantState` holds them.
    pub fn parts(&self) -> (&[u8], &[u8], &[f32], f32) {
        (&self.codes, &self.qabsmax, &self.absmax2, self.offset)
    }

    /// Every block's absmax as the double quantization gives it back (what
    /// a GPU backend uploads beside the codes).
    pub fn block_scales(&self) -> Vec<f32> {
        (0..self.qabsmax.len())
            .map(|b| self.block_scale(b))
            .collect()
    }

    /// Block `b`'s absmax as the double quantization gives it back.
    fn block_scale(&self, b: usize) -> f32 {
        dynamic_code()[self.qabsmax[b] as usize] * self.absmax2[b / SCALE_GROUP] + self.offset
    }

    /// Rows `start..start + out.len() / cols` as f32 into `out`.
    pub fn dequantize_rows(&self, start: usize, out: &mut [f32]) {
        let first = start * self.cols / NF4_BLOCK;
        for (i, block) in out.chunks_exact_mut(NF4_BLOCK).enumerate() {
            let b = first + i;
            let scale = self.block_scale(b);
            let bytes = &self.codes[b * NF4_BLOCK / 2..(b + 1) * NF4_BLOCK / 2];
            for (pair, &byte) in block.chunks_exact_mut(2).zip(bytes) {
                pair[0] = NF4_CODE[(byte >> 4) as usize] * scale;
                pair[1] = NF4_CODE[(byte & 0xF) as usize] * scale;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dense(m: &Nf4Matrix) -> Vec<f32> {
        let [rows, cols] = m.shape();
        let mut out = vec![0f32; rows * cols];
        m.dequantize_rows(0, &mut out);
        out
    }

    #[test]
    fn codes_are_sorted_and_span_the_unit_interval() {
        let d = dynamic_code();
        assert!(d.windows(2).all(|w| w[0] <= w[1]));
        assert!(d[0] > -1.0 && d[0] < -0.99 && d[255] == 1.0);
        assert_eq!(nearest(&NF4_CODE, 0.0), 7);
        assert_eq!(nearest(&NF4_CODE, 1.0), 15);
        assert_eq!(nearest(&NF4_CODE, -1.0), 0);
    }

    #[test]
    fn a_block_of_codebook_values_round_trips() {
        // Row of 64: the 16 code values times 0.5, four times over: every
        // value is exactly representable, and the single block's absmax is
        // the offset itself, so the double quantization is exact too.
        let data: Vec<f32> = (0..64).map(|i| NF4_CODE[i % 16] * 0.5).collect();
        let m = Nf4Matrix::quantize(&HostTensor::new(vec![1, 64], data.clone())).unwrap();
        assert_eq!(dense(&m), data);
        assert_eq!(m.byte_len(), 32 + 1 + 4 + 4);
    }

    #[test]
    fn rows_off_the_block_are_refused() {
        let e = Nf4Matrix::quantize(&HostTensor::new(vec![2, 48], vec![0.0; 96])).unwrap_err();
        assert!(
            e.contains("not a whole number of 64-value NF4 blocks"),
            "{e}"
        );
    }
}
