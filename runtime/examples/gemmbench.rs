//! Which operand layouts burn-flex's GEMM runs fastest with (a profiling aid).
use burn::tensor::{Distribution, Tensor};
use peftc_runtime::{Cpu, burn};
use std::time::Instant;

fn bench(name: &str, m: usize, k: usize, n: usize, f: impl Fn() -> Tensor<Cpu, 2>) {
    let _ = f().into_data();
    let reps = 20;
    let t = Instant::now();
    for _ in 0..reps {
        let _ = f().into_data();
    }
    let dt = t.elapsed().as_secs_f64() / reps as f64;
    println!(
        "{name:<44} {:>7.3} ms {:>7.1} GFLOP/s",
        dt * 1e3,
        2.0 * (m * k * n) as f64 / dt / 1e9
    );
}

fn main() {
    let d = Default::default();
    for (m, k, n) in [
        (400, 384, 384),
        (400, 384, 1536),
        (400, 1536, 384),
        (400, 384, 8),
        (400, 8, 384),
        (1024, 384, 8),
    ] {
        let x = Tensor::<Cpu, 2>::random([m, k], Distribution::Normal(0.0, 1.0), &d);
        let w_kn = Tensor::<Cpu, 2>::random([k, n], Distribution::Normal(0.0, 1.0), &d);
        let w_nk = Tensor::<Cpu, 2>::random([n, k], Distribution::Normal(0.0, 1.0), &d);
        println!("m={m} k={k} n={n}");
        bench("  x[m,k] @ W[k,n] (contiguous)", m, k, n, || {
            x.clone().matmul(w_kn.clone())
        });
        bench("  x[m,k] @ W[n,k].T (view)", m, k, n, || {
            x.clone().matmul(w_nk.clone().transpose())
        });
    }
}
