//! Element-wise activations and their backward, one unit per element.

use cubecl::prelude::*;

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
