//! The runtime's one table of methods: each match below is exhaustive over
//! [`MethodConfig`], so a new method is refused by the compiler until its
//! runtime file answers every question here.

use super::hf::HfForm;
use super::hook::Hook;
use super::{
    adalora, adapter, coda, dylora, full, ia3, ln, loha, lokr, lora, lst, mask, prefix, prompt,
    ptuning, ssf, vera,
};
use crate::data::Batch;
use crate::error::{Result, RuntimeError};
use crate::kernels::PeftKernels;
use crate::model::{Frozen, ParamStore, Params, PeftModel};
use crate::weights::HostTensor;
use burn::tensor::Tensor;
use burn::tensor::backend::AutodiffBackend;
use peftc_compiler::methods::MethodConfig;
use peftc_compiler::plan::{Plan, Site};
use std::collections::BTreeMap;

/// The hook of `site`'s method at its module (`w`: the module's base weight
/// when it is a linear layer); `None` for methods that act elsewhere (a soft
/// prompt, a prefix, BitFit's biases).
pub fn hook<B: PeftKernels>(site: &Site, w: Option<&Frozen<B>>) -> Option<Hook<B>> {
    match &site.method {
        MethodConfig::Lora(c) => Some(lora::hook(c, site, w)),
        MethodConfig::Ia3 => Some(ia3::hook(site)),
        MethodConfig::Adapter(c) => Some(adapter::hook(c, site)),
        MethodConfig::Vera(c) => Some(vera::hook(c)),
        MethodConfig::Loha(c) => Some(loha::hook(c)),
        MethodConfig::Lokr(c) => Some(lokr::hook(c)),
        MethodConfig::Adalora(c) => Some(adalora::hook(c)),
        MethodConfig::Mask(c) => Some(mask::hook(c)),
        MethodConfig::Ssf => Some(ssf::hook()),
        MethodConfig::Dylora(c) => Some(dylora::hook(c)),
        // The norm reads LN tuning's copy itself (`tuned_norm`).
        MethodConfig::Prompt(_)
        | MethodConfig::Ptuning(_)
        | MethodConfig::Prefix(_)
        | MethodConfig::Bitfit
        | MethodConfig::Full
        | MethodConfig::Ln
        // The layer runs CoDA itself (`coda_at`); the family's forward pass
        // runs the side network (`ladder`).
        | MethodConfig::Coda(_)
        | MethodConfig::Lst(_) => None,
    }
}

/// CoDA beside the layer `path`, if the plan puts it there: the layer runs
/// through it (its tokens routed), not through a hook.
pub fn coda_at(plan: &Plan, path: &str) -> Option<coda::Coda> {
    plan.sites_at(path).find_map(|s| match &s.method {
        MethodConfig::Coda(c) => Some(coda::at(c, path)),
        MethodConfig::Lora(_)
        | MethodConfig::Ia3
        | MethodConfig::Prompt(_)
        | MethodConfig::Prefix(_)
        | MethodConfig::Adapter(_)
        | MethodConfig::Bitfit
        | MethodConfig::Vera(_)
        | MethodConfig::Loha(_)
        | MethodConfig::Lokr(_)
        | MethodConfig::Adalora(_)
        | MethodConfig::Mask(_)
        | MethodConfig::Ssf
        | MethodConfig::Full
        | MethodConfig::Dylora(_)
        | MethodConfig::Ln
        | MethodConfig::Lst(_)
        | MethodConfig::Ptuning(_) => None,
    })
}

