//! What one forward pass needs besides weights: the batch's shape and mask,
//! whether it trains (dropout on), and the keys dropout masks are drawn from.

use crate::kernels::{self, PeftKernels};
use crate::rng;
use burn::tensor::Tensor;
use std::sync::Arc;

pub struct Ctx<B: PeftKernels> {
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
    /// Several adapters in this batch: which rows use which (inference only).
    pub routes: Option<Arc<super::routes::Routes<B>>>,
    /// AdapterDrop: the methods of layers below this one sit out this pass.
    pub adapter_drop: usize,
}

impl<B: PeftKernels> Ctx<B> {
    /// Applies dropout with probability `p` at site `site` (a stable id).
    pub fn dropout(&self, x: Tensor<B, 2>, p: f64, site: u64) -> Tensor<B, 2> {
        if !self.train || p <= 0.0 {
            return x;
        }
        kernels::dropout(x, p, rng::key(&[self.dropout_key, site]))
    }

    /// The dropout key of site `site` (for kernels that drop internally).
    pub fn site_key(&self, site: u64) -> u64 {
        rng::key(&[self.dropout_key, site])
    }

    /// Which keys may be attended, `[rows * (n_prompt + seq)]`: soft-prompt
    /// positions always, real tokens by the batch mask.
    pub fn key_mask(&self, n_prompt: usize) -> Arc<Vec<u8>> {
        let s = n_prompt + self.seq;
        let mut m = vec![1u8; self.rows * s];
        for r in 0..self.rows {
            m[r * s + n_prompt..(r + 1) * s]
                .copy_from_slice(&self.mask[r * self.seq..(r + 1) * self.seq]);
        }
        Arc::new(m)
    }
}

/// A stable id for a dropout site from its label.
pub fn site_id(label: &str) -> u64 {
    super::params::name_hash(label)
}
