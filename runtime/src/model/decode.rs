//! Attention while decoding many sequences at once: each row of the batch is
//! one new token of its own sequence, attending to that sequence's cached
//! past (of its own length) and to itself. Pasts are padded to the longest
//! and the padding masked, so the whole batch is two batched products per
//! layer (continuous batching: sequences of any length share a step).

use super::attention::Heads;
use crate::kernels::PeftKernels;
use burn::tensor::{Tensor, TensorData, activation};

/// Attention output `[n, heads*head_dim]` of queries `q: [n, heads*head_dim]`
/// over `pasts[i] = (keys, values)`, each `[len_i, kv_heads*head_dim]` with
/// row `i`'s own key last.
pub fn attention_rows<B: PeftKernels>(
    q: Tensor<B, 2>,
    pasts: Vec<(Tensor<B, 2>, Tensor<B, 2>)>,
    shape: &Heads,
) -> Tensor<B, 2> {
    let device = q.device();
    let (h, kv, d) = (shape.heads, shape.kv_heads, shape.head_dim);
    let n = pasts.len();
    let lens: Vec<usize> = pasts.iter().map(|(k, _)| k.dims()[0]).collect();
    let lmax = lens.iter().copied().max().unwrap_or(0);
    let pad = |t: Tensor<B, 2>, len: usize| {
        if len == lmax {
            t
        } else {
            Tensor::cat(vec![t, Tensor::zeros([lmax - len, kv * d], &device)], 0)
        }
    };
    let (ks, vs): (Vec<_>, Vec<_>) = pasts
        .into_iter()
        .zip(&lens)
        .map(|((k, v), &len)| (pad(k, len), pad(v, len)))
        .unzip();
    // [n, kv, lmax, d]
    let per_head = |t: Vec<Tensor<B, 2>>| {
        Tensor::stack::<3>(t, 0)
            .reshape([n, lmax, kv, d])
            .swap_dims(1, 2)
    };
    let (k4, v4) = (per_head(ks), per_head(vs));
    // Query head `kv_head * group + j` reads key head `kv_head`.
    let q4 = q.reshape([n, kv, h / kv, d]);
    let bias: Vec<f32> = lens
        .iter()
        .flat_map(|&len| (0..lmax).map(move |j| if j < len { 0.0 } else { f32::NEG_INFINITY }))
        .collect();
    let bias = Tensor::<B, 4>::from_data(TensorData::new(bias, [n, 1, 1, lmax]), &device);
    let scores = q4
        .matmul(k4.swap_dims(2, 3))
        .mul_scalar((d as f64).powf(-0.5))
        + bias;
    let probs = activation::softmax(scores, 3);
    probs.matmul(v4).reshape([n, h * d])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Cpu;
    use crate::kernels::{self, AttnShape};
    use burn::tensor::Distribution;
    use std::sync::Arc;

    /// Each row against its own past through the causal attention kernel
    /// (the past as the kernel's prefix, the new token as a one-token sequence).
    #[test]
    fn rows_of_different_lengths_match_the_kernel_one_by_one() {
        let device = Default::default();
        let shape = Heads {
            heads: 6,
            kv_heads: 2,
            head_dim: 8,
        };
        let (hd, kvd) = (6 * 8, 2 * 8);
        let lens = [1usize, 5, 3, 9];
        let normal =
            |r, c| Tensor::<Cpu, 2>::random([r, c], Distribution::Normal(0.0, 1.0), &device);
        let q = normal(lens.len(), hd);
        let pasts: Vec<_> = lens
            .iter()
            .map(|&l| (normal(l, kvd), normal(l, kvd)))
            .collect();
        let got = attention_rows(q.clone(), pasts.clone(), &shape)
            .into_data()
            .to_vec::<f32>()
            .expect("f32");
        for (i, (k, v)) in pasts.into_iter().enumerate() {
            let l = lens[i];
            let s = AttnShape {
                rows: 1,
                seq: 1,
                heads: 6,
                kv_heads: 2,
                head_dim: 8,
                prefix: l - 1,
                causal: true,
                key_mask: Arc::new(vec![1]),
                dropout: 0.0,
                dropout_key: 0,
            };
            let last = |t: Tensor<Cpu, 2>| t.slice([l - 1..l, 0..kvd]);
            let prefix = (l > 1).then(|| {
                (
                    k.clone().slice([0..l - 1, 0..kvd]),
                    v.clone().slice([0..l - 1, 0..kvd]),
                )
            });
            let want = kernels::attention(
                q.clone().slice([i..i + 1, 0..hd]),
                last(k),
                last(v),
                prefix,
                &s,
            )
            .into_data()
            .to_vec::<f32>()
            .expect("f32");
            for (a, b) in got[i * hd..(i + 1) * hd].iter().zip(&want) {
                assert!((a - b).abs() < 1e-5, "row {i}: {a} vs {b}");
            }
        }
    }
}
