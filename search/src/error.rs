//! The search's errors: the spec's (rendered diagnostics), bad settings,
//! and the journal's.

use crate::journal::JournalError;

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// Rendered diagnostics of the spec.
    #[error("{0}")]
    Spec(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Journal(#[from] JournalError),
}
