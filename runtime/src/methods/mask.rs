//! Sparse masks at run time: the delta at the selected positions only
//! (`kernels::sparse_delta` for single entries; a product scattered into, or
//! gathered from, whole rows / columns), the selection itself (seeded random,
//! magnitude, FishMask's calibration, LT-SFT's and diff pruning's dense
//! warm-up), the fold into the weight, and the checks an adapter file's
//! positions must pass.

use super::hook::{At, Hook, SiteHook, Stage};
use crate::data::Batch;
use crate::error::{Result, RuntimeError};
use crate::kernels::{PeftKernels, SparseIndex, sparse_delta};
use crate::model::ops::linear_pt;
use crate::model::{ParamStore, Params, PeftModel};
use crate::rng::{Rng, key};
use crate::weights::HostTensor;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{IndexingUpdateOp, Int, Tensor, TensorData};
use peftc_compiler::methods::{
    MaskBy, MaskConfig, MaskSelect, MaskStructure, MethodConfig, index_name, site_name, values_name,
};
use peftc_compiler::plan::{Plan, Site};
use std::collections::BTreeMap;
use std::sync::Arc;

/// FishMask's calibration probe at `module`: a dense zero delta whose
/// gradient is the loss's gradient with respect to the weight.
fn probe_name(module: &str) -> String {
    site_name(module, "mask_probe")
}

/// Diff pruning's gate logits `log α` over the probe, and this step's
/// uniform noise for its hard-concrete sample.
fn gate_name(module: &str) -> String {
    site_name(module, "mask_gate")
}
fn noise_name(module: &str) -> String {
    site_name(module, "mask_noise")
}

/// The hard-concrete distribution's stretch and temperature (Louizos et al.
/// 2018, as diff pruning uses it).
const HC_GAMMA: f64 = -0.1;
const HC_ZETA: f64 = 1.1;
const HC_BETA: f64 = 2.0 / 3.0;

/// A hard-concrete gate sample from logits `log_alpha` and noise `u`:
/// `clamp(sigmoid((ln u − ln(1−u) + log α)/β)·(ζ−γ) + γ, 0, 1)`.
fn hard_concrete<B: PeftKernels>(log_alpha: Tensor<B, 2>, u: Tensor<B, 2>) -> Tensor<B, 2> {
    let logit = u.clone().log() - u.neg().add_scalar(1.0).log();
    burn::tensor::activation::sigmoid((logit + log_alpha).div_scalar(HC_BETA))
        .mul_scalar(HC_ZETA - HC_GAMMA)
        .add_scalar(HC_GAMMA)
        .clamp(0.0, 1.0)
}

/// `P(gate ≠ 0)` per entry: `sigmoid(log α − β·ln(−γ/ζ))`.
fn open_probability<B: PeftKernels>(log_alpha: Tensor<B, 2>) -> Tensor<B, 2> {
    burn::tensor::activation::sigmoid(log_alpha.sub_scalar(HC_BETA * (-HC_GAMMA / HC_ZETA).ln()))
}

struct MaskHook {
    structure: MaskStructure,
}

pub fn hook<B: PeftKernels>(c: &MaskConfig) -> Hook<B> {
    Box::new(MaskHook {
        structure: c.structure,
    })
}

/// A device tensor of small whole numbers as host `u32`s.
fn numbers<B: PeftKernels>(t: Tensor<B, 2>) -> Vec<u32> {
    t.into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .unwrap_or_default()
        .into_iter()
        .map(|v| v as u32)
        .collect()
}

fn ints<B: PeftKernels>(v: &[u32], device: &B::Device) -> Tensor<B, 1, Int> {
    let d: Vec<i64> = v.iter().map(|&i| i as i64).collect();
    Tensor::from_data(TensorData::new(d, [v.len()]), device)
}

impl<B: PeftKernels> SiteHook<B> for MaskHook {
    fn stage(&self) -> Stage {
        Stage::Delta
    }

