//! Single-precision GEMM for the big frozen-weight products: OpenBLAS's
//! `cblas_sgemm` with the `openblas` feature (170–190 GFLOP/s on 2 threads
//! at MiniLM / SmolLM2 shapes here, against 65–180 for the pure-Rust `gemm`
//! crate), else the `gemm` crate burn-flex uses.

/// `C = A * op(B) + beta * C` for row-major `A: [m, k]`, `C: [m, n]`, and `B`
/// stored `[n, k]` when `b_transposed` (a weight in PyTorch layout), else `[k, n]`.
#[allow(clippy::too_many_arguments)]
pub fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    b: &[f32],
    b_transposed: bool,
    beta: f32,
    c: &mut [f32],
) {
    debug_assert!(a.len() >= m * k && b.len() >= k * n && c.len() >= m * n);
    if m == 0 || n == 0 {
        return;
    }
    imp::sgemm(m, n, k, a, b, b_transposed, beta, c)
}

/// The kernels OpenBLAS runs on this CPU; `None` without the `openblas` feature.
pub fn core_name() -> Option<String> {
    #[cfg(feature = "openblas")]
    {
        imp::core_name()
    }
    #[cfg(not(feature = "openblas"))]
    {
        None
    }
}

/// `C = op(A) * B (+ beta C)` with `A` stored `[k, m]` (transposed): the weight
/// gradient `dW = dYᵀ X`.
pub fn sgemm_at(m: usize, n: usize, k: usize, a_km: &[f32], b: &[f32], beta: f32, c: &mut [f32]) {
    if m == 0 || n == 0 {
        return;
    }
    imp::sgemm_at(m, n, k, a_km, b, beta, c)
}

#[cfg(feature = "openblas")]
mod imp {
    const ROW_MAJOR: i32 = 101;
    const NO_TRANS: i32 = 111;
    const TRANS: i32 = 112;

    #[link(name = "openblas")]
    unsafe extern "C" {
        fn openblas_set_num_threads(n: i32);
        fn openblas_get_corename() -> *const std::ffi::c_char;
        pub(super) fn cblas_sgemm(
            order: i32,
            ta: i32,
            tb: i32,
            m: i32,
            n: i32,
            k: i32,
            alpha: f32,
            a: *const f32,
            lda: i32,
            b: *const f32,
            ldb: i32,
            beta: f32,
            c: *mut f32,
            ldc: i32,
        );
        fn cblas_sgemv(
            order: i32,
            ta: i32,
            m: i32,
            n: i32,
            alpha: f32,
            a: *const f32,
            lda: i32,
            x: *const f32,
            incx: i32,
            beta: f32,
            y: *mut f32,
            incy: i32,
        );
    }

    /// The kernels OpenBLAS chose for this CPU (`Haswell`, `SkylakeX`, ...).
    pub fn core_name() -> Option<String> {
        // SAFETY: returns a pointer to a static NUL-terminated string (or null).
        let p = unsafe { openblas_get_corename() };
        if p.is_null() {
            return None;
        }
        // SAFETY: non-null and NUL-terminated, as above.
        let s = unsafe { std::ffi::CStr::from_ptr(p) };
        Some(s.to_string_lossy().into_owned())
    }

    /// Products of at most this many rows (a decoding step's one token) go
    /// through `sgemv`: `sgemm` would pack the whole weight for one row.
    const GEMV_ROWS: usize = 2;

    /// `C = A op(B)` row by row with `sgemv`, each row's output columns split
    /// over rayon's workers (a block of a `[n, k]` weight is contiguous).
    #[allow(clippy::too_many_arguments)]
    fn sgemv_rows(
        m: usize,
        n: usize,
        k: usize,
        a: &[f32],
        b: &[f32],
        bt: bool,
        beta: f32,
        c: &mut [f32],
    ) {
        use rayon::prelude::*;
        let workers = rayon::current_num_threads().max(1);
        let cols = n.div_ceil(workers).max(256);
        for (x, y) in a.chunks(k).zip(c.chunks_mut(n)).take(m) {
            y[..n].par_chunks_mut(cols).enumerate().for_each(|(bi, y)| {
                let j0 = bi * cols;
                let w = y.len();
                // SAFETY: with `bt` the block is rows j0..j0+w of `b: [n, k]`;
                // else columns j0..j0+w of `b: [k, n]` (stride n); `x` holds
                // k values and `y` w. cblas touches nothing else.
                unsafe {
                    if bt {
                        cblas_sgemv(
                            ROW_MAJOR,
                            NO_TRANS,
                            w as i32,
                            k as i32,
                            1.0,
                            b.as_ptr().add(j0 * k),
                            k as i32,
                            x.as_ptr(),
                            1,
                            beta,
                            y.as_mut_ptr(),
                            1,
                        );
                    } else {
                        cblas_sgemv(
                            ROW_MAJOR,
                            TRANS,
                            k as i32,
                            w as i32,
                            1.0,
                            b.as_ptr().add(j0),
                            n as i32,
                            x.as_ptr(),
                            1,
                            beta,
                            y.as_mut_ptr(),
                            1,
                        );
                    }
                }
            });
        }
    }

