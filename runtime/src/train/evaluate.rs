//! Held-out metrics: loss and accuracy (classification) or perplexity
//! (causal LM), token-weighted as transformers computes them.

use crate::data::Split;
use crate::error::Result;
use crate::model::{Params, PeftModel, loss};
use burn::tensor::backend::Backend;
use peftc_compiler::task::TaskKind;
use serde::Serialize;

#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct EvalResult {
    pub loss: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub perplexity: Option<f64>,
    pub examples: usize,
}

/// The host values of a 2-D tensor.
pub fn host<B: Backend, const D: usize>(t: burn::tensor::Tensor<B, D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .unwrap_or_default()
}

pub fn evaluate<B: crate::kernels::PeftKernels>(
    model: &PeftModel<B>,
    p: &Params<B>,
    split: &Split,
    batch: usize,
    pad_id: u32,
) -> Result<EvalResult> {
    let kind = model.plan.task.kind;
    let (mut loss_sum, mut weight, mut correct, mut examples) = (0f64, 0f64, 0usize, 0usize);
    for b in split.batches(batch, pad_id) {
        let ctx = model.ctx(&b, false, 0);
        let out = model.forward_for_loss(&b, p, &ctx)?;
        examples += b.rows;
        match kind {
            TaskKind::Classify => {
                let l = host(model.loss(&out, &b))[0] as f64;
                loss_sum += l * b.rows as f64;
                weight += b.rows as f64;
                let logits = host(out.logits());
                let c = logits.len() / b.rows.max(1);
                for r in 0..b.rows {
                    let row = &logits[r * c..(r + 1) * c];
                    let arg = row
                        .iter()
                        .enumerate()
                        .max_by(|a, b| a.1.total_cmp(b.1))
                        .map(|(i, _)| i)
                        .unwrap_or(0);
                    correct += usize::from(arg as i64 == b.labels[r]);
                }
            }
            _ => {
                let (_, w) = loss::next_token_targets(&b, out.n_prompt);
                let n: f64 = w.iter().map(|&x| x as f64).sum();
                let l = host(model.loss(&out, &b))[0] as f64;
                loss_sum += l * n;
                weight += n;
            }
        }
    }
    let mean = if weight > 0.0 {
        loss_sum / weight
    } else {
        f64::NAN
    };
    Ok(match kind {
        TaskKind::Classify => EvalResult {
            loss: mean,
            accuracy: Some(correct as f64 / examples.max(1) as f64),
            perplexity: None,
            examples,
        },
        _ => EvalResult {
            loss: mean,
            accuracy: None,
            perplexity: Some(mean.exp()),
            examples,
        },
    })
}
