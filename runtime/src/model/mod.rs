//! The model a plan describes, on a burn backend: frozen base weights as
//! constants, the plan's methods attached where it placed them, trainable
//! parameters passed in per forward pass (see [`Params`]).

pub(crate) mod attention;
mod bert;
mod build;
pub(crate) mod ctx;
mod decode;
mod device_params;
pub mod frozen;
pub mod kv_cache;
mod linear;
mod llama;
pub mod loss;
mod norm;
pub(crate) mod ops;
pub mod params;
pub(crate) mod rope;
pub mod routes;

pub use ctx::Ctx;
pub use device_params::{Params, into_device, to_device};
pub use frozen::Frozen;
pub use kv_cache::KvCache;
pub use linear::dora_row_norm;
pub use params::{BaseLookup, ParamSpec, ParamStore, param_specs};

use crate::data::Batch;
use crate::error::Result;
use crate::kernels::PeftKernels;
use crate::methods::prefix::PrefixSource;
use crate::weights::Weights;
use build::Loader;
use burn::tensor::{Int, Tensor, TensorData};
use peftc_compiler::model::Family;
use peftc_compiler::plan::Plan;
use peftc_compiler::task::TaskKind;

enum Base<B: PeftKernels> {
    Bert(bert::Bert<B>),
    Llama(llama::Llama<B>),
}

/// A loaded model: base + attached methods.
pub struct PeftModel<B: PeftKernels> {
    pub plan: Plan,
    base: Base<B>,
    pub device: B::Device,
    n_prompt: usize,
}

/// What a forward pass produces.
pub struct Output<B: PeftKernels> {
    pub scores: Scores<B>,
    /// Positions per row in the output (soft prompt included).
    pub seq_out: usize,
    /// Virtual prompt positions at the start of each row.
    pub n_prompt: usize,
}

/// The scores of a forward pass.
pub enum Scores<B: PeftKernels> {
    /// Classification: `[rows, classes]`. Causal LM: `[rows*seq_out, vocab]`.
    /// Feature: the hidden states.
    Logits(Tensor<B, 2>),
    /// Causal LM scored for its loss ([`PeftModel::forward_for_loss`]): the
    /// final hidden states `[rows*seq_out, h]` and the frozen head, which the
    /// loss multiplies a chunk of rows at a time.
    Deferred {
        hidden: Tensor<B, 2>,
        head: Frozen<B>,
    },
}

impl<B: PeftKernels> Output<B> {
    /// The logits (the whole `[rows*seq_out, vocab]` when the head was deferred).
    pub fn logits(&self) -> Tensor<B, 2> {
        match &self.scores {
            Scores::Logits(l) => l.clone(),
            Scores::Deferred { hidden, head } => head.linear(hidden.clone(), None),
        }
    }
}

impl<B: PeftKernels> PeftModel<B> {
    /// Moves the base weights of `plan`'s model to `device`, with its methods attached.
    pub fn load(plan: &Plan, mut weights: Weights, device: &B::Device) -> Result<PeftModel<B>> {
        let packed = plan.base_packed();
        let mut l = Loader::<B> {
            plan,
            weights: &mut weights,
            device,
            packed,
        };
        let base = match plan.model.family {
            Family::Bert => Base::Bert(bert::Bert::load(
                &mut l,
                plan.task.kind == TaskKind::Classify,
            )?),
            Family::Llama => Base::Llama(llama::Llama::load(
                &mut l,
                plan.task.kind == TaskKind::CausalLm,
            )?),
        };
        let n_prompt = crate::methods::prompt_len(plan);
        Ok(PeftModel {
            plan: plan.clone(),
            base,
            device: device.clone(),
            n_prompt,
        })
    }

    /// A context for `batch` (dropout on when `train`).
    pub fn ctx(&self, batch: &Batch, train: bool, dropout_key: u64) -> Ctx<B> {
        Ctx {
            device: self.device.clone(),
            rows: batch.rows,
            seq: batch.seq,
            mask: batch.mask.clone(),
            train,
            dropout_key,
            routes: None,
            adapter_drop: 0,
        }
    }

    /// The forward pass with its logits.
    pub fn forward(&self, batch: &Batch, p: &Params<B>, ctx: &Ctx<B>) -> Result<Output<B>> {
        self.run(batch, p, ctx, false)
    }

