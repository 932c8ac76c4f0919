//! peftc's studies are Optuna studies. Always: peftc reads a journal Optuna
//! 5.0 wrote (`tests/fixtures/optuna/optuna-written.jsonl`, made by
//! `tests/reference/make_optuna_journal.py`) exactly as Optuna reads it back.
//! Opt-in (PEFTC_OPTUNA_PYTHON=a python with optuna and psycopg; `.ci/run`
//! sets it): Optuna and optuna-dashboard open the journal and the
//! PostgreSQL study peftc writes, and see what peftc sees.

mod common;
use common::*;
use peftc_search::local_postgres::LocalPostgres;
use peftc_search::storage::journal::JournalFile;
use peftc_search::storage::model::{Distribution, Snapshot, TrialRow};
use peftc_search::storage::postgres::Postgres;
use peftc_search::storage::{Heartbeat, Storage};
use peftc_search::{StorageOptions, StorageUrl, Study};
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;

/// A trial as `tests/reference/optuna_load.py` prints it.
fn as_optuna_prints(t: &TrialRow) -> Value {
    let params: serde_json::Map<String, Value> = t
        .params
        .iter()
        .map(|(k, p)| {
            let v = match &p.distribution {
                Distribution::Categorical { choices } => choices
                    .get(p.internal as usize)
                    .cloned()
                    .unwrap_or(Value::Null),
                Distribution::Int { .. } => json!(p.internal as i64),
                Distribution::Float { .. } => json!(p.internal),
            };
            (k.clone(), v)
        })
        .collect();
    let state = format!("{:?}", t.state).to_uppercase();
    json!({
        "number": t.number,
        "state": state,
        "params": params,
        "values": t.values,
        "intermediate": t.intermediate.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
        "user_attrs": t.user_attrs,
        "system_attrs": t.system_attrs,
    })
}

/// Equal JSON, numbers to 2 ulps: Optuna's SQLAlchemy reading of a
/// PostgreSQL `double precision` can come back one ulp off.
fn close(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => x == y || (x - y).abs() <= 4.5e-16 * x.abs().max(y.abs()),
            _ => x == y,
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| close(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| close(v, w)))
        }
        _ => a == b,
    }
}

fn assert_same(ours: &Snapshot, optuna: &Value, what: &str) {
    let theirs = optuna["trials"].as_array().expect("trials");
    assert_eq!(ours.trials.len(), theirs.len(), "{what}: trial count");
    for (a, b) in ours.trials.iter().zip(theirs) {
        let a_json = as_optuna_prints(a);
        assert!(
            close(&a_json, b),
            "{what}: trial {}\npeftc:  {a_json}\noptuna: {b}",
            a.number
        );
    }
    let study = ours.study.as_ref().expect("study");
    let dirs: Vec<String> = study
        .directions
        .iter()
        .map(|d| format!("{d:?}").to_uppercase())
        .collect();
    assert_eq!(optuna["directions"], json!(dirs), "{what}: directions");
}

#[test]
fn a_journal_optuna_wrote_reads_as_optuna_reads_it() {
    let dir = repo().join("tests/fixtures/optuna");
    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("optuna-written.json")).expect("fixture"),
    )
    .expect("json");
    // A copy: peftc's reader takes a lock beside the file.
    let d = temp_dir("optuna-written");
    let path = d.join("journal.jsonl");
    std::fs::copy(dir.join("optuna-written.jsonl"), &path).expect("copy");
    let snap = JournalFile::new(&path, "s")
        .begin()
        .expect("peftc reads Optuna's journal")
        .snapshot()
        .clone();
    assert_eq!(
        snap.study.as_ref().map(|s| s.id),
        Some(1),
        "the second study"
    );
    assert_same(&snap, &expected, "optuna-written.jsonl");
}

/// Optuna's reading of a storage, or `None` when the live check is off.
fn optuna_reads(storage: &str, name: &str) -> Option<Value> {
    let Some(python) = std::env::var_os("PEFTC_OPTUNA_PYTHON") else {
        eprintln!("skipped: set PEFTC_OPTUNA_PYTHON to a python with optuna for the live check");
        return None;
    };
    let out = Command::new(python)
        .arg(repo().join("tests/reference/optuna_load.py"))
        .args([storage, name])
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "Optuna could not open {storage}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_slice(&out.stdout).expect("json"))
}

fn formula_study(d: &Path, opts: &StorageOptions) -> Study {
    let s = spec(
        d,
        "    maximize accuracy\n    minimize params\n    trials = 8\n    sampler = random\n    steps = 8\n    eval_every = 2\n    seed = 2\n",
    );
    let study = Study::open_with(&s, &d.join("study"), None, opts).expect("open");
    run(&study);
    study
}

#[test]
fn optuna_and_its_dashboard_open_the_journal_peftc_writes() {
    let d = temp_dir("optuna-live-journal");
    let study = formula_study(&d, &StorageOptions::default());
    let path = d.join("study/journal.jsonl");
    let Some(optuna) = optuna_reads(&format!("journal:{}", path.display()), "s") else {
        return;
    };
    let snap = JournalFile::new(&path, "s")
        .begin()
        .expect("begin")
        .snapshot()
        .clone();
    assert_same(&snap, &optuna, "peftc's journal");
    assert_eq!(optuna["metric_names"], json!(["accuracy", "params"]));
    assert_eq!(optuna["dashboard"]["n_trials"], json!(8), "{optuna}");
    assert_eq!(study.state().expect("state").finished().count(), 8);
}

#[test]
fn optuna_and_its_dashboard_open_the_postgres_study_peftc_writes() {
    if std::env::var_os("PEFTC_OPTUNA_PYTHON").is_none() {
        eprintln!("skipped: set PEFTC_OPTUNA_PYTHON for the live check");
        return;
    }
    let Some(pg) = LocalPostgres::for_test("optuna-live") else {
        return;
    };
    let d = temp_dir("optuna-live-pg");
    let opts = StorageOptions {
        url: Some(StorageUrl::Postgres(pg.url.clone())),
        study_name: None,
        heartbeat: Heartbeat::default(),
    };
    formula_study(&d, &opts);
    let Some(optuna) = optuna_reads(&pg.url, "s") else {
        return;
    };
    let snap = Postgres::connect(&pg.url, "s", Heartbeat::default())
        .expect("connect")
        .begin()
        .expect("begin")
        .snapshot()
        .clone();
    assert_same(&snap, &optuna, "peftc's PostgreSQL study");
    assert_eq!(optuna["dashboard"]["n_trials"], json!(8), "{optuna}");
}
