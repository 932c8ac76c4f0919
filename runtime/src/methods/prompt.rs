//! Prompt tuning at run time: the soft prompt's rows, prepended to the
//! input embeddings by the model.

use super::hf::HfForm;
use crate::adapter::hf::config::{prompt_learning_fields, virtual_tokens};
use crate::error::Result;
use crate::kernels::PeftKernels;
use crate::model::Params;
use burn::tensor::Tensor;
use peftc_compiler::methods::{MethodConfig, PromptConfig};
use peftc_compiler::plan::Plan;
use serde_json::{Map, Value, json};

/// The `[len, hidden]` virtual token embeddings.
pub fn embeddings<B: PeftKernels>(_c: &PromptConfig, p: &Params<B>) -> Result<Tensor<B, 2>> {
    p.get("prompt_embeddings")
}

/// Prompt tuning's Hugging Face PEFT form: `peft_type` PROMPT_TUNING, the
/// table stored bare as `prompt_embeddings`.
pub struct Hf;

fn config_of(plan: &Plan) -> Option<&PromptConfig> {
    plan.sites.iter().find_map(|s| match &s.method {
        MethodConfig::Prompt(c) => Some(c),
        _ => None,
    })
}

impl HfForm for Hf {
    fn peft_type(&self) -> &'static str {
        "PROMPT_TUNING"
    }

    fn prompt_learning(&self) -> bool {
        true
    }

    fn config(&self, plan: &Plan, _info: &super::hf::ExportInfo<'_>) -> Map<String, Value> {
        let d = &plan.model.dims;
        let len = config_of(plan).map(|p| p.len);
        let mut c = prompt_learning_fields(len, d.hidden, d.heads, d.layers);
        c.insert("prompt_tuning_init".into(), json!("RANDOM"));
        c
    }

    fn check(&self, plan: &Plan, cfg: &Value) -> std::result::Result<(), String> {
        match config_of(plan) {
            Some(p) => virtual_tokens(cfg, p.len),
            None => Ok(()),
        }
    }
}
