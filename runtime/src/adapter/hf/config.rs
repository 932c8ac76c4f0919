//! Checking a Hugging Face PEFT `adapter_config.json` against the spec's
//! block before any tensor is read: the method and task here, the method's
//! own hyperparameters by its [`HfForm`](crate::methods::HfForm), with the
//! helpers below for what several methods share: the modules a config
//! targets, matched the way HF PEFT matches them
//! (`check_target_module_exists`: a string is a regex that must match a
//! module's whole name; a list matches a name or a dotted suffix of it), and
//! ranks with their `rank_pattern`.

use super::names::hf_module;
use crate::error::{Result, RuntimeError};
use peftc_compiler::model::{ModuleKind, Role};
use peftc_compiler::plan::Plan;
use peftc_compiler::task::TaskKind;
use serde_json::{Map, Value, json};
use std::collections::BTreeSet;
use std::path::Path;

/// HF's `task_type` for the plan's task.
pub fn task_type(plan: &Plan) -> &'static str {
    match plan.task.kind {
        TaskKind::Classify => "SEQ_CLS",
        TaskKind::CausalLm => "CAUSAL_LM",
        TaskKind::Feature => "FEATURE_EXTRACTION",
    }
}

/// Checks `cfg` (read from `dir`) against `plan`: the method and task here,
/// the method's own fields by its [`HfForm`].
pub fn check(plan: &Plan, cfg: &Value, dir: &Path) -> Result<()> {
    fields(plan, cfg).map_err(|what| RuntimeError::Adapter {
        dir: dir.join("adapter_config.json"),
        what,
    })
}

fn fields(plan: &Plan, cfg: &Value) -> std::result::Result<(), String> {
    if !cfg.is_object() {
        return Err("is not a JSON object".into());
    }
    let form = crate::methods::hf_form(plan)?;
    let found = cfg["peft_type"].as_str().unwrap_or("");
    let want = form.peft_type();
    if found != want {
        return Err(format!(
            "has peft_type `{found}`, the spec's block is `{want}`"
        ));
    }
    if let Some(task) = cfg["task_type"].as_str()
        && task != task_type(plan)
    {
        return Err(format!(
            "has task_type `{task}`; the spec's task ({}) needs `{}` — an adapter for another model or task",
            plan.task.kind.name(),
            task_type(plan)
        ));
    }
    form.check(plan, cfg)
}

/// The fields every prompt-learning config of HF PEFT writes: the prompt's
/// length (when the plan has one) and the model's shape as the method sees
/// it (`token_dim` and heads are the key/value width for a prefix).
pub fn prompt_learning_fields(
    len: Option<usize>,
    token_dim: usize,
    heads: usize,
    layers: usize,
) -> Map<String, Value> {
    let mut c = Map::new();
    if let Some(len) = len {
        c.insert("num_virtual_tokens".into(), json!(len));
    }
    c.insert("token_dim".into(), json!(token_dim));
    c.insert("num_transformer_submodules".into(), json!(1));
    c.insert("num_attention_heads".into(), json!(heads));
    c.insert("num_layers".into(), json!(layers));
    c
}

/// A prompt-learning config's `num_virtual_tokens` against the spec's `len`.
pub fn virtual_tokens(cfg: &Value, len: usize) -> std::result::Result<(), String> {
    if cfg["num_virtual_tokens"].as_u64() == Some(len as u64) {
        Ok(())
    } else {
        Err(format!(
            "has num_virtual_tokens {}, the spec says len={len}",
            shown(&cfg["num_virtual_tokens"])
        ))
    }
}

pub fn shown(v: &Value) -> String {
    if v.is_null() {
        "(missing)".into()
    } else {
        v.to_string()
    }
}

/// `r`, and any per-module `rank_pattern`, against each site's rank
/// (`rank_of`: the rank of a site of the method, `None` for other sites).
pub fn check_ranks(
    plan: &Plan,
    cfg: &Value,
    rank_of: impl Fn(&peftc_compiler::plan::Site) -> Option<usize>,
) -> std::result::Result<(), String> {
    let default_r = cfg["r"].as_u64().unwrap_or(8) as usize;
    let pattern: Vec<(String, usize)> = cfg["rank_pattern"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_u64()? as usize)))
                .collect()
        })
        .unwrap_or_default();
    let sites: Vec<(String, usize)> = plan
        .sites
        .iter()
        .filter_map(|s| Some((hf_module(plan, &s.module), rank_of(s)?)))
        .collect();
    for (key, _) in &pattern {
        if !sites.iter().any(|(name, _)| pattern_matches(key, name)) {
            return Err(format!(
                "has a rank_pattern entry `{key}`, which names no module of the spec's block"
            ));
        }
    }
    for (name, r) in &sites {
        let found = pattern
            .iter()
            .find(|(k, _)| pattern_matches(k, name))
            .map_or(default_r, |(_, r)| *r);
        if found != *r {
            return Err(format!("gives `{name}` rank {found}, the spec says r={r}"));
        }
    }
    Ok(())
}