    fn output(&self, at: &At<B>, y: Tensor<B, 2>) -> Result<Tensor<B, 2>> {
        let p = at.p;
        let probe = probe_name(at.path);
        if p.has(&probe) {
            let mut dense = p.get(&probe)?;
            let gate = gate_name(at.path);
            if p.has(&gate) {
                dense = dense * hard_concrete(p.get(&gate)?, p.get(&noise_name(at.path))?);
            }
            return Ok(y + linear_pt(at.x.clone(), dense, None));
        }
        let values = p.get(&values_name(at.path))?;
        let index = numbers(p.get(&index_name(at.path))?);
        let device = at.x.device();
        Ok(match self.structure {
            MaskStructure::Element => {
                let idx = SparseIndex {
                    rows: index.iter().step_by(2).copied().collect(),
                    cols: index.iter().skip(1).step_by(2).copied().collect(),
                };
                let k = idx.len();
                sparse_delta(y, at.x.clone(), values.reshape([1, k]), Arc::new(idx))
            }
            MaskStructure::Row => {
                // values `[k, in]`: the selected rows of ΔW.
                let delta = linear_pt(at.x.clone(), values, None);
                y.select_assign(1, ints::<B>(&index, &device), delta, IndexingUpdateOp::Add)
            }
            MaskStructure::Column => {
                // values `[out, k]`: the selected columns of ΔW.
                let xs = at.x.clone().select(1, ints::<B>(&index, &device));
                y + linear_pt(xs, values, None)
            }
        })
    }
}

/// The index tensor's values for `sel`, chosen from `scores` (one per
/// weight entry, `[out · in]`; larger is kept): the best `count` units,
/// ties to the lower position, sorted ascending.
fn pick(sel: &MaskSelect, scores: &[f32]) -> Vec<f32> {
    let (o, i) = (sel.out_f, sel.in_f);
    let unit: Vec<f32> = match sel.structure {
        MaskStructure::Element => scores.to_vec(),
        MaskStructure::Row => scores.chunks_exact(i).map(|r| r.iter().sum()).collect(),
        MaskStructure::Column => (0..i)
            .map(|c| (0..o).map(|r| scores[r * i + c]).sum())
            .collect(),
    };
    let kept = super::select::largest(&unit, sel.count);
    encode(sel, &kept)
}

/// Positions (flat entry numbers, or row / column numbers) as the index
/// tensor holds them: `(row, col)` pairs for entries.
fn encode(sel: &MaskSelect, kept: &[u32]) -> Vec<f32> {
    match sel.structure {
        MaskStructure::Element => {
            let i = sel.in_f as u32;
            kept.iter()
                .flat_map(|&e| [(e / i) as f32, (e % i) as f32])
                .collect()
        }
        MaskStructure::Row | MaskStructure::Column => kept.iter().map(|&u| u as f32).collect(),
    }
}

/// The starting index tensor of a mask on the base weight `w` (`seed`: the
/// run's, keyed by the tensor's name). FishMask starts from the magnitude
/// choice; its calibration ([`calibrate`]) replaces it before step 0.
pub fn initial_index(sel: &MaskSelect, w: &HostTensor, seed: u64) -> Result<Vec<f32>> {
    if w.shape != [sel.out_f, sel.in_f] {
        return Err(RuntimeError::Invalid(format!(
            "base weight `{}` has shape {:?}; the mask needs [{}, {}]",
            sel.weight, w.shape, sel.out_f, sel.in_f
        )));
    }
    Ok(match sel.by {
        MaskBy::Random => {
            let mut rng = Rng::new(key(&[seed, crate::model::params::name_hash(&sel.weight)]));
            encode(
                sel,
                &super::select::sample(sel.units(), sel.count, &mut rng),
            )
        }
        // The warm-up and FishMask replace this start before the first step.
        MaskBy::Magnitude | MaskBy::Fisher | MaskBy::LtSft | MaskBy::DiffPruning => {
            let scores: Vec<f32> = w.data.iter().map(|v| v * v).collect();
            pick(sel, &scores)
        }
    })
}

fn masks(plan: &Plan) -> impl Iterator<Item = (&Site, &MaskConfig)> {
    plan.sites.iter().filter_map(|s| match &s.method {
        MethodConfig::Mask(c) => Some((s, c)),
        _ => None,
    })
}

/// Batches FishMask's calibration reads: the most any fisher mask asks for.
fn fisher_batches(plan: &Plan) -> usize {
    masks(plan)
        .filter(|(_, c)| c.by == MaskBy::Fisher)
        .map(|(_, c)| c.calib)
        .max()
        .unwrap_or(0)
}

/// Batches the masks read before the first step: FishMask's calibration,
/// one per step of a dense warm-up.
pub fn calibration_batches(plan: &Plan) -> usize {
    let warm = masks(plan)
        .filter(|(_, c)| c.by.warms_up())
        .map(|(_, c)| c.warmup_steps)
        .max()
        .unwrap_or(0);
    fisher_batches(plan).max(warm)
}

