//! Checkpoints: the trainable parameters, the optimizer state and the step,
//! written atomically (a staged folder renamed into place, then a `latest`
//! pointer replaced), so a run killed at any moment resumes from the last
//! complete one.

use super::optim::AdamW;
use crate::atomic::write_atomic;
use crate::error::{Result, RuntimeError};
use crate::weights::{HostTensor, read_safetensors, write_safetensors};
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
    let staged = root.join(format!(".{name}.partial-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staged);
    std::fs::create_dir_all(&staged).map_err(|e| RuntimeError::io(&staged, e))?;
    write_safetensors(&staged.join("params.safetensors"), params, None)?;
    let mut opt = BTreeMap::new();
    for (k, m) in &adam.m {
        opt.insert(format!("m.{k}"), HostTensor::new(vec![m.len()], m.clone()));
    }
    for (k, v) in &adam.v {
        opt.insert(format!("v.{k}"), HostTensor::new(vec![v.len()], v.clone()));
    }
    write_safetensors(&staged.join("optimizer.safetensors"), &opt, None)?;
    let json =
        serde_json::to_vec_pretty(state).map_err(|e| RuntimeError::Invalid(e.to_string()))?;
    write_atomic(&staged.join("state.json"), &json)?;
    let dest = root.join(&name);
    crate::atomic::replace_dir(&staged, &dest)?;
    write_atomic(&root.join("latest"), name.as_bytes())?;
    prune(&root, state.step);
    Ok(dest)
}

fn prune(root: &Path, newest: usize) {
    let Ok(rd) = std::fs::read_dir(root) else {
        return;
    };
    let mut steps: Vec<usize> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.strip_prefix("step-")?.parse().ok())
        .filter(|&s| s < newest)
        .collect();
    steps.sort_unstable();
    let drop = steps.len().saturating_sub(KEEP);
    for s in &steps[..drop] {
        let _ = std::fs::remove_dir_all(root.join(dir_name(*s)));
    }
}

/// The newest complete checkpoint of `run`, if any.
pub fn load_latest(run: &Path, weight_decay: f32) -> Result<Option<Checkpoint>> {
    let root = run.join("checkpoints");
    let Ok(name) = std::fs::read_to_string(root.join("latest")) else {
        return Ok(None);
    };
    let dir = root.join(name.trim());
    let state: CheckpointState = serde_json::from_slice(
        &std::fs::read(dir.join("state.json"))
            .map_err(|e| RuntimeError::io(dir.join("state.json"), e))?,
    )
    .map_err(|e| RuntimeError::format(dir.join("state.json"), e.to_string()))?;
    let params = read_safetensors(&dir.join("params.safetensors"))?;
    let opt = read_safetensors(&dir.join("optimizer.safetensors"))?;
    let mut adam = AdamW::new(weight_decay);
    adam.t = state.adam_t;
    for (k, t) in opt {
        if let Some(name) = k.strip_prefix("m.") {
            adam.m.insert(name.to_string(), t.data);
        } else if let Some(name) = k.strip_prefix("v.") {
            adam.v.insert(name.to_string(), t.data);
        }
    }
    Ok(Some(Checkpoint {
        state,
        params,
        adam,
    }))
}