/// HF's `rank_pattern` keys match a module whose name ends with the key
/// (after a dot), or fully as a regex.
fn pattern_matches(key: &str, name: &str) -> bool {
    name == key
        || name.ends_with(&format!(".{key}"))
        || regex::Regex::new(&format!("^(?:{key})$")).is_ok_and(|re| re.is_match(name))
}

/// The modules `cfg[key]` selects, among the model's linear layers (not the
/// task head), against the plan's sites that satisfy `want`.
pub fn check_targets(
    plan: &Plan,
    cfg: &Value,
    key: &str,
    want: impl Fn(&peftc_compiler::plan::Site) -> bool,
) -> std::result::Result<(), String> {
    check_targets_of(plan, cfg, key, want, |k| {
        matches!(k, ModuleKind::Linear { .. })
    })
}

/// [`check_targets`] among the modules of kinds `candidate` accepts (norms
/// for LN tuning).
pub fn check_targets_of(
    plan: &Plan,
    cfg: &Value,
    key: &str,
    want: impl Fn(&peftc_compiler::plan::Site) -> bool,
    candidate: impl Fn(&ModuleKind) -> bool,
) -> std::result::Result<(), String> {
    let spec: BTreeSet<String> = plan
        .sites
        .iter()
        .filter(|s| want(s))
        .map(|s| hf_module(plan, &s.module))
        .collect();
    let selector = &cfg[key];
    let matcher: Box<dyn Fn(&str) -> bool> = match selector {
        // Absent: nothing to compare (an older or hand-written config).
        Value::Null => return Ok(()),
        Value::String(re) => {
            let re = regex::Regex::new(&format!("^(?:{re})$")).map_err(|e| {
                format!("has a `{key}` regex peftc cannot read ({e}); write it as a list of module names")
            })?;
            Box::new(move |name: &str| re.is_match(name))
        }
        Value::Array(items) => {
            let names: Vec<String> = items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect();
            Box::new(move |name: &str| {
                names
                    .iter()
                    .any(|n| name == n || name.ends_with(&format!(".{n}")))
            })
        }
        other => {
            return Err(format!(
                "has `{key}` {other}, expected a regex or a list of names"
            ));
        }
    };
    let layers: Option<BTreeSet<usize>> = match &cfg["layers_to_transform"] {
        Value::Number(n) => n.as_u64().map(|l| [l as usize].into()),
        Value::Array(a) => Some(
            a.iter()
                .filter_map(|v| v.as_u64())
                .map(|l| l as usize)
                .collect(),
        ),
        _ => None,
    };
    let config: BTreeSet<String> = plan
        .modules
        .iter()
        .filter(|m| candidate(&m.kind) && m.role != Some(Role::Head))
        .filter(|m| {
            layers.as_ref().is_none_or(|ls| {
                m.role
                    .and_then(Role::layer)
                    .is_some_and(|l| ls.contains(&l))
            })
        })
        .map(|m| hf_module(plan, &m.path))
        .filter(|name| matcher(name))
        .collect();
    let list = |set: Vec<&String>| {
        let mut shown: Vec<String> = set.iter().take(4).map(|n| format!("`{n}`")).collect();
        if set.len() > 4 {
            shown.push(format!("and {} more", set.len() - 4));
        }
        shown.join(", ")
    };
    let extra: Vec<&String> = config.difference(&spec).collect();
    if !extra.is_empty() {
        return Err(format!(
            "has `{key}` selecting {}, which the spec's block does not",
            list(extra)
        ));
    }
    let missing: Vec<&String> = spec.difference(&config).collect();
    if !missing.is_empty() {
        return Err(format!(
            "has `{key}` leaving out {}, which the spec's block {}",
            list(missing),
            if key == "feedforward_modules" {
                "treats as feed-forward"
            } else {
                "targets"
            }
        ));
    }
    Ok(())
}