/// Refuses a calibration longer than one pass over the training data, and
/// a warm-up as long as the run.
pub fn check_run(
    plan: &Plan,
    total: usize,
    batches_per_epoch: usize,
) -> std::result::Result<(), String> {
    if let Some(w) = masks(plan)
        .filter(|(_, c)| c.by.warms_up())
        .map(|(_, c)| c.warmup_steps)
        .max()
        && w >= total
    {
        return Err(format!(
            "the mask's dense warm-up of `warmup_steps = {w}` is as long as the run's {total} steps; train for more steps or lower `warmup_steps`"
        ));
    }
    let calib = fisher_batches(plan);
    if calib > batches_per_epoch {
        return Err(format!(
            "`mask(by=fisher, calib={calib})` asks for {calib} calibration batches, but the training data holds {batches_per_epoch}; lower `calib` or the batch size"
        ));
    }
    Ok(())
}

/// FishMask: sums each fisher mask's squared weight gradient over
/// `batches` (the model frozen but for a zero probe per site, no dropout)
/// and keeps the largest. Other masks are left as they are.
pub fn calibrate<B: AutodiffBackend + PeftKernels>(
    model: &PeftModel<B>,
    store: &mut ParamStore,
    batches: &[Batch],
    device: &B::Device,
) -> Result<()> {
    let fisher: Vec<(&Site, MaskSelect)> = masks(&model.plan)
        .filter(|(_, c)| c.by == MaskBy::Fisher)
        .map(|(s, c)| (s, c.select(s)))
        .collect();
    if fisher.is_empty() || batches.is_empty() {
        return Ok(());
    }
    let batches = &batches[..fisher_batches(&model.plan).min(batches.len())];
    let mut probe = ParamStore {
        values: store.values.clone(),
        frozen: store.values.keys().cloned().collect(),
    };
    for (s, sel) in &fisher {
        probe.values.insert(
            probe_name(&s.module),
            HostTensor::zeros(vec![sel.out_f, sel.in_f]),
        );
    }
    let mut scores: BTreeMap<String, Vec<f32>> = BTreeMap::new();
    for batch in batches {
        for (name, g) in super::batch_grads(model, &probe, batch, device)? {
            let acc = scores
                .entry(name)
                .or_insert_with(|| vec![0.0; g.data.len()]);
            acc.iter_mut().zip(&g.data).for_each(|(a, v)| *a += v * v);
        }
    }
    for (s, sel) in &fisher {
        let score = scores.get(&probe_name(&s.module)).ok_or_else(|| {
            RuntimeError::Internal(format!("no calibration gradient at `{}`", s.module))
        })?;
        if let Some(t) = store.values.get_mut(&index_name(&s.module)) {
            t.data = pick(sel, score);
        }
    }
    Ok(())
}

/// `W[r, c] += v` at every selected position.
pub fn merge(c: &MaskConfig, site: &Site, w: &mut HostTensor, store: &ParamStore) -> Result<()> {
    let m = &site.module;
    let values = super::trained(store, &values_name(m))?;
    let index = super::trained(store, &index_name(m))?;
    let (o, i) = (site.out_dim, site.in_dim);
    let at: Vec<usize> = index.data.iter().map(|&v| v as usize).collect();
    match c.structure {
        MaskStructure::Element => {
            for (pair, v) in at.chunks_exact(2).zip(&values.data) {
                w.data[pair[0] * i + pair[1]] += v;
            }
        }
        MaskStructure::Row => {
            for (&r, row) in at.iter().zip(values.data.chunks_exact(i)) {
                w.data[r * i..(r + 1) * i]
                    .iter_mut()
                    .zip(row)
                    .for_each(|(x, v)| *x += v);
            }
        }
        MaskStructure::Column => {
            let k = at.len();
            for r in 0..o {
                for (j, &col) in at.iter().enumerate() {
                    w.data[r * i + col] += values.data[r * k + j];
                }
            }
        }
    }
    Ok(())
}

