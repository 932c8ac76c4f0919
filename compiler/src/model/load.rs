//! From a path (a model folder, a `config.json`, or a `.gguf` file) to a
//! [`ModelDesc`]. Reads no weights.

use super::config::{ConfigError, HfConfig};
use super::gguf::{self, GgmlType, GgufError, GgufHeader};
use super::{Dims, Family, ModelDesc, ModelSource, WeightFormat, bert, llama};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Model types peftc can describe, by family.
pub const SUPPORTED: &[(&str, Family)] = &[
    ("bert", Family::Bert),
    ("llama", Family::Llama),
    ("mistral", Family::Llama),
    ("qwen2", Family::Llama),
];

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModelError {
    #[error("model path `{0}` does not exist")]
    NotFound(PathBuf),
    #[error("`{0}` has neither a config.json nor a .gguf file")]
    NoConfig(PathBuf),
    #[error("`{dir}` holds several .gguf files ({names}); name one")]
    AmbiguousGguf { dir: PathBuf, names: String },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error("unsupported architecture `{model_type}` in `{path}`; peftc supports {supported}")]
    Unsupported {
        path: PathBuf,
        model_type: String,
        supported: String,
    },
    #[error("`{path}`: {what}")]
    Invalid { path: PathBuf, what: String },
}

impl ModelError {
    /// The closest supported model type, for "did you mean".
    pub fn suggestion(&self) -> Option<&'static str> {
        match self {
            ModelError::Unsupported { model_type, .. } => {
                peftc_grammar::suggest::did_you_mean(model_type, SUPPORTED.iter().map(|(n, _)| *n))
            }
            _ => None,
        }
    }
}

fn supported_list() -> String {
    let names: Vec<&str> = SUPPORTED.iter().map(|(n, _)| *n).collect();
    names.join(", ")
}

