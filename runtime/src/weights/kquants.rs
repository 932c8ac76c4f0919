//! ggml's K-quants: super-blocks of 256 values with 16 or 8 sub-block scales,
//! decoded as ggml's `dequantize_row_q{2,3,4,5,6}_K` do (same order of f32
//! operations, so the values equal gguf-py's `quants.dequantize` bit for bit).
//!
//! Layouts (bytes per super-block):
//! - Q2_K (84): 16 scale bytes (low nibble scale, high nibble min), 64 bytes of
//!   2-bit values, f16 d, f16 dmin; `x = d·sc·q − dmin·m`.
//! - Q3_K (110): 32 bytes of high bits, 64 bytes of 2-bit low values, 12 bytes
//!   of packed 6-bit scales, f16 d; `x = d·(sc − 32)·(q − 4·!h)`.
//! - Q4_K (144): f16 d, f16 dmin, 12 bytes of packed 6-bit scales and mins,
//!   128 bytes of nibbles; `x = d·sc·q − dmin·m`.
//! - Q5_K (176): as Q4_K plus 32 bytes of fifth bits before the nibbles.
//! - Q6_K (210): 128 bytes of low nibbles, 64 bytes of high 2-bit pairs, 16
//!   i8 scales, f16 d; `x = d·sc·(q − 32)`.

use super::dequant::f16;

const QK: usize = 256;

fn super_blocks(bytes: &[u8], out: &mut [f32], block_bytes: usize, f: impl Fn(&[u8], &mut [f32])) {
    for (b, o) in bytes
        .chunks_exact(block_bytes)
        .zip(out.chunks_exact_mut(QK))
    {
        f(b, o);
    }
}

/// Sub-block `j`'s 6-bit scale and min from Q4_K / Q5_K's 12 packed bytes
/// (ggml's `get_scale_min_k4`).
fn scale_min_k4(j: usize, s: &[u8]) -> (f32, f32) {
    let (sc, m) = if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    };
    (sc as f32, m as f32)
}

pub fn q2_k(bytes: &[u8], out: &mut [f32]) {
    super_blocks(bytes, out, 84, |b, y| {
        let (scales, qs) = (&b[..16], &b[16..80]);
        let (d, dmin) = (f16(b, 80), f16(b, 82));
        let mut at = 0;
        for (half, q) in qs.chunks_exact(32).enumerate() {
            for shift_i in 0..4 {
                let shift = 2 * shift_i;
                for sub in 0..2 {
                    let sc = scales[half * 8 + shift_i * 2 + sub];
                    let dl = d * (sc & 0x0F) as f32;
                    let ml = dmin * (sc >> 4) as f32;
                    for l in 0..16 {
                        let v = (q[sub * 16 + l] >> shift) & 3;
                        y[at] = dl * v as f32 - ml;
                        at += 1;
                    }
                }
            }
        }
    });
}

pub fn q3_k(bytes: &[u8], out: &mut [f32]) {
    super_blocks(bytes, out, 110, |b, y| {
        let (hmask, qs, packed) = (&b[..32], &b[32..96], &b[96..108]);
        let d = f16(b, 108);
        // 16 signed 6-bit scales: the low nibbles of bytes 0..8, the high
        // 2-bit pairs of bytes 8..12.
        let mut scales = [0f32; 16];
        for (i, s) in scales.iter_mut().enumerate() {
            let low = (packed[i % 8] >> (4 * (i / 8))) & 0x0F;
            let high = (packed[8 + i % 4] >> (2 * (i / 4))) & 0x03;
            *s = ((low | (high << 4)) as i8 - 32) as f32;
        }
        let mut at = 0;
        let mut bit = 0;
        for (half, q) in qs.chunks_exact(32).enumerate() {
            for shift_i in 0..4 {
                let shift = 2 * shift_i;
                for sub in 0..2 {
                    let dl = d * scales[half * 8 + shift_i * 2 + sub];
                    for l in 0..16 {
                        let i = sub * 16 + l;
                        let low = ((q[i] >> shift) & 3) as i8;
                        let off = if hmask[i] & (1 << bit) != 0 { 0 } else { 4 };
                        y[at] = dl * (low - off) as f32;
                        at += 1;
                    }
                }
                bit += 1;
            }
        }
    });
}

pub fn q4_k(bytes: &[u8], out: &mut [f32]) {
    super_blocks(bytes, out, 144, |b, y| {
        let (d, dmin) = (f16(b, 0), f16(b, 2));
        let (scales, qs) = (&b[4..16], &b[16..144]);
        for (j, q) in qs.chunks_exact(32).enumerate() {
            let (s1, m1) = scale_min_k4(2 * j, scales);
            let (s2, m2) = scale_min_k4(2 * j + 1, scales);
            let (d1, m1) = (d * s1, dmin * m1);
            let (d2, m2) = (d * s2, dmin * m2);
            let o = &mut y[64 * j..64 * (j + 1)];
            for l in 0..32 {
                o[l] = d1 * (q[l] & 0x0F) as f32 - m1;
                o[32 + l] = d2 * (q[l] >> 4) as f32 - m2;
            }
        }
    });
}

pub fn q5_k(bytes: &[u8], out: &mut [f32]) {
    super_blocks(bytes, out, 176, |b, y| {
        let (d, dmin) = (f16(b, 0), f16(b, 2));
        let (scales, qh, qs) = (&b[4..16], &b[16..48], &b[48..176]);
        for (j, q) in qs.chunks_exact(32).enumerate() {
            let (s1, m1) = scale_min_k4(2 * j, scales);
            let (s2, m2) = scale_min_k4(2 * j + 1, scales);
            let (d1, m1) = (d * s1, dmin * m1);
            let (d2, m2) = (d * s2, dmin * m2);
            let (u1, u2) = (1u8 << (2 * j), 1u8 << (2 * j + 1));
            let o = &mut y[64 * j..64 * (j + 1)];
            for l in 0..32 {
                let h1 = if qh[l] & u1 != 0 { 16 } else { 0 };
                let h2 = if qh[l] & u2 != 0 { 16 } else { 0 };
                o[l] = d1 * ((q[l] & 0x0F) + h1) as f32 - m1;
                o[32 + l] = d2 * ((q[l] >> 4) + h2) as f32 - m2;
            }
        }
    });
}

pub fn q6_k(bytes: &[u8], out: &mut [f32]) {
    super_blocks(bytes, out, 210, |b, y| {
        let (ql, qh, sc) = (&b[..128], &b[128..192], &b[192..208]);
        let d = f16(b, 208);
        for half in 0..2 {
            let (ql, qh) = (&ql[64 * half..], &qh[32 * half..]);
            let sc = &sc[8 * half..];
            let o = &mut y[128 * half..128 * (half + 1)];
            for l in 0..32 {
                let is = l / 16;
                let q1 = ((ql[l] & 0x0F) | ((qh[l] & 3) << 4)) as i8 - 32;
                let q2 = ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) as i8 - 32;
                let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 - 32;
                let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8 - 32;
                let s = |k: usize| d * (sc[is + k] as i8) as f32;
                o[l] = s(0) * q1 as f32;
                o[l + 32] = s(2) * q2 as f32;
                o[l + 64] = s(4) * q3 as f32;
                o[l + 96] = s(6) * q4 as f32;
            }
        }
    });
}
