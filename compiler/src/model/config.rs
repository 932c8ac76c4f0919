//! Reading a Hugging Face `config.json`: typed getters that say which key is
//! missing or has the wrong type.

use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read `{path}`: {reason}")]
    Unreadable { path: PathBuf, reason: String },
    #[error("`{path}` is not valid JSON: {reason}")]
    NotJson { path: PathBuf, reason: String },
    #[error("`{path}`: key `{key}` is missing")]
    Missing { path: PathBuf, key: String },
    #[error("`{path}`: {what}")]
    Inconsistent { path: PathBuf, what: String },
    #[error("`{path}`: key `{key}` should be {expected}, found `{found}`")]
    WrongType {
        path: PathBuf,
        key: String,
        expected: &'static str,
        found: String,
    },
}

/// A parsed `config.json` and the path it came from (for error messages).
pub struct HfConfig {
    pub path: PathBuf,
    map: Map<String, Value>,
}

impl HfConfig {
    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Unreadable {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let value: Value = serde_json::from_str(text).map_err(|e| ConfigError::NotJson {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        match value {
            Value::Object(map) => Ok(HfConfig {
                path: path.to_path_buf(),
                map,
            }),
            other => Err(ConfigError::WrongType {
                path: path.to_path_buf(),
                key: "<top level>".into(),
                expected: "a JSON object",
                found: truncate(&other.to_string()),
            }),
        }
    }

    fn wrong(&self, key: &str, expected: &'static str, v: &Value) -> ConfigError {
        ConfigError::WrongType {
            path: self.path.clone(),
            key: key.into(),
            expected,
            found: truncate(&v.to_string()),
        }
    }

    pub fn str_opt(&self, key: &str) -> Result<Option<&str>, ConfigError> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(self.wrong(key, "a string", v)),
        }
    }

    pub fn usize_opt(&self, key: &str) -> Result<Option<usize>, ConfigError> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| self.wrong(key, "a non-negative integer", v)),
        }
    }

    /// A required positive integer.
    /// `hidden / heads` when `hidden` divides into `heads` equal heads, else
    /// the error transformers raises for such a config.
    pub fn head_dim(&self, hidden: usize, heads: usize) -> Result<usize, ConfigError> {
        if hidden.is_multiple_of(heads) {
            Ok(hidden / heads)
        } else {
            Err(ConfigError::Inconsistent {
                path: self.path.clone(),
                what: format!(
                    "hidden_size ({hidden}) is not a multiple of num_attention_heads ({heads}): the heads would not split the hidden state evenly"
                ),
            })
        }
    }

    pub fn dim(&self, key: &str) -> Result<usize, ConfigError> {
        match self.usize_opt(key)? {
            Some(0) => Err(self.wrong(key, "a positive integer", &Value::from(0))),
            Some(n) => Ok(n),
            None => Err(ConfigError::Missing {
                path: self.path.clone(),
                key: key.into(),
            }),
        }
    }

    pub fn f64_opt(&self, key: &str) -> Result<Option<f64>, ConfigError> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.wrong(key, "a number", v)),
        }
    }

    pub fn bool_opt(&self, key: &str) -> Result<Option<bool>, ConfigError> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(self.wrong(key, "true or false", v)),
        }
    }

    /// `torch_dtype` (or `dtype` in newer configs), lower-cased without `torch.`.
    pub fn dtype(&self) -> Result<Option<String>, ConfigError> {
        let raw = match self.str_opt("torch_dtype")? {
            Some(s) => Some(s),
            None => self.str_opt("dtype")?,
        };
        Ok(raw.map(|s| {
            let s = s.trim_start_matches("torch.");
            match s {
                "float32" => "f32".to_string(),
                "float16" => "f16".to_string(),
                "bfloat16" => "bf16".to_string(),
                other => other.to_string(),
            }
        }))
    }
}

fn truncate(s: &str) -> String {
    if s.chars().count() > 40 {
        let t: String = s.chars().take(40).collect();
        format!("{t}...")
    } else {
        s.to_string()
    }
}
