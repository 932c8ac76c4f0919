//! What one forward pass needs besides weights: the batch's shape and mask,
//! whether it trains (dropout on), and the keys dropout masks are drawn from.

use crate::rng;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use rayon::prelude::*;

pub struct Ctx<B: Backend> {
    pub device: B::Device,
    /// Sequences in the batch.
    pub rows: usize,
    /// Tokens per sequence (real tokens plus padding, before any soft prompt).
    pub seq: usize,
    /// `[rows, seq]`, 1 for real tokens.
    pub mask: Vec<u8>,
    /// Dropout active.
    pub train: bool,
    /// Key of this step's dropout masks; every dropout site mixes in its own id.
    pub dropout_key: u64,
}

impl<B: Backend> Ctx<B> {
    /// Applies dropout with probability `p` at site `site` (a stable id).
    pub fn dropout<const D: usize>(&self, x: Tensor<B, D>, p: f64, site: u64) -> Tensor<B, D> {
        if !self.train || p <= 0.0 {
            return x;
        }
        let dims = x.dims();
        let n: usize = dims.iter().product();
        let k = rng::key(&[self.dropout_key, site]);
        let keep = 1.0 / (1.0 - p) as f32;
        let p = p as f32;
        let mut m = vec![0f32; n];
        m.par_chunks_mut(1 << 14)
            .enumerate()
            .for_each(|(c, chunk)| {
                let base = (c << 14) as u64;
                for (j, v) in chunk.iter_mut().enumerate() {
                    *v = if rng::uniform(k, base + j as u64) >= p {
                        keep
                    } else {
                        0.0
                    };
                }
            });
        let mask = Tensor::<B, D>::from_data(TensorData::new(m, dims), &self.device);
        x * mask
    }

    /// Additive attention bias over keys, `[rows, 1, 1, prefix + extra + seq]`:
    /// 0 where a key may be attended, a very negative number where it is
    /// padding. `extra` leading keys (soft prompt, prefix) are always visible.
    pub fn key_bias(&self, extra: usize) -> Tensor<B, 4> {
        let t = extra + self.seq;
        let mut v = vec![0f32; self.rows * t];
        for r in 0..self.rows {
            for s in 0..self.seq {
                if self.mask[r * self.seq + s] == 0 {
                    v[r * t + extra + s] = f32::MIN;
                }
            }
        }
        Tensor::from_data(TensorData::new(v, [self.rows, 1, 1, t]), &self.device)
    }

    /// Causal bias `[1, 1, q, k]` for `q` queries at the end of `k` keys: query
    /// i sees keys 0 ..= (k - q) + i.
    pub fn causal_bias(&self, q: usize, k: usize) -> Tensor<B, 4> {
        let mut v = vec![0f32; q * k];
        for i in 0..q {
            for j in (k - q + i + 1)..k {
                v[i * k + j] = f32::MIN;
            }
        }
        Tensor::from_data(TensorData::new(v, [1, 1, q, k]), &self.device)
    }
}

/// A stable id for a dropout site from its label.
pub fn site_id(label: &str) -> u64 {
    super::params::name_hash(label)
}
