//! MeZO (Malladi et al. 2023): zeroth-order training from forward passes
//! only. Each step draws a direction `z ~ N(0, I)` over the trainable
//! parameters from a seed, measures the loss at `θ + εz` and `θ − εz` on the
//! same batch (same dropout), and moves `θ ← θ − lr·(g·z + wd·θ)` with the
//! projected gradient `g = (L₊ − L₋) / 2ε`. `z` is never stored: every use
//! regenerates it from the step's seed, tensor by tensor, so the step holds
//! what inference holds (no graph, no gradients, no optimizer state).

use super::step::{NonFinitePolicy, StepStats};
use crate::data::Batch;
use crate::error::{Result, RuntimeError};
use crate::kernels::PeftKernels;
use crate::model::{ParamStore, Params, PeftModel};
use crate::rng::{self, key};
use crate::weights::HostTensor;
use burn::tensor::backend::Backend;
use peftc_compiler::train::TrainConfig;

/// The seed of step `step`'s direction for the tensor at `index` (in name
/// order among the trainable tensors).
fn direction_seed(cfg: &TrainConfig, step: usize, index: usize) -> u64 {
    key(&[cfg.seed, 0x3E20, step as u64, index as u64])
}

/// The trainable tensors of `store`, in name order.
fn trainable_mut(store: &mut ParamStore) -> impl Iterator<Item = &mut HostTensor> {
    let ParamStore { values, frozen } = store;
    values
        .iter_mut()
        .filter(|(name, _)| !frozen.contains(*name))
        .map(|(_, t)| t)
}

/// `θ += scale · z` over the trainable tensors of `store`, `z` regenerated.
fn shift(store: &mut ParamStore, cfg: &TrainConfig, step: usize, scale: f32) {
    for (i, t) in trainable_mut(store).enumerate() {
        let z = rng::normal(direction_seed(cfg, step, i), t.data.len());
        t.data.iter_mut().zip(&z).for_each(|(x, z)| *x += scale * z);
    }
}

/// The mean loss over `micro` at the store's current values, forward only.
fn loss_at<B: Backend + PeftKernels>(
    model: &PeftModel<B>,
    store: &ParamStore,
    micro: &[Batch],
    dropout_keys: &[u64],
    device: &B::Device,
) -> Result<f32> {
    let params = Params::<B>::constant(store, device);
    let mut sum = 0f32;
    for (batch, &k) in micro.iter().zip(dropout_keys) {
        let ctx = model.ctx(batch, true, k);
        let out = model.forward_for_loss(batch, &params, &ctx)?;
        let loss = model.training_loss(&out, batch, &params)?;
        sum += super::host(loss)[0];
    }
    Ok(sum / micro.len().max(1) as f32)
}

/// The projected gradient `(L(θ+εz) − L(θ−εz)) / 2ε` of step `step` and the
/// mean of the two losses; `store` is left as it was.
pub fn projected_gradient<B: Backend + PeftKernels>(
    model: &PeftModel<B>,
    store: &mut ParamStore,
    cfg: &TrainConfig,
    micro: &[Batch],
    first_micro: usize,
    step: usize,
    device: &B::Device,
) -> Result<(f32, f32)> {
    let eps = cfg.eps as f32;
    let keys: Vec<u64> = (0..micro.len())
        .map(|i| key(&[cfg.seed, 0xD50, (first_micro + i) as u64]))
        .collect();
    // θ itself is kept (adapter-sized) so that the step restores it exactly
    // rather than by adding and subtracting εz in floating point.
    let saved = store.values.clone();
    shift(store, cfg, step, eps);
    let plus = loss_at(model, store, micro, &keys, device);
    shift(store, cfg, step, -2.0 * eps);
    let minus = loss_at(model, store, micro, &keys, device);
    store.values = saved;
    let (plus, minus) = (plus?, minus?);
    Ok(((plus - minus) / (2.0 * eps), 0.5 * (plus + minus)))
}

/// One MeZO step at learning rate `lr`; a non-finite loss stops or skips
/// the step as `policy` says (the parameters untouched).
#[allow(clippy::too_many_arguments)]
pub fn mezo_step<B: Backend + PeftKernels>(
    model: &PeftModel<B>,
    store: &mut ParamStore,
    cfg: &TrainConfig,
    micro: &[Batch],
    first_micro: usize,
    step: usize,
    lr: f64,
    policy: NonFinitePolicy,
    device: &B::Device,
) -> Result<StepStats> {
    let (g, loss) = projected_gradient(model, store, cfg, micro, first_micro, step, device)?;
    if !g.is_finite() || !loss.is_finite() {
        let what = format!("the MeZO loss became {loss} (projected gradient {g})");
        return match policy {
            NonFinitePolicy::Stop => Err(RuntimeError::NonFinite { step, what }),
            NonFinitePolicy::Skip => Ok(StepStats {
                loss: f32::NAN,
                tokens: 0,
                skipped: Some(what),
            }),
        };
    }
    let (lr, wd) = (lr as f32, cfg.weight_decay as f32);
    if wd != 0.0 {
        for t in trainable_mut(store) {
            t.data.iter_mut().for_each(|x| *x -= lr * wd * *x);
        }
    }
    shift(store, cfg, step, -lr * g);
    Ok(StepStats {
        loss,
        tokens: micro.iter().map(Batch::tokens).sum(),
        skipped: None,
    })
}

/// The direction `z` of step `step`, tensor by tensor in name order (for
/// tests: what [`mezo_step`] regenerates and never keeps).
pub fn direction(store: &ParamStore, cfg: &TrainConfig, step: usize) -> Vec<(String, Vec<f32>)> {
    store
        .values
        .iter()
        .filter(|(name, _)| store.trains(name))
        .enumerate()
        .map(|(i, (name, t))| {
            (
                name.clone(),
                rng::normal(direction_seed(cfg, step, i), t.data.len()),
            )
        })
        .collect()
}
