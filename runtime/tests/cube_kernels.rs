//! The CubeCL kernels (kernels/cube) against their reference compositions on
//! burn's wgpu backend (CUDA with `--features cuda`): outputs and the gradient of every input. Without a
//! GPU, wgpu runs on Mesa's lavapipe (`.ci/run` installs mesa-vulkan-drivers).
//! The same kernels are checked against the CPU backend's results too.

mod common;
use burn::backend::Autodiff;
use burn::tensor::{Tensor, TensorData};
use common::close;
use peftc_compiler::methods::Activation;
use peftc_runtime::CpuTrain;
use peftc_runtime::burn;
use peftc_runtime::kernels::{self, AdapterFn, AdapterParams, reference};

/// wgpu; CUDA when built with `--features cuda` (benches/gpu.sh).
#[cfg(not(feature = "cuda"))]
type Wgpu = burn::backend::Wgpu;
#[cfg(feature = "cuda")]
type Wgpu = burn::backend::Cuda;

type G = Autodiff<Wgpu>;

/// The same standard-normal draw on both backends, from the seed alone (the
/// backends' own generators are global, and the tests run in parallel).
fn values(shape: [usize; 2], seed: u64) -> Vec<f32> {
    peftc_runtime::rng::normal(seed, shape[0] * shape[1])
}

fn gpu(shape: [usize; 2], seed: u64) -> Tensor<G, 2> {
    Tensor::<G, 2>::from_data(
        TensorData::new(values(shape, seed), shape),
        &Default::default(),
    )
    .require_grad()
}

fn cpu(shape: [usize; 2], seed: u64) -> Tensor<CpuTrain, 2> {
    Tensor::<CpuTrain, 2>::from_data(
        TensorData::new(values(shape, seed), shape),
        &Default::default(),
    )
    .require_grad()
}

fn host<B: burn::tensor::backend::Backend>(t: Tensor<B, 2>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .expect("f32")
}

/// `sum(y * r)` for a fixed random `r`, so every output element matters.
fn loss(y: Tensor<G, 2>, seed: u64) -> Tensor<G, 1> {
    let r = gpu(y.dims(), seed).detach();
    (y * r).sum()
}

fn grad(
    t: &Tensor<G, 2>,
    g: &<G as burn::tensor::backend::AutodiffBackend>::Gradients,
) -> Vec<f32> {
    host(t.grad(g).expect("gradient"))
}

/// Output and every input's gradient of `fused` against `refer`, on wgpu.
fn check(
    what: &str,
    inputs: &[Tensor<G, 2>],
    fused: impl Fn(&[Tensor<G, 2>]) -> Tensor<G, 2>,
    refer: impl Fn(&[Tensor<G, 2>]) -> Tensor<G, 2>,
    tol: f32,
) {
    let y1 = fused(inputs);
    let y2 = refer(inputs);
    close(
        what,
        &host(y1.clone().inner()),
        &host(y2.clone().inner()),
        tol,
    );
    let g1 = loss(y1, 99).backward();
    let g2 = loss(y2, 99).backward();
    for (i, x) in inputs.iter().enumerate() {
        close(
            &format!("{what}: d input {i}"),
            &grad(x, &g1),
            &grad(x, &g2),
            tol * 10.0,
        );
    }
}

/// Against the CPU backend's reference: burn's own GELU backward on wgpu is
/// off by 5e-4 (relative), the kernel is not.
#[test]
fn gelu_kernel_matches_the_cpu_reference() {
    let x = gpu([64, 96], 1).mul_scalar(3.0).detach().require_grad();
    let y = kernels::gelu(x.clone());
    let g = loss(y.clone(), 99).backward();
    let xc = cpu([64, 96], 1).mul_scalar(3.0).detach().require_grad();
    let yc = reference::gelu(xc.clone());
    let rc = cpu([64, 96], 99).detach();
    let gc = (yc.clone() * rc).sum().backward();
    close("gelu", &host(y.inner()), &host(yc.inner()), 1e-5);
    close(
        "dgelu",
        &grad(&x, &g),
        &host(xc.grad(&gc).expect("dx")),
        1e-5,
    );
}

