//! The frozen base weights of a model, on the host, keyed by their Hugging
//! Face names, with checked access: a missing tensor or a wrong shape is an
//! error naming the file, the tensor, and expected against found.
//!
//! A quantized GGUF's 2-D tensors stay in their blocks ([`PackedMatrix`]), and
//! so do the linear layers of a model loaded with `quantize nf4 | int8`;
//! [`Weights::take`] expands one to f32 for whoever needs the values, and
//! [`Weights::take_weight`] hands it over as it is for packed products.

mod dequant;
mod gguf_weights;
mod host;
mod int8;
mod kquants;
pub mod loftq;
mod mapped;
mod nf4;
mod packed;
mod quantize_load;
mod resident;
mod safetensors_file;

pub use dequant::{DECODED, dequantize};
pub use gguf_weights::{GgufForm, decode_gguf, hf_name, read_gguf_weights, unpermute_rows};
pub use host::HostTensor;
pub use int8::Int8Matrix;
pub use nf4::{NF4_BLOCK, NF4_CODE, Nf4Matrix, SCALE_GROUP, dynamic_code};
pub use packed::{Coding, DeviceForm, PackedMatrix};
pub use resident::Resident;
pub use safetensors_file::{
    for_each_safetensor, parse_safetensors_all_float, read_safetensors, read_safetensors_all_float,
    write_safetensors,
};

use crate::error::{Result, RuntimeError};
use peftc_compiler::model::{Family, ModelDesc, ModelSource};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A base tensor as the host holds it.
#[derive(Debug, Clone)]
pub enum HostWeight {
    Dense(HostTensor),
    /// A quantized matrix: a GGUF's blocks, or NF4 / int8 codes.
    Packed(Arc<PackedMatrix>),
}

impl HostWeight {
    pub fn shape(&self) -> Vec<usize> {
        match self {
            HostWeight::Dense(t) => t.shape.clone(),
            HostWeight::Packed(p) => p.shape().to_vec(),
        }
    }

    /// The values as f32 (a packed matrix expanded).
    pub fn dense(&self) -> Cow<'_, HostTensor> {
        match self {
            HostWeight::Dense(t) => Cow::Borrowed(t),
            HostWeight::Packed(p) => Cow::Owned(p.to_dense()),
        }
    }

    pub fn into_dense(self) -> HostTensor {
        match self {
            HostWeight::Dense(t) => t,
            HostWeight::Packed(p) => p.to_dense(),
        }
    }

    fn first_non_finite(&self) -> Option<f32> {
        match self {
            HostWeight::Dense(t) => t.data.iter().copied().find(|v| !v.is_finite()),
            HostWeight::Packed(p) => p.first_non_finite(),
        }
    }
}

/// Weights read from a checkpoint.
pub struct Weights {
    tensors: BTreeMap<String, HostWeight>,
    pub file: PathBuf,
}

impl Weights {
    pub fn from_map(file: PathBuf, tensors: BTreeMap<String, HostTensor>) -> Weights {
        let tensors = tensors
            .into_iter()
            .map(|(k, v)| (k, HostWeight::Dense(v)))
            .collect();
        Weights { tensors, file }
    }

    pub fn from_weights(file: PathBuf, tensors: BTreeMap<String, HostWeight>) -> Weights {
        Weights { tensors, file }
    }

    /// Reads the weights of `model`: `model.safetensors` beside its config.json,
    /// or the GGUF file it was described from, its quantized matrices held
    /// as `form` says; with `quantize`, its linear layers coded.
    pub fn load(model: &ModelDesc, form: GgufForm) -> Result<Weights> {
        let coder = quantize_load::Coder::of(model);
        let gguf = |path: &Path| -> Result<Weights> {
            let mut t = read_gguf_weights(path, model.dims.heads, model.dims.kv_heads, form)?;
            if let Some(c) = &coder {
                c.code_all(path, &mut t)?;
            }
            Ok(Weights::from_weights(path.to_path_buf(), t))
        };
        match &model.source {
            ModelSource::Gguf(path) => gguf(path),
            ModelSource::ConfigJson(cfg) => {
                let dir = cfg.parent().unwrap_or(Path::new("."));
                let file = dir.join("model.safetensors");
                if !file.exists() {
                    // A config.json beside a single GGUF file (the SmolLM2 asset layout).
                    if let Some(path) = single_gguf(dir) {
                        return gguf(&path);
                    }
                    return Err(RuntimeError::read(
                        &file,
                        "no such file (and no .gguf beside the config)",
                    ));
                }
                let mut tensors = BTreeMap::new();
                for_each_safetensor(&file, |name, t| {
                    let name = base_name(model.family, name);
                    let w = match &coder {
                        Some(c) => c.code(&file, &name, t)?,
                        None => HostWeight::Dense(t),
                    };
                    tensors.insert(name, w);
                    Ok(())
                })?;
                Ok(Weights::from_weights(file, tensors))
            }
        }
    }

