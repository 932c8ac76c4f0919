//! The `train` block: its keys, their types and defaults, and the concrete
//! training configuration the runtime reads.

use crate::methods::{ArgSpec, ArgType, Args, Default};
use crate::task::TaskKind;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

const fn int(min: i64) -> ArgType {
    ArgType::Int {
        min,
        max: i64::MAX,
        zero_absent: false,
    }
}
/// Largest batch and sequence length a spec may ask for: beyond them no
/// machine trains, and the estimates' arithmetic stays exact.
pub const MAX_BATCH: i64 = 1 << 20;
pub const MAX_SEQ: i64 = 1 << 24;

const fn int_to(min: i64, max: i64) -> ArgType {
    ArgType::Int {
        min,
        max,
        zero_absent: false,
    }
}
const POSITIVE: ArgType = ArgType::Float {
    lo: 0.0,
    hi: f64::INFINITY,
    lo_open: true,
    hi_open: true,
};
const NON_NEGATIVE: ArgType = ArgType::Float {
    lo: 0.0,
    hi: f64::INFINITY,
    lo_open: false,
    hi_open: true,
};
const RATIO: ArgType = ArgType::Float {
    lo: 0.0,
    hi: 1.0,
    lo_open: false,
    hi_open: true,
};
const OPEN_RATIO: ArgType = ArgType::Float {
    lo: 0.0,
    hi: 1.0,
    lo_open: true,
    hi_open: true,
};

/// Every key a `train` block may hold.
pub const TRAIN_KEYS: &[ArgSpec] = &[
    ArgSpec {
        name: "adapter",
        ty: ArgType::Name,
        default: Some(Default::Unset),
        doc: "the peft block to train",
    },
    ArgSpec {
        name: "task",
        ty: ArgType::Choice(TaskKind::NAMES),
        default: Some(Default::Unset),
        doc: "classify, causal_lm or feature",
    },
    ArgSpec {
        name: "data",
        ty: ArgType::Str,
        default: Some(Default::Unset),
        doc: "TSV label<TAB>text, a folder of class folders of .txt, or a text corpus",
    },
    ArgSpec {
        name: "labels",
        ty: int(2),
        default: Some(Default::Unset),
        doc: "number of classes (read from the data when absent)",
    },
    ArgSpec {
        name: "epochs",
        ty: int(1),
        default: Some(Default::Int(1)),
        doc: "passes over the training split",
    },
    ArgSpec {
        name: "max_steps",
        ty: int(1),
        default: Some(Default::Unset),
        doc: "stop after this many optimizer steps",
    },
    ArgSpec {
        name: "batch",
        ty: int_to(1, MAX_BATCH),
        default: Some(Default::Int(16)),
        doc: "sequences per micro-batch",
    },
    ArgSpec {
        name: "grad_accum",
        ty: int(1),
        default: Some(Default::Int(1)),
        doc: "micro-batches per optimizer step",
    },
    ArgSpec {
        name: "seq_len",
        ty: int_to(1, MAX_SEQ),
        default: Some(Default::Int(128)),
        doc: "tokens per sequence (truncated / padded)",
    },
    ArgSpec {
        name: "lr",
        ty: POSITIVE,
        default: Some(Default::Float(5e-4)),
        doc: "peak learning rate",
    },
    ArgSpec {
        name: "weight_decay",
        ty: NON_NEGATIVE,
        default: Some(Default::Float(0.0)),
        doc: "AdamW decoupled weight decay",
    },
    ArgSpec {
        name: "warmup",
        ty: RATIO,
        default: Some(Default::Float(0.0)),
        doc: "fraction of steps spent warming up",
    },
    ArgSpec {
        name: "schedule",
        ty: ArgType::Choice(&["linear", "cosine", "constant"]),
        default: Some(Default::Name("linear")),
        doc: "decay after warm-up",
    },
    ArgSpec {
        name: "optimizer",
        ty: ArgType::Choice(&["adamw", "sgd", "mezo"]),
        default: Some(Default::Name("adamw")),
        doc: "optimizer; mezo: zeroth-order steps from forward passes only (MeZO)",
    },
    ArgSpec {
        name: "eps",
        ty: POSITIVE,
        default: Some(Default::Float(1e-3)),
        doc: "MeZO's perturbation size",
    },
    ArgSpec {
        name: "max_grad_norm",
        ty: NON_NEGATIVE,
        default: Some(Default::Float(1.0)),
        doc: "clip the global gradient norm to this (0: no clipping); HF Trainer's default 1.0",
    },
    ArgSpec {
        name: "seed",
        ty: int(0),
        default: Some(Default::Int(0)),
        doc: "seed of data order, dropout and initialization",
    },
    ArgSpec {
        name: "eval_every",
        ty: int(1),
        default: Some(Default::Unset),
        doc: "evaluate every N optimizer steps",
    },
    ArgSpec {
        name: "save_every",
        ty: int(1),
        default: Some(Default::Unset),
        doc: "checkpoint every N optimizer steps",
    },
    ArgSpec {
        name: "eval_split",
        ty: OPEN_RATIO,
        default: Some(Default::Float(0.1)),
        doc: "held-out fraction of the data",
    },
    ArgSpec {
        name: "eval_max",
        ty: int(1),
        default: Some(Default::Unset),
        doc: "evaluate on at most this many held-out examples (windows for causal LM)",
    },
    ArgSpec {
        name: "adapter_drop",
        ty: int(0),
        default: Some(Default::Int(0)),
        doc: "AdapterDrop: each step drops the methods of the lowest n layers, n drawn from 0..=N",
    },
    ArgSpec {
        name: "dtype",
        ty: ArgType::Choice(&["f32", "bf16"]),
        default: Some(Default::Name("f32")),
        doc: "compute dtype of the frozen base",
    },
    ArgSpec {
        name: "base",
        ty: ArgType::Choice(&["packed", "f32"]),
        default: Some(Default::Name("packed")),
        doc: "how a quantized GGUF base is held: in its own blocks (packed), or expanded to f32",
    },
];

