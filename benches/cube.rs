//! The CubeCL kernels (runtime/src/kernels/cube) against their unfused burn
//! compositions on the same GPU backend, and batched multi-adapter LoRA
//! (SGMV) against a loop over adapters. Run by `benches/gpu.sh` on an NVIDIA
//! GPU (`--features cuda`, PEFTC_BENCH_DEVICE=cuda); without it, on wgpu
//! (Vulkan; lavapipe on a CPU-only machine, where only `--quick` makes sense
//! and the figures say nothing about a GPU).
//!
//!     cargo bench --bench cube [-- --quick]
//!
//! Per op and shape: ms of the fused and unfused paths (forward + backward
//! under autodiff, synchronized), the speedup, and the fused path's achieved
//! bandwidth or throughput as a fraction of the device's peak measured in the
//! same run (a large elementwise copy; a large matmul).

use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};
use peftc_compiler::methods::Activation;
use peftc_runtime::burn;
use peftc_runtime::kernels::{self, AdapterFn, AdapterParams, PeftKernels, reference};
use peftc_runtime::model::{Frozen, dora_row_norm};
use peftc_runtime::weights::PackedMatrix;
use std::sync::Arc;
use std::time::Instant;

struct Peak {
    gbs: f64,
    tflops: f64,
}

/// Median milliseconds of `f` (synchronized) after warm-up runs.
fn time<B: Backend>(device: &B::Device, iters: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..2 {
        f();
    }
    let _ = B::sync(device);
    let mut t: Vec<f64> = (0..iters)
        .map(|_| {
            let s = Instant::now();
            f();
            let _ = B::sync(device);
            s.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

fn rand<B: Backend>(shape: [usize; 2], device: &B::Device) -> Tensor<B, 2> {
    Tensor::random(shape, Distribution::Normal(0.0, 1.0), device)
}

fn peak<B: Backend>(device: &B::Device, quick: bool, iters: usize) -> Peak {
    let n = if quick { 1 << 20 } else { 1 << 26 };
    let x = rand::<B>([n / 1024, 1024], device);
    let ms = time::<B>(device, iters, || {
        let _ = x.clone().mul_scalar(1.0001);
    });
    let gbs = (2 * n * 4) as f64 / (ms * 1e-3) / 1e9;
    let m = if quick { 256 } else { 8192 };
    let (a, b) = (rand::<B>([m, m], device), rand::<B>([m, m], device));
    let ms = time::<B>(device, iters, || {
        let _ = a.clone().matmul(b.clone());
    });
    let tflops = 2.0 * (m as f64).powi(3) / (ms * 1e-3) / 1e12;
    Peak { gbs, tflops }
}

fn report(op: &str, shape: &str, fused: f64, unfused: f64, achieved: String) {
    println!(
        "{op:<18} {shape:<18} fused {fused:>9.3} ms  unfused {unfused:>9.3} ms  speedup {:>5.2}x  {achieved}",
        unfused / fused
    );
}

fn run<B: PeftKernels>(device: B::Device, quick: bool) {
    type A<B> = Autodiff<B>;
    let iters = if quick { 3 } else { 20 };
    let p = peak::<B>(&device, quick, iters);
    println!(
        "device peak: {:.1} GB/s (elementwise copy), {:.2} TFLOP/s (f32 matmul)",
        p.gbs, p.tflops
    );
    // (name, tokens, in, out, rank)
    let shapes: &[(&str, usize, usize, usize, usize)] = if quick {
        &[("minilm b16 s64", 1024, 384, 384, 8)]
    } else {
        &[
            ("minilm b16 s64", 1024, 384, 384, 8),
            ("smollm2 b4 s128", 512, 576, 1536, 8),
            ("7b-like b1 s2048", 2048, 4096, 4096, 16),
        ]
    };
    let sync = |l: Tensor<A<B>, 1>| {
        let _ = l.backward();
    };
    // The targets, checked against this run's figures, printed last.
    let mut targets = Vec::new();
    for &(name, n, d, o, r) in shapes {
        let x = rand::<A<B>>([n, d], &device).require_grad();
        let w = rand::<A<B>>([o, d], &device);
        let a = rand::<A<B>>([r, d], &device).require_grad();
        let bm = rand::<A<B>>([o, r], &device).require_grad();
        let fused = time::<B>(&device, iters, || {
            let y = kernels::linear(x.clone(), w.clone(), None);
            let u = kernels::linear(x.clone(), a.clone(), None);
            sync(kernels::lora_expand(y, u, bm.clone(), 2.0).sum());
        });
        let unfused = time::<B>(&device, iters, || {
            let y = x.clone().matmul(w.clone().transpose());
            let u = kernels::linear(x.clone(), a.clone(), None).mul_scalar(2.0);
            let delta = kernels::linear(u, bm.clone(), None);
            sync((y + delta).sum());
        });
        // forward 2nod + backward dx 2nod (no weight gradient) + the thin products
        let flops = 4.0 * (n * d * o) as f64 + 8.0 * (n * r * (d + o)) as f64;
        let tf = flops / (fused * 1e-3) / 1e12;
        report(
            "lora_linear",
            name,
            fused,
            unfused,
            format!("{tf:.2} TFLOP/s = {:.0}% of peak", 100.0 * tf / p.tflops),
        );
        targets.push(verdict(
            &format!("fused LoRA linear >= 1.3x unfused ({name})"),
            unfused / fused,
            |v| v >= 1.3,
        ));
        // DoRA's whole step on the same linear, as the model runs it: the LoRA
        // delta, the row norm from ||W||² (kept from loading), W Aᵀ and A Aᵀ,
        // then the magnitude mix.
        let m = rand::<A<B>>([1, o], &device).require_grad();
        let w_sq = w.clone().powf_scalar(2.0).sum_dim(1);
        let frozen = Frozen::Dense(w.clone());
        let dora = time::<B>(&device, iters, || {
            let y = kernels::linear(x.clone(), w.clone(), None);
            let u = kernels::linear(x.clone(), a.clone(), None).mul_scalar(2.0);
            let delta = kernels::linear(u, bm.clone(), None);
            let norm = dora_row_norm(
                &frozen,
                w_sq.clone(),
                a.clone().detach(),
                bm.clone().detach(),
                2.0,
            );
            sync(kernels::dora_mix(y.clone(), y, delta, m.clone() / norm).sum());
        });
        println!(
            "{:<18} {name:<18} step  {dora:>9.3} ms = {:.2}x the fused LoRA step",
            "dora_linear",
            dora / fused
        );
        targets.push(verdict(
            &format!("DoRA step <= 1.3x the LoRA step ({name})"),
            dora / fused,
            |v| v <= 1.3,
        ));

        // DoRA's epilogue against LoRA's step on the same linear.
        let ylin = rand::<A<B>>([n, o], &device);
        let base = rand::<A<B>>([n, o], &device);
        let delta = rand::<A<B>>([n, o], &device).require_grad();
        let mag = rand::<A<B>>([1, o], &device).require_grad();
        let elem = |ms: f64, tensors: usize| {
            let gbs = (tensors * n * o * 4) as f64 / (ms * 1e-3) / 1e9;
            format!("{gbs:.1} GB/s = {:.0}% of peak", 100.0 * gbs / p.gbs)
        };
        let f = time::<B>(&device, iters, || {
            sync(kernels::dora_mix(ylin.clone(), base.clone(), delta.clone(), mag.clone()).sum())
        });
        let u = time::<B>(&device, iters, || {
            sync(reference::dora_mix(ylin.clone(), base.clone(), delta.clone(), mag.clone()).sum())
        });
        report("dora_mix", name, f, u, elem(f, 8));
        let l = rand::<A<B>>([1, o], &device).require_grad();
        let f = time::<B>(&device, iters, || {
            sync(kernels::scale_cols(delta.clone(), l.clone()).sum())
        });
        let u = time::<B>(&device, iters, || {
            sync(reference::scale_cols(delta.clone(), l.clone()).sum())
        });
        report("ia3_scale_cols", name, f, u, elem(f, 5));
        let f = time::<B>(&device, iters, || sync(kernels::gelu(delta.clone()).sum()));
        let u = time::<B>(&device, iters, || {
            sync(reference::gelu(delta.clone()).sum())
        });
        report("gelu", name, f, u, elem(f, 4));

        // A serial bottleneck adapter (bottleneck 64) on the block's output.
        let xa = rand::<A<B>>([n, o], &device).require_grad();
        let wa = AdapterParams {
            down: rand::<A<B>>([64, o], &device).require_grad(),
            down_bias: rand::<A<B>>([1, 64], &device).require_grad(),
            up: rand::<A<B>>([o, 64], &device).require_grad(),
            up_bias: rand::<A<B>>([1, o], &device).require_grad(),
        };
        let fa = AdapterFn {
            act: Activation::Gelu,
            scale: 1.0,
        };
        let f = time::<B>(&device, iters, || {
            sync(kernels::adapter(xa.clone(), xa.clone(), wa.clone(), fa).sum())
        });
        let u = time::<B>(&device, iters, || {
            sync(
                reference::adapter(xa.clone(), xa.clone(), wa.clone(), fa)
                    .0
                    .sum(),
            )
        });
        // Memory-bound at this bottleneck: x read twice, the output written,
        // the gradient read twice and dx written (+ the sum's pass).
        report("adapter (serial)", name, f, u, elem(f, 7));
    }

    // A packed frozen weight (Q4_1, the SmolLM2 GGUF's type) through the
    // dequant-matmul kernel, forward + input gradient, against the dense f32
    // matmul with the weight expanded on the device once (6.4x its bytes).
    for &(name, n, d, o, _) in shapes.iter().chain(&[("decode", 1usize, 576, 1536, 0)]) {
        let w = Arc::new(q4_1(o, d));
        let dense = Tensor::<A<B>, 2>::from_data(
            burn::tensor::TensorData::new(w.to_dense().data, [o, d]),
            &device,
        );
        let x = rand::<A<B>>([n, d], &device).require_grad();
        let f = time::<B>(&device, iters, || {
            sync(kernels::packed_linear(x.clone(), &w, None).sum());
        });
        let u = time::<B>(&device, iters, || {
            sync(x.clone().matmul(dense.clone().transpose()).sum());
        });
        let tf = 4.0 * (n * d * o) as f64 / (f * 1e-3) / 1e12;
        report(
            "packed q4_1",
            name,
            f,
            u,
            format!(
                "{tf:.3} TFLOP/s = {:.0}% of peak; weight {} KiB against {} KiB dense",
                100.0 * tf / p.tflops,
                w.byte_len() >> 10,
                (4 * o * d) >> 10
            ),
        );
    }

    // Batched multi-adapter LoRA, decode-shaped: one token per row.
    let (d, o, r) = if quick {
        (384, 384, 8)
    } else {
        (4096, 4096, 16)
    };
    let rows = 64;
    let mut single = None;
    for adapters in [1usize, 8, 64] {
        let x = rand::<B>([rows, d], &device);
        let y = rand::<B>([rows, o], &device);
        let a = rand::<B>([adapters * r, d], &device);
        let b = rand::<B>([adapters * o, r], &device);
        let ids: Vec<u32> = (0..rows as u32).map(|i| i % adapters as u32).collect();
        let scales = vec![1.0f32; adapters];
        let f = time::<B>(&device, iters, || {
            let _ = kernels::sgmv(y.clone(), x.clone(), &ids, a.clone(), b.clone(), &scales);
        });
        let u = time::<B>(&device, iters, || {
            let _ = reference::sgmv(y.clone(), x.clone(), &ids, a.clone(), b.clone(), &scales);
        });
        // Bytes that must move: every used adapter's A and B, x, y and the output.
        let bytes = 4 * (adapters.min(rows) * r * (d + o) + rows * d + 2 * rows * o);
        let gbs = bytes as f64 / (f * 1e-3) / 1e9;
        let one = *single.get_or_insert(f);
        report(
            "sgmv decode",
            &format!("{adapters} adapters"),
            f,
            u,
            format!(
                "{gbs:.1} GB/s = {:.0}% of peak; {:.2}x the 1-adapter time",
                100.0 * gbs / p.gbs,
                f / one
            ),
        );
        if adapters == 64 {
            targets.push(verdict(
                "SGMV, 64 adapters: <= 1.5x the 1-adapter time",
                f / one,
                |v| v <= 1.5,
            ));
            targets.push(verdict(
                "SGMV, 64 adapters: >= 60% of the measured peak bandwidth",
                gbs / p.gbs,
                |v| v >= 0.6,
            ));
        }
    }
    println!("targets:");
    for t in targets {
        println!("  {t}");
    }
}

/// An `[o, d]` Q4_1 matrix of pseudo-random codes, block scales 0.01, mins −0.08.
fn q4_1(o: usize, d: usize) -> PackedMatrix {
    let mut bytes = Vec::with_capacity(o * d / 32 * 20);
    let mut s = 0x9E3779B97F4A7C15u64;
    for _ in 0..o * d / 32 {
        bytes.extend(half::f16::from_f32(0.01).to_le_bytes());
        bytes.extend(half::f16::from_f32(-0.08).to_le_bytes());
        for _ in 0..16 {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1);
            bytes.push((s >> 56) as u8);
        }
    }
    PackedMatrix::new(peftc_compiler::model::gguf::GgmlType::Q4_1, o, d, bytes)
        .expect("whole Q4_1 blocks")
}

/// `what: value — met` or `— not met`.
fn verdict(what: &str, value: f64, met: impl Fn(f64) -> bool) -> String {
    let state = if met(value) { "met" } else { "NOT met" };
    format!("{what}: {value:.2} — {state}")
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    match std::env::var("PEFTC_BENCH_DEVICE").as_deref() {
        #[cfg(feature = "cuda")]
        Ok("cuda") => run::<burn::backend::Cuda>(Default::default(), quick),
        Ok("wgpu") | Err(_) => run::<burn::backend::Wgpu>(Default::default(), quick),
        Ok(other) => {
            eprintln!("PEFTC_BENCH_DEVICE={other}: expected wgpu or cuda (with --features cuda)")
        }
    }
}
