//! Output folders that never destroy what was there.
//!
//! Every folder a command writes carries a marker, [`MARKER`], naming the
//! command that made it and the entries it wrote. The rules, for every
//! command that writes (`train --out`, `export`, `merge`, `search --study`):
//!
//! - **A missing or empty folder** is the command's to fill.
//! - **A folder the same command made** (its marker says so) is replaced, or
//!   for `train` and `search` continued; files the user added to it are kept.
//! - **Anything else** (a folder without a marker, another command's output,
//!   a file, the working directory or one of its parents, a folder holding an
//!   input of the command) is refused, and nothing is written. `--force`
//!   writes into a non-empty folder beside what is there, and still never
//!   replaces or removes an entry the marker does not list.
//!
//! One-shot outputs (`export`, `merge`) are written into a staging folder
//! beside the target and renamed into place only when complete; the old
//! output is moved aside first and its listed entries removed last, so a
//! killed command leaves the complete old output or the complete new one.
//! Nothing here deletes recursively a path the user typed.

use super::CliError;
use serde::{Deserialize, Serialize};
use std::path::{Component, Path, PathBuf};

/// The marker file's name, inside every output folder.
pub const MARKER: &str = ".peftc-output.json";

/// Which command wrote a folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Train,
    Search,
    ExportHf,
    ExportPeftc,
    Merge,
}

impl Kind {
    /// The name written into the marker.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Train => "train",
            Kind::Search => "search",
            Kind::ExportHf => "export-hf",
            Kind::ExportPeftc => "export-peftc",
            Kind::Merge => "merge",
        }
    }

    /// The command, as the user typed it.
    pub fn command(self) -> &'static str {
        match self {
            Kind::Train => "peftc train",
            Kind::Search => "peftc search",
            Kind::ExportHf => "peftc export --format hf",
            Kind::ExportPeftc => "peftc export --format peftc",
            Kind::Merge => "peftc merge",
        }
    }

    fn from_name(name: &str) -> Option<Kind> {
        [
            Kind::Train,
            Kind::Search,
            Kind::ExportHf,
            Kind::ExportPeftc,
            Kind::Merge,
        ]
        .into_iter()
        .find(|k| k.name() == name)
    }

    /// The entries a long-lived output (a run, a study) owns, known in
    /// advance because they are written one at a time during the command.
    pub fn owned_entries(self) -> &'static [&'static str] {
        match self {
            Kind::Train => &[
                "checkpoints",
                "adapter",
                "metrics.jsonl",
                "loss.svg",
                "summary.json",
            ],
            Kind::Search => &[
                "journal.jsonl",
                "journal.jsonl.peftc-lock",
                "journal.jsonl.peftc-workers",
                "trials",
                "leaderboard.md",
                "pareto.json",
                "pareto.svg",
                "best.peft",
                "study.json",
            ],
            Kind::ExportHf | Kind::ExportPeftc | Kind::Merge => &[],
        }
    }
}

/// What a marker records.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Marker {
    /// [`Kind::name`] of the command that wrote the folder.
    pub command: String,
    /// Top-level entries the command wrote (files or folders), sorted.
    pub entries: Vec<String>,
    pub peftc_version: String,
}

impl Marker {
    fn new(kind: Kind, entries: Vec<String>) -> Marker {
        Marker {
            command: kind.name().into(),
            entries,
            peftc_version: env!("CARGO_PKG_VERSION").into(),
        }
    }

    fn read(dir: &Path) -> Option<Marker> {
        let text = std::fs::read(dir.join(MARKER)).ok()?;
        serde_json::from_slice(&text).ok()
    }

    fn owns(&self, entry: &str) -> bool {
        entry == MARKER || self.entries.iter().any(|e| e == entry)
    }
}

/// What is at a target path now.
#[derive(Debug)]
enum Found {
    Nothing,
    EmptyDir,
    /// A folder this kind of command wrote.
    Own(Marker),
    /// A folder another peftc command wrote.
    OtherCommand(Kind),
    /// A non-empty folder peftc did not write; a few of its entries.
    Foreign(Vec<String>),
    NotADir,
}

