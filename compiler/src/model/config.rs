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

    /// The RoPE base: `rope_theta`, or `rope_parameters.rope_theta` where
    /// transformers 5 writes it. A scaled RoPE (`rope_type` or the older
    /// `rope_scaling.type` other than `default`), which peftc does not
    /// compute, is an error rather than a silently different model.
    pub fn rope_theta(&self) -> Result<Option<f64>, ConfigError> {
        let params = match self.map.get("rope_parameters") {
            None | Some(Value::Null) => None,
            Some(Value::Object(m)) => Some(m),
            Some(v) => return Err(self.wrong("rope_parameters", "an object", v)),
        };
        let scaling = match self.map.get("rope_scaling") {
            None | Some(Value::Null) => None,
            Some(Value::Object(m)) => Some(m),
            Some(v) => return Err(self.wrong("rope_scaling", "an object or null", v)),
        };
        for (key, m) in [("rope_parameters", params), ("rope_scaling", scaling)] {
            let Some(m) = m else { continue };
            let ty = m.get("rope_type").or_else(|| m.get("type"));
            match ty {
                None | Some(Value::Null) => {}
                Some(Value::String(t)) if t == "default" => {}
                Some(t) => {
                    return Err(ConfigError::Inconsistent {
                        path: self.path.clone(),
                        what: format!(
                            "`{key}` asks for RoPE type {t}, a scaled RoPE peftc does not compute (only `default`)"
                        ),
                    });
                }
            }
        }
        if let Some(t) = self.f64_opt("rope_theta")? {
            return Ok(Some(t));
        }
        match params.and_then(|m| m.get("rope_theta")) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.wrong("rope_parameters.rope_theta", "a number", v)),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> HfConfig {
        HfConfig::parse(Path::new("config.json"), text).expect("parses")
    }

    #[test]
    fn rope_theta_is_read_where_transformers_5_writes_it() {
        let t = r#"{"rope_parameters": {"rope_theta": 1000000.0, "rope_type": "default"}}"#;
        assert_eq!(cfg(t).rope_theta(), Ok(Some(1e6)));
        assert_eq!(
            cfg(r#"{"rope_theta": 100000, "rope_scaling": null}"#).rope_theta(),
            Ok(Some(1e5))
        );
        assert_eq!(cfg("{}").rope_theta(), Ok(None));
        let scaled =
            r#"{"rope_theta": 500000.0, "rope_scaling": {"rope_type": "llama3", "factor": 32.0}}"#;
        let e = cfg(scaled).rope_theta().unwrap_err().to_string();
        assert!(e.contains("RoPE type \"llama3\""), "{e}");
    }
}
