//! Trainable parameters: which ones a plan creates (names, shapes, initial
//! values) and the host-side store that owns their values between steps.
//!
//! Names follow the base model's module paths and Hugging Face PEFT's
//! suffixes (`encoder.layer.0.attention.self.query.lora_A.weight`,
//! `...lora_magnitude_vector`, `...ia3_l`, `prompt_embeddings`), so export is a
//! renaming, not a translation.

use crate::error::{Result, RuntimeError};
use crate::rng::{Rng, key};
use crate::weights::HostTensor;
use peftc_compiler::methods::{Init, TensorDecl, TensorKind, plan_tensors, site_name};
use peftc_compiler::plan::{Plan, Site};
use std::collections::{BTreeMap, BTreeSet};

/// A declared tensor: the compiler's declaration is the one source of every
/// adapter tensor's name, shape, kind and initialization.
pub type ParamSpec = TensorDecl;

/// Name of the LoRA/DoRA/IA3/adapter parameter `suffix` of `module`.
pub fn pname(module: &str, suffix: &str) -> String {
    site_name(module, suffix)
}

/// Every tensor the plan declares (trainable and frozen), in a stable order.
pub fn param_specs(plan: &Plan) -> Vec<ParamSpec> {
    plan_tensors(plan)
}

/// The values of every adapter tensor, on the host: the trainable ones and
/// the frozen ones (saved and loaded with them, never updated).
#[derive(Debug, Clone, Default)]
pub struct ParamStore {
    pub values: BTreeMap<String, HostTensor>,
    /// Names of the frozen tensors among `values`.
    pub frozen: BTreeSet<String>,
}

impl ParamStore {
    /// Initial values for `specs`, seeded. `base` supplies weights for inits
    /// that copy or measure them; `prompt_ids` are the token ids a vocab/text
    /// prompt init starts from.
    pub fn init(
        specs: &[ParamSpec],
        seed: u64,
        base: &BaseLookup,
        prompt_ids: &[u32],
    ) -> Result<ParamStore> {
        let mut values = BTreeMap::new();
        for s in specs {
            let n: usize = s.shape.iter().product();
            let mut rng = Rng::new(key(&[seed, name_hash(&s.name)]));
            let data: Vec<f32> = match &s.init {
                Init::Zeros => vec![0.0; n],
                Init::Ones => vec![1.0; n],
                Init::Uniform(b) => (0..n).map(|_| rng.uniform(-*b as f64, *b as f64)).collect(),
                Init::Normal(std) => (0..n).map(|_| rng.normal() * std).collect(),
                Init::FromBase(name) => base.get(name)?.data.clone(),
                Init::FromBaseOrNormal(name, std) => match base.weights.get(name) {
                    Some(t) if t.shape == s.shape => t.data.clone(),
                    _ => (0..n).map(|_| rng.normal() * std).collect(),
                },
                Init::RowNorms(name) => {
                    let w = base.get(name)?;
                    let cols = w.cols();
                    w.data
                        .chunks_exact(cols)
                        .map(|r| r.iter().map(|v| v * v).sum::<f32>().sqrt())
                        .collect()
                }
                Init::Constant(v) => vec![*v; n],
                Init::MaskIndex(sel) => {
                    let w = base.get(&sel.weight)?;
                    crate::methods::mask_index(sel, &w, seed)?
                }
                Init::PruneMask(sel) => {
                    // The weight it prunes was declared (and drawn) just before.
                    let w = values.get_mut(&sel.weight).ok_or_else(|| {
                        RuntimeError::Internal(format!(
                            "`{}` is declared before the weight it prunes",
                            s.name
                        ))
                    })?;
                    crate::methods::prune_mask(sel, w, seed)
                }
                Init::TorchUniform { seed, skip, bound } => {
                    crate::torch_rng::uniform(*seed, *skip, n, *bound)
                }
                Init::EmbeddingRows => {
                    let emb = base.embedding()?;
                    let (rows, dim) = (s.shape[0], s.shape[1]);
                    let vocab = emb.rows();
                    let mut v = Vec::with_capacity(n);
                    for r in 0..rows {
                        let id = if prompt_ids.is_empty() {
                            (rng.next_u64() % vocab as u64) as usize
                        } else {
                            prompt_ids[r % prompt_ids.len()] as usize % vocab
                        };
                        v.extend_from_slice(&emb.data[id * dim..(id + 1) * dim]);
                    }
                    v
                }
            };
            values.insert(s.name.clone(), HostTensor::new(s.shape.clone(), data));
        }
        let frozen = specs
            .iter()
            .filter(|s| matches!(s.kind, TensorKind::Frozen { .. }))
            .map(|s| s.name.clone())
            .collect();
        Ok(ParamStore { values, frozen })
    }

