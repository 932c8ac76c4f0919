//! The study in PostgreSQL, in Optuna's RDB schema, on a throwaway server
//! started on loopback (Debian's `postgresql` package; `.ci/run` installs it
//! and sets PEFTC_REQUIRE_POSTGRES=1, so CI cannot skip these).

mod common;
use common::*;
use peftc_search::local_postgres::LocalPostgres;
use peftc_search::record::{self, key};
use peftc_search::state::NamedPoint;
use peftc_search::storage::model::{NewTrial, Snapshot, TrialState};
use peftc_search::storage::postgres::Postgres;
use peftc_search::storage::{Heartbeat, Storage};
use peftc_search::{StorageOptions, StorageUrl, Study, Value};
use serde_json::json;
use std::collections::BTreeSet;
use std::time::Duration;

const FAST: Heartbeat = Heartbeat {
    interval_s: 0.1,
    grace_s: 0.5,
};

fn opts(url: &str) -> StorageOptions {
    StorageOptions {
        url: Some(StorageUrl::Postgres(url.into())),
        study_name: None,
        heartbeat: FAST,
    }
}

fn snapshot(url: &str) -> Snapshot {
    let pg = Postgres::connect(url, "s", FAST).expect("connect");
    pg.begin().expect("begin").snapshot().clone()
}

#[test]
fn three_workers_on_one_database_train_every_trial_once() {
    let Some(pg) = LocalPostgres::for_test("three") else {
        return;
    };
    let d = temp_dir("pg-three");
    let s = spec(
        &d,
        "    maximize accuracy\n    trials = 12\n    sampler = tpe\n",
    );
    let handles: Vec<_> = (0..3)
        .map(|i| {
            let (s, dir, url) = (s.clone(), d.join(format!("host{i}")), pg.url.clone());
            std::thread::spawn(move || {
                let study = Study::open_with(&s, &dir, None, &opts(&url)).expect("open");
                run(&study).steps_run.len()
            })
        })
        .collect();
    let ran: usize = handles
        .into_iter()
        .map(|h| h.join().expect("worker thread"))
        .sum();
    assert_eq!(ran, 12);
    let snap = snapshot(&pg.url);
    let numbers: Vec<u64> = snap.trials.iter().map(|t| t.number).collect();
    assert_eq!(numbers, (0..12).collect::<Vec<u64>>());
    assert!(snap.trials.iter().all(|t| t.state == TrialState::Complete));
    let points: BTreeSet<String> = snap
        .trials
        .iter()
        .map(|t| format!("{:?}", t.params))
        .collect();
    assert_eq!(points.len(), 12, "a point was trained twice");
    let study = snap.study.expect("the study");
    assert_eq!(
        study.user_attrs[key::SPEC_HASH].as_str().map(str::len),
        Some(16)
    );
    assert_eq!(study.system_attrs[key::METRIC_NAMES], json!(["accuracy"]));
}

