//! Folding trained LoRA / DoRA / (IA)³ / BitFit / head tensors into the base
//! weights and writing a full checkpoint that transformers loads
//! (`model.safetensors` + `config.json` + tokenizer files).

use crate::error::{Result, RuntimeError};
use crate::model::ParamStore;
use crate::weights::{HostTensor, Weights, write_safetensors};
use peftc_compiler::model::{Family, ModelSource};
use peftc_compiler::plan::Plan;
use peftc_compiler::task::TaskKind;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;

/// Whether every method of the plan can be folded into the base weights (the
/// compiler's capabilities say which can).
pub fn mergeable(plan: &Plan) -> std::result::Result<(), String> {
    for s in &plan.sites {
        if !s.method.site().capabilities(s).merge {
            return Err(format!(
                "`{}` at `{}` cannot be folded into the weights{}; export the adapter instead",
                s.method.name(),
                s.module,
                if s.gated { " (gated)" } else { "" }
            ));
        }
    }
    Ok(())
}

/// The merged base weights (HF names of the base model, head included).
pub fn merged_weights(
    plan: &Plan,
    store: &ParamStore,
    weights: Weights,
) -> Result<BTreeMap<String, HostTensor>> {
    mergeable(plan).map_err(RuntimeError::Invalid)?;
    let mut w = weights.into_map();
    // LoftQ's initial factors sit beside the base weights; they are not the model's.
    w.retain(|k, _| {
        !(k.ends_with(&format!(".{}", peftc_compiler::methods::LOFTQ_A))
            || k.ends_with(&format!(".{}", peftc_compiler::methods::LOFTQ_B)))
    });
    let get = |name: &str| {
        store
            .get(name)
            .ok_or_else(|| RuntimeError::Invalid(format!("trained tensor `{name}` missing")))
    };
    for s in &plan.sites {
        let m = &s.module;
        let wname = format!("{m}.weight");
        let Some(mut base) = w.remove(&wname) else {
            return Err(RuntimeError::Invalid(format!(
                "base weight `{wname}` missing"
            )));
        };
        let result = crate::methods::merge(s, &mut base, w.get_mut(&format!("{m}.bias")), store);
        w.insert(wname, base);
        result?;
    }
    // Trained biases and the classification head replace the originals.
    for b in &plan.trainable_biases {
        let name = format!("{b}.bias");
        w.insert(name.clone(), get(&name)?.clone());
    }
    for (name, t) in &store.values {
        if name.starts_with("classifier.") || name.starts_with("score.") {
            w.insert(name.clone(), t.clone());
        }
    }
    Ok(w)
}

/// Writes the merged checkpoint into the folder `out` (the caller stages it
/// and puts it in place: see the binary's `cli/output.rs`).
pub fn write_merged(
    plan: &Plan,
    merged: BTreeMap<String, HostTensor>,
    label_names: &[String],
    out: &Path,
) -> Result<()> {
    std::fs::create_dir_all(out).map_err(|e| RuntimeError::write(out, e))?;
    let bert_cls = plan.model.family == Family::Bert && plan.task.kind == TaskKind::Classify;
    let tied = plan.model.dims.tied_embeddings;
    let tensors: BTreeMap<String, HostTensor> = merged
        .into_iter()
        .filter(|(k, _)| !(tied && k == "lm_head.weight"))
        .map(|(k, v)| {
            let k = if bert_cls && !k.starts_with("classifier.") {
                format!("bert.{k}")
            } else {
                k
            };
            (k, v)
        })
        .collect();
    write_safetensors(
        &out.join("model.safetensors"),
        &tensors,
        Some([("format".to_string(), "pt".to_string())].into()),
    )?;
    let config = merged_config(plan, label_names)?;
    let text =
        serde_json::to_vec_pretty(&config).map_err(|e| RuntimeError::Invalid(e.to_string()))?;
    crate::atomic::write_atomic(&out.join("config.json"), &text)?;
    let src_dir = match &plan.model.source {
        ModelSource::ConfigJson(p) | ModelSource::Gguf(p) => p.parent().map(Path::to_path_buf),
    };
    if let Some(dir) = src_dir {
        for f in [
            "tokenizer.json",
            "tokenizer_config.json",
            "vocab.txt",
            "special_tokens_map.json",
        ] {
            if dir.join(f).is_file() {
                std::fs::copy(dir.join(f), out.join(f))
                    .map_err(|e| RuntimeError::write(out.join(f), e))?;
            }
        }
    }
    Ok(())
}

fn merged_config(plan: &Plan, label_names: &[String]) -> Result<Value> {
    let cfg_path = match &plan.model.source {
        ModelSource::ConfigJson(p) => Some(p.clone()),
        ModelSource::Gguf(p) => p
            .parent()
            .map(|d| d.join("config.json"))
            .filter(|p| p.is_file()),
    };
    let d = &plan.model.dims;
    let mut c: Value = match cfg_path {
        Some(p) => {
            serde_json::from_slice(&std::fs::read(&p).map_err(|e| RuntimeError::read(&p, e))?)
                .map_err(|e| RuntimeError::format(&p, e.to_string()))?
        }
        None => json!({
            "model_type": plan.model.model_type,
            "hidden_size": d.hidden, "intermediate_size": d.intermediate, "num_hidden_layers": d.layers,
            "num_attention_heads": d.heads, "num_key_value_heads": d.kv_heads, "head_dim": d.head_dim,
            "vocab_size": d.vocab, "max_position_embeddings": d.max_positions, "rms_norm_eps": d.norm_eps,
            "rope_theta": d.rope_theta, "tie_word_embeddings": d.tied_embeddings, "hidden_act": d.act,
        }),
    };
    c["torch_dtype"] = json!("float32");
    match (plan.task.kind, plan.model.family) {
        (TaskKind::Classify, f) => {
            c["architectures"] = json!([if f == Family::Bert {
                "BertForSequenceClassification"
            } else {
                "LlamaForSequenceClassification"
            }]);
            let n = plan.task.num_labels.unwrap_or(label_names.len().max(2));
            let names: Vec<String> = (0..n)
                .map(|i| {
                    label_names
                        .get(i)
                        .cloned()
                        .unwrap_or_else(|| format!("LABEL_{i}"))
                })
                .collect();
            c["num_labels"] = json!(n);
            c["id2label"] = names
                .iter()
                .enumerate()
                .map(|(i, l)| (i.to_string(), json!(l)))
                .collect::<serde_json::Map<_, _>>()
                .into();
            c["label2id"] = names
                .iter()
                .enumerate()
                .map(|(i, l)| (l.clone(), json!(i)))
                .collect::<serde_json::Map<_, _>>()
                .into();
        }
        (TaskKind::CausalLm, Family::Llama) => c["architectures"] = json!(["LlamaForCausalLM"]),
        _ => {}
    }
    Ok(c)
}