    pub fn get(&self, name: &str) -> Option<&HostTensor> {
        self.values.get(name)
    }

    pub fn numel(&self) -> usize {
        self.values.values().map(HostTensor::numel).sum()
    }

    /// A store of `decls` with zero values (to load an adapter into).
    pub fn declared(decls: &[TensorDecl]) -> ParamStore {
        ParamStore {
            values: decls
                .iter()
                .map(|d| (d.name.clone(), HostTensor::zeros(d.shape.clone())))
                .collect(),
            frozen: decls
                .iter()
                .filter(|d| matches!(d.kind, TensorKind::Frozen { .. }))
                .map(|d| d.name.clone())
                .collect(),
        }
    }

    /// Whether `name` trains (is neither frozen nor unknown).
    pub fn trains(&self, name: &str) -> bool {
        self.values.contains_key(name) && !self.frozen.contains(name)
    }

    /// Replaces every value with `other`'s (an adapter or a checkpoint read
    /// from `origin`): `other` must hold exactly this store's tensors, each
    /// with its shape and finite values. Nothing is replaced when it does not.
    pub fn load_from(
        &mut self,
        other: BTreeMap<String, HostTensor>,
        origin: &std::path::Path,
    ) -> Result<()> {
        let fail = |what: String| {
            Err(RuntimeError::Adapter {
                dir: origin.to_path_buf(),
                what,
            })
        };
        if let Some(k) = other.keys().find(|k| !self.values.contains_key(*k)) {
            return fail(format!(
                "tensor `{k}` does not belong to this spec's adapter"
            ));
        }
        let missing: Vec<&String> = self
            .values
            .keys()
            .filter(|k| !other.contains_key(*k))
            .collect();
        if !missing.is_empty() {
            let shown: Vec<String> = missing.iter().take(6).map(|k| format!("`{k}`")).collect();
            let more = if missing.len() > shown.len() {
                format!(" and {} more", missing.len() - shown.len())
            } else {
                String::new()
            };
            return fail(format!(
                "lacks {} of the {} tensors the spec's block trains: {}{more} — an adapter for other modules, or a partial file",
                missing.len(),
                self.values.len(),
                shown.join(", ")
            ));
        }
        for (k, v) in &other {
            let slot = &self.values[k];
            if slot.shape != v.shape {
                return fail(format!(
                    "tensor `{k}` has shape {:?}, the spec needs {:?}",
                    v.shape, slot.shape
                ));
            }
            if let Some(i) = v.data.iter().position(|x| !x.is_finite()) {
                return fail(format!(
                    "tensor `{k}` holds a non-finite value ({} at index {i}); refusing a diverged adapter",
                    v.data[i]
                ));
            }
        }
        self.values = other;
        Ok(())
    }
}

/// Read access to base weights during initialization.
pub struct BaseLookup<'a> {
    pub weights: &'a crate::weights::Weights,
    pub embedding_name: &'a str,
}

impl BaseLookup<'_> {
    /// A base weight as f32 (a packed one expanded).
    fn get(&self, name: &str) -> Result<std::borrow::Cow<'_, HostTensor>> {
        self.weights.get(name).ok_or_else(|| {
            RuntimeError::Invalid(format!(
                "base weight `{name}` needed to initialize an adapter is missing"
            ))
        })
    }

    fn embedding(&self) -> Result<std::borrow::Cow<'_, HostTensor>> {
        self.get(self.embedding_name)
    }
}

/// A stable 64-bit hash of a name (FNV-1a), to seed each parameter on its own.
pub fn name_hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x1000_0000_01b3)
    })
}

/// Sites whose module is `path`.
pub fn sites_of<'a>(plan: &'a Plan, path: &'a str) -> impl Iterator<Item = &'a Site> + 'a {
    plan.sites.iter().filter(move |s| s.module == path)
}