fn inspect(path: &Path, kind: Kind) -> Result<Found, CliError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Found::Nothing),
        Err(e) => return Err(cannot("inspect", path, e)),
    };
    if !meta.is_dir() {
        return Ok(Found::NotADir);
    }
    let mut names = entries(path)?;
    if names.is_empty() {
        return Ok(Found::EmptyDir);
    }
    if let Some(m) = Marker::read(path) {
        return Ok(match Kind::from_name(&m.command) {
            Some(k) if k == kind => Found::Own(m),
            Some(k) => Found::OtherCommand(k),
            None => Found::Foreign(names),
        });
    }
    names.truncate(4);
    Ok(Found::Foreign(names))
}

/// Top-level entry names of `dir`, sorted.
fn entries(dir: &Path) -> Result<Vec<String>, CliError> {
    let rd = std::fs::read_dir(dir).map_err(|e| cannot("read", dir, e))?;
    let mut v: Vec<String> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    Ok(v)
}

fn cannot(what: &str, path: &Path, e: std::io::Error) -> CliError {
    CliError::Input(format!("cannot {what} `{}`: {e}", path.display()))
}

/// `path` made absolute and free of `.` / `..` without touching the file
/// system beyond the working directory (the path may not exist yet).
fn absolute(path: &Path) -> PathBuf {
    let base = if path.is_absolute() {
        PathBuf::new()
    } else {
        std::env::current_dir().unwrap_or_default()
    };
    let mut out = PathBuf::new();
    for c in base.join(path).components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    // Resolve symbolic links where the path exists, so two spellings of one
    // folder compare equal.
    std::fs::canonicalize(&out).unwrap_or(out)
}

/// Refuses targets that are the working directory or hold it, that hold an
/// input of the command, or that are a file.
fn refuse_dangerous(dest: &Path, inputs: &[&Path], found: &Found) -> Result<(), CliError> {
    let shown = dest.display();
    let abs = absolute(dest);
    if let Ok(cwd) = std::env::current_dir()
        && cwd.starts_with(&abs)
    {
        return Err(CliError::Input(format!(
            "`{shown}` is the working directory or one of its parents; name a new folder for the output (nothing was written)"
        )));
    }
    if abs.parent().is_none() {
        return Err(CliError::Input(format!(
            "`{shown}` is the root of the file system; name a new folder for the output"
        )));
    }
    for input in inputs {
        let input_abs = absolute(input);
        if input_abs.starts_with(&abs) {
            let how = if input_abs == abs { "is" } else { "holds" };
            return Err(CliError::Input(format!(
                "`{shown}` {how} `{}`, which this command reads; name another folder for the output (nothing was written)",
                input.display()
            )));
        }
    }
    // Inside another output's own entry (a run's `adapter/`, a study's
    // `trials/`), the other command would replace what this one writes.
    for ancestor in abs.ancestors().skip(1) {
        if let Some(m) = Marker::read(ancestor)
            && let Ok(rest) = abs.strip_prefix(ancestor)
            && let Some(first) = rest.components().next()
            && m.owns(&first.as_os_str().to_string_lossy())
        {
            return Err(CliError::Input(format!(
                "`{shown}` lies inside `{}`, which `{}` owns and may replace; name a folder outside it (nothing was written)",
                ancestor.join(first).display(),
                Kind::from_name(&m.command).map_or("peftc", Kind::command)
            )));
        }
    }
    if let Found::NotADir = found {
        return Err(CliError::Input(format!(
            "`{shown}` exists and is not a folder; name a folder for the output (nothing was written)"
        )));
    }
    Ok(())
}

fn refusal(dest: &Path, kind: Kind, found: &Found) -> CliError {
    let shown = dest.display();
    match found {
        Found::OtherCommand(other) => CliError::Input(format!(
            "`{shown}` holds the output of `{}`; `{}` will not write over it, even with --force; name another folder (nothing was written)",
            other.command(),
            kind.command()
        )),
        Found::Foreign(names) => CliError::Input(format!(
            "`{shown}` is not empty (it holds {}) and was not written by `{}`; name a new folder, or pass --force to add peftc's files beside what is there (none of it is replaced or removed); nothing was written",
            names
                .iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", "),
            kind.command()
        )),
        _ => CliError::Internal(format!("refusal for `{shown}` without a reason")),
    }
}

/// A one-shot output (`export`, `merge`) being written: the command writes
/// into [`Staged::path`], then [`Staged::commit`] puts it in place.
/// Dropped without a commit, the staging folder is removed.
pub struct Staged {
    dest: PathBuf,
    staging: PathBuf,
    kind: Kind,
    mode: Mode,
    committed: bool,
}

