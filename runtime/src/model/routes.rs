//! Many adapters on one base in one batch (Punica / S-LoRA): each sequence is
//! tagged with its adapter; the frozen base runs once for the whole batch and
//! each adapter's small products run on its own rows (SGMV: rows grouped by
//! adapter, multiplied by that adapter's weights, scattered back).
//!
//! Routed parameters are named `name@k` for adapter `k` ([`routed`]), and
//! LoRA factors stacked over the adapters `name@*` ([`stacked`]).

use super::Params;
use crate::error::{Result, RuntimeError};
use crate::kernels::PeftKernels;
use burn::tensor::{IndexingUpdateOp, Int, Tensor, TensorData};
use peftc_compiler::plan::Plan;
use peftc_compiler::task::TaskKind;

/// The name of adapter `k`'s copy of parameter `name`.
pub fn routed(name: &str, k: usize) -> String {
    format!("{name}@{k}")
}

/// The name of parameter `name` stacked over all adapters (rows of adapter
/// `k` after those of `k - 1`), as SGMV reads it.
pub fn stacked(name: &str) -> String {
    format!("{name}@*")
}

/// Which rows of a batch belong to which adapter. A batch sorted by adapter
/// (as [`crate::infer::infer_routed`] makes it) is cut into contiguous
/// segments; any other order is gathered and scattered row by row.
pub struct Routes<B: PeftKernels> {
    pub adapters: usize,
    /// Per adapter: its rows of token-level tensors `[rows * seq, d]`.
    tokens: Vec<Option<Tensor<B, 1, Int>>>,
    /// Per adapter: its rows of sequence-level tensors `[rows, d]`.
    sequences: Vec<Option<Tensor<B, 1, Int>>>,
    n_tokens: usize,
    n_sequences: usize,
    /// When the batch is sorted by adapter: each adapter's sequences as one
    /// contiguous range (SGMV's segments), so rows are sliced, not gathered.
    segments: Option<Vec<std::ops::Range<usize>>>,
    seq: usize,
    /// The adapter of each sequence.
    adapter_of: Vec<usize>,
}

impl<B: PeftKernels> Routes<B> {
    /// `adapter_of[r]`: the adapter of sequence `r`; `seq` positions per sequence.
    pub fn new(adapter_of: &[usize], adapters: usize, seq: usize, device: &B::Device) -> Self {
        let index = |v: Vec<i64>| {
            (!v.is_empty()).then(|| {
                let n = v.len();
                Tensor::<B, 1, Int>::from_data(TensorData::new(v, [n]), device)
            })
        };
        let mut tokens = Vec::with_capacity(adapters);
        let mut sequences = Vec::with_capacity(adapters);
        for k in 0..adapters {
            let rows: Vec<usize> = (0..adapter_of.len())
                .filter(|&r| adapter_of[r] == k)
                .collect();
            sequences.push(index(rows.iter().map(|&r| r as i64).collect()));
            tokens.push(index(
                rows.iter()
                    .flat_map(|&r| (r * seq..(r + 1) * seq).map(|t| t as i64))
                    .collect(),
            ));
        }
        let sorted = adapter_of.windows(2).all(|w| w[0] <= w[1]);
        let segments = sorted.then(|| {
            (0..adapters)
                .map(|k| {
                    let lo = adapter_of.partition_point(|&a| a < k);
                    let hi = adapter_of.partition_point(|&a| a <= k);
                    lo..hi
                })
                .collect()
        });
        Routes {
            adapters,
            tokens,
            sequences,
            n_tokens: adapter_of.len() * seq,
            n_sequences: adapter_of.len(),
            segments,
            seq,
            adapter_of: adapter_of.to_vec(),
        }
    }

    /// The adapter of each of `n` rows (token- or sequence-level), for a
    /// kernel that routes row by row (`kernels::sgmv`).
    pub fn row_ids(&self, n: usize) -> Option<Vec<u32>> {
        let per = if n == self.n_tokens {
            self.seq
        } else if n == self.n_sequences {
            1
        } else {
            return None;
        };
        Some(
            self.adapter_of
                .iter()
                .flat_map(|&k| std::iter::repeat_n(k as u32, per))
                .collect(),
        )
    }

