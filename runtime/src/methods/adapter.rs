//! Bottleneck adapters at run time: `res + s·up(act(down(x)))` after or
//! beside a module — one fused op where the plan says so, else its reference
//! composition (a UniPELT gate scales the update there). SparseAdapter: each
//! projection's weight is multiplied by its frozen 0/1 mask, chosen at
//! initialization (random, magnitude) or by SNIP before the first step.

use super::hook::{At, Hook, SiteHook, Stage};
use super::trace;
use crate::data::Batch;
use crate::error::{Result, RuntimeError};
use crate::kernels::{self, AdapterFn, AdapterParams, PeftKernels};
use crate::model::ops::{act, linear_pt};
use crate::model::params::{name_hash, pname};
use crate::model::{ParamStore, PeftModel};
use crate::rng::{Rng, key};
use crate::weights::HostTensor;
use burn::tensor::Tensor;
use burn::tensor::backend::AutodiffBackend;
use peftc_compiler::ir::FusedOp;
use peftc_compiler::methods::{
    Activation, AdapterConfig, Init, Prune, PruneSelect, SNIP_BATCHES, adapter_mask_name,
    plan_tensors,
};
use peftc_compiler::plan::{Plan, Site};

struct AdapterHook {
    tag: &'static str,
    act: Activation,
    scale: f64,
    parallel: bool,
    gated: bool,
    fused: bool,
}

pub fn hook<B: PeftKernels>(c: &AdapterConfig, site: &Site) -> Hook<B> {
    Box::new(AdapterHook {
        tag: c.tag(),
        act: c.act,
        scale: c.scale,
        parallel: c.parallel,
        gated: site.gated,
        fused: site.fusion == Some(FusedOp::Adapter),
    })
}

impl<B: PeftKernels> SiteHook<B> for AdapterHook {
    fn stage(&self) -> Stage {
        if self.parallel {
            Stage::Beside
        } else {
            Stage::After
        }
    }

    /// Serial: the residual and the input are the output so far; parallel:
    /// the residual is the output, the input the module's.
    fn output(&self, at: &At<B>, y: Tensor<B, 2>) -> Result<Tensor<B, 2>> {
        let (path, p) = (at.path, at.p);
        let x = if self.parallel {
            at.input.clone()
        } else {
            y.clone()
        };
        let n = |s: &str| pname(path, &format!("{}.{s}", self.tag));
        // A pruned projection's weight through its mask (SparseAdapter).
        let weight = |s: &str| -> Result<Tensor<B, 2>> {
            let w = p.get(&n(&format!("{s}.weight")))?;
            let mask = n(&format!("{s}.mask"));
            Ok(if p.has(&mask) { w * p.get(&mask)? } else { w })
        };
        let w = AdapterParams {
            down: weight("down")?,
            down_bias: p.get(&n("down.bias"))?,
            up: weight("up")?,
            up_bias: p.get(&n("up.bias"))?,
        };
        if self.fused {
            trace::fused(path, FusedOp::Adapter);
            let f = AdapterFn {
                act: self.act,
                scale: self.scale,
            };
            return Ok(kernels::adapter(y, x, w, f));
        }
        let h = act(self.act, linear_pt(x.clone(), w.down, Some(w.down_bias)));
        let mut u = linear_pt(h, w.up, Some(w.up_bias)).mul_scalar(self.scale);
        if self.gated {
            u = u * super::gate(path, self.tag, x, p)?;
        }
        Ok(y + u)
    }
}

/// A SparseAdapter mask for the weight `w` it prunes (just drawn), and `w`
/// zeroed where the mask prunes. SNIP starts dense; its calibration
/// ([`calibrate`]) chooses before the first step.
pub fn prune_mask(sel: &PruneSelect, w: &mut HostTensor, seed: u64) -> Vec<f32> {
    let n = w.data.len();
    let random = || {
        let mut rng = Rng::new(key(&[seed, name_hash(&sel.weight), 0x5A]));
        super::select::sample(n, sel.kept, &mut rng)
    };
    let kept = match sel.by {
        Prune::Snip => return vec![1.0; n],
        Prune::Random => random(),
        Prune::Magnitude if w.data.iter().all(|&v| v == 0.0) => random(),
        Prune::Magnitude => {
            let scores: Vec<f32> = w.data.iter().map(|v| v.abs()).collect();
            super::select::largest(&scores, sel.kept)
        }
    };
    let mask = super::select::mask_of(n, &kept);
    w.data.iter_mut().zip(&mask).for_each(|(v, m)| *v *= m);
    mask
}

