//! Inference on texts: class logits, or the last position's vocabulary logits.

use crate::data::Batch;
use crate::error::Result;
use crate::model::{Params, PeftModel, last_real_rows};
use crate::tokenizer::TextTokenizer;
use crate::train::host;
use peftc_compiler::task::TaskKind;

/// One row of logits per text.
pub fn infer<B: crate::kernels::PeftKernels>(
    model: &PeftModel<B>,
    p: &Params<B>,
    tok: &TextTokenizer,
    texts: &[String],
    max_len: usize,
) -> Result<Vec<Vec<f32>>> {
    let mut seqs = Vec::with_capacity(texts.len());
    for t in texts {
        let ids = if model.plan.task.kind == TaskKind::CausalLm {
            tok.encode_plain(t)?
        } else {
            tok.encode(t, max_len)?
        };
        seqs.push(ids);
    }
    let refs: Vec<&[u32]> = seqs.iter().map(Vec::as_slice).collect();
    let labels = vec![0usize; texts.len()];
    let batch = Batch::pad(&refs, Some(&labels), tok.pad_id);
    let ctx = model.ctx(&batch, false, 0);
    let out = model.forward(&batch, p, &ctx)?;
    let logits = host(out.logits);
    Ok(match model.plan.task.kind {
        TaskKind::CausalLm => {
            let v = logits.len() / (batch.rows * out.seq_out).max(1);
            last_real_rows(&batch, out.n_prompt)
                .into_iter()
                .map(|r| logits[r as usize * v..(r as usize + 1) * v].to_vec())
                .collect()
        }
        _ => {
            let c = logits.len() / batch.rows.max(1);
            logits.chunks(c).map(<[f32]>::to_vec).collect()
        }
    })
}
