//! DyLoRA at run time: a training pass uses the first `b` ranks for a rank
//! `b` drawn from the pass's dropout key (the same for every site, and
//! reproducible from the step alone); outside training the cut rank. The
//! fold and the Hugging Face form are those of a LoRA of the cut rank.

use super::hf::HfForm;
use super::hook::{At, Hook, SiteHook, Stage};
use crate::adapter::hf::config::check_targets;
use crate::error::Result;
use crate::kernels::PeftKernels;
use crate::model::ctx::site_id;
use crate::model::ops::linear_pt;
use crate::model::params::pname;
use crate::model::{Ctx, ParamStore};
use crate::weights::HostTensor;
use burn::tensor::Tensor;
use peftc_compiler::methods::{DyloraConfig, MethodConfig};
use peftc_compiler::plan::{Plan, Site};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::Path;

struct DyloraHook {
    c: DyloraConfig,
}

pub fn hook<B: PeftKernels>(c: &DyloraConfig) -> Hook<B> {
    Box::new(DyloraHook { c: c.clone() })
}

/// The rank a pass uses: drawn uniformly from `min_r..=r` while training.
fn rank<B: PeftKernels>(c: &DyloraConfig, ctx: &Ctx<B>) -> usize {
    if !ctx.train {
        return c.rank();
    }
    let span = (c.r - c.min_r + 1) as u64;
    c.min_r + (ctx.site_key(site_id("dylora.rank")) % span) as usize
}

impl<B: PeftKernels> SiteHook<B> for DyloraHook {
    fn stage(&self) -> Stage {
        Stage::Delta
    }

    fn output(&self, at: &At<B>, y: Tensor<B, 2>) -> Result<Tensor<B, 2>> {
        let (path, p, ctx) = (at.path, at.p, at.ctx);
        let b = rank(&self.c, ctx);
        let a = p.get(&pname(path, "lora_A.weight"))?; // [r, in]
        let bm = p.get(&pname(path, "lora_B.weight"))?; // [out, r]
        let (r, i, o) = (self.c.r, a.dims()[1], bm.dims()[0]);
        let (a, bm) = if b < r {
            (a.slice([0..b, 0..i]), bm.slice([0..o, 0..b]))
        } else {
            (a, bm)
        };
        let xd = ctx.dropout(
            at.x.clone(),
            self.c.dropout,
            site_id(&format!("{path}.lora_dropout")),
        );
        let u = linear_pt(xd, a, None).mul_scalar(self.c.scale(b));
        Ok(y + linear_pt(u, bm, None))
    }
}

/// `W += alpha/K · B[:, :K] · A[:K]` at the cut rank `K`.
pub fn merge(c: &DyloraConfig, site: &Site, w: &mut HostTensor, store: &ParamStore) -> Result<()> {
    let m = &site.module;
    let a = super::trained(store, &pname(m, "lora_A.weight"))?;
    let b = super::trained(store, &pname(m, "lora_B.weight"))?;
    super::fold_low_rank(w, a, b, c.rank(), c.scale(c.rank()) as f32);
    Ok(())
}

/// DyLoRA cut to its rank `K` as Hugging Face PEFT's LoRA of rank `K`.
pub struct Hf;

fn config_of(plan: &Plan) -> Option<&DyloraConfig> {
    plan.sites.iter().find_map(|s| match &s.method {
        MethodConfig::Dylora(c) => Some(c),
        _ => None,
    })
}

fn sites(plan: &Plan) -> impl Iterator<Item = (&Site, &DyloraConfig)> {
    plan.sites.iter().filter_map(|s| match &s.method {
        MethodConfig::Dylora(c) => Some((s, c)),
        _ => None,
    })
}

/// The first `k` rows of `[r, in]`, or columns of `[out, r]`.
fn first(t: &HostTensor, k: usize, rows: bool) -> HostTensor {
    let (n, m) = (t.rows(), t.cols());
    if rows {
        HostTensor::new(vec![k, m], t.data[..k * m].to_vec())
    } else {
        let data = (0..n)
            .flat_map(|o| t.data[o * m..o * m + k].iter().copied())
            .collect();
        HostTensor::new(vec![n, k], data)
    }
}