#[derive(Debug)]
enum Mode {
    /// Nothing there (or an empty folder): rename into place.
    Fresh,
    /// The same command's older output: swap, keeping the user's additions.
    Replace(Marker),
    /// `--force` into a folder peftc did not write: add entries beside
    /// what is there, refusing any name that exists.
    Beside,
}

impl Staged {
    /// Checks `dest` for a `kind` output (`inputs`: paths the command reads,
    /// which the output must not contain) and prepares a staging folder.
    pub fn begin(
        dest: &Path,
        kind: Kind,
        force: bool,
        inputs: &[&Path],
    ) -> Result<Staged, CliError> {
        recover(dest, kind)?;
        let found = inspect(dest, kind)?;
        refuse_dangerous(dest, inputs, &found)?;
        let mode = match found {
            Found::Nothing | Found::EmptyDir => Mode::Fresh,
            Found::Own(m) => Mode::Replace(m),
            Found::Foreign(_) if force => Mode::Beside,
            other => return Err(refusal(dest, kind, &other)),
        };
        let parent = parent_of(dest);
        std::fs::create_dir_all(&parent).map_err(|e| cannot("create", &parent, e))?;
        let staging = parent.join(format!(
            ".{}.peftc-staging-{}",
            file_name(dest),
            std::process::id()
        ));
        if staging.exists() {
            // Our own leftover from a process with the same id.
            std::fs::remove_dir_all(&staging).map_err(|e| cannot("clear", &staging, e))?;
        }
        std::fs::create_dir(&staging).map_err(|e| cannot("create", &staging, e))?;
        Ok(Staged {
            dest: dest.to_path_buf(),
            staging,
            kind,
            mode,
            committed: false,
        })
    }

    /// Where the command writes its output.
    pub fn path(&self) -> &Path {
        &self.staging
    }

