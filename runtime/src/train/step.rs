//! One optimizer step: forward and backward over the micro-batches of a
//! gradient-accumulation group, global gradient clipping, the update.

use super::optim::{AdamW, clip_grad_norm, sgd_step};
use crate::data::Batch;
use crate::error::{Result, RuntimeError};
use crate::kernels::PeftKernels;
use crate::model::{ParamStore, Params, PeftModel};
use crate::rng::key;
use crate::weights::HostTensor;
use burn::tensor::backend::AutodiffBackend;
use peftc_compiler::train::{OptimizerKind, TrainConfig};
use std::collections::BTreeMap;

/// What the training loop tracks of one step.
pub struct StepStats {
    /// Mean loss over the micro-batches.
    pub loss: f32,
    /// Real (unpadded) tokens processed.
    pub tokens: usize,
    /// Why the step made no update (`skip_nonfinite`), if it made none.
    pub skipped: Option<String>,
}

/// What to do with a step whose loss, gradients or update are not finite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonFinitePolicy {
    /// Stop training with an error naming the step.
    Stop,
    /// Leave the parameters and optimizer state as they were, and go on.
    Skip,
}

/// The first tensor of `tensors` holding a NaN or an infinity.
pub fn first_non_finite(tensors: &BTreeMap<String, HostTensor>) -> Option<&str> {
    tensors
        .iter()
        .find(|(_, t)| t.data.iter().any(|x| !x.is_finite()))
        .map(|(k, _)| k.as_str())
}

/// Trains on `micro` (one group of gradient accumulation) at learning rate
/// `lr`, as step `step` (from 0) of `total`. `first_micro` is the global index of the first micro-batch: dropout
/// masks are keyed by it, so the step is reproducible from the step alone.
/// Runs on a worker of rayon's pool (`kernels::on_pool`).
#[allow(clippy::too_many_arguments)]
pub fn train_step<B: AutodiffBackend + PeftKernels>(
    model: &PeftModel<B>,
    store: &mut ParamStore,
    adam: &mut AdamW,
    cfg: &TrainConfig,
    micro: &[Batch],
    first_micro: usize,
    step: usize,
    total: usize,
    lr: f64,
    policy: NonFinitePolicy,
    device: &B::Device,
) -> Result<StepStats> {
    crate::kernels::on_pool(|| {
        step_here(
            model,
            store,
            adam,
            cfg,
            micro,
            first_micro,
            step,
            total,
            lr,
            policy,
            device,
        )
    })
}

#[allow(clippy::too_many_arguments)]
fn step_here<B: AutodiffBackend + PeftKernels>(
    model: &PeftModel<B>,
    store: &mut ParamStore,
    adam: &mut AdamW,
    cfg: &TrainConfig,
    micro: &[Batch],
    first_micro: usize,
    step: usize,
    total: usize,
    lr: f64,
    policy: NonFinitePolicy,
    device: &B::Device,
) -> Result<StepStats> {
    let refuse = |what: String| -> Result<StepStats> {
        match policy {
            NonFinitePolicy::Stop => Err(RuntimeError::NonFinite { step, what }),
            NonFinitePolicy::Skip => Ok(StepStats {
                loss: f32::NAN,
                tokens: 0,
                skipped: Some(what),
            }),
        }
    };
    match cfg.optimizer {
        OptimizerKind::Mezo => {
            return super::mezo::mezo_step(
                model,
                store,
                cfg,
                micro,
                first_micro,
                step,
                lr,
                policy,
                device,
            );
        }
        OptimizerKind::Adamw | OptimizerKind::Sgd => {}
    }
    let mut grads: Option<BTreeMap<String, HostTensor>> = None;
    let mut loss_sum = 0f32;
    let mut tokens = 0usize;
    let n = micro.len().max(1);
    for (i, batch) in micro.iter().enumerate() {
        tokens += batch.tokens();
        let params = Params::<B>::tracked(store, device);
        let mut ctx = model.ctx(
            batch,
            true,
            key(&[cfg.seed, 0xD50, (first_micro + i) as u64]),
        );
        if cfg.adapter_drop > 0 {
            let n =
                key(&[cfg.seed, 0xAD0, (first_micro + i) as u64]) % (cfg.adapter_drop as u64 + 1);
            ctx.adapter_drop = n as usize;
        }
        let out = model.forward_for_loss(batch, &params, &ctx)?;
        let loss = model
            .training_loss(&out, batch, &params)?
            .div_scalar(n as f64);
        // The logits' last use is the loss's backward, which may then write
        // the gradient over them.
        drop(out);
        let value = super::host(loss.clone())[0];
        if !value.is_finite() {
            return refuse(format!("the loss became {value}"));
        }
        loss_sum += value;
        let g = params.grads(&loss.backward(), store);
        grads = Some(match grads {
            None => g,
            Some(mut acc) => {
                for (k, v) in g {
                    if let Some(a) = acc.get_mut(&k) {
                        a.data.iter_mut().zip(&v.data).for_each(|(x, y)| *x += y);
                    }
                }
                acc
            }
        });
    }
    let mut grads = grads.unwrap_or_default();
    if let Some(name) = first_non_finite(&grads) {
        return refuse(format!("the gradient of `{name}` became non-finite"));
    }
    if let Some(max) = cfg.max_grad_norm.filter(|&m| m > 0.0) {
        clip_grad_norm(&mut grads, max as f32);
    }
    // Finite gradients can still overflow the update (a huge `lr`): keep what
    // a skipped step restores.
    let before = (policy == NonFinitePolicy::Skip).then(|| (store.values.clone(), adam.clone()));
    match cfg.optimizer {
        OptimizerKind::Adamw => adam.step(&mut store.values, &grads, lr as f32),
        OptimizerKind::Sgd => sgd_step(
            &mut store.values,
            &grads,
            lr as f32,
            cfg.weight_decay as f32,
        ),
        // Stepped above, from forward passes.
        OptimizerKind::Mezo => {}
    }
    let overflowed = grads.keys().find(|k| {
        store
            .values
            .get(*k)
            .is_some_and(|t| t.data.iter().any(|x| !x.is_finite()))
    });
    if let Some(name) = overflowed {
        let what = format!("the update made `{name}` non-finite");
        if let Some((values, state)) = before {
            store.values = values;
            *adam = state;
        }
        return refuse(what);
    }
    crate::methods::after_update(&model.plan, step, total, store, &grads, &mut adam.extra)?;
    Ok(StepStats {
        loss: loss_sum,
        tokens,
        skipped: None,
    })
}
