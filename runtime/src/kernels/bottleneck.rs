//! The bottleneck adapter (Houlsby / He et al.) as one op:
//! `out = res + scale · (act(z) W_upᵀ + b_up)` with `z = x W_downᵀ + b_down`.
//!
//! Serial adapters take `res = x` (the block's output), parallel ones the
//! block's output with `x` its input. The op keeps only `z: [n, r]` for its
//! backward (besides `x` and the weights): neither `act(z)` nor the `[n, out]`
//! up-projection exists as a tensor of its own, and the residual add is the
//! up-projection's accumulation target.

use super::{PeftKernels, prim, tensor};
use burn::tensor::ops::FloatTensor;
use peftc_compiler::methods::Activation;

/// The adapter's elementwise part: its activation and output scale.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdapterFn {
    pub act: Activation,
    pub scale: f64,
}

/// The adapter's weights, PyTorch layout: `down: [r, d]`, `down_bias: [1, r]`,
/// `up: [out, r]`, `up_bias: [1, out]`.
#[derive(Debug, Clone)]
pub struct AdapterParams<T> {
    pub down: T,
    pub down_bias: T,
    pub up: T,
    pub up_bias: T,
}

impl<T> AdapterParams<T> {
    pub fn map<U>(self, f: impl Fn(T) -> U) -> AdapterParams<U> {
        AdapterParams {
            down: f(self.down),
            down_bias: f(self.down_bias),
            up: f(self.up),
            up_bias: f(self.up_bias),
        }
    }
}

/// Which gradients an adapter's backward computes, and what it returns:
/// `dx` and one per weight (the residual's gradient is `dy` itself).
#[derive(Debug, Clone)]
pub struct AdapterGrads<T> {
    pub x: Option<T>,
    pub params: AdapterParams<Option<T>>,
}

impl<T> Default for AdapterParams<Option<T>> {
    fn default() -> Self {
        AdapterParams {
            down: None,
            down_bias: None,
            up: None,
            up_bias: None,
        }
    }
}

/// `[dx, d down, d down_bias, d up, d up_bias]`: which are asked for.
pub type AdapterNeed = [bool; 5];

/// The adapter's backward composed of `B`'s own linear and activation
/// kernels (the default of [`PeftKernels::k_adapter_backward`]):
/// `dh = s·dy W_up`, `dW_up = s·dyᵀ act(z)`, `db_up = s·Σ dy`,
/// `dz = dh ⊙ act'(z)`, then the down projection's `(dx, dW_down, db_down)`.
/// Only `[n, r]`-sized intermediates are made; `dy` is never rescaled.
pub fn backward_by_kernels<B: PeftKernels>(
    x: Option<FloatTensor<B>>,
    z: FloatTensor<B>,
    params: AdapterParams<FloatTensor<B>>,
    dy: FloatTensor<B>,
    f: AdapterFn,
    need: AdapterNeed,
) -> AdapterGrads<FloatTensor<B>> {
    let scaled = |t: FloatTensor<B>| prim(tensor::<B, 2>(t).mul_scalar(f.scale));
    let down = need[0] || need[1] || need[2];
    let h = need[3].then(|| B::k_act(f.act, z.clone()));
    let (dh, d_up, d_up_bias) = B::k_linear_backward(h, params.up, dy, [down, need[3], need[4]]);
    let (dx, d_down, d_down_bias) = match dh {
        Some(dh) => {
            let dz = B::k_act_backward(f.act, z, scaled(dh));
            B::k_linear_backward(x, params.down, dz, [need[0], need[1], need[2]])
        }
        None => (None, None, None),
    };
    AdapterGrads {
        x: dx,
        params: AdapterParams {
            down: d_down,
            down_bias: d_down_bias,
            up: d_up.map(scaled),
            up_bias: d_up_bias.map(scaled),
        },
    }
}