/// Every mask's positions in `store` (an adapter or checkpoint just read)
/// are whole numbers inside the weight, strictly ascending.
pub fn check_loaded(plan: &Plan, store: &ParamStore) -> std::result::Result<(), String> {
    for (s, c) in masks(plan) {
        let name = index_name(&s.module);
        let Some(t) = store.get(&name) else { continue };
        let (o, i) = (s.out_dim, s.in_dim);
        let flat: Vec<f64> = match c.structure {
            MaskStructure::Element => t
                .data
                .chunks_exact(2)
                .map(|p| {
                    if p[0] < 0.0 || p[0] >= o as f32 || p[1] < 0.0 || p[1] >= i as f32 {
                        f64::NAN
                    } else {
                        p[0] as f64 * i as f64 + p[1] as f64
                    }
                })
                .collect(),
            MaskStructure::Row | MaskStructure::Column => {
                let limit = if c.structure == MaskStructure::Row {
                    o
                } else {
                    i
                };
                t.data
                    .iter()
                    .map(|&v| {
                        if v < 0.0 || v >= limit as f32 {
                            f64::NAN
                        } else {
                            v as f64
                        }
                    })
                    .collect()
            }
        };
        let whole = t.data.iter().all(|v| v.fract() == 0.0);
        if let Some(e) = flat.iter().position(|v| v.is_nan()) {
            return Err(format!(
                "tensor `{name}` holds a position outside the [{o}, {i}] weight (entry {e})"
            ));
        }
        if !whole {
            return Err(format!(
                "tensor `{name}` holds a position that is not a whole number"
            ));
        }
        if let Some(e) = flat.windows(2).position(|w| w[1] <= w[0]) {
            return Err(format!(
                "tensor `{name}`'s positions are not strictly ascending (entries {e} and {})",
                e + 1
            ));
        }
    }
    Ok(())
}

/// What the dense warm-up trains with: the run's learning rate and seed.
#[derive(Debug, Clone, Copy)]
pub struct WarmUp {
    pub lr: f64,
    pub seed: u64,
}

