//! The study journal: an append-only JSON-lines file of events, shared by every
//! worker process of a study.
//!
//! **Every read-decide-append sequence runs under an exclusive lock on
//! `journal.lock`**, so two workers never claim the same trial; each append is
//! one `write` of a whole line followed by `fsync`, so a killed worker leaves at
//! most one torn last line, which readers skip (it was never acknowledged).
//! A worker holds an exclusive lock on `workers/<id>.lock` for its lifetime;
//! the kernel drops it when the process dies, which is how the others tell a
//! crashed worker's unfinished claim from a live one.
//!
//! This follows Optuna's journal storage. The `optimizer` crate has a journal
//! too, but it records only finished trials (nothing to coordinate running
//! ones with), numbers trials per process, and refuses a file with a torn
//! line; the study keeps its own and hands the samplers plain history.

use crate::cost::Cost;
use crate::space::Value;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// A point as the journal stores it: dimension name → value.
pub type NamedPoint = BTreeMap<String, Value>;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The first line: which spec the study explores.
    Study {
        spec_hash: String,
        dims: Vec<String>,
        time: f64,
    },
    /// A worker takes trial `trial` (again, after a crash: the same number and point).
    Claim {
        trial: u64,
        worker: String,
        point: NamedPoint,
        cost: Cost,
        time: f64,
    },
    /// An intermediate value of the first objective's metric.
    Report { trial: u64, step: u64, value: f64 },
    Finish {
        trial: u64,
        worker: String,
        outcome: Outcome,
        time: f64,
    },
    /// A sampled point over the budget (or one the checker rejects): recorded,
    /// never trained, not counted as a trial.
    Infeasible {
        point: NamedPoint,
        cost: Option<Cost>,
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Outcome {
    Complete {
        metrics: BTreeMap<String, f64>,
        seconds: f64,
    },
    Pruned {
        step: u64,
        value: f64,
        seconds: f64,
    },
    Failed {
        reason: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> JournalError + '_ {
    move |source| JournalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub struct Journal {
    path: PathBuf,
    lock_path: PathBuf,
}

/// Proof that the caller holds the study's exclusive lock.
pub struct Locked {
    _file: File,
}

impl Journal {
    pub fn new(dir: &Path) -> Journal {
        Journal {
            path: dir.join("journal.jsonl"),
            lock_path: dir.join("journal.lock"),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Blocks until this process holds the study's lock.
    pub fn lock(&self) -> Result<Locked, JournalError> {
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.lock_path)
            .map_err(io(&self.lock_path))?;
        f.lock().map_err(io(&self.lock_path))?;
        Ok(Locked { _file: f })
    }

    /// Every whole event, in order. Lines that do not parse (a torn write of a
    /// killed worker) are skipped; their count is returned.
    pub fn read(&self, _lock: &Locked) -> Result<(Vec<Event>, usize), JournalError> {
        let mut text = String::new();
        match File::open(&self.path) {
            Ok(mut f) => {
                f.read_to_string(&mut text).map_err(io(&self.path))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&self.path)(e)),
        }
        let mut events = Vec::new();
        let mut skipped = 0;
        for line in text.split_inclusive('\n') {
            let whole = line.ends_with('\n');
            match serde_json::from_str::<Event>(line.trim()) {
                Ok(e) if whole => events.push(e),
                _ if line.trim().is_empty() => {}
                _ => skipped += 1,
            }
        }
        Ok((events, skipped))
    }

    /// Appends one event durably.
    pub fn append(&self, _lock: &Locked, e: &Event) -> Result<(), JournalError> {
        let mut f = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&self.path)
            .map_err(io(&self.path))?;
        let mut line = serde_json::to_string(e).map_err(|e| JournalError::Io {
            path: self.path.clone(),
            source: std::io::Error::other(e),
        })?;
        line.push('\n');
        // A torn last line must not swallow this event.
        let len = f.metadata().map_err(io(&self.path))?.len();
        if len > 0 {
            let mut last = [0u8; 1];
            f.seek(SeekFrom::Start(len - 1)).map_err(io(&self.path))?;
            f.read_exact(&mut last).map_err(io(&self.path))?;
            if last[0] != b'\n' {
                line.insert(0, '\n');
            }
        }
        f.write_all(line.as_bytes()).map_err(io(&self.path))?;
        f.sync_data().map_err(io(&self.path))
    }
}

/// This process's membership of the study, held until it exits.
pub struct WorkerLock {
    pub id: String,
    _file: File,
}

impl WorkerLock {
    pub fn acquire(dir: &Path) -> Result<WorkerLock, JournalError> {
        let workers = dir.join("workers");
        std::fs::create_dir_all(&workers).map_err(io(&workers))?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let id = format!("{}-{nanos:09}", std::process::id());
        let path = workers.join(format!("{id}.lock"));
        let f = File::create(&path).map_err(io(&path))?;
        f.lock().map_err(io(&path))?;
        Ok(WorkerLock { id, _file: f })
    }
}

/// Whether the worker `id` of the study in `dir` is still running.
pub fn worker_alive(dir: &Path, id: &str) -> bool {
    let path = dir.join("workers").join(format!("{id}.lock"));
    let Ok(f) = File::open(&path) else {
        return false;
    };
    match f.try_lock() {
        Ok(()) => {
            let _ = f.unlock();
            false
        }
        Err(_) => true,
    }
}

pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("peftc-journal-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("temp dir");
        d
    }

    #[test]
    fn a_torn_last_line_is_skipped_and_does_not_swallow_the_next_event() {
        let dir = tmp("torn");
        let j = Journal::new(&dir);
        let g = j.lock().expect("lock");
        let e = Event::Report {
            trial: 0,
            step: 5,
            value: 0.5,
        };
        j.append(&g, &e).expect("append");
        // A killed writer's half line.
        let mut f = OpenOptions::new()
            .append(true)
            .open(j.path())
            .expect("open");
        f.write_all(b"{\"event\":\"finish\",\"tri").expect("write");
        let (events, skipped) = j.read(&g).expect("read");
        assert_eq!((events.len(), skipped), (1, 1));
        j.append(&g, &e).expect("append after the torn line");
        let (events, skipped) = j.read(&g).expect("read");
        assert_eq!((events, skipped), (vec![e.clone(), e], 1));
    }

    #[test]
    fn a_worker_is_alive_while_it_holds_its_lock() {
        let dir = tmp("alive");
        let w = WorkerLock::acquire(&dir).expect("worker");
        assert!(worker_alive(&dir, &w.id));
        let id = w.id.clone();
        drop(w);
        assert!(!worker_alive(&dir, &id));
        assert!(!worker_alive(&dir, "never-there"));
    }
}
