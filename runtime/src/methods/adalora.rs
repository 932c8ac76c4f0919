//! AdaLoRA at run time: the SVD-shaped update beside a linear layer, its
//! orthogonality regularizer, the rank allocator that prunes triplets after
//! every optimizer step (HF PEFT's `RankAllocator`, step for step), the fold
//! into the weight, and HF's `ADALORA` form (tensors pruned to the kept
//! triplets, `rank_pattern` in the config).

use super::hf::HfForm;
use super::hook::{At, Hook, SiteHook, Stage};
use crate::adapter::hf::config::{check_targets, shown};
use crate::adapter::hf::names::hf_module;
use crate::adapter::hf::targets_regex;
use crate::error::{Result, RuntimeError};
use crate::kernels::PeftKernels;
use crate::model::ctx::site_id;
use crate::model::ops::linear_pt;
use crate::model::params::pname;
use crate::model::{ParamStore, Params};
use crate::weights::HostTensor;
use burn::tensor::Tensor;
use peftc_compiler::methods::{AdaloraConfig, MethodConfig};
use peftc_compiler::plan::{Plan, Site};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::path::Path;

struct AdaloraHook {
    scale: f32,
    dropout: f64,
}

pub fn hook<B: PeftKernels>(c: &AdaloraConfig) -> Hook<B> {
    Box::new(AdaloraHook {
        scale: c.scale(),
        dropout: c.dropout,
    })
}

impl<B: PeftKernels> SiteHook<B> for AdaloraHook {
    fn stage(&self) -> Stage {
        Stage::Delta
    }

    /// `y + (drop(x)·(A ⊙ E)ᵀ·Bᵀ) · alpha/(ranknum + 1e-5)`.
    fn output(&self, at: &At<B>, y: Tensor<B, 2>) -> Result<Tensor<B, 2>> {
        let (path, p) = (at.path, at.p);
        let a = p.get(&pname(path, "lora_A"))?;
        // E is `[r, 1]`: it scales A's rows.
        let e = p.get(&pname(path, "lora_E"))?;
        let b = p.get(&pname(path, "lora_B"))?;
        let xd = at.ctx.dropout(
            at.x.clone(),
            self.dropout,
            site_id(&format!("{path}.lora_dropout")),
        );
        let u = linear_pt(xd, a * e, None);
        Ok(y + linear_pt(u, b, None).mul_scalar(self.scale))
    }
}

/// The AdaLoRA sites of the plan with their configuration.
fn sites(plan: &Plan) -> Vec<(&Site, &AdaloraConfig)> {
    plan.sites
        .iter()
        .filter_map(|s| match &s.method {
            MethodConfig::Adalora(c) => Some((s, c)),
            _ => None,
        })
        .collect()
}

/// HF's orthogonality regularizer, weighted: `w · mean over every A and B of
/// ‖P Pᵀ − I‖_F` (`A Aᵀ` and `Bᵀ B`, both `[r, r]`).
pub fn regularizer<B: PeftKernels>(plan: &Plan, p: &Params<B>) -> Result<Option<Tensor<B, 1>>> {
    let all = sites(plan);
    let Some((_, c)) = all.first() else {
        return Ok(None);
    };
    let mut total: Option<Tensor<B, 1>> = None;
    let mut n = 0usize;
    for (s, c) in &all {
        let a = p.get(&pname(&s.module, "lora_A"))?;
        let b = p.get(&pname(&s.module, "lora_B"))?;
        let device = a.device();
        let eye = Tensor::<B, 2>::eye(c.init_r, &device);
        for cov in [
            a.clone().matmul(a.transpose()),
            b.clone().transpose().matmul(b),
        ] {
            let f = (cov - eye.clone()).powf_scalar(2.0).sum().sqrt();
            total = Some(match total {
                None => f,
                Some(t) => t + f,
            });
            n += 1;
        }
    }
    Ok(total.map(|t| t.div_scalar(n as f64).mul_scalar(c.orth_reg_weight)))
}

/// Refuses a run of `total` steps that leaves AdaLoRA no steps to prune in
/// (HF's `tinit < total_step - tfinal`).
pub fn check_run(plan: &Plan, total: usize) -> std::result::Result<(), String> {
    match sites(plan).first() {
        Some((_, c)) if c.tinit + c.tfinal >= total => Err(format!(
            "AdaLoRA's `tinit = {}` and `tfinal = {}` leave none of the run's {total} steps to prune in; \
             train for more than {} steps or lower them",
            c.tinit,
            c.tfinal,
            c.tinit + c.tfinal
        )),
        _ => Ok(()),
    }
}