/// LT-SFT and diff pruning: trains a dense delta per mask (diff pruning's
/// under its hard-concrete gate, the L0 penalty's weight raised or lowered
/// each step until the expected density is the target) with everything
/// else the run trains, one step per batch; then keeps each mask's
/// largest entries — LT-SFT those that moved most, rewinding everything to
/// its start; diff pruning the largest gated deltas, with their values and
/// the rest of the warm-up's training.
pub fn warm_up<B: AutodiffBackend + PeftKernels>(
    model: &PeftModel<B>,
    store: &mut ParamStore,
    batches: &[Batch],
    w: WarmUp,
    device: &B::Device,
) -> Result<()> {
    let sites: Vec<(&Site, &MaskConfig, MaskSelect)> = masks(&model.plan)
        .filter(|(_, c)| c.by.warms_up())
        .map(|(s, c)| (s, c, c.select(s)))
        .collect();
    let Some(steps) = sites.iter().map(|(_, c, _)| c.warmup_steps).max() else {
        return Ok(());
    };
    if batches.is_empty() {
        return Ok(());
    }
    let mut warm = store.clone();
    for (s, c, sel) in &sites {
        let (o, i) = (sel.out_f, sel.in_f);
        warm.frozen.insert(values_name(&s.module));
        warm.values
            .insert(probe_name(&s.module), HostTensor::zeros(vec![o, i]));
        if c.by == MaskBy::DiffPruning {
            // log α = 3: every gate starts nearly surely open.
            warm.values.insert(
                gate_name(&s.module),
                HostTensor::new(vec![o, i], vec![3.0; o * i]),
            );
            warm.values
                .insert(noise_name(&s.module), HostTensor::zeros(vec![o, i]));
            warm.frozen.insert(noise_name(&s.module));
        }
    }
    let diff: Vec<&(&Site, &MaskConfig, MaskSelect)> = sites
        .iter()
        .filter(|(_, c, _)| c.by == MaskBy::DiffPruning)
        .collect();
    let target: f64 = diff.iter().map(|(_, _, sel)| sel.count as f64).sum::<f64>()
        / diff
            .iter()
            .map(|(_, _, sel)| (sel.out_f * sel.in_f) as f64)
            .sum::<f64>()
            .max(1.0);
    let mut l0 = 1.0f64;
    let mut last_density = None;
    let mut adam = crate::train::optim::AdamW::new(0.0);
    for step in 0..steps {
        let batch = &batches[step % batches.len()];
        for (s, _, _) in &diff {
            let t = warm
                .values
                .get_mut(&noise_name(&s.module))
                .ok_or_else(|| RuntimeError::Internal("diff pruning noise".into()))?;
            let k = key(&[
                w.seed,
                0xD1FF,
                step as u64,
                crate::model::params::name_hash(&s.module),
            ]);
            crate::rng::uniforms(k, 0, &mut t.data);
            t.data
                .iter_mut()
                .for_each(|u| *u = u.clamp(1e-6, 1.0 - 1e-6));
        }
        let params = Params::<B>::tracked(&warm, device);
        let ctx = model.ctx(batch, true, key(&[w.seed, 0x1755, step as u64]));
        let out = model.forward_for_loss(batch, &params, &ctx)?;
        let mut loss = model.training_loss(&out, batch, &params)?;
        drop(out);
        let mut density = None;
        if !diff.is_empty() {
            let mut open = Vec::new();
            for (s, _, _) in &diff {
                open.push(open_probability(params.get(&gate_name(&s.module))?).mean());
            }
            let open = Tensor::cat(open, 0).mean();
            density = Some(crate::train::host(open.clone())[0] as f64);
            loss = loss + open.mul_scalar(l0);
        }
        let value = crate::train::host(loss.clone())[0];
        if !value.is_finite() {
            return Err(RuntimeError::NonFinite {
                step,
                what: format!("the mask's dense warm-up loss became {value}"),
            });
        }
        let grads = params.grads(&loss.backward(), &warm);
        adam.step(&mut warm.values, &grads, w.lr as f32);
        // Anneal the penalty toward the target density.
        if let Some(d) = density {
            l0 *= if d > target { 1.1 } else { 1.0 / 1.1 };
            last_density = Some(d);
        }
    }
    if let Some(d) = last_density {
        eprintln!(
            "diff pruning: expected gate density {d:.4} after {steps} warm-up steps (target {target:.4}); keeping the largest gated entries"
        );
    }
    for (s, c, sel) in &sites {
        let probe = warm
            .get(&probe_name(&s.module))
            .ok_or_else(|| RuntimeError::Internal("warm-up probe".into()))?;
        let delta: Vec<f32> = match c.by {
            MaskBy::DiffPruning => {
                let g = warm
                    .get(&gate_name(&s.module))
                    .ok_or_else(|| RuntimeError::Internal("warm-up gate".into()))?;
                // The gate's mean: its sample at the noise's median.
                probe
                    .data
                    .iter()
                    .zip(&g.data)
                    .map(|(&v, &a)| {
                        let z = (1.0 / (1.0 + (-a as f64 / HC_BETA).exp())) * (HC_ZETA - HC_GAMMA)
                            + HC_GAMMA;
                        v * z.clamp(0.0, 1.0) as f32
                    })
                    .collect()
            }
            _ => probe.data.clone(),
        };
        let scores: Vec<f32> = delta.iter().map(|v| v * v).collect();
        let index = pick(sel, &scores);
        if c.by == MaskBy::DiffPruning {
            let values = gather(sel, &index, &delta);
            if let Some(t) = warm.values.get_mut(&values_name(&s.module)) {
                t.data = values;
            }
        }
        if let Some(t) = store.values.get_mut(&index_name(&s.module)) {
            t.data = index.clone();
        }
        if let Some(t) = warm.values.get_mut(&index_name(&s.module)) {
            t.data = index;
        }
    }
    // Diff pruning goes on from its warm-up: its masks' values, and the
    // rest of what trained unless an LT-SFT mask rewinds the run (`store`
    // keeps its starting values, with the new positions).
    let rewinds = sites.iter().any(|(_, c, _)| c.by == MaskBy::LtSft);
    for (k, v) in &warm.values {
        let diff_values = diff.iter().any(|(s, _, _)| *k == values_name(&s.module));
        let other = !rewinds && !sites.iter().any(|(s, _, _)| *k == values_name(&s.module));
        if (diff_values || (other && !diff.is_empty()))
            && let Some(t) = store.values.get_mut(k)
        {
            *t = v.clone();
        }
    }
    Ok(())
}

/// The values of `delta` (`[out · in]`) at the positions `index` holds, in
/// the layout of the mask's values tensor.
fn gather(sel: &MaskSelect, index: &[f32], delta: &[f32]) -> Vec<f32> {
    let i = sel.in_f;
    let at: Vec<usize> = index.iter().map(|&v| v as usize).collect();
    match sel.structure {
        MaskStructure::Element => at.chunks_exact(2).map(|p| delta[p[0] * i + p[1]]).collect(),
        MaskStructure::Row => at
            .iter()
            .flat_map(|&r| delta[r * i..(r + 1) * i].iter().copied())
            .collect(),
        MaskStructure::Column => (0..sel.out_f)
            .flat_map(|r| at.iter().map(move |&c| delta[r * i + c]))
            .collect(),
    }
}