/// The plan's LST side network, if it has one: the family's forward pass
/// hands it the layers' outputs.
pub fn ladder(plan: &Plan) -> Option<lst::Ladder> {
    plan.sites.iter().find_map(|s| match &s.method {
        MethodConfig::Lst(c) => Some(lst::at(c, plan)),
        MethodConfig::Lora(_)
        | MethodConfig::Ia3
        | MethodConfig::Prompt(_)
        | MethodConfig::Prefix(_)
        | MethodConfig::Adapter(_)
        | MethodConfig::Bitfit
        | MethodConfig::Vera(_)
        | MethodConfig::Loha(_)
        | MethodConfig::Lokr(_)
        | MethodConfig::Adalora(_)
        | MethodConfig::Mask(_)
        | MethodConfig::Ssf
        | MethodConfig::Full
        | MethodConfig::Dylora(_)
        | MethodConfig::Ln
        | MethodConfig::Coda(_)
        | MethodConfig::Ptuning(_) => None,
    })
}

/// Whether AdapterDrop can leave `site` out: a method acting through a
/// hook at its module (one that replaces the module's own tensors, or feeds
/// the attention or the embedding, stays).
pub fn droppable(site: &Site) -> bool {
    match &site.method {
        MethodConfig::Lora(_)
        | MethodConfig::Ia3
        | MethodConfig::Adapter(_)
        | MethodConfig::Vera(_)
        | MethodConfig::Loha(_)
        | MethodConfig::Lokr(_)
        | MethodConfig::Adalora(_)
        | MethodConfig::Mask(_)
        | MethodConfig::Ssf
        | MethodConfig::Dylora(_) => true,
        MethodConfig::Prompt(_)
        | MethodConfig::Ptuning(_)
        | MethodConfig::Prefix(_)
        | MethodConfig::Bitfit
        | MethodConfig::Ln
        | MethodConfig::Full
        | MethodConfig::Coda(_)
        | MethodConfig::Lst(_) => false,
    }
}

/// `plan` without the sites AdapterDrop leaves out below `layers`: the
/// model loaded from it does not run them at all.
pub fn drop_lowest(plan: &Plan, layers: usize) -> Plan {
    let mut p = plan.clone();
    p.sites
        .retain(|s| !(droppable(s) && s.layer().is_some_and(|l| l < layers)));
    p
}

/// The soft prompt a plan prepends (`[len, hidden]`), if any.
pub fn prompt_embeddings<B: PeftKernels>(
    plan: &Plan,
    p: &Params<B>,
) -> Result<Option<Tensor<B, 2>>> {
    for s in &plan.sites {
        match &s.method {
            MethodConfig::Prompt(c) => return prompt::embeddings(c, p).map(Some),
            MethodConfig::Ptuning(c) => return ptuning::embeddings(c, p).map(Some),
            MethodConfig::Lora(_)
            | MethodConfig::Ia3
            | MethodConfig::Prefix(_)
            | MethodConfig::Adapter(_)
            | MethodConfig::Bitfit
            | MethodConfig::Vera(_)
            | MethodConfig::Loha(_)
            | MethodConfig::Lokr(_)
            | MethodConfig::Adalora(_)
            | MethodConfig::Mask(_)
            | MethodConfig::Ssf
            | MethodConfig::Full
            | MethodConfig::Dylora(_)
            | MethodConfig::Coda(_)
            | MethodConfig::Lst(_)
            | MethodConfig::Ln => {}
        }
    }
    Ok(None)
}

/// Virtual positions the plan's soft prompt adds before every sequence.
pub fn prompt_len(plan: &Plan) -> usize {
    plan.virtual_tokens()
}