    /// The forward pass for [`Self::loss`]: a causal LM whose head is a plain
    /// frozen product leaves it to the loss, which never builds the whole
    /// `[rows*seq_out, vocab]` logits (nor, in the backward, their gradient).
    pub fn forward_for_loss(
        &self,
        batch: &Batch,
        p: &Params<B>,
        ctx: &Ctx<B>,
    ) -> Result<Output<B>> {
        self.run(batch, p, ctx, true)
    }

    fn run(
        &self,
        batch: &Batch,
        p: &Params<B>,
        ctx: &Ctx<B>,
        defer_head: bool,
    ) -> Result<Output<B>> {
        let ids: Vec<i64> = batch.input_ids.iter().map(|&t| t as i64).collect();
        let ids = Tensor::<B, 1, Int>::from_data(
            TensorData::new(ids, [batch.rows * batch.seq]),
            &self.device,
        );
        let prompt = crate::methods::prompt_embeddings(&self.plan, p)?;
        let prefix = PrefixSource::build(&self.plan, p)?;
        let seq_out = self.n_prompt + batch.seq;
        let kind = self.plan.task.kind;
        let scores = match &self.base {
            Base::Bert(m) => {
                let hidden = m.forward(ids, prompt, &prefix, p, ctx)?;
                match kind {
                    TaskKind::Classify => {
                        let pooled = m.pool(hidden, seq_out, p, ctx)?;
                        let pooled = ctx.dropout(pooled, 0.1, ctx::site_id("classifier.dropout"));
                        Scores::Logits(match &ctx.routes {
                            Some(r) => routes::routed_linear(
                                r,
                                pooled,
                                "classifier.weight",
                                Some("classifier.bias"),
                                p,
                            )?,
                            None => ops::linear_pt(
                                pooled,
                                p.get("classifier.weight")?,
                                Some(p.get("classifier.bias")?),
                            ),
                        })
                    }
                    _ => Scores::Logits(hidden),
                }
            }
            Base::Llama(m) => {
                let hidden = m.forward(ids, prompt, &prefix, None, p, ctx)?;
                match kind {
                    TaskKind::CausalLm => match m.frozen_head().filter(|_| defer_head) {
                        Some(head) => Scores::Deferred {
                            hidden,
                            head: head.clone(),
                        },
                        None => Scores::Logits(m.lm_logits(hidden, p, ctx)?),
                    },
                    TaskKind::Classify => {
                        let last = last_real_rows(batch, self.n_prompt);
                        let idx = Tensor::<B, 1, Int>::from_data(
                            TensorData::new(last, [batch.rows]),
                            &self.device,
                        );
                        let last = hidden.select(0, idx);
                        Scores::Logits(match &ctx.routes {
                            Some(r) => routes::routed_linear(r, last, "score.weight", None, p)?,
                            None => ops::linear_pt(last, p.get("score.weight")?, None),
                        })
                    }
                    TaskKind::Feature => Scores::Logits(hidden),
                }
            }
        };
        Ok(Output {
            scores,
            seq_out,
            n_prompt: self.n_prompt,
        })
    }

    /// An empty cache for [`PeftModel::step`].
    pub fn new_cache(&self) -> KvCache<B> {
        KvCache::new(self.plan.model.dims.layers)
    }

    /// One step of generation on a causal LM: `ids` continue the sequence
    /// `cache` holds (the whole prompt on the first step, then one token);
    /// returns the vocabulary logits after the last of them.
    pub fn step(&self, ids: &[u32], cache: &mut KvCache<B>, p: &Params<B>) -> Result<Vec<f32>> {
        self.step_routed(ids, cache, p, None)
    }

    /// [`PeftModel::step`] with the adapter `routes` names (of those in `p`,
    /// built by [`Params::routed`]).
    pub fn step_routed(
        &self,
        ids: &[u32],
        cache: &mut KvCache<B>,
        p: &Params<B>,
        routes: Option<std::sync::Arc<routes::Routes<B>>>,
    ) -> Result<Vec<f32>> {
        let m = self.decoder()?;
        if ids.is_empty() {
            return Err(crate::error::RuntimeError::Invalid(
                "nothing to generate from: the prompt has no tokens".into(),
            ));
        }
        let batch = Batch::pad(&[ids], None, 0);
        let mut ctx = self.ctx(&batch, false, 0);
        ctx.routes = routes;
        let t = self.id_tensor(ids);
        // The soft prompt goes in front of the prompt, once.
        let prompt = if cache.is_empty() {
            crate::methods::prompt_embeddings(&self.plan, p)?
        } else {
            None
        };
        let prefix = PrefixSource::build(&self.plan, p)?;
        let hidden = m.forward(t, prompt, &prefix, Some(cache), p, &ctx)?;
        let [rows, h] = hidden.dims();
        let last = hidden.slice([rows - 1..rows, 0..h]);
        let logits = m.lm_logits(last, p, &ctx)?;
        Ok(crate::train::host(logits))
    }