/// Rows whose length takes no vector of 4 (33: single elements, 6: pairs).
#[test]
fn vectorized_kernels_handle_rows_of_any_length() {
    for d in [33, 6] {
        check(
            &format!("gelu d={d}"),
            &[gpu([13, d], 14)],
            |t| kernels::gelu(t[0].clone()),
            |t| reference::gelu(t[0].clone()),
            1e-4,
        );
        check(
            &format!("scale_cols d={d}"),
            &[gpu([70, d], 15), gpu([1, d], 16)],
            |t| kernels::scale_cols(t[0].clone(), t[1].clone()),
            |t| reference::scale_cols(t[0].clone(), t[1].clone()),
            1e-5,
        );
        check(
            &format!("silu_mul d={d}"),
            &[gpu([13, d], 17), gpu([13, d], 18)],
            |t| kernels::silu_mul(t[0].clone(), t[1].clone()),
            |t| reference::silu_mul(t[0].clone(), t[1].clone()),
            1e-5,
        );
    }
}

#[test]
fn silu_mul_kernel_matches_reference() {
    check(
        "silu_mul",
        &[gpu([32, 80], 2), gpu([32, 80], 3)],
        |t| kernels::silu_mul(t[0].clone(), t[1].clone()),
        |t| reference::silu_mul(t[0].clone(), t[1].clone()),
        1e-5,
    );
}

#[test]
fn ia3_scale_cols_kernel_matches_reference() {
    // 300 rows: the column reduction of the backward spans several row blocks.
    check(
        "scale_cols",
        &[gpu([300, 48], 4), gpu([1, 48], 5)],
        |t| kernels::scale_cols(t[0].clone(), t[1].clone()),
        |t| reference::scale_cols(t[0].clone(), t[1].clone()),
        1e-5,
    );
}

#[test]
fn dora_mix_kernel_matches_reference() {
    check(
        "dora_mix",
        &[
            gpu([130, 40], 6),
            gpu([130, 40], 7),
            gpu([130, 40], 8),
            gpu([1, 40], 9),
        ],
        |t| kernels::dora_mix(t[0].clone(), t[1].clone(), t[2].clone(), t[3].clone()),
        |t| reference::dora_mix(t[0].clone(), t[1].clone(), t[2].clone(), t[3].clone()),
        1e-5,
    );
}

#[test]
fn lora_expand_kernel_matches_reference() {
    check(
        "lora_expand",
        &[gpu([70, 96], 10), gpu([70, 8], 11), gpu([96, 8], 12)],
        |t| kernels::lora_expand(t[0].clone(), t[1].clone(), t[2].clone(), 2.0),
        |t| reference::lora_expand(t[0].clone(), t[1].clone(), t[2].clone(), 2.0),
        1e-5,
    );
}

/// The whole fused LoRA linear on wgpu gives the CPU backend's output and
/// gradients (the CPU path: BLAS with the product accumulated onto `y`).
#[test]
fn fused_lora_linear_on_wgpu_matches_the_cpu_backend() {
    let (n, d, o, r) = (50, 64, 72, 4);
    let run_gpu = {
        let (x, w, a, b) = (
            gpu([n, d], 20),
            gpu([o, d], 21).detach(),
            gpu([r, d], 22),
            gpu([o, r], 23),
        );
        let y = kernels::linear(x.clone(), w, None);
        let y = kernels::lora_expand(y, x.clone().matmul(a.clone().transpose()), b.clone(), 0.5);
        let g = loss(y.clone(), 24).backward();
        [host(y.inner()), grad(&x, &g), grad(&a, &g), grad(&b, &g)]
    };
    let run_cpu = {
        let (x, w, a, b) = (
            cpu([n, d], 20),
            cpu([o, d], 21).detach(),
            cpu([r, d], 22),
            cpu([o, r], 23),
        );
        let y = kernels::linear(x.clone(), w, None);
        let y = kernels::lora_expand(y, x.clone().matmul(a.clone().transpose()), b.clone(), 0.5);
        let rr = cpu([n, o], 24).detach();
        let g = (y.clone() * rr).sum().backward();
        [
            host(y.inner()),
            host(x.grad(&g).expect("dx")),
            host(a.grad(&g).expect("da")),
            host(b.grad(&g).expect("db")),
        ]
    };
    for (i, (a, b)) in run_gpu.iter().zip(&run_cpu).enumerate() {
        close(&format!("lora linear, output/grad {i}"), a, b, 1e-4);
    }
}

