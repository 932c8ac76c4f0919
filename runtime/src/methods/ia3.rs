//! (IA)³ at run time: a learned vector scaling a linear layer's output, or
//! its input on a feed-forward down projection, and the fold into the weight.

use super::hf::HfForm;
use super::hook::{At, Hook, SiteHook, Stage};
use super::trace;
use crate::adapter::hf::config::check_targets;
use crate::adapter::hf::targets_regex;
use crate::error::Result;
use crate::kernels::{self, PeftKernels};
use crate::model::Params;
use crate::model::params::pname;
use crate::weights::HostTensor;
use burn::tensor::Tensor;
use peftc_compiler::ir::FusedOp;
use peftc_compiler::plan::{Plan, Site};
use serde_json::{Map, Value, json};

struct Ia3Hook {
    /// Scales the input (a feed-forward down projection), else the output.
    input: bool,
    fused: bool,
}

pub fn hook<B: PeftKernels>(site: &Site) -> Hook<B> {
    Box::new(Ia3Hook {
        input: site.feedforward,
        fused: site.fusion == Some(FusedOp::Ia3Linear),
    })
}

impl Ia3Hook {
    fn scale<B: PeftKernels>(
        &self,
        path: &str,
        t: Tensor<B, 2>,
        p: &Params<B>,
    ) -> Result<Tensor<B, 2>> {
        let l = p.get(&pname(path, "ia3_l"))?;
        Ok(if self.fused {
            trace::fused(path, FusedOp::Ia3Linear);
            kernels::scale_cols(t, l)
        } else {
            t * l
        })
    }
}

impl<B: PeftKernels> SiteHook<B> for Ia3Hook {
    fn stage(&self) -> Stage {
        if self.input {
            Stage::Input
        } else {
            Stage::Output
        }
    }

    fn input(&self, x: Tensor<B, 2>, path: &str, p: &Params<B>) -> Result<Tensor<B, 2>> {
        self.scale(path, x, p)
    }

    fn output(&self, at: &At<B>, y: Tensor<B, 2>) -> Result<Tensor<B, 2>> {
        self.scale(at.path, y, at.p)
    }
}

/// Folds the scale into `w: [out, in]` (its columns for an input scale, its
/// rows and the bias for an output scale).
pub fn merge(
    site: &Site,
    w: &mut HostTensor,
    bias: Option<&mut HostTensor>,
    store: &crate::model::ParamStore,
) -> Result<()> {
    let l = super::trained(store, &pname(&site.module, "ia3_l"))?;
    let (out, inp) = (w.rows(), w.cols());
    if site.feedforward {
        for o in 0..out {
            for (x, f) in w.data[o * inp..(o + 1) * inp].iter_mut().zip(&l.data) {
                *x *= f;
            }
        }
    } else {
        for o in 0..out {
            w.data[o * inp..(o + 1) * inp]
                .iter_mut()
                .for_each(|x| *x *= l.data[o]);
        }
        if let Some(b) = bias {
            b.data.iter_mut().zip(&l.data).for_each(|(x, f)| *x *= f);
        }
    }
    Ok(())
}

/// (IA)³'s Hugging Face PEFT form: `peft_type` IA3, the scale stored as a
/// column `[n, 1]` (a row `[1, n]` on feed-forward layers).
pub struct Hf;

impl HfForm for Hf {
    fn peft_type(&self) -> &'static str {
        "IA3"
    }

    fn config(&self, plan: &Plan, _info: &super::hf::ExportInfo<'_>) -> Map<String, Value> {
        let mut c = Map::new();
        let any_ff = plan.sites.iter().any(|s| s.feedforward);
        c.insert(
            "target_modules".into(),
            json!(targets_regex(plan, |_| true)),
        );
        c.insert(
            "feedforward_modules".into(),
            if any_ff {
                json!(targets_regex(plan, |s| s.feedforward))
            } else {
                json!([])
            },
        );
        c.insert("init_ia3_weights".into(), json!(true));
        c.insert("fan_in_fan_out".into(), json!(false));
        c
    }

    fn check(&self, plan: &Plan, cfg: &Value) -> std::result::Result<(), String> {
        check_targets(plan, cfg, "target_modules", |_| true)?;
        check_targets(plan, cfg, "feedforward_modules", |s| s.feedforward)
    }

    fn hf_shape(&self, site: &Site, suffix: &str, shape: &[usize]) -> Vec<usize> {
        let n: usize = shape.iter().product();
        match (suffix, site.feedforward) {
            ("ia3_l", true) => vec![1, n],
            ("ia3_l", false) => vec![n, 1],
            _ => shape.to_vec(),
        }
    }
}
