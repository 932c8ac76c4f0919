//! `peftc search` end to end on the real MiniLM checkpoint and a slice of the
//! real SMS spam data: SIGKILL and resume, two worker processes on one study,
//! and `best.peft` retraining to the metric the study reported.

mod common;
use common::*;
use peftc_search::record::key;
use peftc_search::storage::Storage;
use peftc_search::storage::journal::JournalFile;
use peftc_search::storage::model::{Snapshot, TrialRow, TrialState};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The Optuna study in the study folder's journal (empty before it exists).
fn snapshot(study: &Path) -> Snapshot {
    let path = study.join("journal.jsonl");
    if !path.exists() {
        return Snapshot::default();
    }
    JournalFile::new(&path, "s")
        .begin()
        .expect("the journal reads")
        .snapshot()
        .clone()
}

fn complete(s: &Snapshot) -> Vec<&TrialRow> {
    s.trials
        .iter()
        .filter(|t| t.state == TrialState::Complete)
        .collect()
}

#[test]
fn a_killed_search_resumes_without_losing_or_repeating_a_trial() {
    let d = temp_dir("search-kill");
    let s = sms_search_spec(&d, 3);
    let study = d.join("study");
    let mut child = Command::new(env!("CARGO_BIN_EXE_peftc"))
        .args([
            "search",
            s.to_str().unwrap(),
            "--study",
            study.to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    // Kill it while it trains trial 1, after trial 0 finished.
    let t0 = Instant::now();
    loop {
        let snap = snapshot(&study);
        if !complete(&snap).is_empty() && snap.trials.len() >= 2 {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(300), "no trial finished");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    let before = snapshot(&study);
    let first = complete(&before)[0].clone();
    assert!(
        complete(&before).len() < 3,
        "the search ended before it was killed"
    );
    let killed = before
        .trials
        .iter()
        .find(|t| t.state == TrialState::Running)
        .expect("the killed worker's trial is running")
        .clone();

    let out = ok(&[
        "search",
        s.to_str().unwrap(),
        "--study",
        study.to_str().unwrap(),
    ]);
    assert!(out.contains("leaderboard.md"), "{out}");
    let after = snapshot(&study);
    let done = assert_each_once_and_retaken(&after, 3, &killed);
    assert_eq!(
        after.trials[first.number as usize], first,
        "the finished trial was kept as it was"
    );
    for f in ["leaderboard.md", "pareto.json", "pareto.svg", "best.peft"] {
        assert!(study.join(f).exists(), "no {f}");
    }

    // best.peft trains with `peftc train` to the accuracy the study reported.
    let best = done
        .iter()
        .filter_map(|t| Some((t.values.as_ref()?[0], t.number)))
        .fold(None::<(f64, u64)>, |b, x| match b {
            Some(b) if b.0 >= x.0 => Some(b),
            _ => Some(x),
        })
        .expect("a complete trial");
    let best_peft = std::fs::read_to_string(study.join("best.peft")).expect("best.peft");
    assert!(best_peft.contains("max_steps = 4"), "{best_peft}");
    let run = d.join("best-run");
    let out = ok(&[
        "train",
        study.join("best.peft").to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
    ]);
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).expect("summary"))
            .expect("json");
    let retrained = summary["eval"]["accuracy"].as_f64().expect("accuracy");
    assert!(
        (retrained - best.0).abs() < 1e-9,
        "best.peft (trial {}) reported {} and retrained to {retrained}\n{out}",
        best.1,
        best.0
    );
}

#[test]
fn two_worker_processes_share_one_study() {
    let d = temp_dir("search-workers");
    let s = sms_search_spec(&d, 4);
    let study = d.join("study");
    ok(&[
        "search",
        s.to_str().unwrap(),
        "--study",
        study.to_str().unwrap(),
        "--workers",
        "2",
    ]);
    let snap = snapshot(&study);
    assert_eq!(snap.trials.len(), 4, "{:?}", snap.trials);
    assert_eq!(
        complete(&snap).len(),
        4,
        "each of the 4 trials finished once"
    );
    let workers: BTreeSet<&str> = snap
        .trials
        .iter()
        .filter_map(|t| t.user_attrs[key::WORKER].as_str())
        .collect();
    assert_eq!(
        workers.len(),
        2,
        "both processes trained trials: {workers:?}"
    );
    let points: BTreeSet<String> = snap
        .trials
        .iter()
        .map(|t| format!("{:?}", t.params))
        .collect();
    assert_eq!(points.len(), 4, "no configuration was trained twice");
}

#[test]
fn a_search_over_the_budget_fails_before_training() {
    let d = temp_dir("search-budget");
    let s = sms_search_spec(&d, 3);
    let text = std::fs::read_to_string(&s)
        .expect("spec")
        .replace("params <= 0.5%", "params <= 0.001%");
    std::fs::write(&s, text).expect("write");
    let study = d.join("study");
    let out = peftc(&[
        "search",
        s.to_str().unwrap(),
        "--study",
        study.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("no configuration of search `s` fits its budget"),
        "{err}"
    );
    assert!(err.contains("lora.r=0 prefix.len=0"), "{err}");
    assert!(!study.join("trials").exists(), "nothing was trained");
}
