//! Rotary position embedding in Hugging Face LLaMA's half-split form:
//! `x * cos + rotate_half(x) * sin`, `rotate_half(x) = [-x2, x1]`.

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

/// `cos` and `sin` tables `[1, seq, 1, head_dim]` for positions
/// `offset .. offset + seq`, computed in f32 as transformers does.
pub fn tables<B: Backend>(
    seq: usize,
    offset: usize,
    head_dim: usize,
    theta: f64,
    device: &B::Device,
) -> (Tensor<B, 4>, Tensor<B, 4>) {
    let half = head_dim / 2;
    let inv_freq: Vec<f32> = (0..half)
        .map(|i| 1.0 / (theta as f32).powf((2 * i) as f32 / head_dim as f32))
        .collect();
    let mut cos = Vec::with_capacity(seq * head_dim);
    let mut sin = Vec::with_capacity(seq * head_dim);
    for p in offset..offset + seq {
        for j in 0..head_dim {
            let f = p as f32 * inv_freq[j % half];
            cos.push(f.cos());
            sin.push(f.sin());
        }
    }
    let shape = [1, seq, 1, head_dim];
    (
        Tensor::from_data(TensorData::new(cos, shape), device),
        Tensor::from_data(TensorData::new(sin, shape), device),
    )
}

/// Applies the rotation to `x: [rows*seq, heads*head_dim]`.
pub fn apply<B: Backend>(
    x: Tensor<B, 2>,
    rows: usize,
    seq: usize,
    heads: usize,
    head_dim: usize,
    cos: &Tensor<B, 4>,
    sin: &Tensor<B, 4>,
) -> Tensor<B, 2> {
    let half = head_dim / 2;
    let x4 = x.reshape([rows, seq, heads, head_dim]);
    let x1 = x4.clone().slice([0..rows, 0..seq, 0..heads, 0..half]);
    let x2 = x4
        .clone()
        .slice([0..rows, 0..seq, 0..heads, half..head_dim]);
    let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
    (x4 * cos.clone() + rotated * sin.clone()).reshape([rows * seq, heads * head_dim])
}
