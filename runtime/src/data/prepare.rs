//! From a plan's `train` block to token sequences: read, split, tokenize.

use super::{Batch, Batcher, lm_windows, load_classification, load_corpus, split};
use crate::error::{Result, RuntimeError};
use crate::tokenizer::TextTokenizer;
use peftc_compiler::plan::Plan;
use peftc_compiler::task::TaskKind;
use peftc_compiler::train::TrainConfig;

/// Tokenized examples of one split.
#[derive(Debug, Clone, Default)]
pub struct Split {
    pub seqs: Vec<Vec<u32>>,
    /// Classification labels (empty for language modelling).
    pub labels: Vec<usize>,
}

impl Split {
    pub fn len(&self) -> usize {
        self.seqs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seqs.is_empty()
    }

    /// The batch of examples `idx`.
    pub fn batch(&self, idx: &[usize], pad_id: u32) -> Batch {
        let seqs: Vec<&[u32]> = idx.iter().map(|&i| self.seqs[i].as_slice()).collect();
        if self.labels.is_empty() {
            Batch::pad(&seqs, None, pad_id)
        } else {
            let labels: Vec<usize> = idx.iter().map(|&i| self.labels[i]).collect();
            Batch::pad(&seqs, Some(&labels), pad_id)
        }
    }

    /// Consecutive batches over the whole split, in order.
    pub fn batches(&self, size: usize, pad_id: u32) -> Vec<Batch> {
        let idx: Vec<usize> = (0..self.len()).collect();
        idx.chunks(size.max(1))
            .map(|c| self.batch(c, pad_id))
            .collect()
    }
}

/// The train and held-out splits of a plan's data.
pub struct TaskData {
    pub train: Split,
    pub eval: Split,
    pub label_names: Vec<String>,
}

impl TaskData {
    pub fn batcher(&self, cfg: &TrainConfig) -> Batcher {
        Batcher {
            n: self.train.len(),
            batch: cfg.batch,
            seed: cfg.seed,
        }
    }
}

pub fn prepare(plan: &Plan, cfg: &TrainConfig, tok: &TextTokenizer) -> Result<TaskData> {
    let mut data = read_and_split(plan, cfg, tok)?;
    if let Some(m) = cfg.eval_max {
        data.eval.seqs.truncate(m);
        data.eval.labels.truncate(m);
    }
    Ok(data)
}

fn read_and_split(plan: &Plan, cfg: &TrainConfig, tok: &TextTokenizer) -> Result<TaskData> {
    let path = cfg
        .data
        .as_ref()
        .ok_or_else(|| RuntimeError::Invalid("the spec's `train` block names no `data`".into()))?;
    match plan.task.kind {
        TaskKind::Classify => {
            let ds = load_classification(path, plan.label_names.as_deref())?;
            let (tr, ev) = split(ds.examples.len(), cfg.eval_split, cfg.seed);
            let mut out = TaskData {
                train: Split::default(),
                eval: Split::default(),
                label_names: ds.label_names.clone(),
            };
            for (dst, idx) in [(&mut out.train, tr), (&mut out.eval, ev)] {
                for i in idx {
                    let e = &ds.examples[i];
                    dst.seqs.push(tok.encode(&e.text, cfg.seq_len)?);
                    dst.labels.push(e.label);
                }
            }
            Ok(out)
        }
        TaskKind::CausalLm | TaskKind::Feature => {
            let corpus = load_corpus(path)?;
            let (tr, ev) = split(corpus.documents.len(), cfg.eval_split, cfg.seed);
            let stream = |idx: &[usize]| -> Result<Vec<u32>> {
                let mut ids = Vec::new();
                for &i in idx {
                    ids.extend(tok.encode_plain(&corpus.documents[i])?);
                    if let Some(eos) = tok.eos_id {
                        ids.push(eos);
                    }
                }
                Ok(ids)
            };
            let mut sorted_tr = tr.clone();
            sorted_tr.sort_unstable();
            let mut sorted_ev = ev.clone();
            sorted_ev.sort_unstable();
            let train = Split {
                seqs: lm_windows(&stream(&sorted_tr)?, cfg.seq_len),
                labels: Vec::new(),
            };
            let eval = Split {
                seqs: lm_windows(&stream(&sorted_ev)?, cfg.seq_len),
                labels: Vec::new(),
            };
            if train.is_empty() {
                return Err(RuntimeError::Data {
                    file: path.clone(),
                    line: 0,
                    what: format!("too little text for one window of {} tokens", cfg.seq_len),
                });
            }
            Ok(TaskData {
                train,
                eval,
                label_names: Vec::new(),
            })
        }
    }
}
