//! OpenBLAS's kernels for this CPU. OpenBLAS picks them at load time from
//! the CPU's family and model; Debian 12's 0.3.21 does not know the newest
//! Intel server parts (Sapphire / Emerald Rapids: family 6, models 143, 207)
//! and falls back to its Prescott (SSE3) kernels, 3–5× slower than the
//! AVX-512 ones the CPU runs. Before any work, a `peftc` that finds itself
//! on the fallback with a CPU that has AVX-512 (or AVX2 + FMA) runs itself
//! again with `OPENBLAS_CORETYPE` naming the kernels the CPU supports.
//! Setting `OPENBLAS_CORETYPE` yourself turns this off. Programs call it
//! first thing in `main` (the `peftc` binary, the benchmarks).

/// Re-executes this process with the right kernels, if OpenBLAS fell back.
/// Returns (doing nothing) when there is nothing to fix or the exec fails.
pub fn use_the_cpus_kernels() {
    #[cfg(all(target_arch = "x86_64", unix, feature = "openblas"))]
    {
        use std::os::unix::process::CommandExt;
        if std::env::var_os("OPENBLAS_CORETYPE").is_some() {
            return;
        }
        let Some(core) = super::blas_core() else {
            return;
        };
        if !core.eq_ignore_ascii_case("prescott") {
            return;
        }
        let avx512 = std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512dq")
            && std::arch::is_x86_feature_detected!("avx512vl");
        let avx2 = std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma");
        let kernels = match (avx512, avx2) {
            (true, _) => "SKYLAKEX",
            (false, true) => "HASWELL",
            (false, false) => return,
        };
        let Ok(exe) = std::env::current_exe() else {
            return;
        };
        // `exec` only returns on failure; then run on as we are.
        let _ = std::process::Command::new(exe)
            .args(std::env::args_os().skip(1))
            .env("OPENBLAS_CORETYPE", kernels)
            .exec();
    }
}
