//! Losses as PyTorch / transformers define them: cross-entropy averaged over
//! rows (classification) or over non-ignored next-token targets (causal LM).

use crate::data::{Batch, IGNORE_LABEL};
use crate::kernels::PeftKernels;
use burn::tensor::Tensor;

/// Mean cross-entropy of `logits: [n, c]` against `targets` (with `weights`
/// 1 for counted rows, 0 for ignored ones), through the fused kernel.
/// Returns a `[1]` tensor.
pub fn cross_entropy<B: PeftKernels>(
    logits: Tensor<B, 2>,
    targets: Vec<i64>,
    weights: Vec<f32>,
) -> Tensor<B, 1> {
    crate::kernels::cross_entropy(logits, targets, weights)
}

/// Classification: one label per row.
pub fn classification<B: PeftKernels>(logits: Tensor<B, 2>, batch: &Batch) -> Tensor<B, 1> {
    let n = batch.rows;
    cross_entropy(logits, batch.labels.clone(), vec![1.0; n])
}

/// Next-token targets for logits over `n_prompt + seq` positions per row:
/// position t predicts the label at t + 1 (virtual prompt positions carry no
/// label), as transformers' `ForCausalLMLoss` with labels padded by -100.
pub fn next_token_targets(batch: &Batch, n_prompt: usize) -> (Vec<i64>, Vec<f32>) {
    let s_out = n_prompt + batch.seq;
    let label = |r: usize, t: usize| -> i64 {
        if t < n_prompt || t >= s_out {
            IGNORE_LABEL
        } else {
            batch.labels[r * batch.seq + (t - n_prompt)]
        }
    };
    let mut targets = Vec::with_capacity(batch.rows * s_out);
    let mut weights = Vec::with_capacity(batch.rows * s_out);
    for r in 0..batch.rows {
        for t in 0..s_out {
            let l = label(r, t + 1);
            targets.push(l.max(0));
            weights.push(if l == IGNORE_LABEL { 0.0 } else { 1.0 });
        }
    }
    (targets, weights)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_shift_and_skip_prompt_and_padding() {
        let b = Batch::pad(&[&[5, 6, 7], &[8]], None, 0);
        let (t, w) = next_token_targets(&b, 0);
        assert_eq!(t, vec![6, 7, 0, 0, 0, 0]);
        assert_eq!(w, vec![1.0, 1.0, 0.0, 0.0, 0.0, 0.0]);
        let (t, w) = next_token_targets(&b, 2);
        // With 2 virtual tokens the last virtual position predicts the first token.
        assert_eq!(&t[..5], &[0, 5, 6, 7, 0]);
        assert_eq!(&w[..5], &[0.0, 1.0, 1.0, 1.0, 0.0]);
    }
}
