//! Hugging Face PEFT's tensor names, both ways, for every method: peftc
//! names a site's tensors `{module}.{suffix}` after the base model's module
//! paths and HF PEFT's suffixes; an adapter file prefixes the module with
//! the task model's path (`base_model.model.bert.` for BERT classification)
//! and stores prompt-learning tensors bare. A method whose file layout
//! differs (prefix tuning's one table, a shape HF stores transposed) says so
//! in its [`HfForm`](crate::methods::HfForm).

use crate::error::{Result, RuntimeError};
use crate::methods::HfForm;
use crate::weights::HostTensor;
use peftc_compiler::model::Family;
use peftc_compiler::plan::{Plan, Site};
use peftc_compiler::task::TaskKind;
use std::collections::BTreeMap;
use std::path::Path;

/// The module path inside the HF task model for peftc's module `path`.
pub fn hf_module(plan: &Plan, path: &str) -> String {
    match (plan.model.family, plan.task.kind) {
        (Family::Bert, TaskKind::Classify) if path != "classifier" => format!("bert.{path}"),
        (Family::Llama, TaskKind::Feature) => {
            path.strip_prefix("model.").unwrap_or(path).to_string()
        }
        _ => path.to_string(),
    }
}

/// peftc's module path for the HF task model's `path`.
pub fn peftc_module(plan: &Plan, path: &str) -> String {
    match (plan.model.family, plan.task.kind) {
        (Family::Bert, _) => path.strip_prefix("bert.").unwrap_or(path).to_string(),
        (Family::Llama, TaskKind::Feature) if !path.starts_with("model.") => {
            format!("model.{path}")
        }
        _ => path.to_string(),
    }
}

/// Prefix of every module key in the adapter file: prompt-learning adapters
/// sit on the PEFT model, the others on its `base_model.model`.
fn key_prefix(form: &dyn HfForm) -> &'static str {
    if form.prompt_learning() {
        "base_model."
    } else {
        "base_model.model."
    }
}

/// The site of `plan` whose module is the longest prefix of `name`
/// (followed by a dot), and the rest of the name: `(site, suffix)`.
fn site_of<'a, 'n>(plan: &'a Plan, name: &'n str) -> Option<(&'a Site, &'n str)> {
    plan.sites
        .iter()
        .filter_map(|s| {
            name.strip_prefix(s.module.as_str())
                .and_then(|r| r.strip_prefix('.'))
                .map(|suffix| (s, suffix))
        })
        .max_by_key(|(s, _)| s.module.len())
}

/// Renames the plan's tensors to HF adapter keys (and HF shapes), for
/// export: each site tensor under its module's HF path, a trained bias of a
/// wrapped module under its `base_layer`, the task head as itself, tensors
/// of no module (a soft prompt) bare.
pub fn export_default(
    plan: &Plan,
    values: &BTreeMap<String, HostTensor>,
    form: &dyn HfForm,
) -> Result<BTreeMap<String, HostTensor>> {
    let prefix = key_prefix(form);
    let mut out = BTreeMap::new();
    for (name, t) in values {
        let head = ["classifier.", "score."]
            .iter()
            .any(|h| name.starts_with(h));
        if let Some(bias_of) = name.strip_suffix(".bias")
            && !head
            && plan.trainable_biases.iter().any(|b| b == bias_of)
        {
            let wrapped = plan.sites.iter().any(|s| s.module == bias_of);
            let key = if wrapped {
                format!("{prefix}{}.base_layer.bias", hf_module(plan, bias_of))
            } else {
                format!("{prefix}{}.bias", hf_module(plan, bias_of))
            };
            out.insert(key, t.clone());
            continue;
        }
        if let Some((site, suffix)) = site_of(plan, name)
            && !head
        {
            let shape = form.hf_shape(site, suffix, &t.shape);
            let key = format!("{prefix}{}.{suffix}", hf_module(plan, &site.module));
            out.insert(key, HostTensor::new(shape, t.data.clone()));
            continue;
        }
        if head {
            let (module, suffix) = name.split_once('.').unwrap_or((name, ""));
            out.insert(
                format!("{prefix}{}.{suffix}", hf_module(plan, module)),
                t.clone(),
            );
            continue;
        }
        // A tensor of no module: HF stores it under its own name.
        out.insert(name.clone(), t.clone());
    }
    Ok(out)
}

/// Renames an HF adapter file's tensors to the plan's names and shapes:
/// the inverse of [`export_default`]. Keys that map to no tensor of the
/// plan keep a recognizable name, so the completeness check names them.
pub fn import_default(
    plan: &Plan,
    tensors: BTreeMap<String, HostTensor>,
    form: &dyn HfForm,
    dir: &Path,
) -> Result<BTreeMap<String, HostTensor>> {
    let mut out = BTreeMap::new();
    for (key, t) in tensors {
        let Some(rest) = key
            .strip_prefix("base_model.model.")
            .or_else(|| key.strip_prefix("base_model."))
        else {
            // A bare tensor (a soft prompt's `prompt_embeddings`).
            out.insert(key, t);
            continue;
        };
        let rest = rest
            .replace(".modules_to_save.default.", ".")
            .replace(".base_layer.", ".");
        let name = peftc_name(plan, &rest);
        let t = match site_of(plan, &name) {
            Some((site, suffix)) => {
                let declared = declared_shape(plan, &name).unwrap_or_else(|| t.shape.clone());
                let expected = form.hf_shape(site, suffix, &declared);
                if t.shape == expected {
                    HostTensor::new(declared, t.data)
                } else {
                    return Err(RuntimeError::Tensor {
                        file: dir.join("adapter_model.safetensors"),
                        tensor: key,
                        what: format!(
                            "has shape {:?}; the spec's block needs {expected:?}",
                            t.shape
                        ),
                    });
                }
            }
            None => t,
        };
        out.insert(name, t);
    }
    Ok(out)
}

/// The peftc name of an HF path (prefix stripped): the module part mapped to
/// peftc's module names, the suffix kept.
fn peftc_name(plan: &Plan, hf_path: &str) -> String {
    let module = plan
        .modules
        .iter()
        .map(|m| (m, hf_module(plan, &m.path)))
        .filter(|(_, hf)| {
            hf_path
                .strip_prefix(hf.as_str())
                .is_some_and(|r| r.starts_with('.'))
        })
        .max_by_key(|(_, hf)| hf.len());
    match module {
        Some((m, hf)) => format!("{}{}", m.path, &hf_path[hf.len()..]),
        None => peftc_module(plan, hf_path),
    }
}

/// The shape the plan declares for `name`.
fn declared_shape(plan: &Plan, name: &str) -> Option<Vec<usize>> {
    peftc_compiler::methods::plan_tensors(plan)
        .into_iter()
        .find(|d| d.name == name)
        .map(|d| d.shape)
}
