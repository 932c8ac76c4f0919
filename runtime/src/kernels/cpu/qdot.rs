//! Dot products of GGUF-quantized rows with a few f32 vectors, the blocks
//! decoded in registers and never written out (decoding: one token's
//! products read each weight once, so the decode is the whole cost).
//!
//! Every 32-value format here is affine per block, `w_j = d·q_j + m`, so a
//! block's share of `w·x` is `d·(q·x) + m·Σx`: the integer codes convert to
//! f32 and meet `x` in one FMA each, and `Σx` per block is computed once per
//! vector ([`block_sums`]) for all the rows it meets. Against dequantizing
//! then dotting, only the order of the f32 sums changes.
//!
//! | type | bytes | `d` | `q_j` | `m` |
//! |---|---|---|---|---|
//! | Q4_0 | 18 | f16 | nibble | `−8·d` |
//! | Q4_1 | 20 | f16 | nibble | f16 |
//! | Q5_0 | 22 | f16 | nibble + high bit | `−16·d` |
//! | Q5_1 | 24 | f16 | nibble + high bit | f16 |
//! | Q8_0 | 34 | f16 | i8 | 0 |
//!
//! x86-64 with AVX2, FMA and F16C only ([`row_dots`] says `None` elsewhere,
//! and for the K-quants: the caller then dequantizes rows).

use peftc_compiler::model::gguf::GgmlType;

/// `Σ_j x_j` over each 32-value block of `x` (`x.len()` a multiple of 32):
/// for `x: [n, k]`, `[n, k/32]`.
pub fn block_sums(x: &[f32]) -> Vec<f32> {
    x.chunks_exact(32).map(|b| b.iter().sum()).collect()
}

/// `out[r·n + i] = w_r·x_i` for the rows `w_r` of `w` (`row_bytes` each, of
/// type `ty`) and the `n` rows of `x: [n, k]` with their [`block_sums`]
/// `[n, k/32]`; `out: [rows, n]`. Each block is decoded once for up to
/// four rows of `x`.
pub type RowDots =
    fn(w: &[u8], row_bytes: usize, x: &[f32], sums: &[f32], n: usize, out: &mut [f32]);