    /// Every tensor as f32 (packed ones expanded).
    pub fn into_map(self) -> BTreeMap<String, HostTensor> {
        self.tensors
            .into_iter()
            .map(|(k, v)| (k, v.into_dense()))
            .collect()
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// Tensor `name` as f32 (a packed one expanded for the caller).
    pub fn get(&self, name: &str) -> Option<Cow<'_, HostTensor>> {
        self.tensors.get(name).map(HostWeight::dense)
    }

    /// Puts tensor `name` in, replacing any of that name (LoftQ's base and
    /// factors).
    pub fn insert(&mut self, name: String, w: HostWeight) {
        self.tensors.insert(name, w);
    }

    /// Tensor `name` as held (packed or dense).
    pub fn weight(&self, name: &str) -> Option<&HostWeight> {
        self.tensors.get(name)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// Takes tensor `name`, which must have `shape`, as f32.
    pub fn take(&mut self, name: &str, shape: &[usize]) -> Result<HostTensor> {
        self.take_weight(name, shape).map(HostWeight::into_dense)
    }

    /// Takes tensor `name`, which must have `shape`, as held (packed or dense).
    pub fn take_weight(&mut self, name: &str, shape: &[usize]) -> Result<HostWeight> {
        let t = self.tensors.remove(name).ok_or_else(|| {
            let near = closest_name(name, self.tensors.keys().map(String::as_str));
            RuntimeError::MissingTensor {
                file: self.file.clone(),
                tensor: name.to_string(),
                hint: near
                    .map(|n| format!(" (did you mean `{n}`?)"))
                    .unwrap_or_default(),
            }
        })?;
        if t.shape() != shape {
            return Err(RuntimeError::Shape {
                file: self.file.clone(),
                tensor: name.to_string(),
                expected: shape.to_vec(),
                found: t.shape(),
            });
        }
        if let Some(bad) = t.first_non_finite() {
            return Err(RuntimeError::Tensor {
                file: self.file.clone(),
                tensor: name.to_string(),
                what: format!("holds a non-finite value ({bad})"),
            });
        }
        Ok(t)
    }

    /// Takes tensor `name` if present (with the shape checked).
    pub fn take_opt(&mut self, name: &str, shape: &[usize]) -> Result<Option<HostTensor>> {
        if self.contains(name) {
            self.take(name, shape).map(Some)
        } else {
            Ok(None)
        }
    }
}

/// A checkpoint tensor's name as peftc's model descriptions spell it: task
/// checkpoints prefix BERT's names with `bert.`.
pub(crate) fn base_name(family: Family, name: String) -> String {
    match (family, name.strip_prefix("bert.")) {
        (Family::Bert, Some(n)) => n.to_string(),
        _ => name,
    }
}

fn single_gguf(dir: &Path) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
        })
        .collect();
    (found.len() == 1).then(|| found.remove(0))
}

/// The closest tensor name, for "did you mean" (names are long and similar, so
/// compare the last two segments).
fn closest_name<'a>(name: &str, names: impl Iterator<Item = &'a str>) -> Option<String> {
    let tail = |s: &str| s.rsplitn(3, '.').take(2).collect::<Vec<_>>().join(".");
    let want = tail(name);
    names
        .map(|n| (peftc_grammar::suggest::edit_distance(&tail(n), &want), n))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, n)| n.to_string())
}
