//! Hugging Face PEFT's tensor names, both ways: peftc names its trainable
//! tensors after the base model's module paths; an adapter file prefixes them
//! with the task model's path (`base_model.model.bert.` for BERT
//! classification) and stores prompt-learning tensors bare.

use crate::error::{Result, RuntimeError};
use crate::weights::HostTensor;
use peftc_compiler::methods::MethodConfig;
use peftc_compiler::model::Family;
use peftc_compiler::plan::Plan;
use peftc_compiler::task::TaskKind;
use std::collections::BTreeMap;
use std::path::Path;

/// Whether the plan is a prompt-learning adapter in HF's sense.
pub fn is_prompt_learning(plan: &Plan) -> bool {
    plan.sites
        .iter()
        .any(|s| matches!(s.method, MethodConfig::Prompt(_) | MethodConfig::Prefix(_)))
}

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

/// Prefix of every module key in the adapter file.
fn key_prefix(plan: &Plan) -> &'static str {
    if is_prompt_learning(plan) {
        "base_model."
    } else {
        "base_model.model."
    }
}

/// Renames peftc tensors to HF adapter keys (and HF shapes), for export.
/// Per-layer prefixes are concatenated into HF's one `prompt_embeddings`.
pub fn to_hf(
    plan: &Plan,
    values: &BTreeMap<String, HostTensor>,
) -> Result<BTreeMap<String, HostTensor>> {
    let mut out = BTreeMap::new();
    let prefix = key_prefix(plan);
    let mut prefix_layers: Vec<(usize, &HostTensor)> = Vec::new();
    for (name, t) in values {
        if name == "prompt_embeddings" {
            out.insert(name.clone(), t.clone());
            continue;
        }
        if let Some(rest) = name.strip_prefix("prefix.") {
            let layer = rest
                .split('.')
                .next()
                .and_then(|l| l.parse::<usize>().ok())
                .unwrap_or(0);
            prefix_layers.push((layer, t));
            continue;
        }
        if name.starts_with("prefix_encoder.") {
            continue; // exported as its output, below
        }
        let (module, suffix) = split_suffix(name);
        let key = format!("{prefix}{}.{suffix}", hf_module(plan, module));
        let t = match suffix {
            "ia3_l" => {
                let ff = plan
                    .sites
                    .iter()
                    .any(|s| s.module == module && s.feedforward);
                let n = t.numel();
                HostTensor::new(if ff { vec![1, n] } else { vec![n, 1] }, t.data.clone())
            }
            // Bias terms made trainable sit under the wrapped layer's `base_layer`.
            "bias"
                if plan.sites.iter().any(|s| s.module == module)
                    && module != "classifier"
                    && module != "score" =>
            {
                out.insert(
                    format!("{prefix}{}.base_layer.bias", hf_module(plan, module)),
                    t.clone(),
                );
                continue;
            }
            _ => t.clone(),
        };
        out.insert(key, t);
    }
    if !prefix_layers.is_empty() || values.keys().any(|k| k.starts_with("prefix_encoder.")) {
        out.insert(
            "prompt_embeddings".into(),
            prefix_table(plan, values, &prefix_layers)?,
        );
    }
    Ok(out)
}

/// HF's prefix table `[len, layers*2*kv]`: every layer's keys and values, in
/// layer order (projections evaluated on the host).
fn prefix_table(
    plan: &Plan,
    values: &BTreeMap<String, HostTensor>,
    direct: &[(usize, &HostTensor)],
) -> Result<HostTensor> {
    let layers = plan.model.dims.layers;
    let mut per_layer: Vec<Option<HostTensor>> = vec![None; layers];
    for (l, t) in direct {
        if *l < layers {
            per_layer[*l] = Some((*t).clone());
        }
    }
    for s in &plan.sites {
        let MethodConfig::Prefix(p) = &s.method else {
            continue;
        };
        if p.projection == 0 {
            continue;
        }
        let st = s.statement;
        let get = |x: &str| {
            values
                .get(&format!("prefix_encoder.{st}.{x}"))
                .ok_or_else(|| {
                    RuntimeError::Invalid(format!("prefix encoder tensor `{x}` missing"))
                })
        };
        let hidden = host_linear(get("embedding")?, get("0.weight")?, get("0.bias")?, true);
        let full = host_linear(&hidden, get("2.weight")?, get("2.bias")?, false);
        let kv2 = full.cols()
            / plan
                .sites
                .iter()
                .filter(|t| t.statement == st)
                .count()
                .max(1);
        for (slot, t) in plan.sites.iter().filter(|t| t.statement == st).enumerate() {
            if let Some(l) = t.layer() {
                let mut data = Vec::with_capacity(p.len * kv2);
                for r in 0..p.len {
                    data.extend_from_slice(
                        &full.data
                            [r * full.cols() + slot * kv2..r * full.cols() + (slot + 1) * kv2],
                    );
                }
                per_layer[l] = Some(HostTensor::new(vec![p.len, kv2], data));
            }
        }
    }
    let Some(first) = per_layer.iter().flatten().next() else {
        return Err(RuntimeError::Invalid("no prefix tensors to export".into()));
    };
    let (len, kv2) = (first.rows(), first.cols());
    if per_layer
        .iter()
        .any(|t| t.as_ref().is_none_or(|t| t.rows() != len))
    {
        return Err(RuntimeError::Invalid(
            "Hugging Face PEFT's prefix tuning needs the same prefix on every layer; this plan's prefixes differ".into(),
        ));
    }
    let mut data = Vec::with_capacity(len * layers * kv2);
    for r in 0..len {
        for t in per_layer.iter().flatten() {
            data.extend_from_slice(&t.data[r * kv2..(r + 1) * kv2]);
        }
    }
    Ok(HostTensor::new(vec![len, layers * kv2], data))
}

