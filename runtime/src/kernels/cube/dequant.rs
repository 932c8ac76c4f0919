//! One value of a packed frozen weight, decoded on the device from the codes
//! as the host holds them (`weights::DeviceForm`): the GGUF blocks as the file
//! has them, NF4 nibbles with their block scales, or Int8 rows. The same
//! arithmetic as the host decoders (`weights/dequant.rs`, `kquants.rs`,
//! `nf4.rs`, `int8.rs`), value for value; a compiler that fuses a multiply
//! and an add may round the last bit differently.
//!
//! The bytes arrive as little-endian `u32` words (the last one zero-padded);
//! f16 fields are decoded from their bits, so no device needs f16 support.

use crate::weights::Coding;
use cubecl::prelude::*;
use peftc_compiler::model::gguf::GgmlType;

pub const F32: u32 = 0;
pub const F16: u32 = 1;
pub const BF16: u32 = 2;
pub const Q4_0: u32 = 3;
pub const Q4_1: u32 = 4;
pub const Q5_0: u32 = 5;
pub const Q5_1: u32 = 6;
pub const Q8_0: u32 = 7;
pub const Q2_K: u32 = 8;
pub const Q3_K: u32 = 9;
pub const Q4_K: u32 = 10;
pub const Q5_K: u32 = 11;
pub const Q6_K: u32 = 12;
pub const NF4: u32 = 13;
pub const INT8: u32 = 14;

/// The comptime code of a coding, `None` for a GGUF type no kernel decodes
/// (the host decoders refuse those at load, so none reaches here).
pub fn format_code(c: Coding) -> Option<u32> {
    Some(match c {
        Coding::Ggml(t) => match t {
            GgmlType::F32 => F32,
            GgmlType::F16 => F16,
            GgmlType::BF16 => BF16,
            GgmlType::Q4_0 => Q4_0,
            GgmlType::Q4_1 => Q4_1,
            GgmlType::Q5_0 => Q5_0,
            GgmlType::Q5_1 => Q5_1,
            GgmlType::Q8_0 => Q8_0,
            GgmlType::Q2K => Q2_K,
            GgmlType::Q3K => Q3_K,
            GgmlType::Q4K => Q4_K,
            GgmlType::Q5K => Q5_K,
            GgmlType::Q6K => Q6_K,
            GgmlType::Q8_1 | GgmlType::Q8K | GgmlType::Other(_) => return None,
        },
        Coding::Nf4 => NF4,
        Coding::Int8 => INT8,
    })
}

/// Byte `at` of the words.
#[cube]
fn byte(w: &Tensor<u32>, at: usize) -> u32 {
    (w[at / 4] >> (((at % 4) * 8) as u32)) & 255
}

/// A byte read as `i8`, in f32.
#[cube]
fn signed(b: u32) -> f32 {
    let mut v = f32::cast_from(b);
    if b >= 128 {
        v -= 256.0;
    }
    v
}

/// An IEEE half from its 16 bits (exact: every half is an f32).
#[cube]
pub fn half_bits(h: u32) -> f32 {
    let e = (h >> 10) & 31;
    let m = h & 1023;
    // Zero and subnormals: m · 2⁻²⁴.
    let mut mag = f32::cast_from(m) * 5.9604645e-8;
    if e == 31 {
        mag = f32::reinterpret(2139095040u32 | (m << 13));
    } else if e != 0 {
        mag = f32::reinterpret(((e + 112) << 23) | (m << 13));
    }
    let mut v = mag;
    if (h >> 15) == 1 {
        v = -mag;
    }
    v
}

/// The f16 at byte `at`.
#[cube]
fn half(w: &Tensor<u32>, at: usize) -> f32 {
    half_bits(byte(w, at) | (byte(w, at + 1) << 8))
}

/// The little-endian u32 at byte `at` (any alignment).
#[cube]
fn word_at(w: &Tensor<u32>, at: usize) -> u32 {
    byte(w, at) | (byte(w, at + 1) << 8) | (byte(w, at + 2) << 16) | (byte(w, at + 3) << 24)
}

