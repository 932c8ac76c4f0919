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
use peftc_compiler::methods::{LoraInit, MethodConfig, PromptInit};
use peftc_compiler::model::{ModuleKind, Role};
use peftc_compiler::plan::{Plan, Site};
use peftc_compiler::task::TaskKind;
use std::collections::BTreeMap;

/// How a parameter starts.
#[derive(Debug, Clone, PartialEq)]
pub enum Init {
    Zeros,
    Ones,
    /// Uniform in (-b, b).
    Uniform(f32),
    /// Normal with this standard deviation.
    Normal(f32),
    /// Copied from the base checkpoint (a bias made trainable).
    FromBase(String),
    /// Copied from the base checkpoint when it has the tensor (a fine-tuned
    /// classification head), else drawn from `Normal(0, std)`.
    FromBaseOrNormal(String, f32),
    /// Row norms of a base weight `[out, in]` (DoRA's magnitude).
    RowNorms(String),
    /// Rows of the token embedding (prompt init = vocab / text).
    EmbeddingRows(Vec<u32>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct ParamSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub init: Init,
}

/// Name of the LoRA/DoRA/IA3/adapter parameter `suffix` of `module`.
pub fn pname(module: &str, suffix: &str) -> String {
    format!("{module}.{suffix}")
}

/// Every trainable parameter the plan needs, in a stable order.
pub fn param_specs(plan: &Plan) -> Vec<ParamSpec> {
    let mut out = Vec::new();
    let d = &plan.model.dims;
    let kv = d.kv_heads * d.head_dim;
    let mut prefix_projection_done = Vec::new();
    let n_layers_of = |stmt: usize| plan.sites.iter().filter(|s| s.statement == stmt).count();
    for s in &plan.sites {
        let m = &s.module;
        let (i, o) = (s.in_dim, s.out_dim);
        let gate = |out: &mut Vec<ParamSpec>, tag: &str, width: usize| {
            if s.gated {
                let b = 1.0 / (width as f32).sqrt();
                out.push(ParamSpec {
                    name: pname(m, &format!("{tag}_gate.weight")),
                    shape: vec![1, width],
                    init: Init::Uniform(b),
                });
                out.push(ParamSpec {
                    name: pname(m, &format!("{tag}_gate.bias")),
                    shape: vec![1],
                    init: Init::Uniform(b),
                });
            }
        };
        match &s.method {
            MethodConfig::Lora(l) => {
                let a_init = match l.init {
                    LoraInit::Default => Init::Uniform(1.0 / (i as f32).sqrt()),
                    LoraInit::Gaussian => Init::Normal(1.0 / l.r as f32),
                };
                out.push(ParamSpec {
                    name: pname(m, "lora_A.weight"),
                    shape: vec![l.r, i],
                    init: a_init,
                });
                out.push(ParamSpec {
                    name: pname(m, "lora_B.weight"),
                    shape: vec![o, l.r],
                    init: Init::Zeros,
                });
                if l.dora {
                    out.push(ParamSpec {
                        name: pname(m, "lora_magnitude_vector"),
                        shape: vec![o],
                        init: Init::RowNorms(format!("{m}.weight")),
                    });
                }
                gate(&mut out, "lora", i);
            }
            MethodConfig::Ia3 => {
                let n = if s.feedforward { i } else { o };
                out.push(ParamSpec {
                    name: pname(m, "ia3_l"),
                    shape: vec![n],
                    init: Init::Ones,
                });
            }
            MethodConfig::Prompt(p) => {
                let init = match p.init {
                    PromptInit::Random => Init::Normal(1.0),
                    // Filled in by `ParamStore::init`, which has the tokenizer's ids.
                    PromptInit::Vocab | PromptInit::Text => Init::EmbeddingRows(Vec::new()),
                };
                out.push(ParamSpec {
                    name: "prompt_embeddings".into(),
                    shape: vec![p.len, d.hidden],
                    init,
                });
            }
            MethodConfig::Prefix(p) => {
                let layer = s.layer().unwrap_or(0);
                if p.projection == 0 {
                    out.push(ParamSpec {
                        name: format!("prefix.{layer}.kv"),
                        shape: vec![p.len, 2 * kv],
                        init: Init::Normal(1.0),
                    });
                } else if !prefix_projection_done.contains(&s.statement) {
                    prefix_projection_done.push(s.statement);
                    let (h, n) = (p.projection, n_layers_of(s.statement));
                    let st = s.statement;
                    out.push(ParamSpec {
                        name: format!("prefix_encoder.{st}.embedding"),
                        shape: vec![p.len, kv],
                        init: Init::Normal(1.0),
                    });
                    let b1 = 1.0 / (kv as f32).sqrt();
                    out.push(ParamSpec {
                        name: format!("prefix_encoder.{st}.0.weight"),
                        shape: vec![h, kv],
                        init: Init::Uniform(b1),
                    });
                    out.push(ParamSpec {
                        name: format!("prefix_encoder.{st}.0.bias"),
                        shape: vec![h],
                        init: Init::Uniform(b1),
                    });
                    let b2 = 1.0 / (h as f32).sqrt();
                    out.push(ParamSpec {
                        name: format!("prefix_encoder.{st}.2.weight"),
                        shape: vec![n * 2 * kv, h],
                        init: Init::Uniform(b2),
                    });
                    out.push(ParamSpec {
                        name: format!("prefix_encoder.{st}.2.bias"),
                        shape: vec![n * 2 * kv],
                        init: Init::Uniform(b2),
                    });
                }
                gate(&mut out, "prefix", d.hidden);
            }
            MethodConfig::Adapter(a) => {
                let input = if a.parallel { i } else { o };
                let tag = if a.parallel {
                    "adapter_beside"
                } else {
                    "adapter_after"
                };
                let bd = 1.0 / (input as f32).sqrt();
                out.push(ParamSpec {
                    name: pname(m, &format!("{tag}.down.weight")),
                    shape: vec![a.bottleneck, input],
                    init: Init::Uniform(bd),
                });
                out.push(ParamSpec {
                    name: pname(m, &format!("{tag}.down.bias")),
                    shape: vec![a.bottleneck],
                    init: Init::Uniform(bd),
                });
                out.push(ParamSpec {
                    name: pname(m, &format!("{tag}.up.weight")),
                    shape: vec![o, a.bottleneck],
                    init: Init::Zeros,
                });
                out.push(ParamSpec {
                    name: pname(m, &format!("{tag}.up.bias")),
                    shape: vec![o],
                    init: Init::Zeros,
                });
                gate(&mut out, tag, input);
            }
            MethodConfig::Bitfit => {}
        }
    }
    for b in &plan.trainable_biases {
        if let Some(m) = plan.modules.iter().find(|m| &m.path == b)
            && let Some(n) = m.kind.bias_len()
        {
            out.push(ParamSpec {
                name: format!("{b}.bias"),
                shape: vec![n],
                init: Init::FromBase(format!("{b}.bias")),
            });
        }
    }
    if plan.task.kind == TaskKind::Classify {
        for m in plan.modules.iter().filter(|m| m.role == Some(Role::Head)) {
            if let ModuleKind::Linear {
                in_features,
                out_features,
                bias,
            } = m.kind
            {
                out.push(ParamSpec {
                    name: format!("{}.weight", m.path),
                    shape: vec![out_features, in_features],
                    init: Init::FromBaseOrNormal(format!("{}.weight", m.path), 0.02),
                });
                if bias {
                    out.push(ParamSpec {
                        name: format!("{}.bias", m.path),
                        shape: vec![out_features],
                        init: Init::FromBaseOrNormal(format!("{}.bias", m.path), 0.0),
                    });
                }
            }
        }
    }
    out
}

/// The values of every trainable parameter, on the host.
#[derive(Debug, Clone, Default)]
pub struct ParamStore {
    pub values: BTreeMap<String, HostTensor>,
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
                Init::EmbeddingRows(_) => {
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
        Ok(ParamStore { values })
    }

    pub fn get(&self, name: &str) -> Option<&HostTensor> {
        self.values.get(name)
    }

    pub fn numel(&self) -> usize {
        self.values.values().map(HostTensor::numel).sum()
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
    fn get(&self, name: &str) -> Result<&HostTensor> {
        self.weights.get(name).ok_or_else(|| {
            RuntimeError::Invalid(format!(
                "base weight `{name}` needed to initialize an adapter is missing"
            ))
        })
    }

    fn embedding(&self) -> Result<&HostTensor> {
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
