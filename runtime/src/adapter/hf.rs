//! Hugging Face PEFT adapter folders (`adapter_config.json` +
//! `adapter_model.safetensors`): reading them into a plan's parameters and
//! writing a plan's parameters out so `PeftModel.from_pretrained` loads them.

use super::hf_config::{peft_type, task_type};
use super::hf_names::{from_hf, hf_module, to_hf};
use crate::atomic::write_atomic;
use crate::error::{Result, RuntimeError};
use crate::weights::{HostTensor, read_safetensors_all_float, write_safetensors};
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
    super::hf_config::check(plan, &a.config, dir)?;
    from_hf(plan, a.tensors, dir)
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

/// Writes `values` (the plan's trainable tensors) as an HF adapter into `dir`.
pub fn export(
    plan: &Plan,
    values: &BTreeMap<String, HostTensor>,
    base_name: &str,
    dir: &Path,
) -> Result<()> {
    exportable(plan).map_err(RuntimeError::Invalid)?;
    let tensors = to_hf(plan, values)?;
    let config = config_json(plan, base_name);
    std::fs::create_dir_all(dir).map_err(|e| RuntimeError::write(dir, e))?;
    write_safetensors(
        &dir.join("adapter_model.safetensors"),
        &tensors,
        Some([("format".to_string(), "pt".to_string())].into()),
    )?;
    let text =
        serde_json::to_vec_pretty(&config).map_err(|e| RuntimeError::Invalid(e.to_string()))?;
    write_atomic(&dir.join("adapter_config.json"), &text)
}

/// HF module names of the plan's sites, as an exact-match regex.
fn targets_regex(plan: &Plan) -> String {
    let mut names: Vec<String> = plan
        .sites
        .iter()
        .map(|s| regex_escape(&hf_module(plan, &s.module)))
        .collect();
    names.sort();
    names.dedup();
    format!("^(?:{})$", names.join("|"))
}

fn regex_escape(s: &str) -> String {
    s.replace('.', "\\.")
}

fn config_json(plan: &Plan, base_name: &str) -> Value {
    let d = &plan.model.dims;
    let head = match (plan.task.kind, plan.model.family) {
        (TaskKind::Classify, Family::Bert) => json!(["classifier"]),
        (TaskKind::Classify, Family::Llama) => json!(["score"]),
        _ => Value::Null,
    };
    let mut c = json!({
        "peft_type": peft_type(plan),
        "task_type": task_type(plan),
        "base_model_name_or_path": base_name,
        "inference_mode": true,
        "modules_to_save": head,
        "revision": null,
    });
    let first = plan.sites.first().map(|s| &s.method);
    match first {
        Some(MethodConfig::Lora(l)) => {
            let bias = if plan.trainable_biases.is_empty() {
                "none"
            } else {
                "lora_only"
            };
            c["r"] = json!(l.r);
            c["lora_alpha"] = json!(l.alpha);
            c["lora_dropout"] = json!(l.dropout);
            c["use_rslora"] = json!(l.rslora);
            c["use_dora"] = json!(l.dora);
            c["bias"] = json!(bias);
            c["fan_in_fan_out"] = json!(false);
            c["init_lora_weights"] = json!(true);
            c["target_modules"] = json!(targets_regex(plan));
        }
        Some(MethodConfig::Ia3) => {
            let ff: Vec<String> = plan
                .sites
                .iter()
                .filter(|s| s.feedforward)
                .map(|s| regex_escape(&hf_module(plan, &s.module)))
                .collect();
            c["target_modules"] = json!(targets_regex(plan));
            c["feedforward_modules"] = if ff.is_empty() {
                json!([])
            } else {
                json!(format!("^(?:{})$", ff.join("|")))
            };
            c["init_ia3_weights"] = json!(true);
            c["fan_in_fan_out"] = json!(false);
        }
        Some(MethodConfig::Prompt(p)) => {
            c["num_virtual_tokens"] = json!(p.len);
            c["token_dim"] = json!(d.hidden);
            c["num_transformer_submodules"] = json!(1);
            c["num_attention_heads"] = json!(d.heads);
            c["num_layers"] = json!(d.layers);
            c["prompt_tuning_init"] = json!("RANDOM");
        }
        Some(MethodConfig::Prefix(p)) => {
            let kv = d.kv_heads * d.head_dim;
            c["num_virtual_tokens"] = json!(p.len);
            c["token_dim"] = json!(kv);
            c["num_transformer_submodules"] = json!(1);
            c["num_attention_heads"] = json!(d.kv_heads);
            c["num_layers"] = json!(d.layers);
            c["encoder_hidden_size"] = json!(kv);
            c["prefix_projection"] = json!(false);
        }
        _ => {}
    }
    c
}