/// The Hugging Face PEFT form of the plan's method (HF stores one method
/// per adapter; `adapter::hf::exportable` checks the plan has one).
pub fn hf_form(plan: &Plan) -> std::result::Result<&'static dyn HfForm, String> {
    let Some(site) = plan.sites.first() else {
        // Only a task head (or nothing) trains: HF stores that as a LoRA
        // adapter without LoRA tensors, its head in `modules_to_save`.
        return Ok(&lora::Hf);
    };
    let none = || {
        Err(format!(
            "`{}` has no Hugging Face PEFT form; use peftc's own format",
            site.method.name()
        ))
    };
    match &site.method {
        MethodConfig::Lora(_) => Ok(&lora::Hf),
        MethodConfig::Ia3 => Ok(&ia3::Hf),
        MethodConfig::Prompt(_) => Ok(&prompt::Hf),
        MethodConfig::Prefix(_) => Ok(&prefix::Hf),
        MethodConfig::Vera(_) => Ok(&vera::Hf),
        MethodConfig::Loha(_) => Ok(&loha::Hf),
        MethodConfig::Lokr(_) => Ok(&lokr::Hf),
        MethodConfig::Ln => Ok(&ln::Hf),
        MethodConfig::Ptuning(_) => Ok(&ptuning::Hf),
        MethodConfig::Adalora(_) => Ok(&adalora::Hf),
        MethodConfig::Dylora(_) => Ok(&dylora::Hf),
        // SHiRA, where the mask fits it (its capabilities say when).
        MethodConfig::Mask(_) => Ok(&mask::Hf),
        MethodConfig::Adapter(_)
        | MethodConfig::Bitfit
        | MethodConfig::Ssf
        | MethodConfig::Full
        | MethodConfig::Coda(_)
        | MethodConfig::Lst(_) => none(),
    }
}

/// Folds `site`'s trained tensors into its module's base weight `w` (and
/// bias). Refused for methods that do not merge (the compiler's
/// capabilities say which; `merge::mergeable` checks first).
pub fn merge(
    site: &Site,
    w: &mut HostTensor,
    bias: Option<&mut HostTensor>,
    store: &ParamStore,
) -> Result<()> {
    let refuse = || {
        Err(RuntimeError::Invalid(format!(
            "`{}` at `{}` cannot be folded into the weights",
            site.method.name(),
            site.module
        )))
    };
    match &site.method {
        MethodConfig::Lora(c) => lora::merge(c, site, w, store),
        MethodConfig::Ia3 => ia3::merge(site, w, bias, store),
        MethodConfig::Vera(c) => vera::merge(c, site, w, store),
        MethodConfig::Loha(c) => loha::merge(c, site, w, store),
        MethodConfig::Lokr(c) => lokr::merge(c, site, w, store),
        MethodConfig::Adalora(c) => adalora::merge(c, site, w, store),
        MethodConfig::Mask(c) => mask::merge(c, site, w, store),
        MethodConfig::Ssf => ssf::merge(site, w, bias, store),
        MethodConfig::Full => full::merge(site, w, bias, store),
        MethodConfig::Dylora(c) => dylora::merge(c, site, w, store),
        MethodConfig::Ln => ln::merge(site, w, bias, store),
        // BitFit's biases replace the base ones (see `merge::merged_weights`).
        MethodConfig::Bitfit => Ok(()),
        MethodConfig::Prompt(_)
        | MethodConfig::Ptuning(_)
        | MethodConfig::Prefix(_)
        | MethodConfig::Adapter(_)
        | MethodConfig::Coda(_)
        | MethodConfig::Lst(_) => refuse(),
    }
}

/// The trained copy of module `path`'s own weight and bias, when a method
/// of the plan retrains them (LN tuning on a norm, `full` on a linear layer
/// or a norm).
pub fn tuned(plan: &Plan, path: &str) -> Option<(String, Option<String>)> {
    plan.sites_at(path).find_map(|s| match &s.method {
        MethodConfig::Ln => Some(ln::names(s)),
        MethodConfig::Full => Some(peftc_compiler::methods::Full::names(s)),
        MethodConfig::Lora(_)
        | MethodConfig::Ia3
        | MethodConfig::Prompt(_)
        | MethodConfig::Prefix(_)
        | MethodConfig::Adapter(_)
        | MethodConfig::Bitfit
        | MethodConfig::Vera(_)
        | MethodConfig::Loha(_)
        | MethodConfig::Lokr(_)
        | MethodConfig::Adalora(_)
        | MethodConfig::Mask(_)
        | MethodConfig::Ssf
        | MethodConfig::Dylora(_)
        | MethodConfig::Coda(_)
        | MethodConfig::Lst(_)
        | MethodConfig::Ptuning(_) => None,
    })
}

