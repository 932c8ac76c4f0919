//! Just enough reading of a data set to size a classifier head: the label set.
//! The runtime reads the data for real and checks it agrees.

use std::collections::BTreeSet;
use std::path::Path;

/// The sorted, distinct labels of a classification data set: the first
/// tab-separated field of each line of a TSV file, or the names of the
/// sub-folders of a folder of class folders.
pub fn labels(path: &Path) -> Result<Vec<String>, String> {
    if path.is_dir() {
        let rd = std::fs::read_dir(path)
            .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
        let mut names = BTreeSet::new();
        for e in rd.flatten() {
            if e.path().is_dir() {
                names.insert(e.file_name().to_string_lossy().into_owned());
            }
        }
        if names.is_empty() {
            return Err(format!("`{}` has no class folders", path.display()));
        }
        return Ok(names.into_iter().collect());
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            continue;
        }
        if let Some((label, _)) = line.split_once('\t') {
            names.insert(label.trim().to_string());
        }
    }
    if names.is_empty() {
        return Err(format!(
            "`{}` has no `label<TAB>text` lines",
            path.display()
        ));
    }
    Ok(names.into_iter().collect())
}
