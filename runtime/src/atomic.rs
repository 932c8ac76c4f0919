//! Atomic writes: a file is written beside its destination, flushed to disk,
//! then renamed over it, so a killed process leaves the old file or the new
//! one, never half of one.

use crate::error::{Result, RuntimeError};
use std::io::Write;
use std::path::Path;

pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| RuntimeError::write(dir, e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(RuntimeError::write(path, e));
    }
    crate::faults::after_write(path);
    Ok(())
}

/// Replaces directory `dest` with `staged` (a finished sibling directory):
/// the old one is moved aside first and removed after, so `dest` is always
/// either the complete old or the complete new content.
pub fn replace_dir(staged: &Path, dest: &Path) -> Result<()> {
    let old = dest.with_extension(format!("old-{}", std::process::id()));
    if dest.exists() {
        std::fs::rename(dest, &old).map_err(|e| RuntimeError::write(dest, e))?;
    }
    std::fs::rename(staged, dest).map_err(|e| RuntimeError::write(dest, e))?;
    if old.exists() {
        let _ = std::fs::remove_dir_all(&old);
    }
    Ok(())
}

/// Replaces directory `dest` with what `write` puts into a fresh staging
/// folder beside it: a killed process leaves the old `dest` or the new one.
/// For folders peftc owns (a run's `adapter/`, its checkpoints).
pub fn replace_dir_with(dest: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let parent = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    let staged = parent.join(format!(".{name}.partial-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staged);
    std::fs::create_dir_all(&staged).map_err(|e| RuntimeError::write(&staged, e))?;
    match write(&staged) {
        Ok(()) => replace_dir(&staged, dest),
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staged);
            Err(e)
        }
    }
}