    /// OpenBLAS runs single-threaded inside peftc: the rows of each product
    /// are split across rayon's workers instead, so the two thread pools never
    /// spin against each other on the same cores.
    pub(super) fn single_threaded() {
        static ONCE: std::sync::Once = std::sync::Once::new();
        // SAFETY: a plain setter of OpenBLAS's global thread count.
        ONCE.call_once(|| unsafe { openblas_set_num_threads(1) });
    }

    /// Row blocks of at least 64 rows, one per worker.
    fn row_block(m: usize, n: usize, k: usize) -> usize {
        let workers = rayon::current_num_threads().max(1);
        if m * n * k < 1 << 21 || workers == 1 {
            return m;
        }
        m.div_ceil(workers).max(64)
    }

    #[allow(clippy::too_many_arguments)]
    pub fn sgemm(
        m: usize,
        n: usize,
        k: usize,
        a: &[f32],
        b: &[f32],
        bt: bool,
        beta: f32,
        c: &mut [f32],
    ) {
        use rayon::prelude::*;
        single_threaded();
        if m <= GEMV_ROWS && k > 0 {
            return sgemv_rows(m, n, k, a, b, bt, beta, c);
        }
        let (tb, ldb) = if bt { (TRANS, k) } else { (NO_TRANS, n) };
        let rows = row_block(m, n, k);
        c[..m * n]
            .par_chunks_mut(rows * n)
            .enumerate()
            .for_each(|(i, c)| {
                let r = c.len() / n;
                let a = &a[i * rows * k..];
                // SAFETY: `a` holds r*k values from row i*rows, `b` k*n, `c` r*n;
                // cblas reads and writes only within them.
                unsafe {
                    cblas_sgemm(
                        ROW_MAJOR,
                        NO_TRANS,
                        tb,
                        r as i32,
                        n as i32,
                        k as i32,
                        1.0,
                        a.as_ptr(),
                        k as i32,
                        b.as_ptr(),
                        ldb as i32,
                        beta,
                        c.as_mut_ptr(),
                        n as i32,
                    );
                }
            });
    }

    /// `C = Aᵀ B (+ beta C)` with `A` stored `[k, m]`, split over rayon's
    /// workers along the longer side of `C`: blocks of rows, or blocks of
    /// columns (a weight gradient `[out, r]` of a thin factor is tall, that of
    /// `[r, in]` wide).
    pub fn sgemm_at(m: usize, n: usize, k: usize, a: &[f32], b: &[f32], beta: f32, c: &mut [f32]) {
        use rayon::prelude::*;
        single_threaded();
        // C[i0.., j0..] (rows x cols of it) from A's columns i0.. and B's
        // columns j0.., written through `c` (C's element (i0, j0)).
        let block = |i0: usize, rows: usize, j0: usize, cols: usize, c: *mut f32| {
            // SAFETY: A is [k, m] (lda m) read from column i0, B [k, n] (ldb n)
            // from column j0, C [m, n] (ldc n) written at (i0, j0): every
            // access stays within the caller's slices; blocks are disjoint.
            unsafe {
                cblas_sgemm(
                    ROW_MAJOR,
                    TRANS,
                    NO_TRANS,
                    rows as i32,
                    cols as i32,
                    k as i32,
                    1.0,
                    a.as_ptr().add(i0),
                    m as i32,
                    b.as_ptr().add(j0),
                    n as i32,
                    beta,
                    c,
                    n as i32,
                );
            }
        };
        let workers = rayon::current_num_threads().max(1);
        if m * n * k < 1 << 21 || workers == 1 {
            return block(0, m, 0, n, c.as_mut_ptr());
        }
        if m >= n {
            let rows = m.div_ceil(workers);
            c[..m * n]
                .par_chunks_mut(rows * n)
                .enumerate()
                .for_each(|(i, c)| block(i * rows, c.len() / n, 0, n, c.as_mut_ptr()));
        } else {
            let cols = n.div_ceil(workers);
            let base = Shared(c.as_mut_ptr());
            (0..n.div_ceil(cols)).into_par_iter().for_each(|j| {
                let j0 = j * cols;
                // SAFETY: column j0 of row 0 lies within `c`.
                block(0, m, j0, cols.min(n - j0), unsafe { base.get().add(j0) });
            });
        }
    }