/// `act(x @ w.T + b)` on the host (`tanh` when `tanh`).
fn host_linear(x: &HostTensor, w: &HostTensor, b: &HostTensor, tanh: bool) -> HostTensor {
    let (n, i, o) = (x.rows(), x.cols(), w.rows());
    let mut out = vec![0f32; n * o];
    for r in 0..n {
        for c in 0..o {
            let mut acc = b.data[c];
            for k in 0..i {
                acc += x.data[r * i + k] * w.data[c * i + k];
            }
            out[r * o + c] = if tanh { acc.tanh() } else { acc };
        }
    }
    HostTensor::new(vec![n, o], out)
}

/// Renames the tensors of an HF adapter file to peftc's names and shapes.
pub fn from_hf(
    plan: &Plan,
    tensors: BTreeMap<String, HostTensor>,
    dir: &Path,
) -> Result<BTreeMap<String, HostTensor>> {
    let mut out = BTreeMap::new();
    let err = |what: String| RuntimeError::Adapter {
        dir: dir.to_path_buf(),
        what,
    };
    for (key, t) in tensors {
        if key == "prompt_embeddings" {
            if plan
                .sites
                .iter()
                .any(|s| matches!(s.method, MethodConfig::Prefix(_)))
            {
                split_prefix(plan, &t, &mut out).map_err(err)?;
            } else {
                out.insert(key, t);
            }
            continue;
        }
        let rest = key
            .strip_prefix("base_model.model.")
            .or_else(|| key.strip_prefix("base_model."))
            .ok_or_else(|| err(format!("tensor `{key}` does not start with `base_model.`")))?;
        let rest = rest
            .replace(".modules_to_save.default.", ".")
            .replace(".base_layer.", ".");
        let (module, suffix) = split_suffix(&rest);
        let name = format!("{}.{suffix}", peftc_module(plan, module));
        let t = match suffix {
            "ia3_l" => HostTensor::new(vec![t.numel()], t.data),
            _ => t,
        };
        out.insert(name, t);
    }
    Ok(out)
}

fn split_prefix(
    plan: &Plan,
    t: &HostTensor,
    out: &mut BTreeMap<String, HostTensor>,
) -> std::result::Result<(), String> {
    let layers = plan.model.dims.layers;
    let (len, width) = (t.rows(), t.cols());
    if width % layers != 0 {
        return Err(format!(
            "prompt_embeddings has {width} columns, not a multiple of {layers} layers"
        ));
    }
    let kv2 = width / layers;
    for l in 0..layers {
        let mut data = Vec::with_capacity(len * kv2);
        for r in 0..len {
            data.extend_from_slice(&t.data[r * width + l * kv2..r * width + (l + 1) * kv2]);
        }
        out.insert(
            format!("prefix.{l}.kv"),
            HostTensor::new(vec![len, kv2], data),
        );
    }
    Ok(())
}

/// `encoder.layer.0.attention.self.query.lora_A.weight` ->
/// (`encoder.layer.0.attention.self.query`, `lora_A.weight`).
fn split_suffix(name: &str) -> (&str, &str) {
    for suffix in [
        "lora_A.weight",
        "lora_B.weight",
        "lora_magnitude_vector",
        "ia3_l",
        "weight",
        "bias",
    ] {
        if let Some(m) = name.strip_suffix(suffix).and_then(|m| m.strip_suffix('.')) {
            return (m, suffix);
        }
    }
    // Adapter and gate tensors: module path, then a two-part suffix.
    let mut parts = name.rsplitn(3, '.');
    let last = parts.next().unwrap_or("");
    let mid = parts.next().unwrap_or("");
    let module = parts.next().unwrap_or("");
    let suffix_len = mid.len() + last.len() + 1;
    (module, &name[name.len() - suffix_len..])
}