/// The fused kernel for `ty` on this CPU, if there is one.
pub fn row_dots(ty: GgmlType) -> Option<RowDots> {
    #[cfg(target_arch = "x86_64")]
    {
        if !x86::available() {
            return None;
        }
        match ty {
            GgmlType::Q4_0 => Some(x86::q4_0),
            GgmlType::Q4_1 => Some(x86::q4_1),
            GgmlType::Q5_0 => Some(x86::q5_0),
            GgmlType::Q5_1 => Some(x86::q5_1),
            GgmlType::Q8_0 => Some(x86::q8_0),
            GgmlType::F32
            | GgmlType::F16
            | GgmlType::BF16
            | GgmlType::Q8_1
            | GgmlType::Q2K
            | GgmlType::Q3K
            | GgmlType::Q4K
            | GgmlType::Q5K
            | GgmlType::Q6K
            | GgmlType::Q8K
            | GgmlType::Other(_) => None,
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = ty;
        None
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// Whether the CPU has what the kernels below are compiled for (checked once).
    pub fn available() -> bool {
        static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *HAS.get_or_init(|| {
            is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("f16c")
        })
    }

    /// One block's codes as f32, values `8g..8g + 8` in lane group `g`, and
    /// its `(d, m)`.
    trait Block {
        const BYTES: usize;
        /// # Safety
        /// `p` points at `BYTES` readable bytes; the CPU has AVX2, FMA, F16C.
        unsafe fn decode(p: *const u8) -> ([__m256; 4], f32, f32);
    }

    /// Two little-endian f16 at `p` as f32.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn two_f16(p: *const u8) -> (f32, f32) {
        // SAFETY: the caller's block holds four bytes at `p`.
        let v = _mm_cvtph_ps(_mm_cvtsi32_si128(unsafe {
            (p as *const i32).read_unaligned()
        }));
        (_mm_cvtss_f32(v), _mm_cvtss_f32(_mm_shuffle_ps(v, v, 1)))
    }

    /// 16 bytes of nibbles at `p`: low nibbles are values 0..16, high 16..32.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn nibbles(p: *const u8) -> [__m256i; 4] {
        // SAFETY: the caller's block holds 16 bytes at `p`.
        let q = unsafe { _mm_loadu_si128(p as *const __m128i) };
        let mask = _mm_set1_epi8(0x0F);
        let lo = _mm_and_si128(q, mask);
        let hi = _mm_and_si128(_mm_srli_epi16(q, 4), mask);
        [
            _mm256_cvtepu8_epi32(lo),
            _mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8)),
            _mm256_cvtepu8_epi32(hi),
            _mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8)),
        ]
    }

    /// Ors bit `j` of `qh` into value `j` as its fifth bit (16).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn fifth_bits(q: [__m256i; 4], qh: u32) -> [__m256i; 4] {
        let all = _mm256_set1_epi32(qh as i32);
        let one = _mm256_set1_epi32(1);
        let mut out = q;
        for (g, v) in out.iter_mut().enumerate() {
            let base = 8 * g as i32;
            let shifts = _mm256_setr_epi32(
                base,
                base + 1,
                base + 2,
                base + 3,
                base + 4,
                base + 5,
                base + 6,
                base + 7,
            );
            let bit = _mm256_and_si256(_mm256_srlv_epi32(all, shifts), one);
            *v = _mm256_or_si256(*v, _mm256_slli_epi32(bit, 4));
        }
        out
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn floats(q: [__m256i; 4]) -> [__m256; 4] {
        [
            _mm256_cvtepi32_ps(q[0]),
            _mm256_cvtepi32_ps(q[1]),
            _mm256_cvtepi32_ps(q[2]),
            _mm256_cvtepi32_ps(q[3]),
        ]
    }

    struct Q4_0;
    impl Block for Q4_0 {
        const BYTES: usize = 18;
        #[inline]
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn decode(p: *const u8) -> ([__m256; 4], f32, f32) {
            // SAFETY: the block's 18 bytes: f16 d at 0, nibbles at 2.
            let (d, _) = unsafe { two_f16(p) };
            (floats(unsafe { nibbles(p.add(2)) }), d, -8.0 * d)
        }
    }

    struct Q4_1;
    impl Block for Q4_1 {
        const BYTES: usize = 20;
        #[inline]
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn decode(p: *const u8) -> ([__m256; 4], f32, f32) {
            // SAFETY: the block's 20 bytes: f16 d, f16 m, nibbles at 4.
            let (d, m) = unsafe { two_f16(p) };
            (floats(unsafe { nibbles(p.add(4)) }), d, m)
        }
    }

    struct Q5_0;
    impl Block for Q5_0 {
        const BYTES: usize = 22;
        #[inline]
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn decode(p: *const u8) -> ([__m256; 4], f32, f32) {
            // SAFETY: the block's 22 bytes: f16 d, u32 high bits at 2, nibbles at 6.
            let (d, _) = unsafe { two_f16(p) };
            let qh = unsafe { (p.add(2) as *const u32).read_unaligned() };
            let q = fifth_bits(unsafe { nibbles(p.add(6)) }, qh);
            (floats(q), d, -16.0 * d)
        }
    }

    struct Q5_1;
    impl Block for Q5_1 {
        const BYTES: usize = 24;
        #[inline]
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn decode(p: *const u8) -> ([__m256; 4], f32, f32) {
            // SAFETY: the block's 24 bytes: f16 d, f16 m, u32 high bits at 4, nibbles at 8.
            let (d, m) = unsafe { two_f16(p) };
            let qh = unsafe { (p.add(4) as *const u32).read_unaligned() };
            let q = fifth_bits(unsafe { nibbles(p.add(8)) }, qh);
            (floats(q), d, m)
        }
    }

    struct Q8_0;
    impl Block for Q8_0 {
        const BYTES: usize = 34;
        #[inline]
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn decode(p: *const u8) -> ([__m256; 4], f32, f32) {
            // SAFETY: the block's 34 bytes: f16 d, then 32 i8.
            let d = unsafe {
                _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(
                    (p as *const u16).read_unaligned() as i32,
                )))
            };
            let lo = unsafe { _mm_loadu_si128(p.add(2) as *const __m128i) };
            let hi = unsafe { _mm_loadu_si128(p.add(18) as *const __m128i) };
            let q = [
                _mm256_cvtepi8_epi32(lo),
                _mm256_cvtepi8_epi32(_mm_srli_si128(lo, 8)),
                _mm256_cvtepi8_epi32(hi),
                _mm256_cvtepi8_epi32(_mm_srli_si128(hi, 8)),
            ];
            (floats(q), d, 0.0)
        }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps(s, s, 1)))
    }

    /// [`super::RowDots`] for `N` rows of `x`: each block of each row of
    /// `w` decoded once, then met by the `N` rows. Row `r`'s results go to
    /// `out[r·stride..][..N]`.
    #[target_feature(enable = "avx2,fma,f16c")]
    fn dots<K: Block, const N: usize>(
        w: &[u8],
        row_bytes: usize,
        x: &[f32],
        sums: &[f32],
        out: &mut [f32],
        stride: usize,
    ) {
        let blocks = row_bytes / K::BYTES;
        let k = blocks * 32;
        let rows = w.len() / row_bytes;
        assert!(
            row_bytes == blocks * K::BYTES
                && x.len() == N * k
                && sums.len() == N * blocks
                && (rows == 0 || out.len() >= (rows - 1) * stride + N),
            "{rows} rows of {blocks} blocks against {} values and {} sums for {N} rows of x",
            x.len(),
            sums.len()
        );
        let xs: [&[f32]; N] = std::array::from_fn(|i| &x[i * k..(i + 1) * k]);
        let xsums: [&[f32]; N] = std::array::from_fn(|i| &sums[i * blocks..(i + 1) * blocks]);
        for (r, row) in w.chunks_exact(row_bytes).enumerate() {
            let mut acc = [_mm256_setzero_ps(); N];
            let mut offsets = [0f32; N];
            for b in 0..blocks {
                // SAFETY: block `b` lies inside the row (`blocks` of them), and
                // `available()` was checked by `row_dots`, the only way here.
                let (q, d, m) = unsafe { K::decode(row.as_ptr().add(b * K::BYTES)) };
                let dv = _mm256_set1_ps(d);
                for i in 0..N {
                    let xb = &xs[i][32 * b..32 * b + 32];
                    let xp = xb.as_ptr();
                    // SAFETY: `xb` holds the 32 floats the four loads read.
                    let mut qx = _mm256_mul_ps(q[0], unsafe { _mm256_loadu_ps(xp) });
                    for (g, &qg) in q.iter().enumerate().skip(1) {
                        qx = _mm256_fmadd_ps(qg, unsafe { _mm256_loadu_ps(xp.add(8 * g)) }, qx);
                    }
                    acc[i] = _mm256_fmadd_ps(dv, qx, acc[i]);
                    offsets[i] += m * xsums[i][b];
                }
            }
            let o = &mut out[r * stride..r * stride + N];
            for ((o, a), off) in o.iter_mut().zip(acc).zip(offsets) {
                *o = hsum(a) + off;
            }
        }
    }

    /// [`dots`] over the `n` rows of `x`, four at a time.
    fn dispatch<K: Block>(
        w: &[u8],
        row_bytes: usize,
        x: &[f32],
        sums: &[f32],
        n: usize,
        out: &mut [f32],
    ) {
        let n = n.max(1);
        let (k, nb) = (x.len() / n, sums.len() / n);
        for c in (0..n).step_by(4) {
            let m = 4.min(n - c);
            let (xs, ss) = (&x[c * k..(c + m) * k], &sums[c * nb..(c + m) * nb]);
            let o = &mut out[c..];
            // SAFETY: reached only through `row_dots`, after `available()`.
            unsafe {
                match m {
                    1 => dots::<K, 1>(w, row_bytes, xs, ss, o, n),
                    2 => dots::<K, 2>(w, row_bytes, xs, ss, o, n),
                    3 => dots::<K, 3>(w, row_bytes, xs, ss, o, n),
                    _ => dots::<K, 4>(w, row_bytes, xs, ss, o, n),
                }
            }
        }
    }

    // The entry points `row_dots` hands out (after `available()`).
    pub fn q4_0(w: &[u8], rb: usize, x: &[f32], s: &[f32], n: usize, out: &mut [f32]) {
        dispatch::<Q4_0>(w, rb, x, s, n, out)
    }
    pub fn q4_1(w: &[u8], rb: usize, x: &[f32], s: &[f32], n: usize, out: &mut [f32]) {
        dispatch::<Q4_1>(w, rb, x, s, n, out)
    }
    pub fn q5_0(w: &[u8], rb: usize, x: &[f32], s: &[f32], n: usize, out: &mut [f32]) {
        dispatch::<Q5_0>(w, rb, x, s, n, out)
    }
    pub fn q5_1(w: &[u8], rb: usize, x: &[f32], s: &[f32], n: usize, out: &mut [f32]) {
        dispatch::<Q5_1>(w, rb, x, s, n, out)
    }
    pub fn q8_0(w: &[u8], rb: usize, x: &[f32], s: &[f32], n: usize, out: &mut [f32]) {
        dispatch::<Q8_0>(w, rb, x, s, n, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::weights::dequantize;

    /// Random blocks of `ty` whose f16 scales are finite and modest.
    fn blocks(ty: GgmlType, n: usize, seed: u64) -> Vec<u8> {
        let (_, bytes) = ty.block().expect("a block type");
        let bytes = bytes as usize;
        let mut s = seed;
        let mut next = || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 33) as u32
        };
        let mut out = Vec::with_capacity(n * bytes);
        for _ in 0..n {
            let mut b: Vec<u8> = (0..bytes).map(|_| next() as u8).collect();
            let scale = |v: f32| half::f16::from_f32(v).to_le_bytes();
            b[..2].copy_from_slice(&scale((next() % 1000) as f32 * 1e-4 - 0.05));
            if matches!(ty, GgmlType::Q4_1 | GgmlType::Q5_1) {
                b[2..4].copy_from_slice(&scale((next() % 1000) as f32 * 1e-3 - 0.5));
            }
            out.extend(b);
        }
        out
    }

    #[test]
    fn fused_dots_equal_dequantized_dots() {
        let k = 32 * 18;
        // Five rows of x: one call covers a group of four and a single.
        let x: Vec<f32> = (0..5 * k)
            .map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0)
            .collect();
        let sums = block_sums(&x);
        for ty in [
            GgmlType::Q4_0,
            GgmlType::Q4_1,
            GgmlType::Q5_0,
            GgmlType::Q5_1,
            GgmlType::Q8_0,
        ] {
            let Some(f) = row_dots(ty) else {
                eprintln!("no fused kernel for {} on this CPU", ty.name());
                continue;
            };
            for seed in 0..4 {
                let w = blocks(ty, k / 32, seed);
                let mut dense = vec![0f32; k];
                assert!(dequantize(ty, &w, &mut dense));
                // The row twice: two rows of W, results `[2, n]`.
                let w2 = [w.clone(), w.clone()].concat();
                for n in [1, 3, 5] {
                    let mut got = vec![0f32; 2 * n];
                    f(&w2, w.len(), &x[..n * k], &sums[..n * k / 32], n, &mut got);
                    for (j, &g) in got.iter().enumerate() {
                        let i = j % n;
                        let xi = &x[i * k..(i + 1) * k];
                        let exact: f64 = dense
                            .iter()
                            .zip(xi)
                            .map(|(a, b)| *a as f64 * *b as f64)
                            .sum();
                        let scale: f64 = dense
                            .iter()
                            .zip(xi)
                            .map(|(a, b)| (*a as f64 * *b as f64).abs())
                            .sum();
                        assert!(
                            (g as f64 - exact).abs() <= 1e-6 * scale.max(1e-30),
                            "{} seed {seed}, W row {}, x row {i} of {n}: fused {g} against {exact} (Σ|w·x| {scale})",
                            ty.name(),
                            j / n
                        );
                    }
                }
            }
        }
    }
}
