//! The packed dequant-matmul kernel (kernels/cube/packed_matmul.rs) on wgpu
//! (lavapipe without a GPU; CUDA with `--features cuda`) against the host
//! decoders: for every coding a packed weight can have (each GGUF block type
//! peftc reads, NF4, Int8), `x Wᵀ + b` and the gradients of `x` and `b` equal
//! the CPU backend's product with the dense `W` that `PackedMatrix::to_dense`
//! decodes. The codes are random bytes, with each block's f16 scales set to
//! finite values, so every code of every field is exercised.

mod common;
use burn::backend::Autodiff;
use burn::tensor::{Tensor, TensorData};
use common::close;
use peftc_compiler::model::gguf::GgmlType;
use peftc_runtime::CpuTrain;
use peftc_runtime::burn;
use peftc_runtime::kernels;
use peftc_runtime::weights::{HostTensor, Int8Matrix, Nf4Matrix, PackedMatrix};
use std::sync::Arc;

#[cfg(not(feature = "cuda"))]
type Gpu = burn::backend::Wgpu;
#[cfg(feature = "cuda")]
type Gpu = burn::backend::Cuda;
type G = Autodiff<Gpu>;
type C = CpuTrain;

/// A deterministic byte stream.
fn bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 33) as u8
        })
        .collect()
}

/// `rows × cols` random codes of `ty`, each block's f16 fields (scales and
/// mins) replaced by small finite values.
fn ggml(ty: GgmlType, rows: usize, cols: usize, seed: u64) -> PackedMatrix {
    let (per, block) = ty.block().expect("a block type");
    let (per, block) = (per as usize, block as usize);
    let halves: &[usize] = match ty {
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => &[0],
        GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4K | GgmlType::Q5K => &[0, 2],
        GgmlType::Q2K => &[80, 82],
        GgmlType::Q3K => &[108],
        GgmlType::Q6K => &[208],
        other => panic!("{other:?} is not a block type"),
    };
    let mut b = bytes(seed, rows * cols / per * block);
    for (i, blk) in b.chunks_exact_mut(block).enumerate() {
        for (f, &at) in halves.iter().enumerate() {
            let v = 0.002 + 0.001 * ((i * 7 + f * 3) % 11) as f32;
            let v = if f == 1 && (i % 3 == 0) { -v } else { v };
            blk[at..at + 2].copy_from_slice(&half::f16::from_f32(v).to_le_bytes());
        }
    }
    PackedMatrix::new(ty, rows, cols, b).expect("well-formed blocks")
}

/// `rows × cols` of a float GGUF type, from normal values.
fn float(ty: GgmlType, rows: usize, cols: usize, seed: u64) -> PackedMatrix {
    let v = peftc_runtime::rng::normal(seed, rows * cols);
    let b: Vec<u8> = match ty {
        GgmlType::F32 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        GgmlType::F16 => v
            .iter()
            .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
            .collect(),
        GgmlType::BF16 => v
            .iter()
            .flat_map(|&x| half::bf16::from_f32(x).to_le_bytes())
            .collect(),
        other => panic!("{other:?} is not a float type"),
    };
    PackedMatrix::new(ty, rows, cols, b).expect("well-formed floats")
}

fn host_matrix(rows: usize, cols: usize, seed: u64) -> HostTensor {
    HostTensor::new(
        vec![rows, cols],
        peftc_runtime::rng::normal(seed, rows * cols),
    )
}

fn on<B: burn::tensor::backend::AutodiffBackend>(v: &[f32], shape: [usize; 2]) -> Tensor<B, 2> {
    Tensor::<B, 2>::from_data(TensorData::new(v.to_vec(), shape), &Default::default())
        .require_grad()
}

fn host<B: burn::tensor::backend::Backend>(t: Tensor<B, 2>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .expect("f32")
}

/// `y = x Wᵀ + b` through the packed kernel on the GPU backend against the
/// dense product on the CPU; then `sum(y · r)`'s gradients of `x` and `b`
/// (the kernel's transposed product gives `dx`).
fn check(what: &str, w: PackedMatrix, n: usize) {
    let (o, k) = (w.rows(), w.cols());
    let xs = peftc_runtime::rng::normal(11, n * k);
    let bs = peftc_runtime::rng::normal(12, o);
    let rs = peftc_runtime::rng::normal(13, n * o);
    let dense = w.to_dense();
    let w = Arc::new(w);

    let (x, b) = (on::<G>(&xs, [n, k]), on::<G>(&bs, [1, o]));
    let y = kernels::packed_linear(x.clone(), &w, Some(b.clone()));
    let r = on::<G>(&rs, [n, o]).detach();
    let g = (y.clone() * r).sum().backward();

    let (xc, bc) = (on::<C>(&xs, [n, k]), on::<C>(&bs, [1, o]));
    let wc = Tensor::<C, 2>::from_data(TensorData::new(dense.data, [o, k]), &Default::default());
    let yc = xc.clone().matmul(wc.transpose()) + bc.clone();
    let rc = on::<C>(&rs, [n, o]).detach();
    let gc = (yc.clone() * rc).sum().backward();

    close(what, &host(y.inner()), &host(yc.inner()), 1e-5);
    let grad = |t: &Tensor<G, 2>| host(t.grad(&g).expect("gradient"));
    let grad_c = |t: &Tensor<C, 2>| host(t.grad(&gc).expect("gradient"));
    close(&format!("{what}: dx"), &grad(&x), &grad_c(&xc), 1e-5);
    close(&format!("{what}: db"), &grad(&b), &grad_c(&bc), 1e-5);
    assert_eq!(
        w.resident().len(),
        1,
        "{what}: one upload for both products"
    );
}

/// Every GGUF block type peftc reads, at rows and batch sizes off the tile.
#[test]
fn gguf_blocks_multiply_on_the_device_like_their_host_decoding() {
    let types = [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q2K,
        GgmlType::Q3K,
        GgmlType::Q4K,
        GgmlType::Q5K,
        GgmlType::Q6K,
    ];
    for (i, ty) in types.into_iter().enumerate() {
        check(&ty.name(), ggml(ty, 37, 512, i as u64), 19);
    }
    for ty in [GgmlType::F32, GgmlType::F16, GgmlType::BF16] {
        check(&ty.name(), float(ty, 21, 48, 5), 3);
    }
}

/// NF4 (block scales double-quantized) and Int8 rows, quantized at load.
#[test]
fn nf4_and_int8_multiply_on_the_device_like_their_host_decoding() {
    let t = host_matrix(33, 320, 21);
    check(
        "nf4",
        PackedMatrix::from(Nf4Matrix::quantize(&t).unwrap()),
        17,
    );
    check(
        "int8",
        PackedMatrix::from(Int8Matrix::quantize(&t).unwrap()),
        2,
    );
}

/// A decode-sized batch (one row) and a long one (several tiles of rows).
#[test]
fn one_row_and_many_rows() {
    check("q4_k, 1 row", ggml(GgmlType::Q4K, 40, 256, 3), 1);
    check("q6_k, 70 rows", ggml(GgmlType::Q6K, 16, 256, 4), 70);
}