/// `[k, in]` rows (or `[out, k]` columns) back to rank `r`, zeros beyond.
fn widen(t: &HostTensor, r: usize, rows: bool) -> HostTensor {
    let (n, m) = (t.rows(), t.cols());
    if rows {
        let mut data = t.data.clone();
        data.resize(r * m, 0.0);
        HostTensor::new(vec![r, m], data)
    } else {
        let mut data = vec![0f32; n * r];
        for o in 0..n {
            data[o * r..o * r + m].copy_from_slice(&t.data[o * m..(o + 1) * m]);
        }
        HostTensor::new(vec![n, r], data)
    }
}

impl HfForm for Hf {
    fn peft_type(&self) -> &'static str {
        "LORA"
    }

    /// A LoRA's fields at the cut rank.
    fn config(&self, plan: &Plan, _info: &super::hf::ExportInfo<'_>) -> Map<String, Value> {
        let Some(d) = config_of(plan) else {
            return Map::new();
        };
        let as_lora = peftc_compiler::methods::LoraConfig {
            r: d.rank(),
            alpha: d.alpha,
            dropout: d.dropout,
            rslora: false,
            init: peftc_compiler::methods::LoraInit::Default,
            bias: peftc_compiler::methods::BiasMode::None,
            dora: false,
        };
        super::lora::fields(plan, &as_lora)
    }

    fn check(&self, plan: &Plan, cfg: &Value) -> std::result::Result<(), String> {
        let Some(d) = config_of(plan) else {
            return Ok(());
        };
        let alpha = cfg["lora_alpha"].as_f64().unwrap_or(8.0);
        if (alpha - d.alpha).abs() > 1e-9 {
            return Err(format!(
                "has lora_alpha {alpha}, the spec says alpha={}",
                d.alpha
            ));
        }
        let r = cfg["r"].as_u64().unwrap_or(8) as usize;
        if r != d.rank() {
            return Err(format!(
                "has r {r}; the spec's dylora is read at rank {} (pass `--rank {r}` to read this one)",
                d.rank()
            ));
        }
        if cfg["rank_pattern"]
            .as_object()
            .is_some_and(|m| !m.is_empty())
        {
            return Err("has a per-module rank_pattern; a cut dylora has one rank".into());
        }
        check_targets(plan, cfg, "target_modules", |_| true)
    }

    fn export(
        &self,
        plan: &Plan,
        values: &BTreeMap<String, HostTensor>,
    ) -> Option<Result<BTreeMap<String, HostTensor>>> {
        let mut cut = values.clone();
        for (s, c) in sites(plan) {
            for (suffix, rows) in [("lora_A.weight", true), ("lora_B.weight", false)] {
                let n = pname(&s.module, suffix);
                if let Some(t) = values.get(&n) {
                    cut.insert(n, first(t, c.rank(), rows));
                }
            }
        }
        Some(crate::adapter::hf::names::export_default(plan, &cut, self))
    }

    fn import(
        &self,
        plan: &Plan,
        tensors: &BTreeMap<String, HostTensor>,
        dir: &Path,
    ) -> Option<Result<BTreeMap<String, HostTensor>>> {
        let mut t = tensors.clone();
        for (s, c) in sites(plan) {
            let prefix = format!(
                "base_model.model.{}",
                crate::adapter::hf::names::hf_module(plan, &s.module)
            );
            for (suffix, rows) in [("lora_A.weight", true), ("lora_B.weight", false)] {
                let k = format!("{prefix}.{suffix}");
                if let Some(v) = t.get(&k) {
                    let at = if rows { v.rows() } else { v.cols() };
                    if at == c.rank() && at < c.r {
                        let w = widen(v, c.r, rows);
                        t.insert(k, w);
                    }
                }
            }
        }
        Some(crate::adapter::hf::names::import_default(
            plan, t, self, dir,
        ))
    }
}