/// How the frozen weights of a quantized base are held in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BaseForm {
    /// In the checkpoint's own blocks, dequantized tile by tile inside each
    /// product (on backends that have such products).
    #[default]
    Packed,
    /// Expanded to f32 at load.
    F32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    Linear,
    Cosine,
    Constant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerKind {
    Adamw,
    Sgd,
    /// Zeroth-order SPSA steps (MeZO, Malladi et al. 2023): two forward
    /// passes per step, no backward.
    Mezo,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DType {
    F32,
    Bf16,
}

impl DType {
    pub fn bytes(self) -> u64 {
        match self {
            DType::F32 => 4,
            DType::Bf16 => 2,
        }
    }
}

fn default_eps() -> f64 {
    1e-3
}

/// A concrete training configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub adapter: Option<String>,
    pub task: Option<TaskKind>,
    /// Resolved against the spec's folder.
    pub data: Option<PathBuf>,
    pub labels: Option<usize>,
    pub epochs: usize,
    pub max_steps: Option<usize>,
    pub batch: usize,
    pub grad_accum: usize,
    pub seq_len: usize,
    pub lr: f64,
    pub weight_decay: f64,
    pub warmup: f64,
    pub schedule: Schedule,
    pub optimizer: OptimizerKind,
    /// MeZO's perturbation size.
    #[serde(default = "default_eps")]
    pub eps: f64,
    pub max_grad_norm: Option<f64>,
    pub seed: u64,
    pub eval_every: Option<usize>,
    pub save_every: Option<usize>,
    pub eval_split: f64,
    /// At most this many held-out examples are evaluated.
    pub eval_max: Option<usize>,
    pub dtype: DType,
    #[serde(default)]
    pub base: BaseForm,
    /// AdapterDrop (Rücklé et al. 2021): each step, the methods of the
    /// lowest `n` layers are left out, `n` drawn from `0..=adapter_drop`.
    pub adapter_drop: usize,
}

impl TrainConfig {
    /// Builds the configuration from fixed, checked `train` keys.
    pub fn from_args(args: &Args, spec_dir: &std::path::Path) -> TrainConfig {
        let opt_int = |n: &str| {
            args.fixed(n)
                .and_then(|v| v.as_i64())
                .and_then(|v| usize::try_from(v).ok())
        };
        let int = |n: &str, d: usize| opt_int(n).unwrap_or(d);
        let float = |n: &str| args.fixed(n).and_then(|v| v.as_f64());
        let name = |n: &str| args.fixed(n).and_then(|v| v.as_str()).map(str::to_string);
        TrainConfig {
            adapter: name("adapter"),
            task: name("task").and_then(|t| TaskKind::from_name(&t)),
            data: name("data").map(|d| spec_dir.join(d)),
            labels: opt_int("labels"),
            epochs: int("epochs", 1),
            max_steps: opt_int("max_steps"),
            batch: int("batch", 16),
            grad_accum: int("grad_accum", 1),
            seq_len: int("seq_len", 128),
            lr: float("lr").unwrap_or(5e-4),
            weight_decay: float("weight_decay").unwrap_or(0.0),
            warmup: float("warmup").unwrap_or(0.0),
            schedule: match name("schedule").as_deref() {
                Some("cosine") => Schedule::Cosine,
                Some("constant") => Schedule::Constant,
                _ => Schedule::Linear,
            },
            optimizer: match name("optimizer").as_deref() {
                Some("sgd") => OptimizerKind::Sgd,
                Some("mezo") => OptimizerKind::Mezo,
                _ => OptimizerKind::Adamw,
            },
            eps: float("eps").unwrap_or_else(default_eps),
            max_grad_norm: float("max_grad_norm"),
            seed: args
                .fixed("seed")
                .and_then(|v| v.as_i64())
                .and_then(|v| u64::try_from(v).ok())
                .unwrap_or(0),
            eval_every: opt_int("eval_every"),
            save_every: opt_int("save_every"),
            eval_split: float("eval_split").unwrap_or(0.1),
            eval_max: opt_int("eval_max"),
            dtype: match name("dtype").as_deref() {
                Some("bf16") => DType::Bf16,
                _ => DType::F32,
            },
            base: match name("base").as_deref() {
                Some("f32") => BaseForm::F32,
                _ => BaseForm::Packed,
            },
            adapter_drop: int("adapter_drop", 0),
        }
    }
}
