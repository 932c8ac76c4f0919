//! How each method runs. **A method is one file here** — its hook on a
//! module (the forward pass), its fold into the base weights — beside its
//! compiler file (`compiler/src/methods/`), which declares its arguments,
//! tensors and capabilities. `table.rs` dispatches to them with exhaustive
//! matches.

mod adalora;
mod adapter;
pub mod coda;
mod dylora;
mod full;
mod hf;
mod hook;
mod ia3;
mod ln;
mod loha;
mod lokr;
mod lora;
pub mod lst;
mod mask;
pub mod prefix;
mod prompt;
mod ptuning;
mod select;
mod ssf;
mod table;
pub mod trace;
mod vera;

pub use adapter::prune_mask;
pub use hf::{ExportInfo, HfForm};
pub use hook::{At, BaseLinear, Hook, SiteHook, Stage};
pub use mask::initial_index as mask_index;
pub use table::{
    after_update, before_training, calibration_batches, check_loaded, check_run, coda_at,
    drop_lowest, droppable, hf_form, hook, ladder, merge, norm_scale_shift, prompt_embeddings,
    prompt_len, regularizer, tuned,
};

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

/// The gradients of `store`'s trainable tensors for one batch, without
/// dropout: what a calibration before training (FishMask, SNIP) scores.
fn batch_grads<B: burn::tensor::backend::AutodiffBackend + PeftKernels>(
    model: &crate::model::PeftModel<B>,
    store: &ParamStore,
    batch: &crate::data::Batch,
    device: &B::Device,
) -> Result<std::collections::BTreeMap<String, HostTensor>> {
    let params = Params::<B>::tracked(store, device);
    let ctx = model.ctx(batch, false, 0);
    let out = model.forward_for_loss(batch, &params, &ctx)?;
    let loss = model.training_loss(&out, batch, &params)?;
    drop(out);
    Ok(params.grads(&loss.backward(), store))
}

/// `a · b` on the host (`[m, k] · [k, n]`).
fn host_matmul(a: &HostTensor, b: &HostTensor) -> HostTensor {
    let (m, k, n) = (a.rows(), a.cols(), b.cols());
    let mut out = vec![0f32; m * n];
    for i in 0..m {
        for (kk, &av) in a.data[i * k..(i + 1) * k].iter().enumerate() {
            if av != 0.0 {
                for (o, bv) in out[i * n..(i + 1) * n]
                    .iter_mut()
                    .zip(&b.data[kk * n..(kk + 1) * n])
                {
                    *o += av * bv;
                }
            }
        }
    }
    HostTensor::new(vec![m, n], out)
}

/// `W[o, :] += s · Σ_{j<k} B[o, j] · A[j, :]`: the first `k` ranks of a
/// low-rank product folded into `w: [out, in]` (`a: [r, in]`, `b: [out, r]`).
fn fold_low_rank(w: &mut HostTensor, a: &HostTensor, b: &HostTensor, k: usize, s: f32) {
    let (inp, r) = (w.cols(), b.cols());
    for o in 0..w.rows() {
        for j in 0..k {
            let bo = b.data[o * r + j] * s;
            if bo != 0.0 {
                for (x, av) in w.data[o * inp..(o + 1) * inp]
                    .iter_mut()
                    .zip(&a.data[j * inp..(j + 1) * inp])
                {
                    *x += bo * av;
                }
            }
        }
    }
}

/// A declared tensor whose start needs no base weight, made again (VeRA's
/// projections from their seed, when an adapter file left them out).
fn regenerate(d: &peftc_compiler::methods::TensorDecl) -> Result<HostTensor> {
    use peftc_compiler::methods::Init;
    let n = d.shape.iter().product();
    let data = match &d.init {
        Init::Zeros => vec![0.0; n],
        Init::Ones => vec![1.0; n],
        Init::Constant(v) => vec![*v; n],
        Init::TorchUniform { seed, skip, bound } => {
            crate::torch_rng::uniform(*seed, *skip, n, *bound)
        }
        Init::Uniform(_)
        | Init::Normal(_)
        | Init::FromBase(_)
        | Init::FromBaseOrNormal(..)
        | Init::RowNorms(_)
        | Init::EmbeddingRows
        | Init::MaskIndex(_)
        | Init::PruneMask(_) => {
            return Err(RuntimeError::Internal(format!(
                "`{}` cannot be made again without its saved values",
                d.name
            )));
        }
    };
    Ok(HostTensor::new(d.shape.clone(), data))
}

/// The `adapter_config.json` fields HF's LyCORIS methods (LoHa, LoKr)
/// share; `r` and `alpha` are the method's.
fn lycoris_config(plan: &peftc_compiler::plan::Plan) -> serde_json::Map<String, serde_json::Value> {
    use serde_json::json;
    let mut c = serde_json::Map::new();
    c.insert("rank_dropout".into(), json!(0.0));
    c.insert("module_dropout".into(), json!(0.0));
    c.insert("init_weights".into(), json!(true));
    c.insert("use_effective_conv2d".into(), json!(false));
    c.insert("rank_pattern".into(), json!({}));
    c.insert("alpha_pattern".into(), json!({}));
    c.insert(
        "target_modules".into(),
        json!(crate::adapter::hf::targets_regex(plan, |_| true)),
    );
    c
}

/// A LyCORIS config's `alpha` (and no per-module `alpha_pattern`) against
/// the spec's.
fn check_alpha(cfg: &serde_json::Value, alpha: f64) -> std::result::Result<(), String> {
    let found = cfg["alpha"].as_f64().unwrap_or(8.0);
    if (found - alpha).abs() > 1e-9 {
        return Err(format!("has alpha {found}, the spec says alpha={alpha}"));
    }
    if cfg["alpha_pattern"]
        .as_object()
        .is_some_and(|m| !m.is_empty())
    {
        return Err("has a per-module alpha_pattern; peftc gives a statement one alpha".into());
    }
    Ok(())
}