    /// `f(k, rows of x for adapter k)` for every adapter with rows, placed back
    /// at those rows of a `[n, out]` result (zeros elsewhere, none are left).
    pub fn segmented(
        &self,
        x: Tensor<B, 2>,
        out: usize,
        f: impl Fn(usize, Tensor<B, 2>) -> Result<Tensor<B, 2>>,
    ) -> Result<Tensor<B, 2>> {
        let [n, d] = x.dims();
        if let Some(segments) = &self.segments {
            let per = if n == self.n_tokens { self.seq } else { 1 };
            let used: Vec<(usize, &std::ops::Range<usize>)> = segments
                .iter()
                .enumerate()
                .filter(|(_, s)| !s.is_empty())
                .collect();
            if let [(k, _)] = used.as_slice() {
                // One adapter holds the whole batch: no slicing at all.
                return f(*k, x);
            }
            if n == self.n_tokens || n == self.n_sequences {
                let mut parts = Vec::with_capacity(used.len());
                for (k, s) in used {
                    parts.push(f(k, x.clone().slice([s.start * per..s.end * per, 0..d]))?);
                }
                return Ok(Tensor::cat(parts, 0));
            }
        }
        let groups = if n == self.n_tokens {
            &self.tokens
        } else if n == self.n_sequences {
            &self.sequences
        } else {
            return Err(RuntimeError::Invalid(format!(
                "internal: a routed batch of {} sequences ({} tokens) met a tensor of {n} rows",
                self.n_sequences, self.n_tokens
            )));
        };
        let mut y = Tensor::<B, 2>::zeros([n, out], &x.device());
        for (k, idx) in groups.iter().enumerate() {
            if let Some(idx) = idx {
                let part = f(k, x.clone().select(0, idx.clone()))?;
                y = y.select_assign(0, idx.clone(), part, IndexingUpdateOp::Add);
            }
        }
        Ok(y)
    }
}

/// `x @ W_kᵀ + b_k` with each adapter's own copy of a trained linear (the
/// classifier head, which every adapter trains for itself).
pub fn routed_linear<B: PeftKernels>(
    routes: &Routes<B>,
    x: Tensor<B, 2>,
    weight: &str,
    bias: Option<&str>,
    p: &Params<B>,
) -> Result<Tensor<B, 2>> {
    let out = p.get(&routed(weight, 0))?.dims()[0];
    routes.segmented(x, out, |k, xk| {
        let b = bias.map(|b| p.get(&routed(b, k))).transpose()?;
        Ok(super::ops::linear_pt(xk, p.get(&routed(weight, k))?, b))
    })
}

/// Whether adapters of `plan` can share a batch: LoRA only (no DoRA, gates or
/// trained biases), on a classification or language-modelling task.
pub fn routable(plan: &Plan) -> std::result::Result<(), String> {
    if let Some(s) = plan
        .sites
        .iter()
        .find(|s| !s.method.site().capabilities(s).routable)
    {
        return Err(format!(
            "`{}` on {} cannot share a batch with other adapters; batched multi-adapter inference takes plain LoRA (no DoRA, gates, prompts, prefixes, adapters or (IA)³)",
            s.method.name(),
            s.module
        ));
    }
    if !plan.trainable_biases.is_empty() {
        return Err("adapters that train bias terms cannot share a batch".into());
    }
    if plan.task.kind == TaskKind::Feature {
        return Err("batched multi-adapter inference needs a classify or causal_lm task".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Cpu;
    use burn::tensor::Distribution;

    /// Each row times its adapter's matrix, computed row by row.
    fn direct(x: &Tensor<Cpu, 2>, m: &[Tensor<Cpu, 2>], row_adapter: &[usize]) -> Vec<f32> {
        let [n, d] = x.dims();
        let mut out = Vec::new();
        for (r, &k) in row_adapter.iter().enumerate().take(n) {
            let row = x.clone().slice([r..r + 1, 0..d]).matmul(m[k].clone());
            out.extend(row.into_data().to_vec::<f32>().expect("f32"));
        }
        out
    }

    #[test]
    fn segments_and_gathers_agree_with_row_by_row_products() {
        let device = Default::default();
        let m: Vec<Tensor<Cpu, 2>> = (0..3)
            .map(|_| Tensor::random([4, 5], Distribution::Normal(0.0, 1.0), &device))
            .collect();
        let seq = 2;
        for adapter_of in [
            vec![0, 0, 1, 2, 2],
            vec![2, 0, 1, 0, 2],
            vec![1, 1, 1, 1, 1],
        ] {
            let routes = Routes::<Cpu>::new(&adapter_of, 3, seq, &device);
            // Token level: rows * seq rows; sequence level: one row per sequence.
            for per in [seq, 1] {
                let n = adapter_of.len() * per;
                let x = Tensor::<Cpu, 2>::random([n, 4], Distribution::Normal(0.0, 1.0), &device);
                let got = routes
                    .segmented(x.clone(), 5, |k, xk| Ok(xk.matmul(m[k].clone())))
                    .expect("routed")
                    .into_data()
                    .to_vec::<f32>()
                    .expect("f32");
                let row_adapter: Vec<usize> = adapter_of
                    .iter()
                    .flat_map(|&k| std::iter::repeat_n(k, per))
                    .collect();
                let want = direct(&x, &m, &row_adapter);
                for (a, b) in got.iter().zip(&want) {
                    assert!((a - b).abs() < 1e-5, "{adapter_of:?} per {per}: {a} vs {b}");
                }
            }
        }
    }
}
