//! The causal LM's loss without its logits: mean cross-entropy of
//! `hidden @ Wᵀ` for a frozen head `W: [vocab, h]`, taken over chunks of rows
//! so that at most one chunk's logits `[rows, vocab]` exist at a time. The
//! backward recomputes each chunk's logits from the hidden states and turns
//! them into `dhidden = dlogits @ W` chunk by chunk.
//!
//! Each chunk is the backend's own linear and cross-entropy kernels, so the
//! result equals `cross_entropy(linear(hidden, W))` up to the order in which
//! the chunks' sums are added.

use super::{PeftKernels, prim, tensor};
use crate::weights::PackedMatrix;
use burn::tensor::Tensor;
use burn::tensor::ops::FloatTensor;
use std::sync::Arc;

/// Bytes of logits one chunk may hold (each chunk's backward holds two such:
/// its logits and their gradient). The compiler's memory estimate counts
/// the same chunks.
pub const CHUNK_BYTES: usize = peftc_compiler::estimate::HEAD_CHUNK_BYTES as usize;

/// Rows per chunk for a vocabulary of `vocab`.
pub fn chunk_rows(vocab: usize) -> usize {
    peftc_compiler::estimate::head_chunk_rows(vocab)
}

/// A frozen head weight `[vocab, h]`: a device tensor or GGUF blocks.
#[derive(Clone, Debug)]
pub enum HeadWeight<B: PeftKernels> {
    Dense(FloatTensor<B>),
    Packed(Arc<PackedMatrix>),
}

impl<B: PeftKernels> HeadWeight<B> {
    pub fn dense(w: Tensor<B, 2>) -> Self {
        HeadWeight::Dense(prim(w))
    }

    /// `x @ Wᵀ`, `[n, vocab]`.
    fn logits(&self, x: FloatTensor<B>) -> FloatTensor<B> {
        match self {
            HeadWeight::Dense(w) => B::k_linear(x, w.clone(), None),
            HeadWeight::Packed(w) => B::k_packed_linear(x, w, None),
        }
    }

    /// `dy @ W`, `[n, h]`.
    fn dx(&self, dy: FloatTensor<B>) -> FloatTensor<B> {
        match self {
            HeadWeight::Dense(w) => {
                let (dx, _, _) = B::k_linear_backward(None, w.clone(), dy, [true, false, false]);
                // `need[0]` asks for dx; a kernel that returns none is a bug.
                dx.expect("k_linear_backward returns the asked-for dx")
            }
            HeadWeight::Packed(w) => B::k_packed_linear_dx(w, dy),
        }
    }
}

/// The rows, targets and weights of one chunk, and its share of the total
/// weight (`max(count_c, 1) / max(count, 1)`, the factor turning the chunk's
/// mean into its part of the whole mean).
struct Chunk {
    start: usize,
    end: usize,
    targets: Arc<Vec<i64>>,
    weights: Arc<Vec<f32>>,
    share: f64,
    counted: bool,
}

fn chunks(targets: &[i64], weights: &[f32], rows: usize) -> Vec<Chunk> {
    let count = weights.iter().map(|&w| w as f64).sum::<f64>().max(1.0);
    let n = targets.len();
    (0..n.div_ceil(rows.max(1)))
        .map(|c| {
            let (start, end) = (c * rows, ((c + 1) * rows).min(n));
            let w = &weights[start..end];
            let own = w.iter().map(|&v| v as f64).sum::<f64>();
            Chunk {
                start,
                end,
                targets: Arc::new(targets[start..end].to_vec()),
                weights: Arc::new(w.to_vec()),
                share: own.max(1.0) / count,
                counted: w.iter().any(|&v| v != 0.0),
            }
        })
        .collect()
}

fn rows_of<B: PeftKernels>(x: &FloatTensor<B>, start: usize, end: usize) -> FloatTensor<B> {
    prim(tensor::<B, 2>(x.clone()).slice(start..end))
}

/// The loss `[1]` and each chunk's log-sum-exps (`None` for chunks with no
/// counted row), `rows` rows per chunk.
pub fn forward<B: PeftKernels>(
    hidden: &FloatTensor<B>,
    head: &HeadWeight<B>,
    targets: &[i64],
    weights: &[f32],
    rows: usize,
) -> (FloatTensor<B>, Vec<Option<FloatTensor<B>>>) {
    let device = tensor::<B, 2>(hidden.clone()).device();
    let mut loss = Tensor::<B, 1>::zeros([1], &device);
    let mut lses = Vec::new();
    for c in chunks(targets, weights, rows) {
        if !c.counted {
            lses.push(None);
            continue;
        }
        let logits = head.logits(rows_of::<B>(hidden, c.start, c.end));
        let (l, lse) = B::k_cross_entropy(logits, &c.targets, &c.weights);
        loss = loss + tensor::<B, 1>(l).mul_scalar(c.share);
        lses.push(Some(lse));
    }
    (prim(loss), lses)
}

/// `dhidden` `[n, h]` for the loss's gradient `dloss` `[1]`.
pub fn backward<B: PeftKernels>(
    hidden: &FloatTensor<B>,
    head: &HeadWeight<B>,
    targets: &[i64],
    weights: &[f32],
    rows: usize,
    lses: Vec<Option<FloatTensor<B>>>,
    dloss: FloatTensor<B>,
) -> FloatTensor<B> {
    let h = tensor::<B, 2>(hidden.clone());
    let (device, width) = (h.device(), h.dims()[1]);
    let dloss = tensor::<B, 1>(dloss);
    let parts: Vec<Tensor<B, 2>> = chunks(targets, weights, rows)
        .into_iter()
        .zip(lses)
        .map(|(c, lse)| match lse {
            None => Tensor::zeros([c.end - c.start, width], &device),
            Some(lse) => {
                let logits = head.logits(rows_of::<B>(hidden, c.start, c.end));
                let d = prim(dloss.clone().mul_scalar(c.share));
                let dlogits = B::k_cross_entropy_backward(logits, lse, &c.targets, &c.weights, d);
                tensor(head.dx(dlogits))
            }
        })
        .collect();
    prim(Tensor::cat(parts, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_shares_add_up_to_the_whole_mean() {
        let w = [1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0];
        let t = [0i64; 7];
        let c = chunks(&t, &w, 3);
        assert_eq!(c.len(), 3);
        assert_eq!((c[2].start, c[2].end), (6, 7));
        // Chunk means are over 2, 1 and 1 counted rows of 4.
        let shares: Vec<f64> = c.iter().map(|c| c.share).collect();
        assert_eq!(shares, vec![0.5, 0.25, 0.25]);
        assert!(c.iter().all(|c| c.counted));
        let none = chunks(&t[..3], &[0.0; 3], 2);
        assert!(none.iter().all(|c| !c.counted));
    }

    #[test]
    fn chunk_rows_bound_the_logits() {
        assert_eq!(chunk_rows(49_152), 170);
        assert!(chunk_rows(151_936) * 151_936 * 4 <= CHUNK_BYTES);
        assert_eq!(chunk_rows(usize::MAX), 1);
    }
}
