//! Adapters on disk: peftc's own format and Hugging Face PEFT's.

pub mod hf;
pub mod native;

use crate::error::{Result, RuntimeError};
use crate::model::ParamStore;
use peftc_compiler::plan::Plan;
use std::path::{Path, PathBuf};

/// Where the trained tensors of `path` live: a run folder (its final
/// `adapter/`, or its newest checkpoint if the run did not finish), a peftc
/// adapter folder, or a Hugging Face PEFT adapter folder.
pub enum Source {
    Native(PathBuf),
    Checkpoint(PathBuf),
    Hf(PathBuf),
}

pub fn locate(path: &Path) -> Result<Source> {
    if native::is_native(path) {
        return Ok(Source::Native(path.to_path_buf()));
    }
    if native::is_native(&path.join("adapter")) {
        return Ok(Source::Native(path.join("adapter")));
    }
    if hf::is_hf(path) {
        return Ok(Source::Hf(path.to_path_buf()));
    }
    if path.join("checkpoints/latest").is_file() {
        return Ok(Source::Checkpoint(path.to_path_buf()));
    }
    Err(RuntimeError::Adapter {
        dir: path.to_path_buf(),
        what: "not a peftc run, a peftc adapter (adapter.json) or a Hugging Face PEFT adapter (adapter_config.json)".into(),
    })
}

/// Loads the trained tensors at `path` into `store` (names and shapes checked
/// against the plan). A file holding exactly the plan's inference form
/// (P-tuning's encoder output, as HF saves it) loads as that form.
pub fn load_into(plan: &Plan, store: &mut ParamStore, path: &Path) -> Result<()> {
    let (tensors, origin) = read(plan, path)?;
    if let Some(inference) = peftc_compiler::methods::plan_inference_tensors(plan) {
        let names: std::collections::BTreeSet<&String> = tensors.keys().collect();
        if names == inference.iter().map(|d| &d.name).collect() {
            *store = ParamStore::declared(&inference);
        }
    }
    store.load_from(tensors, &origin)?;
    crate::methods::check_loaded(plan, store)
        .map_err(|what| RuntimeError::Adapter { dir: origin, what })
}

/// The tensors at `path` under the plan's names, and the folder they came from.
fn read(
    plan: &Plan,
    path: &Path,
) -> Result<(
    std::collections::BTreeMap<String, crate::weights::HostTensor>,
    PathBuf,
)> {
    match locate(path)? {
        Source::Native(dir) => {
            let (meta, params) = native::load(&dir)?;
            if meta.model_type != plan.model.model_type {
                return Err(RuntimeError::Adapter {
                    dir,
                    what: format!(
                        "was trained on a {} model; the spec's model is {}",
                        meta.model_type, plan.model.model_type
                    ),
                });
            }
            Ok((params, dir))
        }
        Source::Checkpoint(run) => {
            let ck = crate::train::checkpoint::load_latest(&run, 0.0)?.ok_or_else(|| {
                RuntimeError::Adapter {
                    dir: run.clone(),
                    what: "has no complete checkpoint".into(),
                }
            })?;
            Ok((ck.params, run))
        }
        Source::Hf(dir) => {
            let t = hf::import(plan, &dir)?;
            Ok((t, dir))
        }
    }
}
