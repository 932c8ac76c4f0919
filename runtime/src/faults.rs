//! Fault injection for the tests of "a killed command leaves the old output
//! or the new one": with `PEFTC_FAULT_AFTER_WRITE=NAME` in the environment,
//! the process aborts (no cleanup, like SIGKILL) right after it has written
//! a file called NAME. Unset, this costs one environment lookup per process.

use std::path::Path;
use std::sync::OnceLock;

/// Called after each atomic write of `path`.
pub fn after_write(path: &Path) {
    static TARGET: OnceLock<Option<String>> = OnceLock::new();
    let target = TARGET.get_or_init(|| std::env::var("PEFTC_FAULT_AFTER_WRITE").ok());
    if let Some(name) = target
        && path.file_name().is_some_and(|n| n == name.as_str())
    {
        eprintln!("peftc: fault injected after writing {}", path.display());
        std::process::abort();
    }
}