    /// Puts the finished output in place.
    pub fn commit(mut self) -> Result<(), CliError> {
        let written = entries(&self.staging)?;
        let marker = Marker::new(self.kind, written.clone());
        write_marker(&self.staging, &marker)?;
        match &self.mode {
            Mode::Fresh => {
                if self.dest.is_dir() {
                    // Empty when inspected; `remove_dir` fails on anything else.
                    std::fs::remove_dir(&self.dest)
                        .map_err(|e| cannot("replace", &self.dest, e))?;
                }
                rename(&self.staging, &self.dest)?;
            }
            Mode::Replace(old_marker) => {
                let old = parent_of(&self.dest).join(format!(
                    ".{}.peftc-old-{}",
                    file_name(&self.dest),
                    std::process::id()
                ));
                if exchange(&self.staging, &self.dest) {
                    // One atomic step: the old output now sits at the staging path.
                    rename(&self.staging, &old)?;
                } else {
                    rename(&self.dest, &old)?;
                    if let Err(e) = rename(&self.staging, &self.dest) {
                        // Put the old output back; the new one stays staged.
                        let _ = std::fs::rename(&old, &self.dest);
                        return Err(e);
                    }
                }
                self.committed = true;
                retire(&old, old_marker, &self.dest);
            }
            Mode::Beside => {
                let taken: Vec<&String> = written
                    .iter()
                    .filter(|n| self.dest.join(n).exists())
                    .collect();
                if !taken.is_empty() {
                    return Err(CliError::Input(format!(
                        "`{}` already holds {}; --force adds files beside yours but never replaces them; nothing was written",
                        self.dest.display(),
                        taken
                            .iter()
                            .map(|n| format!("`{n}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                }
                for n in &written {
                    rename(&self.staging.join(n), &self.dest.join(n))?;
                }
                rename(&self.staging.join(MARKER), &self.dest.join(MARKER))?;
                let _ = std::fs::remove_dir(&self.staging);
            }
        }
        self.committed = true;
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.committed {
            // The staging folder is this process's own creation.
            let _ = std::fs::remove_dir_all(&self.staging);
        }
    }
}

/// Finishes a swap: entries of the old output its marker does not list are
/// the user's and move into the new one; the listed ones are removed, then
/// the (then empty) old folder. Anything left is reported, never deleted.
fn retire(old: &Path, marker: &Marker, dest: &Path) {
    let Ok(mut names) = entries(old) else { return };
    // The marker goes last: a retire cut short is finished by the next
    // command, which recognizes the folder by it.
    names.retain(|n| n != MARKER);
    names.push(MARKER.to_string());
    for n in names {
        let from = old.join(&n);
        if marker.owns(&n) {
            let _ = if from.is_dir() {
                // A folder the command wrote itself (never a path the user typed).
                std::fs::remove_dir_all(&from)
            } else {
                std::fs::remove_file(&from)
            };
        } else if !dest.join(&n).exists() {
            let _ = std::fs::rename(&from, dest.join(&n));
        }
    }
    if std::fs::remove_dir(old).is_err() {
        eprintln!(
            "note: kept `{}`: it holds files of yours that the new output also names",
            old.display()
        );
    }
}

/// Finishes what a killed command left beside `dest`: staging folders (its
/// unfinished output) are removed; an old output moved aside goes back in
/// place when `dest` is missing, or is retired when the new one landed.
fn recover(dest: &Path, kind: Kind) -> Result<(), CliError> {
    let parent = parent_of(dest);
    let name = file_name(dest);
    let Ok(rd) = std::fs::read_dir(&parent) else {
        return Ok(());
    };
    for e in rd.filter_map(|e| e.ok()) {
        let entry = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = entry.strip_prefix(&format!(".{name}.peftc-")) else {
            continue;
        };
        let path = e.path();
        let pid = rest.rsplit('-').next().and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(|p| p != std::process::id() && process_alive(p)) {
            // Another command writing the same output right now.
            continue;
        }
        if rest.starts_with("staging-") {
            let _ = std::fs::remove_dir_all(&path);
        } else if rest.starts_with("old-")
            && let Some(m) = Marker::read(&path)
            && m.command == kind.name()
        {
            if dest.exists() {
                retire(&path, &m, dest);
            } else {
                rename(&path, dest)?;
                eprintln!(
                    "note: `{}` was moved aside by a command that did not finish; put back",
                    dest.display()
                );
            }
        }
    }
    Ok(())
}

/// Whether process `pid` runs (Linux: `/proc`; elsewhere assumed gone).
fn process_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

fn write_marker(dir: &Path, m: &Marker) -> Result<(), CliError> {
    let text =
        serde_json::to_vec_pretty(m).map_err(|e| CliError::Internal(format!("marker: {e}")))?;
    peftc_runtime::atomic::write_atomic(&dir.join(MARKER), &text)
        .map_err(|e| CliError::Input(e.to_string()))
}

fn rename(from: &Path, to: &Path) -> Result<(), CliError> {
    std::fs::rename(from, to).map_err(|e| {
        CliError::Input(format!(
            "cannot move `{}` to `{}`: {e}",
            from.display(),
            to.display()
        ))
    })
}

/// Swaps two existing paths in one atomic step (Linux `renameat2` with
/// `RENAME_EXCHANGE`), so no moment exists without one of them in place.
/// `false` where the system or file system cannot; the caller then renames
/// twice.
#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let (Ok(a), Ok(b)) = (
        std::ffi::CString::new(a.as_os_str().as_bytes()),
        std::ffi::CString::new(b.as_os_str().as_bytes()),
    ) else {
        return false;
    };
    // SAFETY: two valid NUL-terminated paths; the call only renames.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    r == 0
}

#[cfg(not(target_os = "linux"))]
fn exchange(_: &Path, _: &Path) -> bool {
    false
}

fn parent_of(p: &Path) -> PathBuf {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into())
}

/// How a long-lived output (a run folder, a study folder) is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opened {
    /// Nothing was there: a new output.
    New,
    /// The same command's output: continue it (or start it over).
    Existing,
    /// `--force` into a folder peftc did not write.
    Beside,
}

/// Removes a folder `open_in_place` just created (`Opened::New`) when the
/// command failed before writing anything into it but the marker: a
/// refused run leaves no trace.
pub fn discard_if_untouched(dest: &Path) {
    let only_marker = std::fs::read_dir(dest).is_ok_and(|rd| {
        let names: Vec<_> = rd.filter_map(|e| e.ok()).map(|e| e.file_name()).collect();
        names.len() == 1 && names[0] == MARKER
    });
    if only_marker {
        let _ = std::fs::remove_file(dest.join(MARKER));
        let _ = std::fs::remove_dir(dest);
    }
}

/// Opens `dest` for a long-lived `kind` output written in place (a run, a
/// study): creates it with its marker, or accepts it when the same command
/// made it; refuses anything else unless `force`, and even then refuses a
/// folder whose entries collide with the ones the command owns.
pub fn open_in_place(
    dest: &Path,
    kind: Kind,
    force: bool,
    inputs: &[&Path],
) -> Result<Opened, CliError> {
    let found = inspect(dest, kind)?;
    refuse_dangerous(dest, inputs, &found)?;
    let opened = match found {
        Found::Nothing | Found::EmptyDir => Opened::New,
        Found::Own(_) => Opened::Existing,
        Found::Foreign(_) if force => {
            let taken: Vec<&str> = kind
                .owned_entries()
                .iter()
                .copied()
                .filter(|n| dest.join(n).exists())
                .collect();
            if !taken.is_empty() {
                return Err(CliError::Input(format!(
                    "`{}` already holds {} that `{}` would write; --force never replaces files peftc did not write; nothing was written",
                    dest.display(),
                    taken
                        .iter()
                        .map(|n| format!("`{n}`"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    kind.command()
                )));
            }
            Opened::Beside
        }
        other => return Err(refusal(dest, kind, &other)),
    };
    if opened != Opened::Existing {
        std::fs::create_dir_all(dest).map_err(|e| cannot("create", dest, e))?;
        let entries = kind.owned_entries().iter().map(|s| s.to_string()).collect();
        write_marker(dest, &Marker::new(kind, entries))?;
    }
    Ok(opened)
}

/// Removes what a `kind` output owns in `dest` (to start a run over), and
/// nothing else.
pub fn clear_owned(dest: &Path, kind: Kind) -> Result<(), CliError> {
    for n in kind.owned_entries() {
        let p = dest.join(n);
        let r = if p.is_dir() {
            std::fs::remove_dir_all(&p)
        } else if p.exists() {
            std::fs::remove_file(&p)
        } else {
            Ok(())
        };
        r.map_err(|e| cannot("remove", &p, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("peftc-output-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn write_output(s: &Staged, files: &[(&str, &str)]) {
        for (n, t) in files {
            std::fs::write(s.path().join(n), t).unwrap();
        }
    }

    #[test]
    fn fresh_output_lands_whole_with_its_marker() {
        let d = scratch("fresh");
        let dest = d.join("out");
        let s = Staged::begin(&dest, Kind::Merge, false, &[]).unwrap();
        write_output(&s, &[("a.txt", "new")]);
        assert!(!dest.exists(), "nothing in place before the commit");
        s.commit().unwrap();
        assert_eq!(std::fs::read_to_string(dest.join("a.txt")).unwrap(), "new");
        let m = Marker::read(&dest).unwrap();
        assert_eq!(m.command, "merge");
        assert_eq!(m.entries, vec!["a.txt".to_string()]);
        assert_eq!(
            entries(&d).unwrap(),
            vec!["out".to_string()],
            "no staging left"
        );
    }

    #[test]
    fn a_folder_of_the_user_is_refused_and_untouched() {
        let d = scratch("foreign");
        let dest = d.join("mine");
        std::fs::create_dir_all(dest.join("sub")).unwrap();
        std::fs::write(dest.join("sub/keep.txt"), "precious").unwrap();
        let e = Staged::begin(&dest, Kind::Merge, false, &[]).err().unwrap();
        assert!(e.message().contains("--force"), "{}", e.message());
        assert_eq!(
            std::fs::read_to_string(dest.join("sub/keep.txt")).unwrap(),
            "precious"
        );
        // --force adds beside, and refuses to replace a name that exists.
        let s = Staged::begin(&dest, Kind::Merge, true, &[]).unwrap();
        write_output(&s, &[("model.bin", "m")]);
        s.commit().unwrap();
        assert_eq!(
            std::fs::read_to_string(dest.join("model.bin")).unwrap(),
            "m"
        );
        assert!(dest.join("sub/keep.txt").is_file());
        let s = Staged::begin(&dest, Kind::Merge, true, &[]);
        // The folder is now a merge output: replaced, the user's sub/ kept.
        let s = s.unwrap();
        write_output(&s, &[("model.bin", "m2")]);
        s.commit().unwrap();
        assert_eq!(
            std::fs::read_to_string(dest.join("model.bin")).unwrap(),
            "m2"
        );
        assert_eq!(
            std::fs::read_to_string(dest.join("sub/keep.txt")).unwrap(),
            "precious"
        );
    }

    #[test]
    fn force_never_replaces_a_file_of_the_user() {
        let d = scratch("collide");
        let dest = d.join("mine");
        std::fs::create_dir_all(&dest).unwrap();
        std::fs::write(dest.join("config.json"), "user's").unwrap();
        let s = Staged::begin(&dest, Kind::Merge, true, &[]).unwrap();
        write_output(&s, &[("config.json", "ours")]);
        let e = s.commit().err().unwrap();
        assert!(e.message().contains("config.json"), "{}", e.message());
        assert_eq!(
            std::fs::read_to_string(dest.join("config.json")).unwrap(),
            "user's"
        );
        assert_eq!(entries(&d).unwrap(), vec!["mine".to_string()]);
    }

    #[test]
    fn replacing_an_own_output_keeps_what_the_user_added() {
        let d = scratch("replace");
        let dest = d.join("out");
        let s = Staged::begin(&dest, Kind::ExportHf, false, &[]).unwrap();
        write_output(&s, &[("adapter_config.json", "old"), ("old_only.txt", "x")]);
        s.commit().unwrap();
        std::fs::write(dest.join("NOTES.md"), "mine").unwrap();
        let s = Staged::begin(&dest, Kind::ExportHf, false, &[]).unwrap();
        write_output(&s, &[("adapter_config.json", "new")]);
        s.commit().unwrap();
        assert_eq!(
            std::fs::read_to_string(dest.join("adapter_config.json")).unwrap(),
            "new"
        );
        assert_eq!(
            std::fs::read_to_string(dest.join("NOTES.md")).unwrap(),
            "mine"
        );
        assert!(
            !dest.join("old_only.txt").exists(),
            "the old output's own files go"
        );
        assert_eq!(entries(&d).unwrap(), vec!["out".to_string()]);
    }

    #[test]
    fn another_commands_output_is_refused_even_with_force() {
        let d = scratch("other");
        let run = d.join("run");
        assert_eq!(
            open_in_place(&run, Kind::Train, false, &[]).unwrap(),
            Opened::New
        );
        for force in [false, true] {
            let e = Staged::begin(&run, Kind::Merge, force, &[]).err().unwrap();
            assert!(e.message().contains("peftc train"), "{}", e.message());
        }
        assert_eq!(
            open_in_place(&run, Kind::Train, false, &[]).unwrap(),
            Opened::Existing
        );
        // Nor inside what the run owns; beside it is fine.
        std::fs::create_dir_all(run.join("adapter")).unwrap();
        let e = Staged::begin(&run.join("adapter/merged"), Kind::Merge, true, &[])
            .err()
            .unwrap();
        assert!(e.message().contains("owns"), "{}", e.message());
        assert!(Staged::begin(&run.join("merged"), Kind::Merge, false, &[]).is_ok());
    }

    #[test]
    fn files_the_working_directory_and_inputs_are_refused() {
        let d = scratch("danger");
        let file = d.join("f.txt");
        std::fs::write(&file, "x").unwrap();
        for force in [false, true] {
            assert!(Staged::begin(&file, Kind::Merge, force, &[]).is_err());
            assert!(Staged::begin(Path::new("."), Kind::Merge, force, &[]).is_err());
            assert!(Staged::begin(Path::new(".."), Kind::Merge, force, &[]).is_err());
            let input = d.join("run/adapter");
            assert!(Staged::begin(&d.join("run"), Kind::Merge, force, &[&input]).is_err());
            assert!(Staged::begin(&input, Kind::Merge, force, &[&input]).is_err());
        }
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "x");
    }

    #[test]
    fn a_swap_cut_short_is_undone_by_the_next_command() {
        let d = scratch("cut");
        let dest = d.join("out");
        let s = Staged::begin(&dest, Kind::Merge, false, &[]).unwrap();
        write_output(&s, &[("model.bin", "old")]);
        s.commit().unwrap();
        // A command killed between its two renames: the old output aside,
        // its new one staged, nothing in place.
        std::fs::rename(&dest, d.join(".out.peftc-old-999999999")).unwrap();
        std::fs::create_dir(d.join(".out.peftc-staging-999999999")).unwrap();
        let s = Staged::begin(&dest, Kind::Merge, false, &[]).unwrap();
        assert_eq!(
            std::fs::read_to_string(dest.join("model.bin")).unwrap(),
            "old"
        );
        drop(s);
        assert_eq!(entries(&d).unwrap(), vec!["out".to_string()]);
    }

    #[test]
    fn an_abandoned_output_leaves_nothing() {
        let d = scratch("abandon");
        let dest = d.join("out");
        {
            let s = Staged::begin(&dest, Kind::Merge, false, &[]).unwrap();
            write_output(&s, &[("half.bin", "x")]);
        }
        assert!(entries(&d).unwrap().is_empty());
    }
}