/// Value `t` (0..32) of a 4-bit block's 16 code bytes at `qs`: low nibbles
/// are values 0..16, high nibbles 16..32.
#[cube]
fn nibble32(w: &Tensor<u32>, qs: usize, t: usize) -> u32 {
    let mut q = byte(w, qs + t % 16);
    if t >= 16 {
        q >>= 4;
    }
    q & 15
}

/// The fifth bit of value `t` of a Q5 block, as 16 or 0.
#[cube]
fn fifth32(qh: u32, t: usize) -> u32 {
    let mut h = ((qh >> (t as u32)) << 4) & 16;
    if t >= 16 {
        h = (qh >> ((t - 4) as u32)) & 16;
    }
    h
}

/// Q4_K / Q5_K's 6-bit scale (`min = false`) or min of sub-block `j`
/// from the 12 packed bytes at `s` (ggml's `get_scale_min_k4`).
#[cube]
fn scale_min_k4(w: &Tensor<u32>, s: usize, j: usize, #[comptime] min: bool) -> f32 {
    let mut v = byte(w, s + j) & 63;
    if comptime!(min) {
        v = byte(w, s + j + 4) & 63;
        if j >= 4 {
            v = (byte(w, s + j + 4) >> 4) | ((byte(w, s + j) >> 6) << 4);
        }
    } else if j >= 4 {
        v = (byte(w, s + j + 4) & 15) | ((byte(w, s + j - 4) >> 6) << 4);
    }
    f32::cast_from(v)
}

/// `W[o, j]` of a `cols`-column matrix of `format`, `row_bytes` bytes a row.
#[cube]
pub fn value(
    w: &Tensor<u32>,
    aux: &Tensor<f32>,
    o: usize,
    j: usize,
    cols: usize,
    row_bytes: usize,
    #[comptime] format: u32,
) -> f32 {
    let row = o * row_bytes;
    let mut v = 0.0f32;
    if comptime!(format == F32) {
        v = f32::reinterpret(w[o * cols + j]);
    } else if comptime!(format == F16) {
        v = half(w, 2 * (o * cols + j));
    } else if comptime!(format == BF16) {
        let at = 2 * (o * cols + j);
        v = f32::reinterpret((byte(w, at) | (byte(w, at + 1) << 8)) << 16);
    } else if comptime!(format == Q4_0) {
        let b = row + (j / 32) * 18;
        let q = nibble32(w, b + 2, j % 32);
        v = (f32::cast_from(q) - 8.0) * half(w, b);
    } else if comptime!(format == Q4_1) {
        let b = row + (j / 32) * 20;
        let q = nibble32(w, b + 4, j % 32);
        v = f32::cast_from(q) * half(w, b) + half(w, b + 2);
    } else if comptime!(format == Q5_0) {
        let b = row + (j / 32) * 22;
        let t = j % 32;
        let q = nibble32(w, b + 6, t) | fifth32(word_at(w, b + 2), t);
        v = (f32::cast_from(q) - 16.0) * half(w, b);
    } else if comptime!(format == Q5_1) {
        let b = row + (j / 32) * 24;
        let t = j % 32;
        let q = nibble32(w, b + 8, t) | fifth32(word_at(w, b + 4), t);
        v = f32::cast_from(q) * half(w, b) + half(w, b + 2);
    } else if comptime!(format == Q8_0) {
        let b = row + (j / 32) * 34;
        v = signed(byte(w, b + 2 + j % 32)) * half(w, b);
    } else if comptime!(format == Q2_K) {
        v = q2_k(w, row + (j / 256) * 84, j % 256);
    } else if comptime!(format == Q3_K) {
        v = q3_k(w, row + (j / 256) * 110, j % 256);
    } else if comptime!(format == Q4_K) {
        v = q45_k(w, row + (j / 256) * 144, j % 256, false);
    } else if comptime!(format == Q5_K) {
        v = q45_k(w, row + (j / 256) * 176, j % 256, true);
    } else if comptime!(format == Q6_K) {
        v = q6_k(w, row + (j / 256) * 210, j % 256);
    } else if comptime!(format == NF4) {
        let at = o * cols + j;
        let mut q = byte(w, at / 2);
        if (at & 1) == 0 {
            q >>= 4;
        }
        v = aux[(q & 15) as usize] * aux[16 + at / 64];
    } else if comptime!(format == INT8) {
        v = signed(byte(w, o * cols + j)) * aux[o] / 127.0;
    }
    v
}

