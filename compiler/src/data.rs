//! Data files as text: a TSV of `label<TAB>text`, a folder of class folders
//! of `.txt` files, or a text corpus (a file, or every `.txt` under a
//! folder). `peftc check` reads them to catch what training would fail on
//! (a missing file, a line without a tab, a single class) and to size the
//! classifier head; the runtime reads them through the same functions, so
//! both agree on every example. No tokenizing happens here.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// A problem with a data file, at a line where there is one (1-based; 0 for
/// the file as a whole).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("`{}`{}: {what}", file.display(), if *line > 0 { format!(":{line}") } else { String::new() })]
pub struct DataError {
    pub file: PathBuf,
    pub line: usize,
    pub what: String,
}

impl DataError {
    fn new(file: &Path, line: usize, what: impl Into<String>) -> DataError {
        DataError {
            file: file.to_path_buf(),
            line,
            what: what.into(),
        }
    }
}

/// Labelled texts in file order, and what was odd but not fatal.
#[derive(Debug, Clone, Default)]
pub struct LabelledTexts {
    /// `(label, text)` pairs.
    pub rows: Vec<(String, String)>,
    pub warnings: Vec<String>,
}

impl LabelledTexts {
    /// The sorted, distinct labels.
    pub fn labels(&self) -> Vec<String> {
        let set: BTreeSet<&str> = self.rows.iter().map(|(l, _)| l.as_str()).collect();
        set.into_iter().map(str::to_string).collect()
    }
}

/// Documents of a language-model corpus, in a stable order.
#[derive(Debug, Clone, Default)]
pub struct Documents {
    pub documents: Vec<String>,
    pub warnings: Vec<String>,
}

/// Reads a classification data set: a TSV file or a folder of class folders.
/// At least one example and two classes, or an error.
pub fn read_labelled(path: &Path) -> Result<LabelledTexts, DataError> {
    let out = if path.is_dir() {
        read_class_folders(path)?
    } else {
        read_tsv(path)?
    };
    if out.rows.is_empty() {
        return Err(DataError::new(path, 0, "no examples"));
    }
    let labels = out.labels();
    if labels.len() < 2 {
        return Err(DataError::new(
            path,
            0,
            format!("needs at least 2 classes to classify, found {:?}", labels),
        ));
    }
    Ok(out)
}

/// Reads a text file (one document) or every `.txt` under a folder (one
/// document each, sorted by path). At least one non-empty document.
pub fn read_documents(path: &Path) -> Result<Documents, DataError> {
    let mut out = Documents::default();
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
            let t = read_text(&f, &mut out.warnings)?;
            if !t.trim().is_empty() {
                out.documents.push(t);
            }
        }
    } else {
        let t = read_text(path, &mut out.warnings)?;
        if !t.trim().is_empty() {
            out.documents.push(t);
        }
    }
    if out.documents.is_empty() {
        return Err(DataError::new(path, 0, "no text"));
    }
    Ok(out)
}

/// A file's text; bytes that are not UTF-8 are replaced by U+FFFD, with a
/// warning naming the first line that holds one.
fn read_text(path: &Path, warnings: &mut Vec<String>) -> Result<String, DataError> {
    let bytes = std::fs::read(path).map_err(|e| {
        let what = if e.kind() == std::io::ErrorKind::NotFound {
            "no such file".to_string()
        } else {
            format!("cannot read it: {e}")
        };
        DataError::new(path, 0, what)
    })?;
    match String::from_utf8(bytes) {
        Ok(t) => Ok(t),
        Err(e) => {
            let at = e.utf8_error().valid_up_to();
            let bytes = e.into_bytes();
            let line = bytes[..at].iter().filter(|&&b| b == b'\n').count() + 1;
            warnings.push(format!(
                "`{}`:{line}: bytes that are not UTF-8 (replaced by U+FFFD); save the file as UTF-8",
                path.display()
            ));
            Ok(String::from_utf8_lossy(&bytes).into_owned())
        }
    }
}

fn read_tsv(path: &Path) -> Result<LabelledTexts, DataError> {
    let mut out = LabelledTexts::default();
    let text = read_text(path, &mut out.warnings)?;
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let Some((label, body)) = line.split_once('\t') else {
            return Err(DataError::new(
                path,
                i + 1,
                "expected `label<TAB>text`, found no tab",
            ));
        };
        let (label, body) = (label.trim(), body.trim());
        if label.is_empty() || body.is_empty() {
            return Err(DataError::new(path, i + 1, "empty label or text"));
        }
        out.rows.push((label.to_string(), body.to_string()));
    }
    Ok(out)
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| DataError::new(dir, 0, format!("cannot read the folder: {e}")))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    v.sort();
    Ok(v)
}

fn read_class_folders(dir: &Path) -> Result<LabelledTexts, DataError> {
    let mut out = LabelledTexts::default();
    let classes: Vec<PathBuf> = sorted_entries(dir)?
        .into_iter()
        .filter(|p| p.is_dir())
        .collect();
    if classes.is_empty() {
        return Err(DataError::new(
            dir,
            0,
            "has no class folders (expected one folder of .txt files per class)",
        ));
    }
    for class in classes {
        let label = class
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for file in sorted_entries(&class)?
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        {
            let text = read_text(&file, &mut out.warnings)?;
            let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
            if !text.is_empty() {
                out.rows.push((label.clone(), text));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("peftc-data-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn tsv_rows_labels_and_line_errors() {
        let d = scratch("tsv");
        let f = d.join("a.tsv");
        std::fs::write(&f, "spam\tWIN\n\nham\thi there\r\n").unwrap();
        let t = read_labelled(&f).unwrap();
        assert_eq!(t.rows.len(), 2);
        assert_eq!(t.labels(), vec!["ham".to_string(), "spam".to_string()]);
        std::fs::write(&f, "spam\tWIN\nno tab here\n").unwrap();
        let e = read_labelled(&f).unwrap_err();
        assert_eq!(e.line, 2);
        std::fs::write(&f, "spam\tWIN\nspam\tagain\n").unwrap();
        assert!(read_labelled(&f).unwrap_err().what.contains("2 classes"));
        assert!(
            read_labelled(&d.join("missing.tsv"))
                .unwrap_err()
                .what
                .contains("no such file")
        );
    }

    #[test]
    fn non_utf8_is_replaced_with_a_warning_naming_the_line() {
        let d = scratch("utf8");
        let f = d.join("a.tsv");
        std::fs::write(&f, b"spam\tWIN\nham\tcaf\xe9\n").unwrap();
        let t = read_labelled(&f).unwrap();
        assert_eq!(t.rows[1].1, "caf\u{fffd}");
        assert_eq!(t.warnings.len(), 1);
        assert!(t.warnings[0].contains(":2:"), "{}", t.warnings[0]);
    }

    #[test]
    fn class_folders_and_corpora() {
        let d = scratch("folders");
        for (c, text) in [("a", "one  two"), ("b", "three")] {
            std::fs::create_dir_all(d.join(c)).unwrap();
            std::fs::write(d.join(c).join("1.txt"), text).unwrap();
        }
        let t = read_labelled(&d).unwrap();
        assert_eq!(
            t.rows,
            vec![("a".into(), "one two".into()), ("b".into(), "three".into())]
        );
        assert_eq!(read_documents(&d).unwrap().documents.len(), 2);
        let empty = scratch("empty");
        assert!(read_labelled(&empty).is_err());
        assert!(read_documents(&empty).is_err());
    }
}
