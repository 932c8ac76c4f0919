//! Where a study lives: Optuna's journal file ([`journal`]) or Optuna's RDB
//! schema on PostgreSQL ([`postgres`]). Either way the study *is* an Optuna
//! study — `optuna.load_study` and `optuna-dashboard` read it — and peftc's
//! own facts ride in attributes (see [`crate::record`]).
//!
//! **Every read-decide-write sequence of a worker is one [`Txn`]**: under an
//! exclusive file lock for the journal, in one database transaction behind
//! an advisory lock for PostgreSQL. So two workers never claim the same
//! trial, and a worker killed inside a transaction leaves nothing half done
//! (the journal's torn last line is never acknowledged and is cut off by the
//! next writer).
//!
//! A worker's liveness is a [`Member`]: a held lock file for the journal
//! (the kernel drops it when the process dies), a heartbeat row per running
//! trial for PostgreSQL (Optuna's `heartbeat_interval` semantics).

pub mod journal;
pub mod model;
pub mod postgres;

use model::{Direction, NewTrial, Op, Snapshot, TrialRow};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A journal line peftc cannot read (file and 1-based line).
    #[error("{path}:{line}: {message}")]
    Format {
        path: PathBuf,
        line: usize,
        message: String,
    },
    /// The database refused or could not be reached.
    #[error("{0}")]
    Database(String),
    /// The study or schema in the storage is not one peftc may write to.
    #[error("{0}")]
    Refused(String),
}

impl StorageError {
    /// Whether the error is the user's to fix (a bad URL, an unreachable
    /// server, a foreign journal) rather than an internal failure.
    pub fn is_user_error(&self) -> bool {
        match self {
            StorageError::Io { .. } => false,
            StorageError::Format { .. } | StorageError::Database(_) | StorageError::Refused(_) => {
                true
            }
        }
    }
}

pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StorageError + '_ {
    move |source| StorageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One worker's exclusive turn at one study.
pub trait Txn {
    /// The study as it stands, with this transaction's writes applied.
    fn snapshot(&self) -> &Snapshot;
    fn create_study(&mut self, name: &str, directions: &[Direction]) -> Result<(), StorageError>;
    /// Creates a RUNNING trial owned by this worker; returns its storage id.
    fn create_trial(&mut self, trial: NewTrial) -> Result<u64, StorageError>;
    fn write(&mut self, op: Op) -> Result<(), StorageError>;
    /// Whether a RUNNING trial's worker is gone (its lock dropped, its
    /// heartbeat older than the grace period).
    fn is_stale(&self, trial: &TrialRow) -> bool;
    fn commit(self: Box<Self>) -> Result<(), StorageError>;
}

/// A study's storage, bound to one study name.
pub trait Storage: Send + Sync {
    fn begin(&self) -> Result<Box<dyn Txn + '_>, StorageError>;
    /// Registers this process as a worker of the study for as long as the
    /// returned member lives.
    fn join(&self) -> Result<Member, StorageError>;
    /// `journal:/path` or `postgresql://user@host/db`, without a password.
    fn describe(&self) -> String;
}

/// This process's membership of a study.
pub struct Member {
    pub id: String,
    /// The trial (storage id) this worker runs, for the heartbeat.
    current: Arc<Mutex<Option<u64>>>,
    _alive: Box<dyn Send>,
}

impl Member {
    pub(crate) fn new(
        id: String,
        current: Arc<Mutex<Option<u64>>>,
        alive: Box<dyn Send>,
    ) -> Member {
        Member {
            id,
            current,
            _alive: alive,
        }
    }

    /// Says which trial this worker runs now (`None` between trials).
    pub fn running(&self, trial: Option<u64>) {
        if let Ok(mut c) = self.current.lock() {
            *c = trial;
        }
    }
}

/// A worker id that is unique on this host and across hosts.
pub(crate) fn worker_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    let host = if host.is_empty() { "host".into() } else { host };
    format!("{host}-{}-{:09}", std::process::id(), nanos % 1_000_000_000)
}

/// Where `--storage` puts the study.
#[derive(Debug, Clone, PartialEq)]
pub enum StorageUrl {
    /// Optuna's journal file.
    Journal(PathBuf),
    /// `postgresql://` or `postgres://` URL, as libpq and Optuna take it.
    Postgres(String),
}

/// How often a PostgreSQL worker refreshes its trial's heartbeat, and how
/// long a silent one is given before its trial is retaken.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Heartbeat {
    pub interval_s: f64,
    pub grace_s: f64,
}

impl Default for Heartbeat {
    /// Optuna's advice: a grace of twice the interval.
    fn default() -> Heartbeat {
        Heartbeat {
            interval_s: 10.0,
            grace_s: 20.0,
        }
    }
}

impl StorageUrl {
    pub fn parse(s: &str) -> Result<StorageUrl, String> {
        if let Some(p) = s.strip_prefix("journal:") {
            if p.is_empty() {
                return Err("`journal:` needs a path, e.g. `journal:study/optuna.jsonl`".into());
            }
            return Ok(StorageUrl::Journal(PathBuf::from(p)));
        }
        if s.starts_with("postgresql://") || s.starts_with("postgres://") {
            return Ok(StorageUrl::Postgres(s.to_string()));
        }
        if let Some(rest) = s.strip_prefix("postgresql+") {
            // Optuna's SQLAlchemy form names a driver: postgresql+psycopg2://...
            if let Some((_, tail)) = rest.split_once("://") {
                return Ok(StorageUrl::Postgres(format!("postgresql://{tail}")));
            }
        }
        Err(format!(
            "`{s}` is not a storage peftc knows; use `journal:PATH` (Optuna's journal file) or `postgresql://USER@HOST/DB`"
        ))
    }

    /// Opens the storage for study `name`.
    pub fn open(&self, name: &str, beat: Heartbeat) -> Result<Box<dyn Storage>, StorageError> {
        match self {
            StorageUrl::Journal(p) => Ok(Box::new(journal::JournalFile::new(p, name))),
            StorageUrl::Postgres(url) => {
                Ok(Box::new(postgres::Postgres::connect(url, name, beat)?))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_urls() {
        assert_eq!(
            StorageUrl::parse("journal:a/b.jsonl"),
            Ok(StorageUrl::Journal("a/b.jsonl".into()))
        );
        assert_eq!(
            StorageUrl::parse("postgresql+psycopg2://u@h/db"),
            Ok(StorageUrl::Postgres("postgresql://u@h/db".into()))
        );
        assert!(StorageUrl::parse("postgresql://u@h:5432/db").is_ok());
        let e = StorageUrl::parse("sqlite:///x.db").expect_err("sqlite");
        assert!(e.contains("journal:PATH"), "{e}");
        assert!(StorageUrl::parse("journal:").is_err());
    }
}
