//! Times burn-composed ops at MiniLM training shapes (a profiling aid, not a benchmark of record).
use burn::tensor::{Distribution, Tensor, activation};
use peftc_runtime::{Cpu, CpuTrain};
use std::time::Instant;

fn time<F: FnMut()>(name: &str, flops: f64, mut f: F) {
    f();
    let n = 10;
    let t = Instant::now();
    for _ in 0..n {
        f();
    }
    let dt = t.elapsed().as_secs_f64() / n as f64;
    println!(
        "{name:<40} {:>8.3} ms  {:>7.1} GFLOP/s",
        dt * 1e3,
        flops / dt / 1e9
    );
}

fn main() {
    let d = Default::default();
    let x = Tensor::<Cpu, 2>::random([1024, 384], Distribution::Normal(0.0, 1.0), &d);
    let w = Tensor::<Cpu, 2>::random([384, 384], Distribution::Normal(0.0, 1.0), &d);
    let w2 = Tensor::<Cpu, 2>::random([384, 1536], Distribution::Normal(0.0, 1.0), &d);
    let big = Tensor::<Cpu, 2>::random([1024, 1536], Distribution::Normal(0.0, 1.0), &d);
    time("matmul 1024x384x384", 2.0 * 1024.0 * 384.0 * 384.0, || {
        let _ = x.clone().matmul(w.clone()).into_data();
    });
    time(
        "matmul 1024x384x1536",
        2.0 * 1024.0 * 384.0 * 1536.0,
        || {
            let _ = x.clone().matmul(w2.clone()).into_data();
        },
    );
    time(
        "matmul 1024x384 x w.T (transposed view)",
        2.0 * 1024.0 * 384.0 * 384.0,
        || {
            let _ = x.clone().matmul(w.clone().transpose()).into_data();
        },
    );
    let a = Tensor::<Cpu, 2>::random([8, 384], Distribution::Normal(0.0, 1.0), &d);
    time(
        "lora x A^T (1024x384x8)",
        2.0 * 1024.0 * 384.0 * 8.0,
        || {
            let _ = x.clone().matmul(a.clone().transpose()).into_data();
        },
    );
    time("gelu 1024x1536", 0.0, || {
        let _ = activation::gelu(big.clone()).into_data();
    });
    time("add 1024x1536", 0.0, || {
        let _ = (big.clone() + big.clone()).into_data();
    });
    let q = Tensor::<Cpu, 4>::random([16, 12, 64, 32], Distribution::Normal(0.0, 1.0), &d);
    time(
        "attn scores 16x12x64x64x32",
        2.0 * 16.0 * 12.0 * 64.0 * 64.0 * 32.0,
        || {
            let _ = q.clone().matmul(q.clone().swap_dims(2, 3)).into_data();
        },
    );
    let s = Tensor::<Cpu, 4>::random([16, 12, 64, 64], Distribution::Normal(0.0, 1.0), &d);
    time("softmax 16x12x64x64", 0.0, || {
        let _ = activation::softmax(s.clone(), 3).into_data();
    });
    let g = Tensor::<Cpu, 2>::ones([1, 384], &d);
    time("layer_norm (composed) 1024x384", 0.0, || {
        let _ = peftc_runtime_ln(x.clone(), g.clone()).into_data();
    });
    let h = Tensor::<Cpu, 2>::random([1024, 384], Distribution::Normal(0.0, 1.0), &d);
    time("split heads reshape+swap+contig 1024x384", 0.0, || {
        let _ = h
            .clone()
            .reshape([16, 64, 12, 32])
            .swap_dims(1, 2)
            .into_data();
    });
    // autodiff: forward+backward of matmul chain
    let xa = Tensor::<CpuTrain, 2>::from_inner(x.clone()).require_grad();
    let wa = Tensor::<CpuTrain, 2>::from_inner(w.clone());
    time(
        "AD: x@W fwd+bwd (dX only)",
        4.0 * 1024.0 * 384.0 * 384.0,
        || {
            let y = xa.clone().matmul(wa.clone());
            let _ = y.sum().backward();
        },
    );
    let ba = Tensor::<CpuTrain, 2>::from_inner(big.clone()).require_grad();
    time("AD: gelu fwd+bwd 1024x1536", 0.0, || {
        let _ = activation::gelu(ba.clone()).sum().backward();
    });
}

fn peftc_runtime_ln(x: Tensor<Cpu, 2>, g: Tensor<Cpu, 2>) -> Tensor<Cpu, 2> {
    let mean = x.clone().mean_dim(1);
    let c = x - mean;
    let var = c.clone().powf_scalar(2.0).mean_dim(1);
    c.div(var.add_scalar(1e-12).sqrt()) * g.clone() + g
}
