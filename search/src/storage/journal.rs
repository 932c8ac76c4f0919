//! Optuna's journal file (`JournalFileBackend`): one compact JSON operation
//! per line, replayed in order. peftc reads every operation Optuna writes
//! (op codes 0–10) and writes the ones a study needs, so the file opens with
//! `optuna.load_study(study_name=..., storage=JournalStorage(JournalFileBackend(path)))`.
//!
//! Workers of one machine serialize their transactions with an exclusive
//! lock on `PATH.peftc-lock`, and each holds `PATH.peftc-workers/<id>.lock`
//! for its lifetime; a RUNNING trial whose creating worker no longer holds
//! its lock is stale. (Optuna's own writers lock with a `PATH.lock` symlink;
//! readers take no lock, so the dashboard can watch a running study.)

use super::model::{
    Attrs, Direction, Distribution, NewTrial, Op, Param, Snapshot, StudyRow, TrialRow, TrialState,
};
use super::{Member, Storage, StorageError, Txn, io, worker_id};
use serde_json::{Map, Value as Json, json};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub struct JournalFile {
    path: PathBuf,
    lock_path: PathBuf,
    workers: PathBuf,
    study: String,
    /// The `worker_id` of every operation this process writes.
    worker: String,
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "journal".into());
    path.with_file_name(format!("{name}{suffix}"))
}

impl JournalFile {
    pub fn new(path: &Path, study: &str) -> JournalFile {
        JournalFile {
            path: path.to_path_buf(),
            lock_path: sibling(path, ".peftc-lock"),
            workers: sibling(path, ".peftc-workers"),
            study: study.to_string(),
            worker: worker_id(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn alive(&self, worker: &str) -> bool {
        let path = self.workers.join(format!("{worker}.lock"));
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
}

impl Storage for JournalFile {
    fn begin(&self) -> Result<Box<dyn Txn + '_>, StorageError> {
        if let Some(parent) = self.path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.lock_path)
            .map_err(io(&self.lock_path))?;
        lock.lock().map_err(io(&self.lock_path))?;
        let text = match File::open(&self.path) {
            Ok(mut f) => {
                let mut b = Vec::new();
                f.read_to_end(&mut b).map_err(io(&self.path))?;
                b
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io(&self.path)(e)),
        };
        let replay = replay(&self.path, &text, &self.study)?;
        Ok(Box::new(JournalTxn {
            file: self,
            _lock: lock,
            replay,
            torn_cut: false,
        }))
    }

    fn join(&self) -> Result<Member, StorageError> {
        std::fs::create_dir_all(&self.workers).map_err(io(&self.workers))?;
        let path = self.workers.join(format!("{}.lock", self.worker));
        let f = File::create(&path).map_err(io(&path))?;
        f.lock().map_err(io(&path))?;
        Ok(Member::new(
            self.worker.clone(),
            Arc::new(Mutex::new(None)),
            Box::new(f),
        ))
    }

    fn describe(&self) -> String {
        format!("journal:{}", self.path.display())
    }
}

/// The file replayed up to its last whole line, for one study.
struct Replay {
    snap: Snapshot,
    /// Creating worker of each of the study's trials (by storage id).
    creators: BTreeMap<u64, String>,
    next_study_id: u64,
    next_trial_id: u64,
    /// Bytes up to and including the last newline.
    whole_len: u64,
    /// A torn last line (a killed writer's) follows `whole_len`.
    torn: bool,
}

struct JournalTxn<'a> {
    file: &'a JournalFile,
    _lock: File,
    replay: Replay,
    torn_cut: bool,
}

impl JournalTxn<'_> {
    fn append(&mut self, mut op: Map<String, Json>, code: u64) -> Result<(), StorageError> {
        let path = &self.file.path;
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io(path))?;
        if self.replay.torn && !self.torn_cut {
            // Never acknowledged: cut it off, or Optuna refuses the file.
            f.set_len(self.replay.whole_len).map_err(io(path))?;
            self.torn_cut = true;
        }
        op.insert("op_code".into(), json!(code));
        op.insert("worker_id".into(), json!(self.file.worker));
        let mut line = Json::Object(op).to_string();
        line.push('\n');
        f.write_all(line.as_bytes()).map_err(io(path))?;
        f.sync_data().map_err(io(path))
    }

    fn study_id(&self) -> Result<u64, StorageError> {
        self.replay
            .snap
            .study
            .as_ref()
            .map(|s| s.id)
            .ok_or_else(|| StorageError::Refused("the study does not exist yet".into()))
    }
}

