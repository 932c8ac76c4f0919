//! peftc's own adapter format: `adapter.safetensors` (every trainable tensor
//! under peftc's names) and `adapter.json` (what it belongs to). Used for
//! every method, including those Hugging Face PEFT lacks (bottleneck adapters,
//! gates, BitFit biases).

use crate::atomic::write_atomic;
use crate::error::{Result, RuntimeError};
use crate::weights::{HostTensor, read_safetensors_all_float, write_safetensors};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

pub const FORMAT: &str = "peftc-adapter";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AdapterMeta {
    pub format: String,
    pub version: u32,
    /// The peft block it trains.
    pub block: String,
    pub model_type: String,
    pub task: String,
    #[serde(default)]
    pub label_names: Vec<String>,
    /// The spec the adapter was trained from (text), and the folder its
    /// relative paths resolve against.
    pub spec: String,
    #[serde(default)]
    pub spec_dir: String,
    pub params: Vec<(String, Vec<usize>)>,
    /// Optimizer steps it was trained for (absent in adapters written
    /// before peftc recorded it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<usize>,
}

pub fn save(dir: &Path, meta: &AdapterMeta, params: &BTreeMap<String, HostTensor>) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| RuntimeError::write(dir, e))?;
    write_safetensors(
        &dir.join("adapter.safetensors"),
        params,
        Some([("format".to_string(), FORMAT.to_string())].into()),
    )?;
    let json = serde_json::to_vec_pretty(meta).map_err(|e| RuntimeError::Invalid(e.to_string()))?;
    write_atomic(&dir.join("adapter.json"), &json)
}

pub fn is_native(dir: &Path) -> bool {
    dir.join("adapter.json").is_file() && dir.join("adapter.safetensors").is_file()
}

pub fn load(dir: &Path) -> Result<(AdapterMeta, BTreeMap<String, HostTensor>)> {
    let meta_path = dir.join("adapter.json");
    let meta: AdapterMeta = serde_json::from_slice(
        &std::fs::read(&meta_path).map_err(|e| RuntimeError::read(&meta_path, e))?,
    )
    .map_err(|e| {
        RuntimeError::format(&meta_path, format!("not a peftc adapter description: {e}"))
    })?;
    if meta.format != FORMAT {
        return Err(RuntimeError::format(
            &meta_path,
            format!("format is `{}`, expected `{FORMAT}`", meta.format),
        ));
    }
    let params = read_safetensors_all_float(&dir.join("adapter.safetensors"))?;
    Ok((meta, params))
}
