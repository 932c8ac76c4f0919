//! Reading, parsing and checking a spec file, with diagnostics rendered
//! against its text.

use super::CliError;
use peftc_compiler::{CheckOptions, Checked, check};
use peftc_grammar::{Diagnostic, render_all};
use std::path::{Path, PathBuf};

/// A checked spec with the text it came from.
pub struct LoadedSpec {
    pub path: String,
    pub source: String,
    pub checked: Checked,
}

impl LoadedSpec {
    /// A diagnostic about this spec, as a command error.
    pub fn fail(&self, d: Diagnostic) -> CliError {
        CliError::Spec {
            path: self.path.clone(),
            source: self.source.clone(),
            diagnostics: vec![d],
        }
    }
}

/// Whether the command reads the train block's data (then a problem with it
/// is an error) or only estimates (a warning).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Data {
    Reads,
    Estimates,
}

pub fn load(spec: &Path, model: Option<PathBuf>, data: Data) -> Result<LoadedSpec, CliError> {
    let path = spec.display().to_string();
    let source = std::fs::read_to_string(spec)
        .map_err(|e| CliError::Input(format!("cannot read `{path}`: {e}")))?;
    let fail = |diagnostics: Vec<Diagnostic>| CliError::Spec {
        path: path.clone(),
        source: source.clone(),
        diagnostics,
    };
    let file = peftc_grammar::parse(&source).map_err(|d| fail(vec![d]))?;
    let spec_dir = spec.parent().map(Path::to_path_buf).unwrap_or_default();
    let opts = CheckOptions {
        spec_dir,
        model_override: model,
        lenient_data: data == Data::Estimates,
    };
    let checked = check(&file, &opts).map_err(fail)?;
    if !checked.warnings.is_empty() {
        eprint!("{}", render_all(&checked.warnings, &path, &source));
    }
    Ok(LoadedSpec {
        path,
        source,
        checked,
    })
}
