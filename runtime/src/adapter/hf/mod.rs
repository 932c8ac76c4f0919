//! Hugging Face PEFT adapter folders (`adapter_config.json` +
//! `adapter_model.safetensors`): reading them into a plan's parameters and
//! writing a plan's parameters out so `PeftModel.from_pretrained` loads them.

pub mod config;
pub mod names;

use crate::atomic::write_atomic;
use crate::error::{Result, RuntimeError};
use crate::weights::{HostTensor, read_safetensors_all_float, write_safetensors};
use config::task_type;
use names::hf_module;
use peftc_compiler::methods::MethodConfig;
use peftc_compiler::model::Family;
use peftc_compiler::plan::Plan;
use peftc_compiler::task::TaskKind;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;

pub fn is_hf(dir: &Path) -> bool {
    dir.join("adapter_config.json").is_file()
}

pub struct HfAdapter {
    pub config: Value,
    pub tensors: BTreeMap<String, HostTensor>,
}

pub fn read(dir: &Path) -> Result<HfAdapter> {
    let cfg_path = dir.join("adapter_config.json");
    let config: Value = serde_json::from_slice(
        &std::fs::read(&cfg_path).map_err(|e| RuntimeError::read(&cfg_path, e))?,
    )
    .map_err(|e| RuntimeError::format(&cfg_path, format!("not JSON: {e}")))?;
    let file = dir.join("adapter_model.safetensors");
    if !file.is_file() {
        return Err(RuntimeError::read(
            &file,
            "no such file (adapter_model.bin is not supported; save with safetensors)",
        ));
    }
    Ok(HfAdapter {
        config,
        tensors: read_safetensors_all_float(&file)?,
    })
}

/// The adapter's tensors under the plan's names, after checking that the
/// config describes the same method as the plan.
pub fn import(plan: &Plan, dir: &Path) -> Result<BTreeMap<String, HostTensor>> {
    let a = read(dir)?;
    config::check(plan, &a.config, dir)?;
    import_tensors(plan, a.tensors, dir)
}

/// An HF adapter file's tensors (read from `dir`) under the plan's names
/// and shapes.
pub fn import_tensors(
    plan: &Plan,
    tensors: BTreeMap<String, HostTensor>,
    dir: &Path,
) -> Result<BTreeMap<String, HostTensor>> {
    let form = crate::methods::hf_form(plan).map_err(|what| RuntimeError::Adapter {
        dir: dir.to_path_buf(),
        what,
    })?;
    match form.import(plan, &tensors, dir) {
        Some(t) => t,
        None => names::import_default(plan, tensors, form, dir),
    }
}

/// Whether HF PEFT can represent the plan as one adapter: a single method
/// kind among LoRA/DoRA, IA3, prompt and prefix tuning, without gates.
pub fn exportable(plan: &Plan) -> std::result::Result<(), String> {
    let names: std::collections::BTreeSet<&str> =
        plan.sites.iter().map(|s| s.method.name()).collect();
    if names.len() > 1 && !(names.len() == 2 && names.contains("lora") && names.contains("dora")) {
        return Err(format!(
            "Hugging Face PEFT stores one method per adapter; this block mixes {}",
            names.into_iter().collect::<Vec<_>>().join(", ")
        ));
    }
    if let Some(s) = plan
        .sites
        .iter()
        .find(|s| !s.method.site().capabilities(s).hf)
    {
        return Err(if s.gated {
            format!(
                "gated methods (UniPELT) have no Hugging Face PEFT form (`{}`)",
                s.module
            )
        } else {
            format!(
                "`{}` has no Hugging Face PEFT form; use peftc's own format",
                s.method.name()
            )
        });
    }
    if !plan.trainable_biases.is_empty()
        && !plan
            .sites
            .iter()
            .any(|s| matches!(s.method, MethodConfig::Lora(_)))
    {
        return Err("`bitfit` has no Hugging Face PEFT form; use peftc's own format".into());
    }
    Ok(())
}

/// Writes `values` (the plan's tensors) as an HF adapter into `dir`.
pub fn export(
    plan: &Plan,
    values: &BTreeMap<String, HostTensor>,
    base_name: &str,
    trained_steps: Option<usize>,
    dir: &Path,
) -> Result<()> {
    exportable(plan).map_err(RuntimeError::Invalid)?;
    let form = crate::methods::hf_form(plan).map_err(RuntimeError::Invalid)?;
    let tensors = match form.export(plan, values) {
        Some(t) => t?,
        None => names::export_default(plan, values, form)?,
    };
    let mut config = json!({
        "peft_type": form.peft_type(),
        "task_type": task_type(plan),
        "base_model_name_or_path": base_name,
        "inference_mode": true,
        "modules_to_save": head_modules(plan),
        "revision": null,
    });
    if let Some(c) = config.as_object_mut() {
        let info = crate::methods::ExportInfo {
            values,
            trained_steps,
        };
        c.extend(form.config(plan, &info));
    }
    std::fs::create_dir_all(dir).map_err(|e| RuntimeError::write(dir, e))?;
    write_safetensors(
        &dir.join("adapter_model.safetensors"),
        &tensors,
        Some([("format".to_string(), "pt".to_string())].into()),
    )?;
    let text =
        serde_json::to_vec_pretty(&config).map_err(|e| RuntimeError::Internal(e.to_string()))?;
    write_atomic(&dir.join("adapter_config.json"), &text)
}

/// HF's `modules_to_save`: the task head a classifier trains in full.
fn head_modules(plan: &Plan) -> Value {
    match (plan.task.kind, plan.model.family) {
        (TaskKind::Classify, Family::Bert) => json!(["classifier"]),
        (TaskKind::Classify, Family::Llama) => json!(["score"]),
        _ => Value::Null,
    }
}

/// HF module names of the plan's sites that satisfy `want`, as one
/// exact-match regex (HF PEFT's `target_modules` as a string).
pub fn targets_regex(plan: &Plan, want: impl Fn(&peftc_compiler::plan::Site) -> bool) -> String {
    let mut names: Vec<String> = plan
        .sites
        .iter()
        .filter(|s| want(s))
        .map(|s| hf_module(plan, &s.module).replace('.', "\\."))
        .collect();
    names.sort();
    names.dedup();
    format!("^(?:{})$", names.join("|"))
}
