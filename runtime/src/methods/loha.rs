//! LoHa at run time: the update built from its four factors each pass,
//! `ΔW = (w1a·w1b) ⊙ (w2a·w2b) · alpha/r`, added as `x·ΔWᵀ`; the fold into
//! the weight; HF PEFT's `LOHA` form.

use super::hf::HfForm;
use super::hook::{At, Hook, SiteHook, Stage};
use crate::adapter::hf::config::{check_ranks, check_targets, shown};
use crate::error::Result;
use crate::kernels::PeftKernels;
use crate::model::ops::linear_pt;
use crate::model::params::pname;
use crate::model::{ParamStore, Params};
use crate::weights::HostTensor;
use burn::tensor::Tensor;
use peftc_compiler::methods::{LohaConfig, MethodConfig};
use peftc_compiler::plan::{Plan, Site};
use serde_json::{Map, Value, json};

struct LohaHook {
    scale: f64,
}

pub fn hook<B: PeftKernels>(c: &LohaConfig) -> Hook<B> {
    Box::new(LohaHook { scale: c.scale() })
}

fn delta<B: PeftKernels>(path: &str, scale: f64, p: &Params<B>) -> Result<Tensor<B, 2>> {
    let w = |s: &str| p.get(&pname(path, s));
    let w1 = w("hada_w1_a")?.matmul(w("hada_w1_b")?);
    let w2 = w("hada_w2_a")?.matmul(w("hada_w2_b")?);
    Ok((w1 * w2).mul_scalar(scale))
}

impl<B: PeftKernels> SiteHook<B> for LohaHook {
    fn stage(&self) -> Stage {
        Stage::Delta
    }

    fn output(&self, at: &At<B>, y: Tensor<B, 2>) -> Result<Tensor<B, 2>> {
        let dw = delta(at.path, self.scale, at.p)?;
        Ok(y + linear_pt(at.x.clone(), dw, None))
    }
}

/// `W += ((w1a·w1b) ⊙ (w2a·w2b)) · alpha/r`.
pub fn merge(c: &LohaConfig, site: &Site, w: &mut HostTensor, store: &ParamStore) -> Result<()> {
    let m = &site.module;
    let get = |s: &str| super::trained(store, &pname(m, s));
    let w1 = super::host_matmul(get("hada_w1_a")?, get("hada_w1_b")?);
    let w2 = super::host_matmul(get("hada_w2_a")?, get("hada_w2_b")?);
    let s = c.scale() as f32;
    for ((x, a), b) in w.data.iter_mut().zip(&w1.data).zip(&w2.data) {
        *x += a * b * s;
    }
    Ok(())
}

/// LoHa's Hugging Face PEFT form.
pub struct Hf;

fn config_of(plan: &Plan) -> Option<&LohaConfig> {
    plan.sites.iter().find_map(|s| match &s.method {
        MethodConfig::Loha(c) => Some(c),
        _ => None,
    })
}

impl HfForm for Hf {
    fn peft_type(&self) -> &'static str {
        "LOHA"
    }

    fn config(&self, plan: &Plan, _info: &super::hf::ExportInfo<'_>) -> Map<String, Value> {
        let mut c = super::lycoris_config(plan);
        if let Some(l) = config_of(plan) {
            c.insert("r".into(), json!(l.r));
            c.insert("alpha".into(), json!(l.alpha));
        }
        c
    }

    fn check(&self, plan: &Plan, cfg: &Value) -> std::result::Result<(), String> {
        let Some(l) = config_of(plan) else {
            return Ok(());
        };
        super::check_alpha(cfg, l.alpha)?;
        check_ranks(plan, cfg, |s| match &s.method {
            MethodConfig::Loha(c) => Some(c.r),
            _ => None,
        })?;
        if cfg["rank_dropout"].as_f64().unwrap_or(0.0) != 0.0
            || cfg["module_dropout"].as_f64().unwrap_or(0.0) != 0.0
        {
            return Err(format!(
                "has rank_dropout {} / module_dropout {}; peftc's loha trains without them",
                shown(&cfg["rank_dropout"]),
                shown(&cfg["module_dropout"])
            ));
        }
        check_targets(plan, cfg, "target_modules", |_| true)
    }
}