fn obj(v: Json) -> Map<String, Json> {
    match v {
        Json::Object(m) => m,
        _ => Map::new(),
    }
}

impl Txn for JournalTxn<'_> {
    fn snapshot(&self) -> &Snapshot {
        &self.replay.snap
    }

    fn create_study(&mut self, name: &str, directions: &[Direction]) -> Result<(), StorageError> {
        let codes: Vec<u64> = directions.iter().map(|d| d.code()).collect();
        self.append(obj(json!({"study_name": name, "directions": codes})), 0)?;
        self.replay.snap.study = Some(StudyRow {
            id: self.replay.next_study_id,
            name: name.to_string(),
            directions: directions.to_vec(),
            user_attrs: Attrs::new(),
            system_attrs: Attrs::new(),
        });
        self.replay.next_study_id += 1;
        Ok(())
    }

    fn create_trial(&mut self, t: NewTrial) -> Result<u64, StorageError> {
        let study_id = self.study_id()?;
        let distributions: Map<String, Json> = t
            .params
            .iter()
            .map(|(k, p)| (k.clone(), json!(p.distribution.to_json_string())))
            .collect();
        let params: Map<String, Json> = t
            .params
            .iter()
            .map(|(k, p)| (k.clone(), internal_json(p)))
            .collect();
        self.append(
            obj(json!({
                "study_id": study_id,
                "datetime_start": now_iso(),
                "state": TrialState::Running.code(),
                "value": null,
                "values": null,
                "distributions": distributions,
                "params": params,
                "user_attrs": t.user_attrs,
                "system_attrs": t.system_attrs,
                "intermediate_values": {},
            })),
            4,
        )?;
        let id = self.replay.next_trial_id;
        self.replay.next_trial_id += 1;
        self.replay.creators.insert(id, self.file.worker.clone());
        self.replay.snap.push_trial(id, t);
        Ok(id)
    }

    fn write(&mut self, op: Op) -> Result<(), StorageError> {
        let (fields, code) = match &op {
            Op::StudyUserAttr { key, value } => (
                json!({"study_id": self.study_id()?, "user_attr": {key: value}}),
                2,
            ),
            Op::StudySystemAttr { key, value } => (
                json!({"study_id": self.study_id()?, "system_attr": {key: value}}),
                3,
            ),
            Op::TrialUserAttr { trial, key, value } => {
                (json!({"trial_id": trial, "user_attr": {key: value}}), 8)
            }
            Op::Intermediate { trial, step, value } => (
                json!({"trial_id": trial, "step": step, "intermediate_value": value}),
                7,
            ),
            Op::Finish {
                trial,
                state,
                values,
            } => (
                json!({"trial_id": trial, "state": state.code(), "values": values,
                       "datetime_complete": now_iso()}),
                6,
            ),
        };
        self.append(obj(fields), code)?;
        self.replay.snap.apply(&op);
        Ok(())
    }

    fn is_stale(&self, trial: &TrialRow) -> bool {
        trial.state == TrialState::Running
            && self
                .replay
                .creators
                .get(&trial.id)
                .is_some_and(|w| *w != self.file.worker && !self.file.alive(w))
    }

    fn commit(self: Box<Self>) -> Result<(), StorageError> {
        Ok(())
    }
}

/// A parameter's internal value as Optuna writes it: an integer for
/// integer distributions and choice indices, a float otherwise.
fn internal_json(p: &Param) -> Json {
    match p.distribution {
        Distribution::Int { .. } | Distribution::Categorical { .. } => json!(p.internal as i64),
        Distribution::Float { .. } => json!(p.internal),
    }
}

/// Now, in UTC, as `datetime.isoformat(timespec="microseconds")` writes it.
pub(crate) fn now_iso() -> String {
    let t = time::OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}+00:00",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}

