//! Errors of the runtime. Each names the file, tensor or line it is about and
//! what was expected against what was found.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot read `{path}`: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("cannot write `{path}`: {reason}")]
    Write { path: PathBuf, reason: String },
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
        "{what} at step {step}; stopping (nothing was written after the last checkpoint). Lower `lr`, keep `max_grad_norm` on, or pass --skip-nonfinite to skip such steps"
    )]
    NonFinite { step: usize, what: String },
    /// A failure that is not the input's fault: a backend that failed, an
    /// invariant of peftc's own that did not hold.
    #[error("internal error: {0}")]
    Internal(String),
}

impl RuntimeError {
    pub fn read(path: impl Into<PathBuf>, e: impl std::fmt::Display) -> RuntimeError {
        RuntimeError::Read {
            path: path.into(),
            reason: e.to_string(),
        }
    }

    pub fn write(path: impl Into<PathBuf>, e: impl std::fmt::Display) -> RuntimeError {
        RuntimeError::Write {
            path: path.into(),
            reason: e.to_string(),
        }
    }

    /// Whether the error is about the user's input (a file, a spec, a flag)
    /// rather than a failure of peftc or of the machine.
    pub fn is_user_error(&self) -> bool {
        match self {
            RuntimeError::Read { .. }
            | RuntimeError::Format { .. }
            | RuntimeError::Tensor { .. }
            | RuntimeError::Shape { .. }
            | RuntimeError::MissingTensor { .. }
            | RuntimeError::Data { .. }
            | RuntimeError::Tokenizer(_)
            | RuntimeError::Adapter { .. }
            | RuntimeError::Invalid(_)
            | RuntimeError::NonFinite { .. } => true,
            RuntimeError::Write { .. } | RuntimeError::Internal(_) => false,
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
