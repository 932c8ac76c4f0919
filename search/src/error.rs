//! The search's errors: the spec's (rendered diagnostics), bad settings,
//! and the storage's.

use crate::storage::StorageError;

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// Rendered diagnostics of the spec.
    #[error("{0}")]
    Spec(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}