/// Replays the journal with Optuna's rules (`JournalStorageReplayResult`),
/// keeping study `name`. Studies and trials of other names count towards
/// the ids, as they do for Optuna.
fn replay(path: &Path, bytes: &[u8], name: &str) -> Result<Replay, StorageError> {
    let whole_len = bytes
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i as u64 + 1);
    let mut r = Replay {
        snap: Snapshot::default(),
        creators: BTreeMap::new(),
        next_study_id: 0,
        next_trial_id: 0,
        whole_len,
        torn: (whole_len as usize) < bytes.len(),
    };
    // Study names by id, and each trial's study.
    let mut studies: BTreeMap<u64, String> = BTreeMap::new();
    let mut trial_study: BTreeMap<u64, u64> = BTreeMap::new();
    let mut finished: BTreeMap<u64, bool> = BTreeMap::new();
    let whole = &bytes[..whole_len as usize];
    for (i, raw) in whole.split(|&b| b == b'\n').enumerate() {
        let line = i + 1;
        let bad = |message: String| StorageError::Format {
            path: path.to_path_buf(),
            line,
            message,
        };
        if raw.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let log: Json = serde_json::from_slice(raw)
            .map_err(|e| bad(format!("not a JSON operation of Optuna's journal: {e}")))?;
        if log.get("event").is_some() && log.get("op_code").is_none() {
            return Err(bad(
                "this is a study journal of peftc before its Optuna storages (2026-12), in its own event format; start the study in a new --study folder".into(),
            ));
        }
        let code = log["op_code"]
            .as_u64()
            .ok_or_else(|| bad("an operation without an `op_code`".into()))?;
        let worker = log["worker_id"].as_str().unwrap_or_default().to_string();
        let int = |k: &str| {
            log[k]
                .as_u64()
                .ok_or_else(|| bad(format!("op_code {code} without an integer `{k}`")))
        };
        let ours = |study: u64, r: &Replay| r.snap.study.as_ref().is_some_and(|s| s.id == study);
        match code {
            0 => {
                let sname = log["study_name"]
                    .as_str()
                    .ok_or_else(|| bad("op_code 0 without a `study_name`".into()))?;
                if studies.values().any(|n| n == sname) {
                    continue;
                }
                let id = r.next_study_id;
                r.next_study_id += 1;
                studies.insert(id, sname.to_string());
                if sname == name {
                    let directions = log["directions"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .map(|d| d.as_u64().and_then(Direction::from_code))
                                .collect::<Option<Vec<_>>>()
                        })
                        .unwrap_or_default()
                        .ok_or_else(|| {
                            bad("study directions other than minimize (1) / maximize (2)".into())
                        })?;
                    r.snap = Snapshot {
                        study: Some(StudyRow {
                            id,
                            name: sname.to_string(),
                            directions,
                            user_attrs: Attrs::new(),
                            system_attrs: Attrs::new(),
                        }),
                        trials: Vec::new(),
                    };
                    r.creators.clear();
                }
            }
            1 => {
                let id = int("study_id")?;
                studies.remove(&id);
                if ours(id, &r) {
                    r.snap = Snapshot::default();
                    r.creators.clear();
                }
            }
            2 | 3 => {
                let id = int("study_id")?;
                let key = if code == 2 {
                    "user_attr"
                } else {
                    "system_attr"
                };
                let attr = attr_of(&log, key)
                    .ok_or_else(|| bad(format!("op_code {code} without one `{key}`")))?;
                if ours(id, &r) {
                    let (k, v) = attr;
                    r.snap.apply(&if code == 2 {
                        Op::StudyUserAttr { key: k, value: v }
                    } else {
                        Op::StudySystemAttr { key: k, value: v }
                    });
                }
            }
            4 => {
                let study = int("study_id")?;
                if !studies.contains_key(&study) {
                    continue;
                }
                let id = r.next_trial_id;
                r.next_trial_id += 1;
                trial_study.insert(id, study);
                let state = log
                    .get("state")
                    .and_then(Json::as_u64)
                    .map_or(Some(TrialState::Running), TrialState::from_code)
                    .ok_or_else(|| bad(format!("trial state {} is not Optuna's", log["state"])))?;
                finished.insert(id, state.is_finished());
                if !ours(study, &r) {
                    continue;
                }
                let mut params = BTreeMap::new();
                if let Some(d) = log.get("distributions").and_then(Json::as_object) {
                    for (k, text) in d {
                        let distribution = text
                            .as_str()
                            .ok_or_else(|| bad(format!("distribution of `{k}` is not a string")))
                            .and_then(|t| Distribution::from_json_str(t).map_err(bad))?;
                        let internal = log["params"][k]
                            .as_f64()
                            .ok_or_else(|| bad(format!("no value of parameter `{k}`")))?;
                        params.insert(
                            k.clone(),
                            Param {
                                internal,
                                distribution,
                            },
                        );
                    }
                }
                let attrs = |k: &str| -> Attrs {
                    log.get(k)
                        .and_then(Json::as_object)
                        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                        .unwrap_or_default()
                };
                let values = match (log.get("values"), log.get("value")) {
                    (Some(Json::Array(a)), _) => Some(a.iter().filter_map(Json::as_f64).collect()),
                    (_, Some(v)) if v.is_number() => v.as_f64().map(|v| vec![v]),
                    _ => None,
                };
                let intermediate = log
                    .get("intermediate_values")
                    .and_then(Json::as_object)
                    .map(|m| {
                        m.iter()
                            .filter_map(|(k, v)| Some((k.parse().ok()?, v.as_f64()?)))
                            .collect()
                    })
                    .unwrap_or_default();
                let number = r.snap.trials.len() as u64;
                r.snap.trials.push(TrialRow {
                    id,
                    number,
                    state,
                    params,
                    values,
                    intermediate,
                    user_attrs: attrs("user_attrs"),
                    system_attrs: attrs("system_attrs"),
                });
                r.creators.insert(id, worker);
            }
            5 => {
                let trial = int("trial_id")?;
                if finished.get(&trial) != Some(&false) {
                    continue;
                }
                let name = log["param_name"]
                    .as_str()
                    .ok_or_else(|| bad("op_code 5 without a `param_name`".into()))?;
                let distribution = log["distribution"]
                    .as_str()
                    .ok_or_else(|| bad("op_code 5 without a `distribution`".into()))
                    .and_then(|t| Distribution::from_json_str(t).map_err(bad))?;
                let internal = log["param_value_internal"]
                    .as_f64()
                    .ok_or_else(|| bad("op_code 5 without a `param_value_internal`".into()))?;
                if let Some(t) = r.snap.trials.iter_mut().find(|t| t.id == trial) {
                    t.params.insert(
                        name.to_string(),
                        Param {
                            internal,
                            distribution,
                        },
                    );
                }
            }
            6 => {
                let trial = int("trial_id")?;
                let state = int("state").and_then(|c| {
                    TrialState::from_code(c)
                        .ok_or_else(|| bad(format!("trial state {c} is not Optuna's")))
                })?;
                if finished.get(&trial) != Some(&false) {
                    continue;
                }
                if state == TrialState::Running {
                    // WAITING → RUNNING: a queued trial taken by a worker.
                    if let Some(t) = r.snap.trials.iter_mut().find(|t| t.id == trial)
                        && t.state == TrialState::Waiting
                    {
                        t.state = TrialState::Running;
                        r.creators.insert(trial, worker);
                    }
                    continue;
                }
                finished.insert(trial, state.is_finished());
                let values = log["values"]
                    .as_array()
                    .map(|a| a.iter().filter_map(Json::as_f64).collect());
                r.snap.apply(&Op::Finish {
                    trial,
                    state,
                    values,
                });
            }
            7 => {
                let trial = int("trial_id")?;
                let step = log["step"]
                    .as_i64()
                    .ok_or_else(|| bad("op_code 7 without an integer `step`".into()))?;
                // Python's json writes NaN, which is not JSON; it is skipped.
                if let Some(value) = log["intermediate_value"].as_f64() {
                    r.snap.apply(&Op::Intermediate { trial, step, value });
                }
            }
            8 | 9 => {
                let trial = int("trial_id")?;
                let key = if code == 8 {
                    "user_attr"
                } else {
                    "system_attr"
                };
                let (k, v) = attr_of(&log, key)
                    .ok_or_else(|| bad(format!("op_code {code} without one `{key}`")))?;
                if code == 8 {
                    r.snap.apply(&Op::TrialUserAttr {
                        trial,
                        key: k,
                        value: v,
                    });
                } else if let Some(t) = r
                    .snap
                    .trials
                    .iter_mut()
                    .find(|t| t.id == trial && !t.state.is_finished())
                {
                    t.system_attrs.insert(k, v);
                }
            }
            // DISCARD_TRIALS: Optuna 5 skips it too.
            10 => {}
            other => {
                return Err(bad(format!(
                    "op_code {other} is not an operation of Optuna's journal (peftc reads 0–10); was this file written by another tool?"
                )));
            }
        }
    }
    Ok(r)
}