#[test]
fn a_silent_workers_trial_is_retaken_once_its_heartbeat_expires() {
    let Some(pg) = LocalPostgres::for_test("beat") else {
        return;
    };
    let d = temp_dir("pg-beat");
    let s = spec(
        &d,
        "    maximize accuracy\n    trials = 3\n    sampler = random\n",
    );
    let study = Study::open_with(&s, &d.join("a"), None, &opts(&pg.url)).expect("open");
    study.create().expect("create");
    let point: NamedPoint = [
        ("lora.r".to_string(), Value::Int(4)),
        ("prefix.len".to_string(), Value::Int(5)),
    ]
    .into();
    // Two RUNNING trials: one whose worker keeps beating, one whose worker
    // fell silent (it never beats after creating its trial).
    let storage = Postgres::connect(&pg.url, "s", FAST).expect("connect");
    let alive = storage.join().expect("join");
    let mut tx = storage.begin().expect("begin");
    let mut trial = |p: &NamedPoint, worker: &str| {
        let mut user_attrs =
            record::cost_attrs(&study.cost(&study.unnamed(p).expect("point")).expect("cost"));
        user_attrs.insert(key::WORKER.into(), json!(worker));
        tx.create_trial(NewTrial {
            params: record::params(&study.space, p),
            user_attrs,
            system_attrs: Default::default(),
        })
        .expect("trial")
    };
    let live_point: NamedPoint = [
        ("lora.r".to_string(), Value::Int(2)),
        ("prefix.len".to_string(), Value::Int(0)),
    ]
    .into();
    let live = trial(&live_point, "alive");
    let _silent = trial(&point, "silent");
    tx.commit().expect("commit");
    alive.running(Some(live));
    std::thread::sleep(Duration::from_secs_f64(FAST.grace_s * 2.0));
    {
        let tx = storage.begin().expect("begin");
        let stale: Vec<bool> = tx
            .snapshot()
            .trials
            .iter()
            .map(|t| tx.is_stale(t))
            .collect();
        assert_eq!(
            stale,
            [false, true],
            "only the silent worker's trial is stale"
        );
    }
    // A worker retakes the silent one, leaves the beating one alone and
    // waits for it before it ends.
    let (s2, dir, url) = (s.clone(), d.join("b"), pg.url.clone());
    let worker = std::thread::spawn(move || {
        let study = Study::open_with(&s2, &dir, Some(3), &opts(&url)).expect("open");
        run(&study).steps_run.len()
    });
    let t0 = std::time::Instant::now();
    while snapshot(&pg.url).trials.len() < 4
        || snapshot(&pg.url).trials[3].state != TrialState::Complete
    {
        assert!(t0.elapsed() < Duration::from_secs(60), "no retake");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !worker.is_finished(),
        "the worker waits for the running trial"
    );
    let snap = snapshot(&pg.url);
    let states: Vec<TrialState> = snap.trials.iter().map(|t| t.state).collect();
    assert_eq!(
        states,
        [
            TrialState::Running,
            TrialState::Fail,
            TrialState::Complete,
            TrialState::Complete
        ],
        "{:?}",
        snap.trials
    );
    assert_eq!(snap.trials[1].user_attrs[key::RETAKEN], json!(true));
    assert_eq!(snap.trials[2].system_attrs[key::FAILED_TRIAL], json!(1));
    assert_eq!(snap.trials[2].params, snap.trials[1].params);
    // The beating worker finishes; the waiting one ends.
    let mut tx = storage.begin().expect("begin");
    tx.write(peftc_search::storage::model::Op::Finish {
        trial: live,
        state: TrialState::Complete,
        values: Some(vec![0.9]),
    })
    .expect("finish");
    tx.commit().expect("commit");
    assert_eq!(
        worker.join().expect("worker"),
        2,
        "a retake and a new trial"
    );
    drop(alive);
}

#[test]
fn bad_databases_are_refused_with_one_clear_error_and_nothing_written() {
    let Some(pg) = LocalPostgres::for_test("bad") else {
        return;
    };
    let d = temp_dir("pg-bad");
    let s = spec(&d, "    maximize accuracy\n    trials = 1\n");
    let open = |url: &str| {
        Study::open_with(&s, &d.join("x"), None, &opts(url))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    let e = open("postgresql://peftc@127.0.0.1:1/optuna");
    assert!(
        e.contains("cannot open postgresql://peftc@127.0.0.1:1/optuna"),
        "{e}"
    );
    let wrong = pg
        .url
        .replace(peftc_search::local_postgres::PASSWORD, "wrong");
    let e = open(&wrong);
    assert!(e.contains("password authentication failed"), "{e}");
    assert!(
        !e.contains("wrong"),
        "the password stays out of messages: {e}"
    );
    let e = open(&pg.url.replace("/optuna", "/nosuch"));
    assert!(e.contains("database \"nosuch\" does not exist"), "{e}");

    // A schema at another alembic revision is refused, untouched.
    let mut c = postgres::Client::connect(&pg.url, postgres::NoTls).expect("connect");
    Postgres::connect(&pg.url, "s", FAST).expect("creates the schema");
    c.batch_execute("UPDATE alembic_version SET version_num = 'v3.0.0.d'")
        .expect("downgrade");
    let e = open(&pg.url);
    assert!(
        e.contains("revision v3.0.0.d") && e.contains("optuna storage upgrade"),
        "{e}"
    );
    c.batch_execute("UPDATE alembic_version SET version_num = 'v3.2.0.a'")
        .expect("restore");

    // A study of the same name and another spec.
    run(&Study::open_with(&s, &d.join("y"), None, &opts(&pg.url)).expect("open"));
    let s2 = spec(&d, "    maximize accuracy\n    trials = 2\n    seed = 4\n");
    let other = Study::open_with(&s2, &d.join("z"), None, &opts(&pg.url)).expect("open");
    let e = other.create().expect_err("another spec").to_string();
    assert!(e.contains("holds a study `s` of a different spec"), "{e}");
    let n: i64 = c
        .query_one("SELECT count(*) FROM trials", &[])
        .expect("count")
        .get(0);
    assert_eq!(n, 1, "nothing was written for the refused spec");
}
