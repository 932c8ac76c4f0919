//! What the model is fine-tuned for, and the head that task puts on top of
//! the base model.

use crate::model::{Family, ModelDesc, Module, ModuleKind, Role};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    /// Sequence classification: a new linear head on a pooled representation.
    Classify,
    /// Next-token prediction with the model's LM head.
    CausalLm,
    /// The base model's hidden states, no head (HF's FEATURE_EXTRACTION).
    Feature,
}

impl TaskKind {
    pub const NAMES: &'static [&'static str] = &["classify", "causal_lm", "feature"];

    pub fn from_name(name: &str) -> Option<TaskKind> {
        Some(match name {
            "classify" => TaskKind::Classify,
            "causal_lm" => TaskKind::CausalLm,
            "feature" => TaskKind::Feature,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            TaskKind::Classify => "classify",
            TaskKind::CausalLm => "causal_lm",
            TaskKind::Feature => "feature",
        }
    }

    /// The task assumed when a spec has no `train` block.
    pub fn default_for(family: Family) -> TaskKind {
        match family {
            Family::Bert => TaskKind::Feature,
            Family::Llama => TaskKind::CausalLm,
        }
    }

    /// Whether the family can do this task; the reason if not.
    pub fn supported_by(self, family: Family) -> Result<(), &'static str> {
        match (self, family) {
            (TaskKind::CausalLm, Family::Bert) => {
                Err("BERT-family models are encoders; causal_lm needs a decoder such as LLaMA")
            }
            _ => Ok(()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    pub kind: TaskKind,
    /// Number of classes for `classify`.
    pub num_labels: Option<usize>,
}

/// The head modules `task` adds to `model`, in the names Hugging Face's task
/// models use (`classifier`, `score`, `lm_head`).
pub fn head_modules(model: &ModelDesc, task: &Task) -> Vec<Module> {
    let h = model.dims.hidden;
    let labels = task.num_labels.unwrap_or(2);
    let head = |path: &str, out: usize, bias: bool, tied: bool| Module {
        path: path.to_string(),
        kind: ModuleKind::Linear {
            in_features: h,
            out_features: out,
            bias,
        },
        role: Some(Role::Head),
        synthetic: false,
        tied,
    };
    match (model.family, task.kind) {
        (_, TaskKind::Feature) => Vec::new(),
        (Family::Bert, TaskKind::Classify) => vec![head("classifier", labels, true, false)],
        (Family::Bert, TaskKind::CausalLm) => Vec::new(),
        (Family::Llama, TaskKind::Classify) => vec![head("score", labels, false, false)],
        (Family::Llama, TaskKind::CausalLm) => {
            vec![head(
                "lm_head",
                model.dims.vocab,
                false,
                model.dims.tied_embeddings,
            )]
        }
    }
}
