//! Errors of the runtime. Each names the file, tensor or line it is about and
//! what was expected against what was found.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot read `{path}`: {reason}")]
    Io { path: PathBuf, reason: String },
    #[error("`{path}`: {what}")]
    Format { path: PathBuf, what: String },
    #[error("`{file}`: tensor `{tensor}` {what}")]
    Tensor {
        file: PathBuf,
        tensor: String,
        what: String,
    },
    #[error("`{file}`: tensor `{tensor}` has shape {found:?}, expected {expected:?}")]
    Shape {
        file: PathBuf,
        tensor: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("`{file}` has no tensor `{tensor}`{hint}")]
    MissingTensor {
        file: PathBuf,
        tensor: String,
        hint: String,
    },
    #[error("`{file}`:{line}: {what}")]
    Data {
        file: PathBuf,
        line: usize,
        what: String,
    },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("adapter `{dir}`: {what}")]
    Adapter { dir: PathBuf, what: String },
    #[error("{0}")]
    Invalid(String),
    #[error(
        "the loss became {value} at step {step}; stopping (nothing written after the last checkpoint)"
    )]
    NonFinite { step: usize, value: f32 },
}

impl RuntimeError {
    pub fn io(path: impl Into<PathBuf>, e: impl std::fmt::Display) -> RuntimeError {
        RuntimeError::Io {
            path: path.into(),
            reason: e.to_string(),
        }
    }

    pub fn format(path: impl Into<PathBuf>, what: impl Into<String>) -> RuntimeError {
        RuntimeError::Format {
            path: path.into(),
            what: what.into(),
        }
    }
}

pub type Result<T> = std::result::Result<T, RuntimeError>;