/// The SNIP-pruned weights of the plan, with their selections.
fn snip_sites(plan: &Plan) -> Vec<PruneSelect> {
    plan_tensors(plan)
        .into_iter()
        .filter_map(|d| match d.init {
            Init::PruneMask(sel) if sel.by == Prune::Snip => Some(sel),
            _ => None,
        })
        .collect()
}

/// Batches SNIP reads before the first step (0 without a SNIP adapter).
pub fn calibration_batches(plan: &Plan) -> usize {
    if snip_sites(plan).is_empty() {
        0
    } else {
        SNIP_BATCHES
    }
}

/// Refuses SNIP when the training data holds fewer batches than it reads.
pub fn check_run(plan: &Plan, batches_per_epoch: usize) -> std::result::Result<(), String> {
    let snip = calibration_batches(plan);
    if snip > batches_per_epoch {
        return Err(format!(
            "SNIP pruning reads {snip} batches of training data before the first step; the data holds {batches_per_epoch}"
        ));
    }
    Ok(())
}

/// SNIP: sums each pruned weight's connection sensitivity |g ⊙ w| (|g| for
/// a weight that starts at zero) over `batches`, keeps the largest, and
/// zeroes the rest.
pub fn calibrate<B: AutodiffBackend + PeftKernels>(
    model: &PeftModel<B>,
    store: &mut ParamStore,
    batches: &[Batch],
    device: &B::Device,
) -> Result<()> {
    let sites = snip_sites(&model.plan);
    if sites.is_empty() || batches.is_empty() {
        return Ok(());
    }
    let mut scores: std::collections::BTreeMap<String, Vec<f32>> = Default::default();
    for batch in batches.iter().take(SNIP_BATCHES) {
        let grads = super::batch_grads(model, store, batch, device)?;
        for sel in &sites {
            let (Some(g), Some(w)) = (grads.get(&sel.weight), store.get(&sel.weight)) else {
                continue;
            };
            let zero = w.data.iter().all(|&v| v == 0.0);
            let acc = scores
                .entry(sel.weight.clone())
                .or_insert_with(|| vec![0.0; g.data.len()]);
            for ((a, gv), wv) in acc.iter_mut().zip(&g.data).zip(&w.data) {
                *a += if zero { gv.abs() } else { (gv * wv).abs() };
            }
        }
    }
    for sel in &sites {
        let score = scores.get(&sel.weight).ok_or_else(|| {
            RuntimeError::Internal(format!("no SNIP gradient for `{}`", sel.weight))
        })?;
        let mask = super::select::mask_of(score.len(), &super::select::largest(score, sel.kept));
        if let Some(w) = store.values.get_mut(&sel.weight) {
            w.data.iter_mut().zip(&mask).for_each(|(v, m)| *v *= m);
        }
        if let Some(m) = store.values.get_mut(&adapter_mask_name(&sel.weight)) {
            m.data = mask;
        }
    }
    Ok(())
}

/// Every SparseAdapter mask in `store` holds only 0 and 1, keeps exactly
/// the entries its spec says, and its weight is zero where it prunes.
pub fn check_loaded(plan: &Plan, store: &ParamStore) -> std::result::Result<(), String> {
    for d in plan_tensors(plan) {
        let Init::PruneMask(sel) = &d.init else {
            continue;
        };
        let (Some(m), Some(w)) = (store.get(&d.name), store.get(&sel.weight)) else {
            continue;
        };
        if m.data.iter().any(|&v| v != 0.0 && v != 1.0) {
            return Err(format!("tensor `{}` is not a 0/1 mask", d.name));
        }
        let kept = m.data.iter().filter(|&&v| v == 1.0).count();
        if kept != sel.kept {
            return Err(format!(
                "tensor `{}` keeps {kept} entries; the spec's sparsity keeps {}",
                d.name, sel.kept
            ));
        }
        if m.data
            .iter()
            .zip(&w.data)
            .any(|(&mv, &wv)| mv == 0.0 && wv != 0.0)
        {
            return Err(format!(
                "tensor `{}` is non-zero where its mask `{}` prunes it",
                sel.weight, d.name
            ));
        }
    }
    Ok(())
}