/// The budget (triplets kept) at `step` and whether to prune there: full
/// until `tinit`, the target after `total - tfinal`, a cubic decay between,
/// pruning every `delta_t` steps (HF's `budget_schedule`).
fn budget(
    c: &AdaloraConfig,
    init: usize,
    target: usize,
    step: usize,
    total: usize,
) -> (usize, bool) {
    if step <= c.tinit {
        return (init, false);
    }
    if step + c.tfinal > total {
        return (target, true);
    }
    let span = (total - c.tfinal - c.tinit) as f64;
    let mul = 1.0 - (step - c.tinit) as f64 / span;
    let b = ((init - target) as f64 * mul.powi(3) + target as f64) as usize;
    (b, step.is_multiple_of(c.delta_t))
}

/// The key of the allocator's state for tensor `name` (`kind`: `ipt_bar`,
/// the smoothed sensitivity, or `unc_bar`, its uncertainty), kept between
/// steps in `AdamW::extra` and checkpointed with the optimizer's state.
fn key(kind: &str, name: &str) -> String {
    format!("adalora.{kind}.{name}")
}

/// After the optimizer's update at `step` (of `total`), with that step's
/// gradients: HF's `update_and_allocate(step)`.
pub fn after_update(
    plan: &Plan,
    step: usize,
    total: usize,
    store: &mut ParamStore,
    grads: &BTreeMap<String, HostTensor>,
    state: &mut BTreeMap<String, Vec<f32>>,
) -> Result<()> {
    let all: Vec<(String, AdaloraConfig)> = sites(plan)
        .into_iter()
        .map(|(s, c)| (s.module.clone(), c.clone()))
        .collect();
    let Some((_, c)) = all.first() else {
        return Ok(());
    };
    let c = c.clone();
    let end = total.saturating_sub(c.tfinal);
    let init: usize = all.iter().map(|(_, c)| c.init_r).sum();
    let target = c.target_r * all.len();
    if step < end {
        update_importance(&all, store, grads, state, &c)?;
        let (b, prune) = budget(&c, init, target, step, total);
        if prune {
            mask_to_budget(&all, store, state, init - b)?;
        }
    } else if step == end {
        mask_to_budget(&all, store, state, init - target)?;
        state.retain(|k, _| !k.starts_with("adalora."));
    } else {
        // The pattern is fixed: pruned triplets stay zero.
        for (m, _) in &all {
            let pattern = trained(store, &pname(m, "rank_pattern"))?.data.clone();
            let e = store
                .values
                .get_mut(&pname(m, "lora_E"))
                .ok_or_else(|| RuntimeError::Internal(format!("{m}: no lora_E")))?;
            for (v, keep) in e.data.iter_mut().zip(&pattern) {
                if *keep == 0.0 {
                    *v = 0.0;
                }
            }
        }
    }
    Ok(())
}

fn trained<'a>(store: &'a ParamStore, name: &str) -> Result<&'a HostTensor> {
    store
        .get(name)
        .ok_or_else(|| RuntimeError::Internal(format!("AdaLoRA tensor `{name}` is missing")))
}

/// `ipt = |p·g|`, `ipt̄ = β1·ipt̄ + (1−β1)·ipt`, `ū = β2·ū + (1−β2)·|ipt − ipt̄|`,
/// in f32 as torch computes them.
fn update_importance(
    all: &[(String, AdaloraConfig)],
    store: &ParamStore,
    grads: &BTreeMap<String, HostTensor>,
    state: &mut BTreeMap<String, Vec<f32>>,
    c: &AdaloraConfig,
) -> Result<()> {
    let (b1, b2) = (c.beta1 as f32, c.beta2 as f32);
    let (c1, c2) = ((1.0 - c.beta1) as f32, (1.0 - c.beta2) as f32);
    for (m, _) in all {
        for t in ["lora_A", "lora_E", "lora_B"] {
            let name = pname(m, t);
            let p = trained(store, &name)?;
            let g = grads.get(&name).ok_or_else(|| {
                RuntimeError::Internal(format!("AdaLoRA: no gradient for `{name}`"))
            })?;
            let n = p.numel();
            let bar = state
                .entry(key("ipt_bar", &name))
                .or_insert_with(|| vec![0.0; n]);
            let mut ipt = vec![0f32; n];
            for i in 0..n {
                ipt[i] = (p.data[i] * g.data[i]).abs();
                bar[i] = b1 * bar[i] + c1 * ipt[i];
            }
            let bar = bar.clone();
            let unc = state
                .entry(key("unc_bar", &name))
                .or_insert_with(|| vec![0.0; n]);
            for i in 0..n {
                unc[i] = b2 * unc[i] + c2 * (ipt[i] - bar[i]).abs();
            }
        }
    }
    Ok(())
}

