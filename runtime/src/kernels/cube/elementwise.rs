//! Element-wise activations and their backward, one unit per vector of `N`
//! elements (`N` chosen at launch: 128-bit loads where the row length allows,
//! see `launch::vector_size`).

use cubecl::prelude::*;
use peftc_compiler::methods::Activation;

/// A vector of `v` in every lane.
#[cube]
pub fn splat<F: Float, N: Size>(#[comptime] v: f32) -> Vector<F, N> {
    Vector::new(F::new(v))
}

#[cube]
fn sigmoid<F: Float, N: Size>(v: Vector<F, N>) -> Vector<F, N> {
    splat::<F, N>(1.0) / (splat::<F, N>(1.0) + Vector::exp(splat::<F, N>(0.0) - v))
}

/// `0.5 x (1 + erf(x / sqrt 2))` (BERT's exact GELU).
#[cube]
fn gelu_value<F: Float, N: Size>(v: Vector<F, N>) -> Vector<F, N> {
    splat::<F, N>(0.5) * v * (splat::<F, N>(1.0) + Vector::erf(v * splat::<F, N>(0.70710677)))
}

/// `Phi(x) + x phi(x)`.
#[cube]
fn gelu_slope<F: Float, N: Size>(v: Vector<F, N>) -> Vector<F, N> {
    let cdf =
        splat::<F, N>(0.5) * (splat::<F, N>(1.0) + Vector::erf(v * splat::<F, N>(0.70710677)));
    let pdf = Vector::exp(splat::<F, N>(-0.5) * v * v) * splat::<F, N>(0.3989423);
    cdf + v * pdf
}

#[cube(launch)]
pub fn gelu<F: Float, N: Size>(x: &Tensor<Vector<F, N>>, y: &mut Tensor<Vector<F, N>>) {
    if ABSOLUTE_POS >= y.len() {
        terminate!();
    }
    y[ABSOLUTE_POS] = gelu_value::<F, N>(x[ABSOLUTE_POS]);
}

/// `dy * (Phi(x) + x phi(x))`.
#[cube(launch)]
pub fn gelu_backward<F: Float, N: Size>(
    x: &Tensor<Vector<F, N>>,
    dy: &Tensor<Vector<F, N>>,
    dx: &mut Tensor<Vector<F, N>>,
) {
    if ABSOLUTE_POS >= dx.len() {
        terminate!();
    }
    dx[ABSOLUTE_POS] = dy[ABSOLUTE_POS] * gelu_slope::<F, N>(x[ABSOLUTE_POS]);
}

/// `silu(g) * u` (SwiGLU).
#[cube(launch)]
pub fn silu_mul<F: Float, N: Size>(
    g: &Tensor<Vector<F, N>>,
    u: &Tensor<Vector<F, N>>,
    y: &mut Tensor<Vector<F, N>>,
) {
    if ABSOLUTE_POS >= y.len() {
        terminate!();
    }
    let v = g[ABSOLUTE_POS];
    y[ABSOLUTE_POS] = v * sigmoid::<F, N>(v) * u[ABSOLUTE_POS];
}

/// `dg = dy u s (1 + g (1 - s))`, `du = dy g s` with `s = sigmoid(g)`.
#[cube(launch)]
pub fn silu_mul_backward<F: Float, N: Size>(
    g: &Tensor<Vector<F, N>>,
    u: &Tensor<Vector<F, N>>,
    dy: &Tensor<Vector<F, N>>,
    dg: &mut Tensor<Vector<F, N>>,
    du: &mut Tensor<Vector<F, N>>,
) {
    if ABSOLUTE_POS >= dg.len() {
        terminate!();
    }
    let v = g[ABSOLUTE_POS];
    let d = dy[ABSOLUTE_POS];
    let s = sigmoid::<F, N>(v);
    du[ABSOLUTE_POS] = d * v * s;
    dg[ABSOLUTE_POS] =
        d * u[ABSOLUTE_POS] * s * (splat::<F, N>(1.0) + v * (splat::<F, N>(1.0) - s));
}

/// A bottleneck adapter's activation, chosen at expansion time by `act`
/// (see [`act_code`]).
#[cube]
fn act_value<F: Float, N: Size>(v: Vector<F, N>, #[comptime] act: u32) -> Vector<F, N> {
    if comptime!(act == RELU) {
        select_many(v.greater_than(splat::<F, N>(0.0)), v, splat::<F, N>(0.0))
    } else if comptime!(act == GELU) {
        gelu_value::<F, N>(v)
    } else if comptime!(act == SILU) {
        v * sigmoid::<F, N>(v)
    } else {
        Vector::tanh(v)
    }
}

/// `act'(v)`; ReLU's derivative at 0 is 0, as in PyTorch.
#[cube]
fn act_slope<F: Float, N: Size>(v: Vector<F, N>, #[comptime] act: u32) -> Vector<F, N> {
    if comptime!(act == RELU) {
        select_many(
            v.greater_than(splat::<F, N>(0.0)),
            splat::<F, N>(1.0),
            splat::<F, N>(0.0),
        )
    } else if comptime!(act == GELU) {
        gelu_slope::<F, N>(v)
    } else if comptime!(act == SILU) {
        let s = sigmoid::<F, N>(v);
        s * (splat::<F, N>(1.0) + v * (splat::<F, N>(1.0) - s))
    } else {
        let t = Vector::tanh(v);
        splat::<F, N>(1.0) - t * t
    }
}

/// `h = act(z)`.
#[cube(launch)]
pub fn activation<F: Float, N: Size>(
    z: &Tensor<Vector<F, N>>,
    h: &mut Tensor<Vector<F, N>>,
    #[comptime] act: u32,
) {
    if ABSOLUTE_POS >= h.len() {
        terminate!();
    }
    h[ABSOLUTE_POS] = act_value::<F, N>(z[ABSOLUTE_POS], act);
}

/// `dz = dh ⊙ act'(z)`.
#[cube(launch)]
pub fn activation_backward<F: Float, N: Size>(
    z: &Tensor<Vector<F, N>>,
    dh: &Tensor<Vector<F, N>>,
    dz: &mut Tensor<Vector<F, N>>,
    #[comptime] act: u32,
) {
    if ABSOLUTE_POS >= dz.len() {
        terminate!();
    }
    dz[ABSOLUTE_POS] = dh[ABSOLUTE_POS] * act_slope::<F, N>(z[ABSOLUTE_POS], act);
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
