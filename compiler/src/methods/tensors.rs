//! Tensors as data: each method declares the tensors a site (or a statement)
//! needs — name, shape from the site's dimensions, whether it trains, how it
//! starts. The estimator counts from these declarations and the runtime
//! allocates, saves and loads from them; nothing else spells a shape.

use crate::model::{ModuleKind, Role};
use crate::plan::Plan;
use crate::task::TaskKind;
use serde::{Deserialize, Serialize};

/// How a tensor starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
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
    EmbeddingRows,
    /// Every element this value (VeRA's `d_initial`, AdaLoRA's `ranknum`).
    Constant(f32),
    /// PyTorch's `uniform_(-bound, bound)` from a CPU `torch.Generator`
    /// seeded with `seed`, after `skip` earlier draws from it: HF PEFT's
    /// reproducible frozen projections (VeRA's `vera_A`, then `vera_B`).
    TorchUniform {
        seed: u64,
        skip: u64,
        bound: f32,
    },
    /// A sparse mask's selected positions, sorted ascending, chosen by the
    /// rule it carries (FishMask's are replaced by its calibration before
    /// the first step).
    MaskIndex(super::mask::MaskSelect),
    /// A SparseAdapter's mask over the weight it prunes (1 kept, 0 pruned),
    /// chosen at initialization by the rule it carries.
    PruneMask(super::adapter::PruneSelect),
}

/// Whether a tensor trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TensorKind {
    /// Updated by the optimizer; counted as trainable.
    Trainable,
    /// Saved and loaded with the adapter, never updated, no weight decay.
    /// `in_total`: Hugging Face PEFT holds it as a frozen `nn.Parameter`,
    /// counted in `print_trainable_parameters`' total (a buffer is not).
    Frozen { in_total: bool },
    /// Trains, but only `kept` of its entries: the others are held at zero
    /// by a frozen mask (a SparseAdapter's pruned weight).
    Pruned { kept: u64 },
}

/// One tensor a plan declares.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TensorDecl {
    /// `{module}.{suffix}` for a site's tensor (HF PEFT's suffixes:
    /// `lora_A.weight`, `ia3_l`, ...), or a name of its own for tensors a
    /// statement or the model shares (`prompt_embeddings`).
    pub name: String,
    pub shape: Vec<usize>,
    pub kind: TensorKind,
    pub init: Init,
}

impl TensorDecl {
    pub fn trainable(name: impl Into<String>, shape: Vec<usize>, init: Init) -> TensorDecl {
        TensorDecl {
            name: name.into(),
            shape,
            kind: TensorKind::Trainable,
            init,
        }
    }

    pub fn numel(&self) -> u64 {
        self.shape.iter().map(|&d| d as u64).product()
    }

    pub fn is_trainable(&self) -> bool {
        matches!(self.kind, TensorKind::Trainable | TensorKind::Pruned { .. })
    }
}

/// `{module}.{suffix}`: a site tensor's name.
pub fn site_name(module: &str, suffix: &str) -> String {
    format!("{module}.{suffix}")
}

/// Every tensor the plan declares, in a stable order: each site's, each
/// statement's shared ones (after its first site), the biases made
/// trainable, then the classification head.
pub fn plan_tensors(plan: &Plan) -> Vec<TensorDecl> {
    declared(plan, false)
}

/// The plan's tensors with each method's inference form where it has one
/// (P-tuning's encoder output for its encoder); `None` when none has one.
pub fn plan_inference_tensors(plan: &Plan) -> Option<Vec<TensorDecl>> {
    let dims = &plan.model.dims;
    plan.sites
        .iter()
        .any(|s| s.method.site().inference_tensors(s, dims).is_some())
        .then(|| declared(plan, true))
}

fn declared(plan: &Plan, inference: bool) -> Vec<TensorDecl> {
    let mut out = Vec::new();
    let dims = &plan.model.dims;
    let mut shared_done: Vec<usize> = Vec::new();
    for s in &plan.sites {
        let m = s.method.site();
        match m.inference_tensors(s, dims).filter(|_| inference) {
            Some(t) => out.extend(t),
            None => out.extend(m.tensors(s, dims)),
        }
        if !shared_done.contains(&s.statement) {
            shared_done.push(s.statement);
            let group: Vec<&crate::plan::Site> = plan
                .sites
                .iter()
                .filter(|t| t.statement == s.statement)
                .collect();
            out.extend(m.shared_tensors(&group, dims));
        }
    }
    for b in &plan.trainable_biases {
        if let Some(m) = plan.modules.iter().find(|m| &m.path == b)
            && let Some(n) = m.kind.bias_len()
        {
            out.push(TensorDecl::trainable(
                site_name(b, "bias"),
                vec![n],
                Init::FromBase(site_name(b, "bias")),
            ));
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
                let w = site_name(&m.path, "weight");
                out.push(TensorDecl::trainable(
                    w.clone(),
                    vec![out_features, in_features],
                    Init::FromBaseOrNormal(w, 0.02),
                ));
                if bias {
                    let b = site_name(&m.path, "bias");
                    out.push(TensorDecl::trainable(
                        b.clone(),
                        vec![out_features],
                        Init::FromBaseOrNormal(b, 0.0),
                    ));
                }
            }
        }
    }
    out
}
