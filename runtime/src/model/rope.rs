//! Rotary position embedding of a layer's queries and keys, through the fused
//! kernel (`crate::kernels::rope`).

use crate::kernels::{self, PeftKernels, RopeShape};
use burn::tensor::Tensor;

/// Rotates `x: [rows*seq, heads*head_dim]` for positions `offset .. offset + seq`.
pub fn apply<B: PeftKernels>(
    x: Tensor<B, 2>,
    seq: usize,
    heads: usize,
    head_dim: usize,
    theta: f64,
    offset: usize,
) -> Tensor<B, 2> {
    kernels::rope(
        x,
        &RopeShape {
            seq,
            heads,
            head_dim,
            theta,
            offset,
        },
    )
}
