//! Reading data files, with errors that name the file and line.

use crate::error::{Result, RuntimeError};
use std::collections::BTreeSet;
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

/// Reads a classification data set. `expected_labels`, when given (from the
/// compiled plan), must equal the labels found.
pub fn load_classification(path: &Path, expected_labels: Option<&[String]>) -> Result<Dataset> {
    let raw: Vec<(String, String)> = if path.is_dir() {
        read_class_folders(path)?
    } else {
        read_tsv(path)?
    };
    if raw.is_empty() {
        return Err(RuntimeError::Data {
            file: path.to_path_buf(),
            line: 0,
            what: "no examples".into(),
        });
    }
    let found: BTreeSet<&str> = raw.iter().map(|(l, _)| l.as_str()).collect();
    let label_names: Vec<String> = match expected_labels {
        Some(names) => names.to_vec(),
        None => found.iter().map(|s| s.to_string()).collect(),
    };
    if label_names.len() < 2 {
        return Err(RuntimeError::Data {
            file: path.to_path_buf(),
            line: 0,
            what: format!("needs at least 2 classes, found {:?}", label_names),
        });
    }
    let mut examples = Vec::with_capacity(raw.len());
    for (i, (label, text)) in raw.into_iter().enumerate() {
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

fn read_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| RuntimeError::io(path, e))?;
    Ok(String::from_utf8(bytes)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
}

fn read_tsv(path: &Path) -> Result<Vec<(String, String)>> {
    let text = read_text(path)?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let Some((label, body)) = line.split_once('\t') else {
            return Err(RuntimeError::Data {
                file: path.to_path_buf(),
                line: i + 1,
                what: "expected `label<TAB>text`, found no tab".into(),
            });
        };
        let (label, body) = (label.trim(), body.trim());
        if label.is_empty() || body.is_empty() {
            return Err(RuntimeError::Data {
                file: path.to_path_buf(),
                line: i + 1,
                what: "empty label or text".into(),
            });
        }
        out.push((label.to_string(), body.to_string()));
    }
    Ok(out)
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| RuntimeError::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    v.sort();
    Ok(v)
}

fn read_class_folders(dir: &Path) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for class in sorted_entries(dir)?.into_iter().filter(|p| p.is_dir()) {
        let label = class
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for file in sorted_entries(&class)?
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        {
            let text = read_text(&file)?;
            let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
            if !text.is_empty() {
                out.push((label.clone(), text));
            }
        }
    }
    Ok(out)
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
    let mut documents = Vec::new();
    if path.is_dir() {
        let mut stack = vec![path.to_path_buf()];
        let mut files = Vec::new();
        while let Some(d) = stack.pop() {
            for p in sorted_entries(&d)? {
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|e| e == "txt") {
                    files.push(p);
                }
            }
        }
        files.sort();
        for f in files {
            let t = read_text(&f)?;
            if !t.trim().is_empty() {
                documents.push(t);
            }
        }
    } else {
        let t = read_text(path)?;
        if !t.trim().is_empty() {
            documents.push(t);
        }
    }
    if documents.is_empty() {
        return Err(RuntimeError::Data {
            file: path.to_path_buf(),
            line: 0,
            what: "no text".into(),
        });
    }
    Ok(Corpus {
        documents,
        source: path.to_path_buf(),
    })
}
