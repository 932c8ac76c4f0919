//! Typed configurations of the methods, built from checked fixed arguments.

use super::args::Args;
use super::registry::MethodKind;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoraInit {
    /// A ~ kaiming-uniform(a = sqrt(5)), B = 0 (HF PEFT's `init_lora_weights=True`).
    Default,
    /// A ~ N(0, 1/r), B = 0.
    Gaussian,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BiasMode {
    None,
    /// Biases of the LoRA-targeted layers train.
    LoraOnly,
    /// Every bias of the model trains.
    All,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    pub r: usize,
    pub alpha: f64,
    pub dropout: f64,
    pub rslora: bool,
    pub init: LoraInit,
    pub bias: BiasMode,
    /// Weight-decomposed (DoRA): adds a trainable magnitude per output feature.
    pub dora: bool,
}

impl LoraConfig {
    /// The factor on `B A x`: alpha / r, or alpha / sqrt(r) with rsLoRA.
    pub fn scale(&self) -> f64 {
        if self.rslora {
            self.alpha / (self.r as f64).sqrt()
        } else {
            self.alpha / self.r as f64
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PromptInit {
    Random,
    /// Rows of the token embedding.
    Vocab,
    /// The embedding of a given text, repeated to the prompt length.
    Text,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptConfig {
    pub len: usize,
    pub init: PromptInit,
    pub text: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrefixConfig {
    pub len: usize,
    /// Hidden width of the reparameterization MLP; 0 for none.
    pub projection: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    Relu,
    Gelu,
    Silu,
    Tanh,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdapterConfig {
    pub bottleneck: usize,
    pub act: Activation,
    pub scale: f64,
    /// `beside` (parallel) rather than `after` (serial).
    pub parallel: bool,
}

/// A method with concrete arguments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum MethodConfig {
    Lora(LoraConfig),
    Ia3,
    Prompt(PromptConfig),
    Prefix(PrefixConfig),
    Adapter(AdapterConfig),
    Bitfit,
}

impl MethodConfig {
    /// Builds the configuration from fixed, checked arguments. Returns `None`
    /// when the size argument is 0 or `enabled=false` (a search point where the
    /// method is absent).
    pub fn from_args(kind: MethodKind, args: &Args, parallel: bool) -> Option<MethodConfig> {
        let int = |n: &str| args.fixed(n).and_then(|v| v.as_i64()).unwrap_or(0);
        let float = |n: &str| args.fixed(n).and_then(|v| v.as_f64()).unwrap_or(0.0);
        let flag = |n: &str| args.fixed(n).and_then(|v| v.as_bool()).unwrap_or(false);
        let name = |n: &str| {
            args.fixed(n)
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_string()
        };
        let size = |n: &str| usize::try_from(int(n)).ok().filter(|&v| v > 0);
        if args.fixed("enabled").and_then(|v| v.as_bool()) == Some(false) {
            return None;
        }
        Some(match kind {
            MethodKind::Lora | MethodKind::Dora => MethodConfig::Lora(LoraConfig {
                r: size("r")?,
                alpha: float("alpha"),
                dropout: float("dropout"),
                rslora: flag("rslora"),
                init: if name("init") == "gaussian" {
                    LoraInit::Gaussian
                } else {
                    LoraInit::Default
                },
                bias: match name("bias").as_str() {
                    "all" => BiasMode::All,
                    "lora_only" => BiasMode::LoraOnly,
                    _ => BiasMode::None,
                },
                dora: kind == MethodKind::Dora || flag("dora"),
            }),
            MethodKind::Ia3 => MethodConfig::Ia3,
            MethodKind::Prompt => MethodConfig::Prompt(PromptConfig {
                len: size("len")?,
                init: match name("init").as_str() {
                    "vocab" => PromptInit::Vocab,
                    "text" => PromptInit::Text,
                    _ => PromptInit::Random,
                },
                text: args
                    .fixed("text")
                    .and_then(|v| v.as_str())
                    .map(str::to_string),
            }),
            MethodKind::Prefix => MethodConfig::Prefix(PrefixConfig {
                len: size("len")?,
                projection: usize::try_from(int("projection")).unwrap_or(0),
            }),
            MethodKind::Adapter => MethodConfig::Adapter(AdapterConfig {
                bottleneck: size("bottleneck")?,
                act: match name("act").as_str() {
                    "gelu" => Activation::Gelu,
                    "silu" => Activation::Silu,
                    "tanh" => Activation::Tanh,
                    _ => Activation::Relu,
                },
                scale: float("scale"),
                parallel,
            }),
            MethodKind::Bitfit => MethodConfig::Bitfit,
        })
    }

    /// Short name: `lora`, `dora`, `ia3`, ...
    pub fn name(&self) -> &'static str {
        match self {
            MethodConfig::Lora(l) if l.dora => "dora",
            MethodConfig::Lora(_) => "lora",
            MethodConfig::Ia3 => "ia3",
            MethodConfig::Prompt(_) => "prompt",
            MethodConfig::Prefix(_) => "prefix",
            MethodConfig::Adapter(_) => "adapter",
            MethodConfig::Bitfit => "bitfit",
        }
    }
}