fn attr_of(log: &Json, key: &str) -> Option<(String, Json)> {
    let m = log.get(key)?.as_object()?;
    if m.len() != 1 {
        return None;
    }
    m.iter().next().map(|(k, v)| (k.clone(), v.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("peftc-ojournal-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("temp dir");
        d.join("journal.jsonl")
    }

    fn param(v: f64) -> BTreeMap<String, Param> {
        [(
            "r".to_string(),
            Param {
                internal: v,
                distribution: Distribution::Int {
                    low: 1,
                    high: 16,
                    log: false,
                    step: 1,
                },
            },
        )]
        .into()
    }

    #[test]
    fn a_torn_last_line_is_cut_off_by_the_next_writer() {
        let path = tmp("torn");
        let j = JournalFile::new(&path, "s");
        let mut t = j.begin().expect("begin");
        t.create_study("s", &[Direction::Maximize]).expect("study");
        let id = t
            .create_trial(NewTrial {
                params: param(4.0),
                ..NewTrial::default()
            })
            .expect("trial");
        t.commit().expect("commit");
        // A killed writer's half line.
        let mut f = OpenOptions::new().append(true).open(&path).expect("open");
        f.write_all(b"{\"op_code\":6,\"worker_id\":\"x\",\"tri")
            .expect("write");
        let mut t = j.begin().expect("begin over a torn line");
        assert_eq!(t.snapshot().trials.len(), 1);
        t.write(Op::Finish {
            trial: id,
            state: TrialState::Complete,
            values: Some(vec![0.5]),
        })
        .expect("finish");
        t.commit().expect("commit");
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(!text.contains("\"tri\n") && text.ends_with('\n'), "{text}");
        assert_eq!(text.lines().count(), 3);
        let t = j.begin().expect("begin");
        assert_eq!(t.snapshot().trials[0].state, TrialState::Complete);
        assert_eq!(t.snapshot().trials[0].values, Some(vec![0.5]));
    }

    #[test]
    fn other_studies_count_towards_ids_and_unknown_ops_are_refused() {
        let path = tmp("ids");
        std::fs::write(
            &path,
            concat!(
                "{\"op_code\":0,\"worker_id\":\"o\",\"study_name\":\"other\",\"directions\":[1]}\n",
                "{\"op_code\":4,\"worker_id\":\"o\",\"study_id\":0,\"datetime_start\":\"2025-01-01T00:00:00.000000\"}\n",
            ),
        )
        .expect("write");
        let j = JournalFile::new(&path, "s");
        let mut t = j.begin().expect("begin");
        assert!(t.snapshot().study.is_none());
        t.create_study("s", &[Direction::Minimize]).expect("study");
        assert_eq!(t.snapshot().study.as_ref().map(|s| s.id), Some(1));
        let id = t.create_trial(NewTrial::default()).expect("trial");
        assert_eq!(id, 1, "trial ids are global");
        t.commit().expect("commit");
        let t = j.begin().expect("begin");
        assert_eq!(t.snapshot().trials[0].id, 1);
        assert_eq!(t.snapshot().trials[0].number, 0);
        drop(t);
        let mut f = OpenOptions::new().append(true).open(&path).expect("open");
        f.write_all(b"{\"op_code\":42,\"worker_id\":\"x\"}\n")
            .expect("write");
        let e = j.begin().err().expect("unknown op").to_string();
        assert!(e.contains("journal.jsonl:5: op_code 42"), "{e}");
    }

    #[test]
    fn a_trial_is_stale_when_its_worker_lets_go_of_its_lock() {
        let path = tmp("stale");
        let a = JournalFile::new(&path, "s");
        let b = JournalFile::new(&path, "s");
        let member = a.join().expect("join");
        let mut t = a.begin().expect("begin");
        t.create_study("s", &[Direction::Maximize]).expect("study");
        t.create_trial(NewTrial::default()).expect("trial");
        t.commit().expect("commit");
        let t = b.begin().expect("begin");
        assert!(!t.is_stale(&t.snapshot().trials[0]));
        drop(t);
        drop(member);
        let t = b.begin().expect("begin");
        assert!(t.is_stale(&t.snapshot().trials[0]));
    }
}