/// One bottleneck adapter on backend `B` (fused when `fused`, else the
/// reference differentiated by burn): the output, then the gradients of
/// `x`, the residual (when distinct) and the four weights.
fn adapter_run<B: burn::tensor::backend::AutodiffBackend + kernels::PeftKernels>(
    act: Activation,
    serial: bool,
    fused: bool,
) -> Vec<Vec<f32>> {
    let (n, d, r) = (70, 48, 8);
    let o = if serial { d } else { 40 };
    let t = |shape: [usize; 2], seed| {
        Tensor::<B, 2>::from_data(
            TensorData::new(values(shape, seed), shape),
            &Default::default(),
        )
        .require_grad()
    };
    let x = t([n, d], 40);
    let res = if serial { x.clone() } else { t([n, o], 41) };
    let w = AdapterParams {
        down: t([r, d], 42),
        down_bias: t([1, r], 43),
        up: t([o, r], 44),
        up_bias: t([1, o], 45),
    };
    let f = AdapterFn { act, scale: 0.8 };
    let y = if fused {
        kernels::adapter(res.clone(), x.clone(), w.clone(), f)
    } else {
        reference::adapter(res.clone(), x.clone(), w.clone(), f).0
    };
    let g = (y.clone() * t([n, o], 46).detach()).sum().backward();
    let mut out = vec![host(y.inner()), host(x.grad(&g).expect("dx"))];
    if !serial {
        out.push(host(res.grad(&g).expect("dres")));
    }
    for p in [w.down, w.down_bias, w.up, w.up_bias] {
        out.push(host(p.grad(&g).expect("weight gradient")));
    }
    out
}

/// The fused bottleneck adapter on wgpu (activation kernel, bias + scale +
/// residual in one pass after the up projection, backward through the
/// activation's derivative kernel) against the reference on the CPU backend, for every
/// activation, parallel and serial.
#[test]
fn adapter_kernels_match_the_cpu_reference() {
    for act in [
        Activation::Relu,
        Activation::Gelu,
        Activation::Silu,
        Activation::Tanh,
    ] {
        for serial in [false, true] {
            let fused = adapter_run::<G>(act, serial, true);
            let refer = adapter_run::<CpuTrain>(act, serial, false);
            for (i, (a, b)) in fused.iter().zip(&refer).enumerate() {
                close(
                    &format!("{act:?} serial={serial}: output/grad {i}"),
                    a,
                    b,
                    1e-4,
                );
            }
        }
    }
}

/// Batched multi-adapter LoRA (one launch per product) against the loop over
/// adapters, with rows of four adapters interleaved and one adapter unused.
#[test]
fn sgmv_kernel_matches_the_loop_over_adapters() {
    type W = Wgpu;
    // `in` below and above the shrink kernel's 64-unit stride.
    for (n, d, o, r, k) in [(37, 48, 40, 8, 5), (9, 200, 24, 4, 3)] {
        let t = |shape: [usize; 2], seed| {
            Tensor::<W, 2>::from_data(
                TensorData::new(values(shape, seed), shape),
                &Default::default(),
            )
        };
        let (y, x, a, b) = (
            t([n, o], 30),
            t([n, d], 31),
            t([k * r, d], 32),
            t([k * o, r], 33),
        );
        let ids: Vec<u32> = (0..n as u32).map(|i| (i * 7 + 3) % 4 % k as u32).collect();
        let scales: Vec<f32> = [0.5f32, 2.0, 1.0, 0.25, 3.0][..k].to_vec();
        let fused = kernels::sgmv(y.clone(), x.clone(), &ids, a.clone(), b.clone(), &scales);
        let looped = reference::sgmv(y, x, &ids, a, b, &scales);
        close(&format!("sgmv in={d}"), &host(fused), &host(looped), 1e-5);
    }
}

