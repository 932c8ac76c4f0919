//! Reading data files, with errors that name the file and line.

use crate::error::{Result, RuntimeError};
use peftc_compiler::data::DataError;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub text: String,
    pub label: usize,
}

/// A labelled data set; labels are indices into `label_names` (sorted).
#[derive(Debug, Clone)]
pub struct Dataset {
    pub examples: Vec<Example>,
    pub label_names: Vec<String>,
    pub source: PathBuf,
}

fn data_error(e: DataError) -> RuntimeError {
    RuntimeError::Data {
        file: e.file,
        line: e.line,
        what: e.what,
    }
}

fn warn(warnings: &[String]) {
    for w in warnings {
        eprintln!("warning: {w}");
    }
}

/// Reads a classification data set (through the compiler's reader, which
/// `peftc check` runs too). `expected_labels`, when given (from the compiled
/// plan), must cover every label found.
pub fn load_classification(path: &Path, expected_labels: Option<&[String]>) -> Result<Dataset> {
    let read = peftc_compiler::data::read_labelled(path).map_err(data_error)?;
    warn(&read.warnings);
    let label_names: Vec<String> = match expected_labels {
        Some(names) => names.to_vec(),
        None => read.labels(),
    };
    let mut examples = Vec::with_capacity(read.rows.len());
    for (i, (label, text)) in read.rows.into_iter().enumerate() {
        let Some(idx) = label_names.iter().position(|n| *n == label) else {
            return Err(RuntimeError::Data {
                file: path.to_path_buf(),
                line: i + 1,
                what: format!("label `{label}` is not one of {:?}", label_names),
            });
        };
        examples.push(Example { text, label: idx });
    }
    Ok(Dataset {
        examples,
        label_names,
        source: path.to_path_buf(),
    })
}

/// Documents of a language-model corpus, in a stable order.
#[derive(Debug, Clone)]
pub struct Corpus {
    pub documents: Vec<String>,
    pub source: PathBuf,
}

/// Reads a text file (one document) or every `.txt` under a folder (one
/// document each, sorted by path).
pub fn load_corpus(path: &Path) -> Result<Corpus> {
    let read = peftc_compiler::data::read_documents(path).map_err(data_error)?;
    warn(&read.warnings);
    Ok(Corpus {
        documents: read.documents,
        source: path.to_path_buf(),
    })
}