/// A random mask of `r·(in + out)` entries per layer as Hugging Face PEFT's
/// SHiRA: `shira_weight [k]` (the values) and `shira_indices [2, k]` (rows,
/// then columns; HF reads them row-major sorted, as peftc keeps them).
pub struct Hf;

fn shira_r(plan: &Plan) -> Option<usize> {
    masks(plan).find_map(|(_, c)| c.r)
}

impl super::hf::HfForm for Hf {
    fn peft_type(&self) -> &'static str {
        "SHIRA"
    }

    fn config(
        &self,
        plan: &Plan,
        _info: &super::hf::ExportInfo<'_>,
    ) -> serde_json::Map<String, serde_json::Value> {
        use serde_json::json;
        let mut c = serde_json::Map::new();
        c.insert("r".into(), json!(shira_r(plan)));
        c.insert("mask_type".into(), json!("random"));
        c.insert("random_seed".into(), serde_json::Value::Null);
        c.insert("fan_in_fan_out".into(), json!(false));
        c.insert("init_weights".into(), json!(true));
        c.insert(
            "target_modules".into(),
            json!(crate::adapter::hf::targets_regex(plan, |_| true)),
        );
        c
    }

    fn check(&self, plan: &Plan, cfg: &serde_json::Value) -> std::result::Result<(), String> {
        let r = cfg["r"].as_u64().map(|r| r as usize);
        if r != shira_r(plan) {
            return Err(format!(
                "has r {}, the spec's mask has r={}",
                crate::adapter::hf::config::shown(&cfg["r"]),
                shira_r(plan).unwrap_or(0)
            ));
        }
        crate::adapter::hf::config::check_targets(plan, cfg, "target_modules", |_| true)
    }

    fn export(
        &self,
        plan: &Plan,
        values: &BTreeMap<String, HostTensor>,
    ) -> Option<Result<BTreeMap<String, HostTensor>>> {
        let mut t = values.clone();
        for (s, _) in masks(plan) {
            let m = &s.module;
            if let (Some(v), Some(idx)) = (t.remove(&values_name(m)), t.remove(&index_name(m))) {
                let k = v.data.len();
                let rows = idx.data.iter().step_by(2).copied();
                let cols = idx.data.iter().skip(1).step_by(2).copied();
                let pairs: Vec<f32> = rows.chain(cols).collect();
                t.insert(
                    site_name(m, "shira_weight"),
                    HostTensor::new(vec![k], v.data),
                );
                t.insert(
                    site_name(m, "shira_indices"),
                    HostTensor::new(vec![2, k], pairs),
                );
            }
        }
        Some(crate::adapter::hf::names::export_default(plan, &t, self))
    }

    fn import(
        &self,
        plan: &Plan,
        tensors: &BTreeMap<String, HostTensor>,
        dir: &std::path::Path,
    ) -> Option<Result<BTreeMap<String, HostTensor>>> {
        Some((|| {
            let mut t =
                crate::adapter::hf::names::import_default(plan, tensors.clone(), self, dir)?;
            for (s, _) in masks(plan) {
                let m = &s.module;
                let (Some(v), Some(idx)) = (
                    t.remove(&site_name(m, "shira_weight")),
                    t.remove(&site_name(m, "shira_indices")),
                ) else {
                    continue;
                };
                let k = v.data.len();
                if idx.data.len() != 2 * k {
                    return Err(RuntimeError::Tensor {
                        file: dir.join("adapter_model.safetensors"),
                        tensor: format!("{m}.shira_indices"),
                        what: format!(
                            "has shape {:?}; its shira_weight holds {k} values, so [2, {k}]",
                            idx.shape
                        ),
                    });
                }
                let pairs: Vec<f32> = (0..k)
                    .flat_map(|e| [idx.data[e], idx.data[k + e]])
                    .collect();
                t.insert(values_name(m), HostTensor::new(vec![k], v.data));
                t.insert(index_name(m), HostTensor::new(vec![k, 2], pairs));
            }
            Ok(t)
        })())
    }
}
