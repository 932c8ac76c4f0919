//! The model's numerical building blocks. Norms and activations go through
//! the fused kernels (`crate::kernels`), whose references are plain burn ops.

use crate::kernels::{self, PeftKernels};
use burn::tensor::{Tensor, activation};

/// LayerNorm over the last dimension (biased variance), `x: [n, d]`.
pub fn layer_norm<B: PeftKernels>(
    x: Tensor<B, 2>,
    gamma: Tensor<B, 2>,
    beta: Tensor<B, 2>,
    eps: f64,
) -> Tensor<B, 2> {
    kernels::layer_norm(x, gamma, beta, eps)
}

/// RMSNorm (LLaMA): `x * rsqrt(mean(x^2) + eps) * w`.
pub fn rms_norm<B: PeftKernels>(x: Tensor<B, 2>, w: Tensor<B, 2>, eps: f64) -> Tensor<B, 2> {
    kernels::rms_norm(x, w, eps)
}

/// Exact (erf) GELU, PyTorch's default.
pub fn gelu<B: PeftKernels>(x: Tensor<B, 2>) -> Tensor<B, 2> {
    kernels::gelu(x)
}

/// `silu(g) * u`, the SwiGLU gate.
pub fn silu_mul<B: PeftKernels>(g: Tensor<B, 2>, u: Tensor<B, 2>) -> Tensor<B, 2> {
    kernels::silu_mul(g, u)
}

pub fn act<B: PeftKernels>(
    kind: peftc_compiler::methods::Activation,
    x: Tensor<B, 2>,
) -> Tensor<B, 2> {
    use peftc_compiler::methods::Activation as A;
    match kind {
        A::Relu => activation::relu(x),
        A::Gelu => gelu(x),
        A::Silu => activation::silu(x),
        A::Tanh => x.tanh(),
    }
}

/// `x @ w.T + b` for `x: [n, in]`, a weight in PyTorch layout `w: [out, in]`
/// and `b: [1, out]`, through the fused linear kernel (BLAS on the CPU).
pub fn linear_pt<B: PeftKernels>(
    x: Tensor<B, 2>,
    w: Tensor<B, 2>,
    b: Option<Tensor<B, 2>>,
) -> Tensor<B, 2> {
    kernels::linear(x, w, b)
}