/// The kernels instantiated for f16 and bf16, where the device has them
/// (lavapipe may not: the test then says so and checks nothing): outputs and
/// gradients, through casts, against the f32 reference, to half precision.
#[test]
fn half_precision_kernels_match_the_f32_reference() {
    use burn::tensor::DType;
    use burn::tensor::backend::Backend;
    let device = Default::default();
    for (dtype, tol) in [(DType::F16, 4e-3), (DType::BF16, 3e-2)] {
        if !Wgpu::supports_dtype(&device, dtype) {
            eprintln!("{dtype:?}: not supported by this device, skipped");
            continue;
        }
        let half = |t: &Tensor<G, 2>| t.clone().cast(dtype);
        let full = |t: Tensor<G, 2>| t.cast(DType::F32);
        let what = |op: &str| format!("{op} in {dtype:?}");
        check(
            &what("gelu"),
            &[gpu([40, 64], 40)],
            |t| full(kernels::gelu(half(&t[0]))),
            |t| reference::gelu(t[0].clone()),
            tol,
        );
        check(
            &what("silu_mul"),
            &[gpu([40, 64], 41), gpu([40, 64], 42)],
            |t| full(kernels::silu_mul(half(&t[0]), half(&t[1]))),
            |t| reference::silu_mul(t[0].clone(), t[1].clone()),
            tol,
        );
        check(
            &what("scale_cols"),
            &[gpu([90, 32], 43), gpu([1, 32], 44)],
            |t| full(kernels::scale_cols(half(&t[0]), half(&t[1]))),
            |t| reference::scale_cols(t[0].clone(), t[1].clone()),
            tol,
        );
        check(
            &what("lora_expand"),
            &[gpu([30, 48], 45), gpu([30, 8], 46), gpu([48, 8], 47)],
            |t| {
                full(kernels::lora_expand(
                    half(&t[0]),
                    half(&t[1]),
                    half(&t[2]),
                    0.5,
                ))
            },
            |t| reference::lora_expand(t[0].clone(), t[1].clone(), t[2].clone(), 0.5),
            tol,
        );
        let f = AdapterFn {
            act: Activation::Silu,
            scale: 0.5,
        };
        let params =
            |t: &[Tensor<G, 2>], cast: &dyn Fn(&Tensor<G, 2>) -> Tensor<G, 2>| AdapterParams {
                down: cast(&t[2]),
                down_bias: cast(&t[3]),
                up: cast(&t[4]),
                up_bias: cast(&t[5]),
            };
        check(
            &what("adapter"),
            &[
                gpu([30, 40], 48),
                gpu([30, 48], 49),
                gpu([8, 48], 50),
                gpu([1, 8], 51),
                gpu([40, 8], 52),
                gpu([1, 40], 53),
            ],
            |t| {
                full(kernels::adapter(
                    half(&t[0]),
                    half(&t[1]),
                    params(t, &half),
                    f,
                ))
            },
            |t| reference::adapter(t[0].clone(), t[1].clone(), params(t, &|t| t.clone()), f).0,
            tol,
        );
        // SGMV (inference: no gradients), scales uploaded in the half dtype.
        let t = |shape: [usize; 2], seed| {
            Tensor::<Wgpu, 2>::from_data(TensorData::new(values(shape, seed), shape), &device)
        };
        let (n, d, o, r, k) = (13, 100, 24, 4, 3);
        let (y, x, a, b) = (
            t([n, o], 60),
            t([n, d], 61),
            t([k * r, d], 62),
            t([k * o, r], 63),
        );
        let ids: Vec<u32> = (0..n as u32).map(|i| (i * 5 + 1) % k as u32).collect();
        let scales = [0.5f32, 2.0, 1.0];
        let h = |t: &Tensor<Wgpu, 2>| t.clone().cast(dtype);
        let fused = kernels::sgmv(h(&y), h(&x), &ids, h(&a), h(&b), &scales).cast(DType::F32);
        let looped = reference::sgmv(y, x, &ids, a, b, &scales);
        close(&what("sgmv"), &host(fused), &host(looped), tol);
    }
}