    /// One decoding step of a batch of sequences: `ids[i]` is the next token
    /// of the sequence `caches[i]` holds (each at its own length, each with
    /// its adapter by `routes`, sequence `i` being row `i`); returns each
    /// row's vocabulary logits.
    pub fn decode(
        &self,
        ids: &[u32],
        caches: &mut [&mut KvCache<B>],
        p: &Params<B>,
        routes: Option<std::sync::Arc<routes::Routes<B>>>,
    ) -> Result<Vec<Vec<f32>>> {
        let m = self.decoder()?;
        if ids.len() != caches.len() || ids.is_empty() || caches.iter().any(|c| c.is_empty()) {
            return Err(crate::error::RuntimeError::Internal(
                "a decoding step needs one token per prefilled sequence".into(),
            ));
        }
        let n = ids.len();
        let mut ctx = self.ctx(&Batch::pad(&vec![&[0u32][..]; n], None, 0), false, 0);
        ctx.routes = routes;
        let prefix = PrefixSource::build(&self.plan, p)?;
        let hidden = m.decode(self.id_tensor(ids), caches, &prefix, p, &ctx)?;
        let logits = crate::train::host(m.lm_logits(hidden, p, &ctx)?);
        let v = logits.len() / n;
        Ok(logits.chunks(v).map(<[f32]>::to_vec).collect())
    }

    fn decoder(&self) -> Result<&llama::Llama<B>> {
        let Base::Llama(m) = &self.base else {
            return Err(crate::error::RuntimeError::Invalid(
                "generation needs a causal decoder (a LLaMA-family model)".into(),
            ));
        };
        if self.plan.task.kind != TaskKind::CausalLm {
            return Err(crate::error::RuntimeError::Invalid(
                "generation needs a `task = causal_lm` spec".into(),
            ));
        }
        Ok(m)
    }

    fn id_tensor(&self, ids: &[u32]) -> Tensor<B, 1, Int> {
        let v: Vec<i64> = ids.iter().map(|&t| t as i64).collect();
        Tensor::<B, 1, Int>::from_data(TensorData::new(v, [ids.len()]), &self.device)
    }

    /// The training loss of `out` for `batch`.
    pub fn loss(&self, out: &Output<B>, batch: &Batch) -> Tensor<B, 1> {
        match self.plan.task.kind {
            TaskKind::Classify => loss::classification(out.logits(), batch),
            _ => {
                let (t, w) = loss::next_token_targets(batch, out.n_prompt);
                match &out.scores {
                    Scores::Logits(l) => loss::cross_entropy(l.clone(), t, w),
                    Scores::Deferred { hidden, head } => {
                        let rows =
                            crate::kernels::head_loss::chunk_rows(self.plan.model.dims.vocab);
                        crate::kernels::head_cross_entropy(hidden.clone(), head.head(), t, w, rows)
                    }
                }
            }
        }
    }

    /// The loss training minimizes: the task's, plus the regularizers the
    /// plan's methods add (AdaLoRA's orthogonality term).
    pub fn training_loss(
        &self,
        out: &Output<B>,
        batch: &Batch,
        p: &Params<B>,
    ) -> Result<Tensor<B, 1>> {
        let task = self.loss(out, batch);
        Ok(match crate::methods::regularizer(&self.plan, p)? {
            Some(r) => task + r,
            None => task,
        })
    }
}

/// Row index (in `[rows*seq_out]`) of each row's last real token.
pub fn last_real_rows(batch: &Batch, n_prompt: usize) -> Vec<i64> {
    let seq_out = n_prompt + batch.seq;
    (0..batch.rows)
        .map(|r| {
            let real = batch.mask[r * batch.seq..(r + 1) * batch.seq]
                .iter()
                .filter(|&&m| m == 1)
                .count();
            (r * seq_out + n_prompt + real.max(1) - 1) as i64
        })
        .collect()
}