    /// `C`'s base pointer, shared by workers that write disjoint column blocks.
    struct Shared(*mut f32);
    // SAFETY: only used for the disjoint blocks of `sgemm_at`.
    unsafe impl Send for Shared {}
    unsafe impl Sync for Shared {}
    impl Shared {
        fn get(&self) -> *mut f32 {
            self.0
        }
    }
}

#[cfg(not(feature = "openblas"))]
mod imp {
    use gemm::{Parallelism, gemm};

    fn par(m: usize, n: usize, k: usize) -> Parallelism {
        if m * n * k >= 64 * 64 * 64 {
            Parallelism::Rayon(0)
        } else {
            Parallelism::None
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub fn sgemm(
        m: usize,
        n: usize,
        k: usize,
        a: &[f32],
        b: &[f32],
        bt: bool,
        beta: f32,
        c: &mut [f32],
    ) {
        // B[k][n] at column stride / row stride: [n, k] storage when transposed.
        let (b_cs, b_rs) = if bt { (k as isize, 1) } else { (1, n as isize) };
        // SAFETY: pointers and strides describe the caller's row-major slices.
        unsafe {
            gemm(
                m,
                n,
                k,
                c.as_mut_ptr(),
                1,
                n as isize,
                beta != 0.0,
                a.as_ptr(),
                1,
                k as isize,
                b.as_ptr(),
                b_cs,
                b_rs,
                beta,
                1.0,
                false,
                false,
                false,
                par(m, n, k),
            );
        }
    }

    pub fn sgemm_at(m: usize, n: usize, k: usize, a: &[f32], b: &[f32], beta: f32, c: &mut [f32]) {
        // SAFETY: A[m][k] read from [k, m] storage: column stride m, row stride 1.
        unsafe {
            gemm(
                m,
                n,
                k,
                c.as_mut_ptr(),
                1,
                n as isize,
                beta != 0.0,
                a.as_ptr(),
                m as isize,
                1,
                b.as_ptr(),
                1,
                n as isize,
                beta,
                1.0,
                false,
                false,
                false,
                par(m, n, k),
            );
        }
    }
}

/// Single-threaded general GEMM on strided row-major operands, for small
/// products inside parallel tasks: `C = alpha * op(A) * op(B) + beta * C`,
/// `op(A): [m, k]`, `op(B): [k, n]`, `C: [m, n]` with row strides `lda`,
/// `ldb`, `ldc`; `ta` / `tb` read `A` / `B` transposed.
#[allow(clippy::too_many_arguments)]
pub fn gemm_st(
    ta: bool,
    tb: bool,
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: &[f32],
    lda: usize,
    b: &[f32],
    ldb: usize,
    beta: f32,
    c: &mut [f32],
    ldc: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        for r in 0..m {
            c[r * ldc..r * ldc + n].iter_mut().for_each(|v| *v *= beta);
        }
        return;
    }
    // Every element the product touches lies inside the slices.
    let a_need = if ta {
        (k - 1) * lda + m
    } else {
        (m - 1) * lda + k
    };
    let b_need = if tb {
        (n - 1) * ldb + k
    } else {
        (k - 1) * ldb + n
    };
    assert!(
        a.len() >= a_need && b.len() >= b_need && c.len() >= (m - 1) * ldc + n,
        "gemm_st: operand too short"
    );
    imp_st::gemm_st(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
}

#[cfg(feature = "openblas")]
mod imp_st {
    #[allow(clippy::too_many_arguments)]
    pub fn gemm_st(
        ta: bool,
        tb: bool,
        m: usize,
        n: usize,
        k: usize,
        alpha: f32,
        a: &[f32],
        lda: usize,
        b: &[f32],
        ldb: usize,
        beta: f32,
        c: &mut [f32],
        ldc: usize,
    ) {
        super::imp::single_threaded();
        let t = |x: bool| if x { 112 } else { 111 };
        // SAFETY: `gemm_st` checked that the strided operands lie within the slices.
        unsafe {
            super::imp::cblas_sgemm(
                101,
                t(ta),
                t(tb),
                m as i32,
                n as i32,
                k as i32,
                alpha,
                a.as_ptr(),
                lda as i32,
                b.as_ptr(),
                ldb as i32,
                beta,
                c.as_mut_ptr(),
                ldc as i32,
            );
        }
    }
}

#[cfg(not(feature = "openblas"))]
mod imp_st {
    #[allow(clippy::too_many_arguments)]
    pub fn gemm_st(
        ta: bool,
        tb: bool,
        m: usize,
        n: usize,
        k: usize,
        alpha: f32,
        a: &[f32],
        lda: usize,
        b: &[f32],
        ldb: usize,
        beta: f32,
        c: &mut [f32],
        ldc: usize,
    ) {
        let (a_rs, a_cs) = if ta {
            (1, lda as isize)
        } else {
            (lda as isize, 1)
        };
        let (b_rs, b_cs) = if tb {
            (1, ldb as isize)
        } else {
            (ldb as isize, 1)
        };
        // SAFETY: `gemm_st` checked that the strided operands lie within the slices.
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                c.as_mut_ptr(),
                1,
                ldc as isize,
                beta != 0.0,
                a.as_ptr(),
                a_cs,
                a_rs,
                b.as_ptr(),
                b_cs,
                b_rs,
                beta,
                alpha,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `C = Aᵀ B (+ beta C)` by the definition, in f64.
    fn naive_at(
        m: usize,
        n: usize,
        k: usize,
        a: &[f32],
        b: &[f32],
        beta: f32,
        c: &[f32],
    ) -> Vec<f32> {
        let mut out = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let dot: f64 = (0..k)
                    .map(|p| a[p * m + i] as f64 * b[p * n + j] as f64)
                    .sum();
                out[i * n + j] = (dot + beta as f64 * c[i * n + j] as f64) as f32;
            }
        }
        out
    }

    /// Tall and wide results (split by rows, by columns), large enough to be
    /// split over the workers, with and without accumulation.
    #[test]
    fn sgemm_at_matches_the_definition_split_either_way() {
        for (m, n, k) in [(300, 8, 1000), (8, 300, 1000), (5, 7, 3)] {
            let a = crate::rng::normal(1, k * m);
            let b = crate::rng::normal(2, k * n);
            for beta in [0.0, 1.0] {
                let c0 = crate::rng::normal(3, m * n);
                let mut c = c0.clone();
                sgemm_at(m, n, k, &a, &b, beta, &mut c);
                let want = naive_at(m, n, k, &a, &b, beta, &c0);
                let diff = c
                    .iter()
                    .zip(&want)
                    .map(|(x, y)| (x - y).abs())
                    .fold(0.0, f32::max);
                assert!(diff < 1e-3, "{m}x{n}x{k} beta {beta}: max diff {diff}");
            }
        }
    }

    /// One and two rows (the `sgemv` path, its columns split over the
    /// workers) and a batch, against the definition, both weight layouts.
    #[test]
    fn sgemm_matches_the_definition_for_one_row_and_many() {
        for (m, n, k) in [(1, 1000, 576), (2, 49, 300), (7, 300, 64)] {
            let a = crate::rng::normal(4, m * k);
            for bt in [true, false] {
                let b = crate::rng::normal(5, k * n);
                for beta in [0.0, 1.0] {
                    let c0 = crate::rng::normal(6, m * n);
                    let mut c = c0.clone();
                    sgemm(m, n, k, &a, &b, bt, beta, &mut c);
                    let mut diff = 0f32;
                    for i in 0..m {
                        for j in 0..n {
                            let dot: f64 = (0..k)
                                .map(|p| {
                                    let w = if bt { b[j * k + p] } else { b[p * n + j] };
                                    a[i * k + p] as f64 * w as f64
                                })
                                .sum();
                            let want = dot + beta as f64 * c0[i * n + j] as f64;
                            diff = diff.max((c[i * n + j] as f64 - want).abs() as f32);
                        }
                    }
                    assert!(diff < 1e-3, "{m}x{n}x{k} bt {bt} beta {beta}: {diff}");
                }
            }
        }
    }
}