/// Describes the model at `path`: a folder holding `config.json` (or a single
/// `.gguf`), a `config.json` file, or a `.gguf` file.
pub fn load_model(path: &Path) -> Result<ModelDesc, ModelError> {
    if !path.exists() {
        return Err(ModelError::NotFound(path.to_path_buf()));
    }
    if path.is_dir() {
        let cfg = path.join("config.json");
        if cfg.is_file() {
            return from_config(&cfg);
        }
        let ggufs = gguf_files(path);
        return match ggufs.as_slice() {
            [one] => from_gguf(one),
            [] => Err(ModelError::NoConfig(path.to_path_buf())),
            many => Err(ModelError::AmbiguousGguf {
                dir: path.to_path_buf(),
                names: many
                    .iter()
                    .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        };
    }
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
    {
        return from_gguf(path);
    }
    from_config(path)
}

fn gguf_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.extension()
                        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn from_config(path: &Path) -> Result<ModelDesc, ModelError> {
    let cfg = HfConfig::read(path)?;
    let model_type = cfg
        .str_opt("model_type")?
        .ok_or_else(|| ConfigError::Missing {
            path: path.to_path_buf(),
            key: "model_type".into(),
        })?
        .to_string();
    let family = family_of(path, &model_type)?;
    let dims = match family {
        Family::Bert => bert::dims(&cfg)?,
        Family::Llama => llama::dims(&cfg, &model_type)?,
    };
    validate(path, &dims)?;
    let dtype = cfg.dtype()?.unwrap_or_else(|| "f32".into());
    let bytes_per_param = match dtype.as_str() {
        "f16" | "bf16" => 2.0,
        _ => 4.0,
    };
    // A config.json beside one GGUF file and no safetensors: the runtime reads
    // the GGUF's weights, so their format is the GGUF's.
    let dir = path.parent().unwrap_or(Path::new("."));
    let beside = match gguf_files(dir).as_slice() {
        [one] if !dir.join("model.safetensors").exists() => gguf::read_header(one).ok(),
        _ => None,
    };
    let weights = match beside {
        Some(h) => gguf_weight_format(&h),
        None => WeightFormat {
            dtype,
            bytes_per_param,
            packed_params: 0,
            packed_bytes: 0,
        },
    };
    Ok(build(
        family,
        model_type,
        ModelSource::ConfigJson(path.to_path_buf()),
        dims,
        weights,
    ))
}

fn family_of(path: &Path, model_type: &str) -> Result<Family, ModelError> {
    SUPPORTED
        .iter()
        .find(|(n, _)| *n == model_type)
        .map(|(_, f)| *f)
        .ok_or_else(|| ModelError::Unsupported {
            path: path.to_path_buf(),
            model_type: model_type.to_string(),
            supported: supported_list(),
        })
}

fn validate(path: &Path, d: &Dims) -> Result<(), ModelError> {
    let bad = |what: String| {
        Err(ModelError::Invalid {
            path: path.to_path_buf(),
            what,
        })
    };
    if d.heads == 0 || d.kv_heads == 0 || d.head_dim == 0 {
        return bad("attention heads and head size must be positive".into());
    }
    if !d.heads.is_multiple_of(d.kv_heads) {
        return bad(format!(
            "num_attention_heads ({}) is not a multiple of num_key_value_heads ({})",
            d.heads, d.kv_heads
        ));
    }
    // Bounds that keep every estimate's arithmetic far from overflowing and
    // hold for any real checkpoint (LLaMA-3-405B: hidden 16384, 126 layers).
    let limits = [
        ("hidden size", d.hidden, 1 << 20),
        ("intermediate size", d.intermediate, 1 << 22),
        ("layer count", d.layers, 4096),
        ("vocabulary", d.vocab, 1 << 24),
        ("attention heads", d.heads, 1 << 14),
        ("head size", d.head_dim, 1 << 14),
        ("position table", d.max_positions, 1 << 24),
        ("token types", d.type_vocab, 1 << 16),
    ];
    for (what, value, max) in limits {
        if value > max {
            return bad(format!(
                "the {what} ({value}) is implausibly large (peftc takes at most {max})"
            ));
        }
    }
    Ok(())
}

fn build(
    family: Family,
    model_type: String,
    source: ModelSource,
    dims: Dims,
    weights: WeightFormat,
) -> ModelDesc {
    let modules = match family {
        Family::Bert => bert::modules(&dims),
        Family::Llama => llama::modules(&dims),
    };
    ModelDesc {
        family,
        model_type,
        source,
        dims,
        modules,
        weights,
        quantize: None,
    }
}

fn from_gguf(path: &Path) -> Result<ModelDesc, ModelError> {
    let h = gguf::read_header(path)?;
    let arch = h
        .get("general.architecture")
        .and_then(|v| v.as_str())
        .unwrap_or("<missing>")
        .to_string();
    let family = family_of(path, &arch)?;
    if family != Family::Llama {
        return Err(ModelError::Unsupported {
            path: path.to_path_buf(),
            model_type: format!("{arch} (in GGUF)"),
            supported: "llama, mistral, qwen2".into(),
        });
    }
    let dims = gguf_dims(path, &h, &arch, always_qkv_bias(&arch))?;
    validate(path, &dims)?;
    let weights = gguf_weight_format(&h);
    Ok(build(
        family,
        arch,
        ModelSource::Gguf(path.to_path_buf()),
        dims,
        weights,
    ))
}

/// Qwen2 always has q/k/v biases; other GGUF llama-likes have them only when the
/// tensors say so.
fn always_qkv_bias(arch: &str) -> bool {
    arch == "qwen2"
}

fn gguf_dims(path: &Path, h: &GgufHeader, arch: &str, qwen: bool) -> Result<Dims, ModelError> {
    let req = |key: &str| -> Result<usize, ModelError> {
        let full = format!("{arch}.{key}");
        h.get(&full)
            .and_then(|v| v.as_u64())
            .and_then(|v| usize::try_from(v).ok())
            .filter(|&v| v > 0)
            .ok_or_else(|| ModelError::Invalid {
                path: path.to_path_buf(),
                what: format!("metadata `{full}` is missing or not a positive integer"),
            })
    };
    let opt_f = |key: &str| h.get(&format!("{arch}.{key}")).and_then(|v| v.as_f64());
    let hidden = req("embedding_length")?;
    let heads = req("attention.head_count")?;
    let kv_heads = req("attention.head_count_kv").unwrap_or(heads);
    let vocab = match req("vocab_size") {
        Ok(v) => v,
        Err(e) => h
            .get("tokenizer.ggml.tokens")
            .and_then(|t| t.as_array())
            .map(|a| a.len())
            .ok_or(e)?,
    };
    let has_bias = h.tensor("blk.0.attn_q.bias").is_some();
    Ok(Dims {
        family: super::Family::Llama,
        hidden,
        layers: req("block_count")?,
        heads,
        kv_heads,
        head_dim: match req("attention.key_length") {
            Ok(d) => d,
            Err(_) if hidden.is_multiple_of(heads) => hidden / heads,
            Err(_) => {
                return Err(ModelError::Invalid {
                    path: path.to_path_buf(),
                    what: format!(
                        "embedding_length ({hidden}) is not a multiple of attention.head_count ({heads}), and no attention.key_length says the head size"
                    ),
                });
            }
        },
        intermediate: req("feed_forward_length")?,
        vocab,
        max_positions: req("context_length").unwrap_or(2048),
        type_vocab: 0,
        norm_eps: opt_f("attention.layer_norm_rms_epsilon").unwrap_or(1e-6),
        rope_theta: opt_f("rope.freq_base").unwrap_or(10000.0),
        tied_embeddings: h.tensor("output.weight").is_none(),
        qkv_bias: has_bias || qwen,
        o_bias: h.tensor("blk.0.attn_output.bias").is_some(),
        mlp_bias: h.tensor("blk.0.ffn_up.bias").is_some(),
        act: "silu".into(),
    })
}

/// The dominant storage type of the 2-D weights, and bytes per parameter over all tensors.
fn gguf_weight_format(h: &GgufHeader) -> WeightFormat {
    let mut by_type: HashMap<GgmlType, u64> = HashMap::new();
    let (mut elems, mut bytes) = (0u64, 0u64);
    let (mut packed_params, mut packed_bytes) = (0u64, 0u64);
    for t in &h.tensors {
        elems += t.elements();
        bytes += t.byte_len().unwrap_or(t.elements() * 4);
        if t.dims.len() == 2 {
            *by_type.entry(t.ty).or_default() += t.elements();
            if let (true, Some(b)) = (t.ty.is_quantized(), t.byte_len()) {
                packed_params += t.elements();
                packed_bytes += b;
            }
        }
    }
    let dominant = by_type
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .map(|(t, _)| t.name())
        .unwrap_or_else(|| "f32".into());
    WeightFormat {
        dtype: dominant,
        bytes_per_param: if elems == 0 {
            4.0
        } else {
            bytes as f64 / elems as f64
        },
        packed_params,
        packed_bytes,
    }
}
