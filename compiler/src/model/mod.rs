//! What peftc knows about a pretrained model before any weight is read: its
//! dimensions and its module tree, in the checkpoint's own names, each module
//! tagged with the architecture-independent role it plays.

mod bert;
mod config;
pub mod gguf;
mod llama;
mod load;
mod quantize;
mod roles;

pub use config::ConfigError;
pub use load::{ModelError, load_model};
pub use quantize::{NF4_BLOCK, NF4_SCALE_GROUP, Quantize, QuantizeError, quantized_modules};
pub use roles::{LayerRole, MODEL_ROLES, Role};

use serde::{Deserialize, Serialize};

/// Architecture families peftc can describe. Each has one module-tree builder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    /// Post-norm encoders: `bert` (MiniLM is one).
    Bert,
    /// Pre-norm decoders with RMSNorm, RoPE, SwiGLU: `llama`, `mistral`, `qwen2`.
    Llama,
}

/// The numbers that size every tensor of the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dims {
    /// The family whose layer these numbers size (a side network builds
    /// blocks of the same class).
    pub family: Family,
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub intermediate: usize,
    pub vocab: usize,
    pub max_positions: usize,
    /// BERT's token-type vocabulary (segment embeddings); 0 where absent.
    pub type_vocab: usize,
    pub norm_eps: f64,
    /// RoPE base; 0 for absolute position embeddings.
    pub rope_theta: f64,
    pub tied_embeddings: bool,
    /// Bias on q, k, v projections (BERT; Qwen2; LLaMA with `attention_bias`).
    pub qkv_bias: bool,
    /// Bias on the attention output projection.
    pub o_bias: bool,
    /// Bias on the MLP projections.
    pub mlp_bias: bool,
    /// Activation of the MLP (`gelu`, `silu`, ...), as the config names it.
    pub act: String,
}

/// How a module computes, with the sizes that determine its parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ModuleKind {
    Linear {
        in_features: usize,
        out_features: usize,
        bias: bool,
    },
    Embedding {
        num: usize,
        dim: usize,
    },
    LayerNorm {
        dim: usize,
    },
    RmsNorm {
        dim: usize,
    },
    /// An attention block (projections + scaled dot-product attention).
    Attention,
    /// A feed-forward block.
    Mlp,
    /// One transformer layer.
    Layer,
    /// Any other grouping module (`embeddings`, `encoder`, ...).
    Container,
}

impl ModuleKind {
    /// Parameters held directly by this module (not its children).
    pub fn own_params(&self) -> u64 {
        match *self {
            ModuleKind::Linear {
                in_features,
                out_features,
                bias,
            } => (in_features * out_features + if bias { out_features } else { 0 }) as u64,
            ModuleKind::Embedding { num, dim } => (num * dim) as u64,
            ModuleKind::LayerNorm { dim } => 2 * dim as u64,
            ModuleKind::RmsNorm { dim } => dim as u64,
            _ => 0,
        }
    }

    /// Size of the bias vector this module holds, if any.
    pub fn bias_len(&self) -> Option<usize> {
        match *self {
            ModuleKind::Linear {
                out_features,
                bias: true,
                ..
            } => Some(out_features),
            ModuleKind::LayerNorm { dim } => Some(dim),
            _ => None,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            ModuleKind::Linear { .. } => "linear layer",
            ModuleKind::Embedding { .. } => "embedding",
            ModuleKind::LayerNorm { .. } => "layer norm",
            ModuleKind::RmsNorm { .. } => "RMS norm",
            ModuleKind::Attention => "attention block",
            ModuleKind::Mlp => "MLP block",
            ModuleKind::Layer => "transformer layer",
            ModuleKind::Container => "module group",
        }
    }
}

/// One named module of the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Module {
    /// Dotted path in the checkpoint's names (`encoder.layer.0.attention.self.query`).
    pub path: String,
    pub kind: ModuleKind,
    pub role: Option<Role>,
    /// `true` for groupings peftc names but the checkpoint does not have (BERT's
    /// MLP is two sibling modules); raw path selectors never match these.
    pub synthetic: bool,
    /// Shares its weight with another module (a tied LM head): its parameters
    /// are not counted again.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub tied: bool,
}

impl Module {
    /// Parameters this module adds to the model's count (0 when tied).
    pub fn counted_params(&self) -> u64 {
        if self.tied { 0 } else { self.kind.own_params() }
    }
}

/// Where the description came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "format", content = "path", rename_all = "snake_case")]
pub enum ModelSource {
    ConfigJson(std::path::PathBuf),
    Gguf(std::path::PathBuf),
}

/// Storage type of the frozen base weights as found on disk, or as held
/// after a `quantize` at load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeightFormat {
    /// `f32`, `f16`, `bf16`, or a GGUF quantization such as `q4_1`.
    pub dtype: String,
    /// Bytes on disk per parameter, averaged over the tensors.
    pub bytes_per_param: f64,
    /// The quantized matrices (a GGUF's, or those `quantize` codes), which the
    /// runtime can keep in their blocks: their parameters and bytes (0 for a
    /// full-precision checkpoint).
    #[serde(default)]
    pub packed_params: u64,
    #[serde(default)]
    pub packed_bytes: u64,
}

/// A model as the compiler sees it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelDesc {
    pub family: Family,
    /// `model_type` of the config (`bert`, `llama`, `mistral`, `qwen2`).
    pub model_type: String,
    pub source: ModelSource,
    pub dims: Dims,
    /// Every module of the base model (without a task head), parents before children.
    pub modules: Vec<Module>,
    pub weights: WeightFormat,
    /// Set by `model "DIR" quantize nf4`: the runtime codes the linear
    /// layers at load ([`ModelDesc::quantized`]); `weights` then counts the
    /// coded bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantize: Option<Quantize>,
}

impl ModelDesc {
    pub fn module(&self, path: &str) -> Option<&Module> {
        self.modules.iter().find(|m| m.path == path)
    }

    /// The module playing `role`, if the model has one.
    pub fn find_role(&self, role: Role) -> Option<&Module> {
        self.modules.iter().find(|m| m.role == Some(role))
    }

    /// Parameters of the base model, counting tied weights once.
    pub fn base_params(&self) -> u64 {
        self.modules.iter().map(Module::counted_params).sum()
    }

    /// Prefix of layer `i`'s modules (`encoder.layer.3`, `model.layers.3`).
    pub fn layer_prefix(&self, i: usize) -> String {
        match self.family {
            Family::Bert => format!("encoder.layer.{i}"),
            Family::Llama => format!("model.layers.{i}"),
        }
    }

    /// Module names a user may write where the family's own names differ from
    /// what a Hugging Face task model calls them (`bert.` prefix on BERT heads).
    pub fn strip_user_prefix<'a>(&self, path: &'a str) -> &'a str {
        let path = path.strip_prefix("base_model.model.").unwrap_or(path);
        match self.family {
            Family::Bert => path.strip_prefix("bert.").unwrap_or(path),
            Family::Llama => path,
        }
    }
}
