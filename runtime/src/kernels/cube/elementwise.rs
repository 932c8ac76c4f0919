//! Element-wise activations and their backward, one unit per element.

use cubecl::prelude::*;
use peftc_compiler::methods::Activation;

/// `0.5 x (1 + erf(x / sqrt 2))` (BERT's exact GELU).
#[cube(launch)]
pub fn gelu<F: Float>(x: &Tensor<F>, y: &mut Tensor<F>) {
    if ABSOLUTE_POS >= y.len() {
        terminate!();
    }
    let v = x[ABSOLUTE_POS];
    y[ABSOLUTE_POS] = F::new(0.5) * v * (F::new(1.0) + F::erf(v * F::new(0.70710677)));
}

/// `dy * (Phi(x) + x phi(x))`.
#[cube(launch)]
pub fn gelu_backward<F: Float>(x: &Tensor<F>, dy: &Tensor<F>, dx: &mut Tensor<F>) {
    if ABSOLUTE_POS >= dx.len() {
        terminate!();
    }
    let v = x[ABSOLUTE_POS];
    let cdf = F::new(0.5) * (F::new(1.0) + F::erf(v * F::new(0.70710677)));
    let pdf = F::exp(F::new(-0.5) * v * v) * F::new(0.3989423);
    dx[ABSOLUTE_POS] = dy[ABSOLUTE_POS] * (cdf + v * pdf);
}

/// `silu(g) * u` (SwiGLU).
#[cube(launch)]
pub fn silu_mul<F: Float>(g: &Tensor<F>, u: &Tensor<F>, y: &mut Tensor<F>) {
    if ABSOLUTE_POS >= y.len() {
        terminate!();
    }
    let v = g[ABSOLUTE_POS];
    let s = F::new(1.0) / (F::new(1.0) + F::exp(-v));
    y[ABSOLUTE_POS] = v * s * u[ABSOLUTE_POS];
}

/// `dg = dy u s (1 + g (1 - s))`, `du = dy g s` with `s = sigmoid(g)`.
#[cube(launch)]
pub fn silu_mul_backward<F: Float>(
    g: &Tensor<F>,
    u: &Tensor<F>,
    dy: &Tensor<F>,
    dg: &mut Tensor<F>,
    du: &mut Tensor<F>,
) {
    if ABSOLUTE_POS >= dg.len() {
        terminate!();
    }
    let v = g[ABSOLUTE_POS];
    let d = dy[ABSOLUTE_POS];
    let s = F::new(1.0) / (F::new(1.0) + F::exp(-v));
    du[ABSOLUTE_POS] = d * v * s;
    dg[ABSOLUTE_POS] = d * u[ABSOLUTE_POS] * s * (F::new(1.0) + v * (F::new(1.0) - s));
}

/// A bottleneck adapter's activation, chosen at expansion time by `act`
/// (see [`act_code`]).
#[cube]
fn act_value<F: Float>(v: F, #[comptime] act: u32) -> F {
    if comptime!(act == RELU) {
        F::max(v, F::new(0.0))
    } else if comptime!(act == GELU) {
        F::new(0.5) * v * (F::new(1.0) + F::erf(v * F::new(0.70710677)))
    } else if comptime!(act == SILU) {
        v / (F::new(1.0) + F::exp(-v))
    } else {
        F::tanh(v)
    }
}

/// `act'(v)`; ReLU's derivative at 0 is 0, as in PyTorch.
#[cube]
fn act_slope<F: Float>(v: F, #[comptime] act: u32) -> F {
    if comptime!(act == RELU) {
        select(v > F::new(0.0), F::new(1.0), F::new(0.0))
    } else if comptime!(act == GELU) {
        let cdf = F::new(0.5) * (F::new(1.0) + F::erf(v * F::new(0.70710677)));
        let pdf = F::exp(F::new(-0.5) * v * v) * F::new(0.3989423);
        cdf + v * pdf
    } else if comptime!(act == SILU) {
        let s = F::new(1.0) / (F::new(1.0) + F::exp(-v));
        s * (F::new(1.0) + v * (F::new(1.0) - s))
    } else {
        let t = F::tanh(v);
        F::new(1.0) - t * t
    }
}

/// `h = act(z)`.
#[cube(launch)]
pub fn activation<F: Float>(z: &Tensor<F>, h: &mut Tensor<F>, #[comptime] act: u32) {
    if ABSOLUTE_POS >= h.len() {
        terminate!();
    }
    h[ABSOLUTE_POS] = act_value::<F>(z[ABSOLUTE_POS], act);
}

/// `dz = dh ⊙ act'(z)`.
#[cube(launch)]
pub fn activation_backward<F: Float>(
    z: &Tensor<F>,
    dh: &Tensor<F>,
    dz: &mut Tensor<F>,
    #[comptime] act: u32,
) {
    if ABSOLUTE_POS >= dz.len() {
        terminate!();
    }
    dz[ABSOLUTE_POS] = dh[ABSOLUTE_POS] * act_slope::<F>(z[ABSOLUTE_POS], act);
}

const RELU: u32 = 0;
const GELU: u32 = 1;
const SILU: u32 = 2;
const TANH: u32 = 3;

/// The comptime code of an activation in these kernels.
pub fn act_code(act: Activation) -> u32 {
    match act {
        Activation::Relu => RELU,
        Activation::Gelu => GELU,
        Activation::Silu => SILU,
        Activation::Tanh => TANH,
    }
}
