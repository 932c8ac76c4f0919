//! Token batches: padding, attention masks, labels, and a seeded order.

use crate::rng::{Rng, key};

/// Labels value that a loss ignores (Hugging Face's `-100`).
pub const IGNORE: i64 = -100;

/// One batch, row-major `[rows, seq]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub rows: usize,
    pub seq: usize,
    pub input_ids: Vec<u32>,
    /// 1 for real tokens, 0 for padding.
    pub mask: Vec<u8>,
    /// Classification: one class per row. Causal LM: one target per token
    /// (the token itself; the loss shifts), `IGNORE` at padding.
    pub labels: Vec<i64>,
}

impl Batch {
    /// Pads `seqs` on the right to the longest of them. `labels` are per row
    /// (classification) or `None` for language modelling (labels = ids).
    pub fn pad(seqs: &[&[u32]], labels: Option<&[usize]>, pad_id: u32) -> Batch {
        let rows = seqs.len();
        let seq = seqs.iter().map(|s| s.len()).max().unwrap_or(0).max(1);
        let mut input_ids = vec![pad_id; rows * seq];
        let mut mask = vec![0u8; rows * seq];
        let mut lm_labels = vec![IGNORE; rows * seq];
        for (r, s) in seqs.iter().enumerate() {
            for (c, &t) in s.iter().enumerate() {
                input_ids[r * seq + c] = t;
                mask[r * seq + c] = 1;
                lm_labels[r * seq + c] = t as i64;
            }
        }
        let labels = match labels {
            Some(l) => l.iter().map(|&x| x as i64).collect(),
            None => lm_labels,
        };
        Batch {
            rows,
            seq,
            input_ids,
            mask,
            labels,
        }
    }

    /// Real (unmasked) tokens in the batch.
    pub fn tokens(&self) -> usize {
        self.mask.iter().filter(|&&m| m == 1).count()
    }
}

/// Cuts a token stream into windows of exactly `len` tokens (the tail that
/// does not fill a window is dropped).
pub fn lm_windows(stream: &[u32], len: usize) -> Vec<Vec<u32>> {
    stream
        .chunks_exact(len.max(1))
        .map(|c| c.to_vec())
        .collect()
}

/// The order of examples in each epoch: a permutation seeded by (seed, epoch).
pub struct Batcher {
    pub n: usize,
    pub batch: usize,
    pub seed: u64,
}

impl Batcher {
    /// Example indices of epoch `epoch`, shuffled.
    pub fn epoch_order(&self, epoch: usize) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..self.n).collect();
        Rng::new(key(&[self.seed, 0xE90C, epoch as u64])).shuffle(&mut idx);
        idx
    }

    /// Micro-batches per epoch (the last one may be smaller).
    pub fn batches_per_epoch(&self) -> usize {
        self.n.div_ceil(self.batch.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pads_right_and_masks() {
        let b = Batch::pad(&[&[5, 6, 7], &[8]], Some(&[1, 0]), 0);
        assert_eq!(b.seq, 3);
        assert_eq!(b.input_ids, vec![5, 6, 7, 8, 0, 0]);
        assert_eq!(b.mask, vec![1, 1, 1, 1, 0, 0]);
        assert_eq!(b.labels, vec![1, 0]);
        let lm = Batch::pad(&[&[5, 6], &[8]], None, 2);
        assert_eq!(lm.labels, vec![5, 6, 8, IGNORE]);
        assert_eq!(lm.tokens(), 3);
    }

    #[test]
    fn windows_drop_the_tail() {
        assert_eq!(
            lm_windows(&[1, 2, 3, 4, 5], 2),
            vec![vec![1, 2], vec![3, 4]]
        );
    }
}
