//! Small numerical building blocks written with plain burn ops, matching
//! PyTorch's definitions. They are the reference that fused kernels are
//! checked against.

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, activation};

/// LayerNorm over the last dimension (biased variance), `x: [n, d]`.
pub fn layer_norm<B: Backend>(
    x: Tensor<B, 2>,
    gamma: Tensor<B, 2>,
    beta: Tensor<B, 2>,
    eps: f64,
) -> Tensor<B, 2> {
    let mean = x.clone().mean_dim(1);
    let centered = x - mean;
    let var = centered.clone().powf_scalar(2.0).mean_dim(1);
    centered.div(var.add_scalar(eps).sqrt()) * gamma + beta
}

/// RMSNorm (LLaMA): `x * rsqrt(mean(x^2) + eps) * w`.
pub fn rms_norm<B: Backend>(x: Tensor<B, 2>, w: Tensor<B, 2>, eps: f64) -> Tensor<B, 2> {
    let ms = x.clone().powf_scalar(2.0).mean_dim(1);
    // transformers multiplies by rsqrt(ms + eps), then by the weight.
    x * ms.add_scalar(eps).sqrt().recip() * w
}

/// Exact (erf) GELU, PyTorch's default.
pub fn gelu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    activation::gelu(x)
}

pub fn silu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    activation::silu(x)
}

pub fn act<B: Backend, const D: usize>(
    kind: peftc_compiler::methods::Activation,
    x: Tensor<B, D>,
) -> Tensor<B, D> {
    use peftc_compiler::methods::Activation as A;
    match kind {
        A::Relu => activation::relu(x),
        A::Gelu => gelu(x),
        A::Silu => silu(x),
        A::Tanh => x.tanh(),
    }
}

/// `x @ w_t + b` for `x: [n, in]`, `w_t: [in, out]`, `b: [1, out]`.
pub fn linear<B: Backend>(
    x: Tensor<B, 2>,
    w_t: Tensor<B, 2>,
    b: Option<Tensor<B, 2>>,
) -> Tensor<B, 2> {
    let y = x.matmul(w_t);
    match b {
        Some(b) => y + b,
        None => y,
    }
}

/// `x @ w.T + b` for a weight in PyTorch layout `w: [out, in]`.
pub fn linear_pt<B: Backend>(
    x: Tensor<B, 2>,
    w: Tensor<B, 2>,
    b: Option<Tensor<B, 2>>,
) -> Tensor<B, 2> {
    linear(x, w.transpose(), b)
}
