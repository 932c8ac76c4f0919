//! `peftc search --storage postgresql://...`: three worker processes (three
//! "hosts", each with its own study folder) share one study in a local
//! PostgreSQL server; one is SIGKILLed mid-trial and its trial is retaken
//! once its heartbeat expires. The server is Debian's `postgresql`, started
//! on loopback by the test (`.ci/run` installs it and sets
//! PEFTC_REQUIRE_POSTGRES=1, so CI cannot skip it).

mod common;
use common::*;
use peftc_search::local_postgres::LocalPostgres;
use peftc_search::record::key;
use peftc_search::storage::model::{Snapshot, TrialState};
use peftc_search::storage::postgres::Postgres;
use peftc_search::storage::{Heartbeat, Storage};
use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn snapshot(url: &str) -> Snapshot {
    Postgres::connect(url, "s", Heartbeat::default())
        .expect("connect")
        .begin()
        .expect("begin")
        .snapshot()
        .clone()
}

fn wait(child: &mut Child, what: &str) -> std::process::Output {
    let t0 = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        assert!(
            t0.elapsed() < Duration::from_secs(600),
            "{what} never ended"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut out = std::process::Output {
        status: child.wait().expect("status"),
        stdout: Vec::new(),
        stderr: Vec::new(),
    };
    use std::io::Read;
    if let Some(mut s) = child.stdout.take() {
        let _ = s.read_to_end(&mut out.stdout);
    }
    if let Some(mut s) = child.stderr.take() {
        let _ = s.read_to_end(&mut out.stderr);
    }
    out
}

#[test]
fn three_workers_survive_a_sigkill_with_every_trial_finished_once() {
    let Some(pg) = LocalPostgres::for_test("cli-three") else {
        return;
    };
    let d = temp_dir("search-pg");
    let s = sms_search_spec(&d, 4);
    let mut workers: Vec<Child> = (0..3)
        .map(|i| {
            Command::new(env!("CARGO_BIN_EXE_peftc"))
                .arg("search")
                .arg(&s)
                .arg("--study")
                .arg(d.join(format!("host{i}")))
                .args(["--storage", &pg.url, "--heartbeat", "0.5"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn")
        })
        .collect();
    // SIGKILL the first worker while it trains a trial.
    let victim = format!("-{}-", workers[0].id());
    let t0 = Instant::now();
    let killed = loop {
        let snap = snapshot(&pg.url);
        if let Some(t) = snap.trials.iter().find(|t| {
            t.state == TrialState::Running
                && t.user_attrs[key::WORKER]
                    .as_str()
                    .is_some_and(|w| w.contains(&victim))
        }) {
            break t.clone();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(300),
            "the first worker never took a trial: {:?}",
            snap.trials
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    workers[0].kill().expect("SIGKILL");
    let _ = workers[0].wait();
    for (i, w) in workers.iter_mut().enumerate().skip(1) {
        let out = wait(w, "a surviving worker");
        assert!(
            out.status.success(),
            "worker {i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("leaderboard.md"));
    }
    let snap = snapshot(&pg.url);
    let done = assert_each_once_and_retaken(&snap, 4, &killed);
    let workers: BTreeSet<&str> = done
        .iter()
        .filter_map(|t| t.user_attrs[key::WORKER].as_str())
        .collect();
    assert!(
        workers.len() >= 2,
        "the survivors shared the work: {workers:?}"
    );
}

#[test]
fn an_unreachable_database_is_one_clear_error_before_training() {
    let d = temp_dir("search-pg-bad");
    let s = sms_search_spec(&d, 2);
    let study = d.join("study");
    let out = peftc(&[
        "search",
        s.to_str().unwrap(),
        "--study",
        study.to_str().unwrap(),
        "--storage",
        "postgresql://peftc:hunter2@127.0.0.1:1/optuna",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("cannot open postgresql://peftc@127.0.0.1:1/optuna"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
    assert!(!study.join("trials").exists(), "nothing was trained");
    let out = peftc(&[
        "search",
        s.to_str().unwrap(),
        "--study",
        study.to_str().unwrap(),
        "--storage",
        "sqlite:///x.db",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("journal:PATH"), "{}", stderr(&out));
}
