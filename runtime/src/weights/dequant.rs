//! Dequantization of ggml block formats to f32, bit-exact with ggml's
//! `dequantize_row_*` (products `q * d` are exact in f32 for these formats).
//!
//! Block layouts (32 values per block):
//! - Q4_0: f16 d, 16 bytes of nibbles; x = (q - 8) * d
//! - Q4_1: f16 d, f16 m, 16 bytes; x = q * d + m
//! - Q5_0: f16 d, u32 high bits, 16 bytes; x = (q - 16) * d
//! - Q5_1: f16 d, f16 m, u32 high bits, 16 bytes; x = q * d + m
//! - Q8_0: f16 d, 32 i8; x = q * d
//!
//! In the 4- and 5-bit formats the low nibble of byte j is value j and the high
//! nibble is value j + 16.
//!
//! The K-quants (256 values per super-block; `kquants.rs`) follow ggml's
//! `dequantize_row_q{2..6}_K`, operation for operation, so that the values equal
//! those of gguf-py's `quants.dequantize` exactly.

use peftc_compiler::model::gguf::GgmlType;

pub(super) fn f16(b: &[u8], at: usize) -> f32 {
    half::f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// Dequantizes `out.len()` values of type `ty` from `bytes`. Returns `false`
/// for a type this function does not decode; the caller checked the length.
pub fn dequantize(ty: GgmlType, bytes: &[u8], out: &mut [f32]) -> bool {
    match ty {
        GgmlType::F32 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        GgmlType::F16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = half::f16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        GgmlType::BF16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = half::bf16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        GgmlType::Q4_0 => blocks(bytes, out, 18, |b, o| {
            let d = f16(b, 0);
            for j in 0..16 {
                o[j] = ((b[2 + j] & 0x0F) as i32 - 8) as f32 * d;
                o[j + 16] = ((b[2 + j] >> 4) as i32 - 8) as f32 * d;
            }
        }),
        GgmlType::Q4_1 => blocks(bytes, out, 20, |b, o| {
            let (d, m) = (f16(b, 0), f16(b, 2));
            for j in 0..16 {
                o[j] = (b[4 + j] & 0x0F) as f32 * d + m;
                o[j + 16] = (b[4 + j] >> 4) as f32 * d + m;
            }
        }),
        GgmlType::Q5_0 => blocks(bytes, out, 22, |b, o| {
            let d = f16(b, 0);
            let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
            for j in 0..16 {
                let h0 = ((qh >> j) << 4) & 0x10;
                let h1 = (qh >> (j + 12)) & 0x10;
                o[j] = (((b[6 + j] & 0x0F) as u32 | h0) as i32 - 16) as f32 * d;
                o[j + 16] = (((b[6 + j] >> 4) as u32 | h1) as i32 - 16) as f32 * d;
            }
        }),
        GgmlType::Q5_1 => blocks(bytes, out, 24, |b, o| {
            let (d, m) = (f16(b, 0), f16(b, 2));
            let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
            for j in 0..16 {
                let h0 = ((qh >> j) << 4) & 0x10;
                let h1 = (qh >> (j + 12)) & 0x10;
                o[j] = ((b[8 + j] & 0x0F) as u32 | h0) as f32 * d + m;
                o[j + 16] = ((b[8 + j] >> 4) as u32 | h1) as f32 * d + m;
            }
        }),
        GgmlType::Q8_0 => blocks(bytes, out, 34, |b, o| {
            let d = f16(b, 0);
            for j in 0..32 {
                o[j] = (b[2 + j] as i8) as f32 * d;
            }
        }),
        GgmlType::Q2K => super::kquants::q2_k(bytes, out),
        GgmlType::Q3K => super::kquants::q3_k(bytes, out),
        GgmlType::Q4K => super::kquants::q4_k(bytes, out),
        GgmlType::Q5K => super::kquants::q5_k(bytes, out),
        GgmlType::Q6K => super::kquants::q6_k(bytes, out),
        GgmlType::Q8_1 | GgmlType::Q8K | GgmlType::Other(_) => return false,
    }
    true
}

/// Whether [`dequantize`] decodes `ty`.
pub fn decodes(ty: GgmlType) -> bool {
    match ty {
        GgmlType::F32
        | GgmlType::F16
        | GgmlType::BF16
        | GgmlType::Q4_0
        | GgmlType::Q4_1
        | GgmlType::Q5_0
        | GgmlType::Q5_1
        | GgmlType::Q8_0
        | GgmlType::Q2K
        | GgmlType::Q3K
        | GgmlType::Q4K
        | GgmlType::Q5K
        | GgmlType::Q6K => true,
        GgmlType::Q8_1 | GgmlType::Q8K | GgmlType::Other(_) => false,
    }
}

/// The types [`dequantize`] decodes, for error messages.
pub const DECODED: &str =
    "f32, f16, bf16, q4_0, q4_1, q5_0, q5_1, q8_0, q2_k, q3_k, q4_k, q5_k, q6_k";

fn blocks(bytes: &[u8], out: &mut [f32], block_bytes: usize, f: impl Fn(&[u8], &mut [f32])) {
    for (b, o) in bytes
        .chunks_exact(block_bytes)
        .zip(out.chunks_exact_mut(32))
    {
        f(b, o);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(v: f32) -> [u8; 2] {
        half::f16::from_f32(v).to_le_bytes()
    }

    #[test]
    fn q4_1_low_nibbles_first() {
        // d = 0.5, m = -1, nibbles: byte j holds (j, 15 - j).
        let mut b = Vec::new();
        b.extend(h(0.5));
        b.extend(h(-1.0));
        for j in 0..16u8 {
            b.push(j | ((15 - j) << 4));
        }
        let mut out = [0f32; 32];
        assert!(dequantize(GgmlType::Q4_1, &b, &mut out));
        for j in 0..16 {
            assert_eq!(out[j], j as f32 * 0.5 - 1.0);
            assert_eq!(out[j + 16], (15 - j) as f32 * 0.5 - 1.0);
        }
    }

    #[test]
    fn q8_0_and_q4_0() {
        let mut b = Vec::new();
        b.extend(h(0.25));
        for j in 0..32i8 {
            b.push((j - 16) as u8);
        }
        let mut out = [0f32; 32];
        assert!(dequantize(GgmlType::Q8_0, &b, &mut out));
        assert_eq!(out[0], -4.0);
        assert_eq!(out[31], 3.75);
        let mut b = Vec::new();
        b.extend(h(2.0));
        b.extend(std::iter::repeat_n(0x9Fu8, 16)); // low 15, high 9
        assert!(dequantize(GgmlType::Q4_0, &b, &mut out));
        assert_eq!(out[0], 14.0);
        assert_eq!(out[16], 2.0);
    }

    #[test]
    fn q5_0_high_bits() {
        let mut b = Vec::new();
        b.extend(h(1.0));
        b.extend(0xFFFF_FFFFu32.to_le_bytes()); // every high bit set
        b.extend(std::iter::repeat_n(0x00u8, 16));
        let mut out = [0f32; 32];
        assert!(dequantize(GgmlType::Q5_0, &b, &mut out));
        assert!(out.iter().all(|&v| v == 0.0), "16 - 16 = 0: {out:?}");
    }
}
