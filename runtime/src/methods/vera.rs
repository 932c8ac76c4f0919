//! VeRA at run time: the shared frozen projections cut to the layer's size,
//! scaled by the layer's trained vectors; the fold into the weight; HF
//! PEFT's `VERA` form (the projections saved as `base_model.vera_A` /
//! `vera_B`, or regenerated from their seed when HF did not save them).

use super::hf::HfForm;
use super::hook::{At, Hook, SiteHook, Stage};
use crate::adapter::hf::config::{check_targets, shown};
use crate::adapter::hf::targets_regex;
use crate::error::Result;
use crate::kernels::PeftKernels;
use crate::model::ParamStore;
use crate::model::ctx::site_id;
use crate::model::ops::linear_pt;
use crate::model::params::pname;
use crate::weights::HostTensor;
use burn::tensor::Tensor;
use peftc_compiler::methods::{MethodConfig, VeraConfig};
use peftc_compiler::plan::{Plan, Site};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::path::Path;

struct VeraHook {
    r: usize,
    dropout: f64,
}

pub fn hook<B: PeftKernels>(c: &VeraConfig) -> Hook<B> {
    Box::new(VeraHook {
        r: c.r,
        dropout: c.dropout,
    })
}

impl<B: PeftKernels> SiteHook<B> for VeraHook {
    fn stage(&self) -> Stage {
        Stage::Delta
    }

    /// `y + λ_b ⊙ (B_s (λ_d ⊙ (A_s · drop(x))))`, `A_s = vera_A[:, :in]`,
    /// `B_s = vera_B[:out, :]`.
    fn output(&self, at: &At<B>, y: Tensor<B, 2>) -> Result<Tensor<B, 2>> {
        let (path, p) = (at.path, at.p);
        let (i, o, r) = (at.x.dims()[1], y.dims()[1], self.r);
        let a = p.get("vera_A")?.slice([0..r, 0..i]);
        let b = p.get("vera_B")?.slice([0..o, 0..r]);
        let xd = at.ctx.dropout(
            at.x.clone(),
            self.dropout,
            site_id(&format!("{path}.vera_dropout")),
        );
        let h = linear_pt(xd, a, None) * p.get(&pname(path, "vera_lambda_d"))?;
        Ok(y + linear_pt(h, b, None) * p.get(&pname(path, "vera_lambda_b"))?)
    }
}

/// `W += (λ_b ⊙ B_s) · (λ_d ⊙ A_s)`.
pub fn merge(c: &VeraConfig, site: &Site, w: &mut HostTensor, store: &ParamStore) -> Result<()> {
    let m = &site.module;
    let (a, b) = (
        super::trained(store, "vera_A")?,
        super::trained(store, "vera_B")?,
    );
    let lb = super::trained(store, &pname(m, "vera_lambda_b"))?;
    let ld = super::trained(store, &pname(m, "vera_lambda_d"))?;
    let (out, inp, r) = (w.rows(), w.cols(), c.r);
    let (a_cols, b_cols) = (a.cols(), b.cols());
    for o in 0..out {
        for k in 0..r {
            let f = lb.data[o] * b.data[o * b_cols + k] * ld.data[k];
            if f != 0.0 {
                let arow = &a.data[k * a_cols..k * a_cols + inp];
                for (x, av) in w.data[o * inp..(o + 1) * inp].iter_mut().zip(arow) {
                    *x += f * av;
                }
            }
        }
    }
    Ok(())
}

/// VeRA's Hugging Face PEFT form.
pub struct Hf;

fn config_of(plan: &Plan) -> Option<&VeraConfig> {
    plan.sites.iter().find_map(|s| match &s.method {
        MethodConfig::Vera(c) => Some(c),
        _ => None,
    })
}

impl HfForm for Hf {
    fn peft_type(&self) -> &'static str {
        "VERA"
    }

    fn config(&self, plan: &Plan, _info: &super::hf::ExportInfo<'_>) -> Map<String, Value> {
        let mut c = Map::new();
        if let Some(v) = config_of(plan) {
            c.insert("r".into(), json!(v.r));
            c.insert("d_initial".into(), json!(v.d_initial));
            c.insert("vera_dropout".into(), json!(v.dropout));
            c.insert("projection_prng_key".into(), json!(v.seed));
        }
        c.insert("save_projection".into(), json!(true));
        c.insert("fan_in_fan_out".into(), json!(false));
        c.insert("bias".into(), json!("none"));
        c.insert("init_weights".into(), json!(true));
        c.insert(
            "target_modules".into(),
            json!(targets_regex(plan, |_| true)),
        );
        c
    }

    fn check(&self, plan: &Plan, cfg: &Value) -> std::result::Result<(), String> {
        let Some(v) = config_of(plan) else {
            return Ok(());
        };
        if cfg["r"].as_u64() != Some(v.r as u64) {
            return Err(format!(
                "has r {}, the spec says r={}",
                shown(&cfg["r"]),
                v.r
            ));
        }
        // Without saved projections, the seed is what makes them.
        if cfg["save_projection"].as_bool() == Some(false)
            && cfg["projection_prng_key"].as_u64() != Some(v.seed)
        {
            return Err(format!(
                "has projection_prng_key {} and no saved projections; the spec says seed={}",
                shown(&cfg["projection_prng_key"]),
                v.seed
            ));
        }
        check_targets(plan, cfg, "target_modules", |_| true)
    }

    fn export(
        &self,
        plan: &Plan,
        values: &BTreeMap<String, HostTensor>,
    ) -> Option<Result<BTreeMap<String, HostTensor>>> {
        Some(
            crate::adapter::hf::names::export_default(plan, values, self).map(|mut out| {
                for p in ["vera_A", "vera_B"] {
                    if let Some(t) = out.remove(p) {
                        out.insert(format!("base_model.{p}"), t);
                    }
                }
                out
            }),
        )
    }

    fn import(
        &self,
        plan: &Plan,
        tensors: &BTreeMap<String, HostTensor>,
        dir: &Path,
    ) -> Option<Result<BTreeMap<String, HostTensor>>> {
        Some((|| {
            let mut out =
                crate::adapter::hf::names::import_default(plan, tensors.clone(), self, dir)?;
            // `save_projection=False`: regenerate them, as HF does.
            for d in peftc_compiler::methods::plan_tensors(plan) {
                if (d.name == "vera_A" || d.name == "vera_B") && !out.contains_key(&d.name) {
                    out.insert(d.name.clone(), super::regenerate(&d)?);
                }
            }
            Ok(out)
        })())
    }
}