/// Zeroes the `k` least important triplets' E (ties at the threshold go
/// too, as in HF) and records each layer's pattern.
fn mask_to_budget(
    all: &[(String, AdaloraConfig)],
    store: &mut ParamStore,
    state: &BTreeMap<String, Vec<f32>>,
    k: usize,
) -> Result<()> {
    let score = |name: &str| -> Result<Vec<f32>> {
        let bar = state
            .get(&key("ipt_bar", name))
            .ok_or_else(|| RuntimeError::Internal(format!("AdaLoRA: no importance of `{name}`")))?;
        let unc = state.get(&key("unc_bar", name)).ok_or_else(|| {
            RuntimeError::Internal(format!("AdaLoRA: no uncertainty of `{name}`"))
        })?;
        Ok(bar.iter().zip(unc).map(|(a, b)| a * b).collect())
    };
    let mut triplets: Vec<(String, Vec<f32>)> = Vec::new();
    for (m, c) in all {
        let r = c.init_r;
        let (a, e, b) = (
            score(&pname(m, "lora_A"))?,
            score(&pname(m, "lora_E"))?,
            score(&pname(m, "lora_B"))?,
        );
        let inp = a.len() / r;
        let out = b.len() / r;
        let s: Vec<f32> = (0..r)
            .map(|i| {
                let ma = a[i * inp..(i + 1) * inp].iter().sum::<f32>() / inp as f32;
                let mb = (0..out).map(|o| b[o * r + i]).sum::<f32>() / out as f32;
                e[i] + (ma + mb)
            })
            .collect();
        triplets.push((m.clone(), s));
    }
    if k == 0 {
        return Ok(());
    }
    let mut all_scores: Vec<f32> = triplets
        .iter()
        .flat_map(|(_, s)| s.iter().copied())
        .collect();
    all_scores.sort_by(|a, b| a.total_cmp(b));
    let threshold = all_scores[(k - 1).min(all_scores.len() - 1)];
    for (m, s) in &triplets {
        let keep: Vec<f32> = s
            .iter()
            .map(|v| if *v <= threshold { 0.0 } else { 1.0 })
            .collect();
        let e = store
            .values
            .get_mut(&pname(m, "lora_E"))
            .ok_or_else(|| RuntimeError::Internal(format!("{m}: no lora_E")))?;
        for (v, kp) in e.data.iter_mut().zip(&keep) {
            if *kp == 0.0 {
                *v = 0.0;
            }
        }
        if let Some(p) = store.values.get_mut(&pname(m, "rank_pattern")) {
            p.data = keep;
        }
    }
    Ok(())
}

/// `W += B·(A ⊙ E) · alpha/(ranknum + 1e-5)`.
pub fn merge(c: &AdaloraConfig, site: &Site, w: &mut HostTensor, store: &ParamStore) -> Result<()> {
    let m = &site.module;
    let (a, e, b) = (
        trained(store, &pname(m, "lora_A"))?,
        trained(store, &pname(m, "lora_E"))?,
        trained(store, &pname(m, "lora_B"))?,
    );
    let (out, inp, r) = (w.rows(), w.cols(), c.init_r);
    let s = c.scale();
    for o in 0..out {
        for k in 0..r {
            let f = b.data[o * r + k] * e.data[k] * s;
            if f != 0.0 {
                for (x, av) in w.data[o * inp..(o + 1) * inp]
                    .iter_mut()
                    .zip(&a.data[k * inp..(k + 1) * inp])
                {
                    *x += f * av;
                }
            }
        }
    }
    Ok(())
}

/// AdaLoRA's Hugging Face PEFT form.
pub struct Hf;

fn config_of(plan: &Plan) -> Option<&AdaloraConfig> {
    sites(plan).first().map(|(_, c)| *c)
}

/// The HF key of a site's `rank_pattern` entry.
fn pattern_key(plan: &Plan, s: &Site) -> String {
    format!("{}.lora_E", hf_module(plan, &s.module))
}

