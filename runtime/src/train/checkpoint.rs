//! Checkpoints: the trainable parameters, the optimizer state and the step,
//! written atomically (a staged folder renamed into place, then a `latest`
//! pointer replaced), so a run killed at any moment resumes from the last
//! complete one.

use super::optim::AdamW;
use crate::atomic::write_atomic;
use crate::error::{Result, RuntimeError};
use crate::weights::{HostTensor, read_safetensors_all_float, write_safetensors};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Checkpoints kept besides the newest.
const KEEP: usize = 1;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CheckpointState {
    /// Optimizer steps completed.
    pub step: usize,
    pub adam_t: u64,
    /// Identifies the spec + block + seed the run trains; resuming a
    /// different one is refused.
    pub fingerprint: String,
}

pub struct Checkpoint {
    pub state: CheckpointState,
    pub params: BTreeMap<String, HostTensor>,
    pub adam: AdamW,
}

fn dir_name(step: usize) -> String {
    format!("step-{step:07}")
}

/// Writes a checkpoint of `step` under `run/checkpoints/`.
pub fn save(
    run: &Path,
    state: &CheckpointState,
    params: &BTreeMap<String, HostTensor>,
    adam: &AdamW,
) -> Result<PathBuf> {
    let root = run.join("checkpoints");
    let name = dir_name(state.step);
    let dest = root.join(&name);
    crate::atomic::replace_dir_with(&dest, |staged| {
        write_safetensors(&staged.join("params.safetensors"), params, None)?;
        let mut opt = BTreeMap::new();
        for (k, m) in &adam.m {
            opt.insert(format!("m.{k}"), HostTensor::new(vec![m.len()], m.clone()));
        }
        for (k, v) in &adam.v {
            opt.insert(format!("v.{k}"), HostTensor::new(vec![v.len()], v.clone()));
        }
        for (k, x) in &adam.extra {
            opt.insert(format!("x.{k}"), HostTensor::new(vec![x.len()], x.clone()));
        }
        write_safetensors(&staged.join("optimizer.safetensors"), &opt, None)?;
        let json =
            serde_json::to_vec_pretty(state).map_err(|e| RuntimeError::Internal(e.to_string()))?;
        write_atomic(&staged.join("state.json"), &json)
    })?;
    write_atomic(&root.join("latest"), name.as_bytes())?;
    prune(&root, state.step);
    Ok(dest)
}

/// Steps of the complete checkpoint folders under `root`, ascending.
fn complete_steps(root: &Path) -> Vec<usize> {
    let Ok(rd) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut steps: Vec<usize> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.strip_prefix("step-")?.parse().ok())
        .collect();
    steps.sort_unstable();
    steps
}

fn prune(root: &Path, newest: usize) {
    let steps: Vec<usize> = complete_steps(root)
        .into_iter()
        .filter(|&s| s < newest)
        .collect();
    let drop = steps.len().saturating_sub(KEEP);
    for s in &steps[..drop] {
        let _ = std::fs::remove_dir_all(root.join(dir_name(*s)));
    }
}

/// The newest complete checkpoint of `run`, if any.
pub fn load_latest(run: &Path, weight_decay: f32) -> Result<Option<Checkpoint>> {
    let root = run.join("checkpoints");
    let name = match std::fs::read_to_string(root.join("latest")) {
        Ok(name) => name,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // No pointer: a fresh run, unless complete checkpoints are there
            // (then the pointer was lost, and starting over would discard them).
            let steps = complete_steps(&root);
            return match steps.last() {
                None => Ok(None),
                Some(&s) => Err(RuntimeError::Adapter {
                    dir: root.clone(),
                    what: format!(
                        "holds checkpoints ({}) but no `latest` pointer; restore it (`echo {} > {}`) to resume, or start over with --force",
                        steps
                            .iter()
                            .map(|s| dir_name(*s))
                            .collect::<Vec<_>>()
                            .join(", "),
                        dir_name(s),
                        root.join("latest").display()
                    ),
                }),
            };
        }
        Err(e) => return Err(RuntimeError::read(root.join("latest"), e)),
    };
    let dir = root.join(name.trim());
    let state: CheckpointState = serde_json::from_slice(
        &std::fs::read(dir.join("state.json"))
            .map_err(|e| RuntimeError::read(dir.join("state.json"), e))?,
    )
    .map_err(|e| RuntimeError::format(dir.join("state.json"), e.to_string()))?;
    let params = read_safetensors_all_float(&dir.join("params.safetensors"))?;
    let opt = read_safetensors_all_float(&dir.join("optimizer.safetensors"))?;
    let mut adam = AdamW::new(weight_decay);
    adam.t = state.adam_t;
    for (k, t) in opt {
        if let Some(name) = k.strip_prefix("m.") {
            adam.m.insert(name.to_string(), t.data);
        } else if let Some(name) = k.strip_prefix("v.") {
            adam.v.insert(name.to_string(), t.data);
        } else if let Some(name) = k.strip_prefix("x.") {
            adam.extra.insert(name.to_string(), t.data);
        }
    }
    Ok(Some(Checkpoint {
        state,
        params,
        adam,
    }))
}
