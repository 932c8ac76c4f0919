//! Errors that end a command: spec diagnostics (exit 2) or other failures (exit 1).

use peftc_grammar::{Diagnostic, render_all};

#[derive(Debug)]
pub enum CliError {
    /// Problems with the user's spec, rendered against its text.
    Spec {
        path: String,
        source: String,
        diagnostics: Vec<Diagnostic>,
    },
    /// Diagnostics already rendered against their text: exit 2.
    Rendered(String),
    /// Bad input outside a spec (a file, a flag): exit 2.
    Input(String),
    /// A failure that is not the input's fault: exit 1.
    Internal(String),
}

impl CliError {
    pub fn code(&self) -> u8 {
        match self {
            CliError::Spec { .. } | CliError::Rendered(_) | CliError::Input(_) => 2,
            CliError::Internal(_) => 1,
        }
    }

    /// The error as text, as `report` prints it.
    pub fn message(&self) -> String {
        match self {
            CliError::Spec {
                path,
                source,
                diagnostics,
            } => render_all(diagnostics, path, source),
            CliError::Rendered(t) => t.clone(),
            CliError::Input(m) => format!("error: {m}"),
            CliError::Internal(m) => format!("error (internal, not caused by the input): {m}"),
        }
    }

    pub fn report(&self) {
        match self {
            CliError::Rendered(t) => eprint!("{t}"),
            CliError::Spec { .. } => eprint!("{}", self.message()),
            CliError::Input(_) | CliError::Internal(_) => eprintln!("{}", self.message()),
        }
    }
}

/// A runtime error is the input's fault (exit 2) or not (exit 1).
impl From<peftc_runtime::RuntimeError> for CliError {
    fn from(e: peftc_runtime::RuntimeError) -> CliError {
        if e.is_user_error() {
            CliError::Input(e.to_string())
        } else {
            CliError::Internal(e.to_string())
        }
    }
}