// Q2_K / Q3_K order their values in halves of 128, four 2-bit shifts of 32
// (`si`), two sub-blocks of 16; `i` is the place in the half's 32 code bytes,
// `s` the sub-block's scale.

/// Q2_K: `d·sc·q − dmin·m`.
#[cube]
fn q2_k(w: &Tensor<u32>, b: usize, t: usize) -> f32 {
    let hf = t / 128;
    let si = (t % 128) / 32;
    let i = t % 32;
    let s = hf * 8 + si * 2 + i / 16;
    let sc = byte(w, b + s);
    let dl = half(w, b + 80) * f32::cast_from(sc & 15);
    let ml = half(w, b + 82) * f32::cast_from(sc >> 4);
    let q = (byte(w, b + 16 + hf * 32 + i) >> ((2 * si) as u32)) & 3;
    dl * f32::cast_from(q) - ml
}

/// Q3_K: `d·(sc − 32)·(q − 4·!h)`.
#[cube]
fn q3_k(w: &Tensor<u32>, b: usize, t: usize) -> f32 {
    let hf = t / 128;
    let si = (t % 128) / 32;
    let i = t % 32;
    let s = hf * 8 + si * 2 + i / 16;
    let low = (byte(w, b + 96 + s % 8) >> ((4 * (s / 8)) as u32)) & 15;
    let high = (byte(w, b + 104 + s % 4) >> ((2 * (s / 4)) as u32)) & 3;
    let sc = f32::cast_from(low | (high << 4)) - 32.0;
    let dl = half(w, b + 108) * sc;
    let q = (byte(w, b + 32 + hf * 32 + i) >> ((2 * si) as u32)) & 3;
    let bit = (hf * 4 + si) as u32;
    let mut off = 4.0f32;
    if (byte(w, b + i) >> bit) & 1 == 1 {
        off = 0.0;
    }
    dl * (f32::cast_from(q) - off)
}

/// Q4_K (`fifth = false`) and Q5_K: `d·sc·q − dmin·m` over sub-blocks of 32,
/// each 64 values sharing 32 code bytes (low nibbles first).
#[cube]
fn q45_k(w: &Tensor<u32>, b: usize, t: usize, #[comptime] fifth: bool) -> f32 {
    let j = t / 64;
    let l = t % 64;
    let sub = 2 * j + l / 32;
    let d1 = half(w, b) * scale_min_k4(w, b + 4, sub, false);
    let m1 = half(w, b + 2) * scale_min_k4(w, b + 4, sub, true);
    let mut qs = b + 16;
    if comptime!(fifth) {
        qs = b + 48;
    }
    let mut q = byte(w, qs + 32 * j + l % 32);
    if l >= 32 {
        q >>= 4;
    }
    q &= 15;
    if comptime!(fifth) {
        q += ((byte(w, b + 16 + l % 32) >> (sub as u32)) & 1) * 16;
    }
    d1 * f32::cast_from(q) - m1
}

/// Q6_K: `d·sc·(q − 32)`, sub-blocks of 16 with i8 scales.
#[cube]
fn q6_k(w: &Tensor<u32>, b: usize, t: usize) -> f32 {
    let hf = t / 128;
    let k = (t % 128) / 32;
    let l = t % 32;
    let ql = b + 64 * hf + l + 32 * (k % 2);
    let mut low = byte(w, ql);
    if k >= 2 {
        low >>= 4;
    }
    let high = (byte(w, b + 128 + 32 * hf + l) >> ((2 * k) as u32)) & 3;
    let q = f32::cast_from((low & 15) | (high << 4)) - 32.0;
    let sc = signed(byte(w, b + 192 + 8 * hf + l / 16 + 2 * k));
    half(w, b + 208) * sc * q
}