impl HfForm for Hf {
    fn peft_type(&self) -> &'static str {
        "ADALORA"
    }

    fn config(&self, plan: &Plan, info: &super::hf::ExportInfo<'_>) -> Map<String, Value> {
        let mut c = Map::new();
        let Some(a) = config_of(plan) else {
            return c;
        };
        c.insert("init_r".into(), json!(a.init_r));
        c.insert("target_r".into(), json!(a.target_r));
        c.insert("lora_alpha".into(), json!(a.alpha));
        c.insert("lora_dropout".into(), json!(a.dropout));
        c.insert("tinit".into(), json!(a.tinit));
        c.insert("tfinal".into(), json!(a.tfinal));
        c.insert("deltaT".into(), json!(a.delta_t));
        c.insert("beta1".into(), json!(a.beta1));
        c.insert("beta2".into(), json!(a.beta2));
        c.insert("orth_reg_weight".into(), json!(a.orth_reg_weight));
        // HF requires it (its budget schedule's length): the run's steps.
        let total = info
            .trained_steps
            .or(plan.train.as_ref().and_then(|t| t.max_steps))
            .unwrap_or(a.tinit + a.tfinal + 1)
            .max(a.tinit + a.tfinal + 1);
        c.insert("total_step".into(), json!(total));
        // HF writes the pattern once the allocator has pruned, `null` before.
        let mut pattern = Map::new();
        for (s, _) in sites(plan) {
            if let Some(p) = info.values.get(&pname(&s.module, "rank_pattern"))
                && p.data.contains(&0.0)
            {
                let keep: Vec<bool> = p.data.iter().map(|&k| k != 0.0).collect();
                pattern.insert(pattern_key(plan, s), json!(keep));
            }
        }
        let pattern = if pattern.is_empty() {
            Value::Null
        } else {
            // Every module is listed once any is pruned.
            for (s, c) in sites(plan) {
                pattern
                    .entry(pattern_key(plan, s))
                    .or_insert_with(|| json!(vec![true; c.init_r]));
            }
            Value::Object(pattern)
        };
        c.insert("rank_pattern".into(), pattern);
        c.insert("r".into(), json!(8));
        c.insert("bias".into(), json!("none"));
        c.insert("fan_in_fan_out".into(), json!(false));
        c.insert("init_lora_weights".into(), json!(true));
        c.insert("use_rslora".into(), json!(false));
        c.insert("use_dora".into(), json!(false));
        c.insert(
            "target_modules".into(),
            json!(targets_regex(plan, |_| true)),
        );
        c
    }

    fn check(&self, plan: &Plan, cfg: &Value) -> std::result::Result<(), String> {
        let Some(a) = config_of(plan) else {
            return Ok(());
        };
        if cfg["init_r"].as_u64() != Some(a.init_r as u64) {
            return Err(format!(
                "has init_r {}, the spec says init_r={}",
                shown(&cfg["init_r"]),
                a.init_r
            ));
        }
        let alpha = cfg["lora_alpha"].as_f64().unwrap_or(8.0);
        if (alpha - a.alpha).abs() > 1e-9 {
            return Err(format!(
                "has lora_alpha {alpha}, the spec says alpha={}",
                a.alpha
            ));
        }
        if let Some(p) = cfg["rank_pattern"].as_object() {
            let known: Vec<String> = sites(plan)
                .iter()
                .map(|(s, _)| pattern_key(plan, s))
                .collect();
            if let Some(k) = p.keys().find(|k| !known.contains(k)) {
                return Err(format!(
                    "has a rank_pattern entry `{k}`, which names no AdaLoRA module of the spec's block"
                ));
            }
            for (k, v) in p {
                if v.as_array().map(Vec::len) != Some(a.init_r) {
                    return Err(format!(
                        "has a rank_pattern for `{k}` that is not {} booleans (init_r)",
                        a.init_r
                    ));
                }
            }
        }
        check_targets(plan, cfg, "target_modules", |_| true)
    }

    /// The kept triplets only, and the pattern that says which (HF's
    /// `resize_state_dict_by_rank_pattern`); no pattern before any pruning.
    fn export(
        &self,
        plan: &Plan,
        values: &BTreeMap<String, HostTensor>,
    ) -> Option<Result<BTreeMap<String, HostTensor>>> {
        let pruned = sites(plan).iter().any(|(s, _)| {
            values
                .get(&pname(&s.module, "rank_pattern"))
                .is_some_and(|p| p.data.contains(&0.0))
        });
        let mut kept = values.clone();
        kept.retain(|k, _| !k.ends_with(".ranknum") && !k.ends_with(".rank_pattern"));
        if pruned {
            for (s, c) in sites(plan) {
                let Some(pattern) = values.get(&pname(&s.module, "rank_pattern")) else {
                    continue;
                };
                let keep: Vec<usize> = (0..c.init_r).filter(|&i| pattern.data[i] != 0.0).collect();
                let rows = |t: &HostTensor| {
                    let cols = t.cols();
                    let data = keep
                        .iter()
                        .flat_map(|&i| t.data[i * cols..(i + 1) * cols].iter().copied())
                        .collect();
                    HostTensor::new(vec![keep.len(), cols], data)
                };
                for t in ["lora_A", "lora_E"] {
                    let n = pname(&s.module, t);
                    if let Some(v) = kept.get(&n).map(rows) {
                        kept.insert(n, v);
                    }
                }
                let n = pname(&s.module, "lora_B");
                if let Some(b) = kept.get(&n) {
                    let (out, r) = (b.rows(), b.cols());
                    let data = (0..out)
                        .flat_map(|o| keep.iter().map(move |&i| (o, i)))
                        .map(|(o, i)| b.data[o * r + i])
                        .collect();
                    kept.insert(n, HostTensor::new(vec![out, keep.len()], data));
                }
            }
        }
        Some(crate::adapter::hf::names::export_default(plan, &kept, self))
    }

    /// Tensors pruned by a `rank_pattern` go back to `init_r` rows (zeros
    /// where a triplet was pruned); `ranknum` (never saved) is `init_r`.
    fn import(
        &self,
        plan: &Plan,
        tensors: &BTreeMap<String, HostTensor>,
        dir: &Path,
    ) -> Option<Result<BTreeMap<String, HostTensor>>> {
        Some((|| {
            let cfg: Value = std::fs::read(dir.join("adapter_config.json"))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or(Value::Null);
            let mut t = tensors.clone();
            // Expand before the generic renaming checks shapes.
            let mut patterns: BTreeMap<String, Vec<f32>> = BTreeMap::new();
            for (s, c) in sites(plan) {
                let keep: Vec<bool> = match cfg["rank_pattern"][pattern_key(plan, s)].as_array() {
                    Some(v) => v.iter().map(|b| b.as_bool().unwrap_or(false)).collect(),
                    None => vec![true; c.init_r],
                };
                let prefix = format!("base_model.model.{}", hf_module(plan, &s.module));
                let idx: Vec<usize> = (0..c.init_r).filter(|&i| keep[i]).collect();
                for suffix in ["lora_A", "lora_E"] {
                    let k = format!("{prefix}.{suffix}");
                    if let Some(v) = t.get(&k)
                        && v.rows() == idx.len()
                        && idx.len() != c.init_r
                    {
                        let cols = v.cols();
                        let mut data = vec![0f32; c.init_r * cols];
                        for (j, &i) in idx.iter().enumerate() {
                            data[i * cols..(i + 1) * cols]
                                .copy_from_slice(&v.data[j * cols..(j + 1) * cols]);
                        }
                        t.insert(k, HostTensor::new(vec![c.init_r, cols], data));
                    }
                }
                let k = format!("{prefix}.lora_B");
                if let Some(v) = t.get(&k)
                    && v.cols() == idx.len()
                    && idx.len() != c.init_r
                {
                    let out = v.rows();
                    let mut data = vec![0f32; out * c.init_r];
                    for o in 0..out {
                        for (j, &i) in idx.iter().enumerate() {
                            data[o * c.init_r + i] = v.data[o * idx.len() + j];
                        }
                    }
                    t.insert(k, HostTensor::new(vec![out, c.init_r], data));
                }
                patterns.insert(
                    pname(&s.module, "rank_pattern"),
                    keep.iter().map(|&k| if k { 1.0 } else { 0.0 }).collect(),
                );
            }
            let mut out = crate::adapter::hf::names::import_default(plan, t, self, dir)?;
            for d in peftc_compiler::methods::plan_tensors(plan) {
                if d.name.ends_with(".ranknum") && !out.contains_key(&d.name) {
                    out.insert(d.name.clone(), super::regenerate(&d)?);
                }
                if let Some(p) = patterns.remove(&d.name) {
                    out.insert(d.name.clone(), HostTensor::new(d.shape.clone(), p));
                }
            }
            Ok(out)
        })())
    }
}
