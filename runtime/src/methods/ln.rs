//! LN tuning at run time: the norm reads its trained copy (`model/norm.rs`
//! asks [`super::tuned`] which tensors); merging puts the copy in place; HF
//! PEFT's `LN_TUNING` form.

use super::hf::HfForm;
use crate::adapter::hf::config::check_targets_of;
use crate::adapter::hf::targets_regex;
use crate::error::Result;
use crate::model::ParamStore;
use crate::model::params::pname;
use crate::weights::HostTensor;
use peftc_compiler::model::ModuleKind;
use peftc_compiler::plan::{Plan, Site};
use serde_json::{Map, Value, json};

/// The trained copy's tensor names at the norm `site`: weight, and bias for
/// a LayerNorm.
pub fn names(site: &Site) -> (String, Option<String>) {
    let w = pname(&site.module, "ln_tuning_layers.weight");
    let b = matches!(site.kind, ModuleKind::LayerNorm { .. })
        .then(|| pname(&site.module, "ln_tuning_layers.bias"));
    (w, b)
}

/// The copy replaces the norm's weight (and bias).
pub fn merge(
    site: &Site,
    w: &mut HostTensor,
    bias: Option<&mut HostTensor>,
    store: &ParamStore,
) -> Result<()> {
    let (wn, bn) = names(site);
    *w = super::trained(store, &wn)?.clone();
    if let (Some(bn), Some(b)) = (bn, bias) {
        *b = super::trained(store, &bn)?.clone();
    }
    Ok(())
}

/// LN tuning's Hugging Face PEFT form.
pub struct Hf;

fn is_norm(k: &ModuleKind) -> bool {
    matches!(k, ModuleKind::LayerNorm { .. } | ModuleKind::RmsNorm { .. })
}

impl HfForm for Hf {
    fn peft_type(&self) -> &'static str {
        "LN_TUNING"
    }

    fn config(&self, plan: &Plan, _info: &super::hf::ExportInfo<'_>) -> Map<String, Value> {
        let mut c = Map::new();
        c.insert(
            "target_modules".into(),
            json!(targets_regex(plan, |_| true)),
        );
        c.insert("exclude_modules".into(), Value::Null);
        c
    }

    fn check(&self, plan: &Plan, cfg: &Value) -> std::result::Result<(), String> {
        check_targets_of(plan, cfg, "target_modules", |_| true, is_norm)
    }
}
