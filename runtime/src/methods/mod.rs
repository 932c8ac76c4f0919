//! How each method runs. **A method is one file here** — its hook on a
//! module (the forward pass), its fold into the base weights — beside its
//! compiler file (`compiler/src/methods/`), which declares its arguments,
//! tensors and capabilities. `table.rs` dispatches to them with exhaustive
//! matches.

mod adapter;
mod hf;
mod hook;
mod ia3;
mod lora;
pub mod prefix;
mod prompt;
mod table;
pub mod trace;

pub use hf::HfForm;
pub use hook::{At, BaseLinear, Hook, SiteHook, Stage};
pub use table::{hf_form, hook, merge, prompt_embeddings, prompt_len};

use crate::error::{Result, RuntimeError};
use crate::kernels::PeftKernels;
use crate::model::ops::linear_pt;
use crate::model::params::pname;
use crate::model::{ParamStore, Params};
use crate::weights::HostTensor;
use burn::tensor::{Tensor, activation};

/// UniPELT gate `sigmoid(x w + b)`, `[n, 1]`, of the method tagged `tag` at
/// `path` (its tensors: `{path}.{tag}_gate.weight` / `.bias`).
pub fn gate<B: PeftKernels>(
    path: &str,
    tag: &str,
    x: Tensor<B, 2>,
    p: &Params<B>,
) -> Result<Tensor<B, 2>> {
    let w = p.get(&pname(path, &format!("{tag}_gate.weight")))?;
    let b = p.get(&pname(path, &format!("{tag}_gate.bias")))?;
    Ok(activation::sigmoid(linear_pt(x, w, Some(b))))
}

/// A trained tensor of `store` (an internal error when the plan did not
/// declare it: the store was built from the plan).
fn trained<'a>(store: &'a ParamStore, name: &str) -> Result<&'a HostTensor> {
    store
        .get(name)
        .ok_or_else(|| RuntimeError::Internal(format!("trained tensor `{name}` is missing")))
}
