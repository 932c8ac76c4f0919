//! A method's Hugging Face PEFT form: its `peft_type`, the fields it writes
//! into `adapter_config.json` and checks when reading one, and where its
//! tensors' layout in `adapter_model.safetensors` differs from the generic
//! renaming (`adapter/hf/names.rs`).

use crate::error::Result;
use crate::weights::HostTensor;
use peftc_compiler::plan::{Plan, Site};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::Path;

/// What the export knows beyond the plan.
#[derive(Debug, Clone, Copy)]
pub struct ExportInfo<'a> {
    /// The plan's trained tensors.
    pub values: &'a BTreeMap<String, HostTensor>,
    /// Optimizer steps the adapter was trained for (AdaLoRA's `total_step`).
    pub trained_steps: Option<usize>,
}

pub trait HfForm: Sync {
    /// `peft_type` in `adapter_config.json` (`LORA`, `IA3`, ...).
    fn peft_type(&self) -> &'static str;

    /// A prompt-learning method (HF keys its tensors under `base_model.`).
    fn prompt_learning(&self) -> bool {
        false
    }

    /// The method's own fields of `adapter_config.json` for `plan`.
    fn config(&self, plan: &Plan, info: &ExportInfo<'_>) -> Map<String, Value>;

    /// Those fields of a config read back, against `plan`: `Err` says which
    /// field disagrees with the spec and how.
    fn check(&self, plan: &Plan, cfg: &Value) -> std::result::Result<(), String>;

    /// The shape HF stores the site tensor `suffix` in, for peftc's `shape`.
    fn hf_shape(&self, _site: &Site, _suffix: &str, shape: &[usize]) -> Vec<usize> {
        shape.to_vec()
    }

    /// The adapter file's tensors when the generic renaming does not fit
    /// (`None`: use it).
    fn export(
        &self,
        _plan: &Plan,
        _values: &BTreeMap<String, HostTensor>,
    ) -> Option<Result<BTreeMap<String, HostTensor>>> {
        None
    }

    /// The plan's tensors from an adapter file when the generic renaming
    /// does not fit (`None`: use it).
    fn import(
        &self,
        _plan: &Plan,
        _tensors: &BTreeMap<String, HostTensor>,
        _dir: &Path,
    ) -> Option<Result<BTreeMap<String, HostTensor>>> {
        None
    }
}
