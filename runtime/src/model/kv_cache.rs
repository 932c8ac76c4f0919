//! The keys and values a causal decoder has already computed, per layer, so
//! that each generated token costs one position's forward pass (prefill the
//! prompt once, then one token per step).
//!
//! One cache per sequence (a batch of sequences decodes with one cache each,
//! `decode.rs`): each layer's past is `[past, kv_heads*head_dim]`, keys after
//! RoPE, a prefix-tuning method's learned keys first. The attention kernel
//! takes the past as its prefix (visible to every new query) and stays
//! causal among the new tokens.

use crate::kernels::PeftKernels;
use burn::tensor::Tensor;

pub struct KvCache<B: PeftKernels> {
    layers: Vec<Option<(Tensor<B, 2>, Tensor<B, 2>)>>,
    /// Positions already processed (soft-prompt positions included).
    pub positions: usize,
}

impl<B: PeftKernels> KvCache<B> {
    pub fn new(layers: usize) -> KvCache<B> {
        KvCache {
            layers: (0..layers).map(|_| None).collect(),
            positions: 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.positions == 0
    }

    /// Layer `li`'s past keys and values, if any.
    pub fn past(&self, li: usize) -> Option<(Tensor<B, 2>, Tensor<B, 2>)> {
        self.layers.get(li).cloned().flatten()
    }

    /// Past positions held per layer (a prefix method's keys included).
    pub fn len(&self) -> usize {
        self.layers
            .first()
            .and_then(|l| l.as_ref())
            .map_or(0, |(k, _)| k.dims()[0])
    }

    /// Sets layer `li`'s past to `past ++ new`.
    pub fn extend(&mut self, li: usize, k: Tensor<B, 2>, v: Tensor<B, 2>) {
        let Some(slot) = self.layers.get_mut(li) else {
            return;
        };
        *slot = Some(match slot.take() {
            Some((pk, pv)) => (Tensor::cat(vec![pk, k], 0), Tensor::cat(vec![pv, v], 0)),
            None => (k, v),
        });
    }
}
