//! Inference on texts: class logits, or the last position's vocabulary logits.

use crate::data::Batch;
use crate::error::{Result, RuntimeError};
use crate::model::routes::Routes;
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
    run(model, p, tok, texts, max_len, None)
}

/// [`infer`] with several adapters in one batch: text `i` uses adapter
/// `adapter_of[i]` of the `adapters` in `p` (built by [`Params::routed`]).
pub fn infer_routed<B: crate::kernels::PeftKernels>(
    model: &PeftModel<B>,
    p: &Params<B>,
    tok: &TextTokenizer,
    texts: &[String],
    max_len: usize,
    adapter_of: &[usize],
    adapters: usize,
) -> Result<Vec<Vec<f32>>> {
    crate::model::routes::routable(&model.plan).map_err(RuntimeError::Invalid)?;
    if adapter_of.len() != texts.len() || adapter_of.iter().any(|&k| k >= adapters) {
        return Err(RuntimeError::Invalid(
            "internal: every text needs one of the loaded adapters".into(),
        ));
    }
    // Sort the batch by adapter so each adapter's rows are one contiguous
    // segment, then put the logits back in the caller's order.
    let mut order: Vec<usize> = (0..texts.len()).collect();
    order.sort_by_key(|&i| adapter_of[i]);
    let sorted_texts: Vec<String> = order.iter().map(|&i| texts[i].clone()).collect();
    let sorted_of: Vec<usize> = order.iter().map(|&i| adapter_of[i]).collect();
    let logits = run(
        model,
        p,
        tok,
        &sorted_texts,
        max_len,
        Some((&sorted_of, adapters)),
    )?;
    let mut out = vec![Vec::new(); texts.len()];
    for (row, &i) in logits.into_iter().zip(&order) {
        out[i] = row;
    }
    Ok(out)
}

fn run<B: crate::kernels::PeftKernels>(
    model: &PeftModel<B>,
    p: &Params<B>,
    tok: &TextTokenizer,
    texts: &[String],
    max_len: usize,
    routing: Option<(&[usize], usize)>,
) -> Result<Vec<Vec<f32>>> {
    let max_len = max_len.min(model.plan.text_positions());
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
    let mut ctx = model.ctx(&batch, false, 0);
    if let Some((adapter_of, adapters)) = routing {
        ctx.routes = Some(std::sync::Arc::new(Routes::new(
            adapter_of,
            adapters,
            batch.seq,
            &model.device,
        )));
    }
    let out = model.forward(&batch, p, &ctx)?;
    let logits = host(out.logits());
    if let Some(i) = logits.iter().position(|x| !x.is_finite()) {
        return Err(RuntimeError::Invalid(format!(
            "the model computed a non-finite logit ({}) for text {}; the base weights or the adapter hold values that overflow",
            logits[i],
            i / (logits.len() / batch.rows.max(1)).max(1) + 1
        )));
    }
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
