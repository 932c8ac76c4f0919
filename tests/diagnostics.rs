//! Golden tests of rendered diagnostics: every `tests/diagnostics/NAME.peft` is
//! checked by the `peftc` binary, which must exit 2 and print exactly
//! `NAME.stderr`. Run with `PEFTC_BLESS=1` to rewrite the goldens after an
//! intended change, then review the diff.

use std::path::{Path, PathBuf};
use std::process::Command;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/diagnostics")
}

#[test]
fn rendered_diagnostics_match_goldens() {
    let bless = std::env::var_os("PEFTC_BLESS").is_some();
    let mut specs: Vec<PathBuf> = std::fs::read_dir(dir())
        .expect("tests/diagnostics")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "peft"))
        .collect();
    specs.sort();
    assert!(specs.len() >= 25, "only {} malformed specs", specs.len());
    let mut failures = Vec::new();
    for spec in &specs {
        let name = spec.file_name().and_then(|n| n.to_str()).expect("name");
        let out = Command::new(env!("CARGO_BIN_EXE_peftc"))
            .arg("check")
            .arg(name)
            .current_dir(dir())
            .output()
            .expect("run peftc");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if out.status.code() != Some(2) {
            failures.push(format!(
                "{name}: exit {:?}, expected 2\n{stderr}",
                out.status.code()
            ));
            continue;
        }
        if stderr.contains("panicked") {
            failures.push(format!("{name}: panicked\n{stderr}"));
            continue;
        }
        let golden = spec.with_extension("stderr");
        if bless {
            std::fs::write(&golden, &stderr).expect("write golden");
            continue;
        }
        let want = std::fs::read_to_string(&golden).unwrap_or_default();
        if want != stderr {
            failures.push(format!("{name}:\n--- expected\n{want}--- found\n{stderr}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