/// The scale and shift a method applies after the norm `path` (SSF), which
/// the norm folds into its own weight and bias (an RMSNorm adds the shift).
pub fn norm_scale_shift(plan: &Plan, path: &str) -> Option<(String, String)> {
    plan.sites_at(path).find_map(|s| match &s.method {
        MethodConfig::Ssf => Some(peftc_compiler::methods::ssf_names(&s.module)),
        MethodConfig::Lora(_)
        | MethodConfig::Ia3
        | MethodConfig::Prompt(_)
        | MethodConfig::Prefix(_)
        | MethodConfig::Adapter(_)
        | MethodConfig::Bitfit
        | MethodConfig::Vera(_)
        | MethodConfig::Loha(_)
        | MethodConfig::Lokr(_)
        | MethodConfig::Ln
        | MethodConfig::Ptuning(_)
        | MethodConfig::Adalora(_)
        | MethodConfig::Mask(_)
        | MethodConfig::Full
        | MethodConfig::Dylora(_)
        | MethodConfig::Coda(_)
        | MethodConfig::Lst(_) => None,
    })
}

/// The terms the plan's methods add to the training loss (AdaLoRA's
/// orthogonality regularizer), `None` when they add none.
pub fn regularizer<B: PeftKernels>(plan: &Plan, p: &Params<B>) -> Result<Option<Tensor<B, 1>>> {
    adalora::regularizer(plan, p)
}

/// Refuses a training run of `total` steps over `batches_per_epoch`
/// batches that a method of the plan cannot work in (AdaLoRA's schedule
/// needs steps between `tinit` and `tfinal`; FishMask's calibration and
/// SNIP, that many batches; a mask's warm-up, fewer steps than the run).
pub fn check_run(
    plan: &Plan,
    total: usize,
    batches_per_epoch: usize,
) -> std::result::Result<(), String> {
    adalora::check_run(plan, total)?;
    mask::check_run(plan, total, batches_per_epoch)?;
    adapter::check_run(plan, batches_per_epoch)
}

/// Batches of training data the plan's methods read before the first step
/// (FishMask's calibration); 0 for none.
pub fn calibration_batches(plan: &Plan) -> usize {
    mask::calibration_batches(plan).max(adapter::calibration_batches(plan))
}

/// What the plan's methods do before the first step of a fresh run, with
/// the first batches of the training data: FishMask's choice of entries,
/// LT-SFT's and diff pruning's after their dense warm-up, SNIP's of a
/// SparseAdapter's.
pub fn before_training<B: AutodiffBackend + PeftKernels>(
    model: &PeftModel<B>,
    store: &mut ParamStore,
    batches: &[Batch],
    cfg: &peftc_compiler::train::TrainConfig,
    device: &B::Device,
) -> Result<()> {
    mask::calibrate(model, store, batches, device)?;
    let w = mask::WarmUp {
        lr: cfg.lr,
        seed: cfg.seed,
    };
    mask::warm_up(model, store, batches, w, device)?;
    adapter::calibrate(model, store, batches, device)
}

/// Checks of a store just read from a file beyond names, shapes and
/// finiteness (a mask's positions in range and sorted).
pub fn check_loaded(plan: &Plan, store: &ParamStore) -> std::result::Result<(), String> {
    mask::check_loaded(plan, store)?;
    adapter::check_loaded(plan, store)
}

/// What the plan's methods do after each optimizer update of step `step`
/// (from 0) of `total`, with that step's gradients: AdaLoRA's rank
/// allocation. `state` is kept with the optimizer's.
pub fn after_update(
    plan: &Plan,
    step: usize,
    total: usize,
    store: &mut ParamStore,
    grads: &BTreeMap<String, HostTensor>,
    state: &mut BTreeMap<String, Vec<f32>>,
) -> Result<()> {
    adalora::after_update(plan, step, total, store, grads, state)
}
