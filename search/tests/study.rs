//! Studies end to end with a closed-form evaluator in place of training: the
//! optimum is known, so the tests can say whether the search found it, and
//! the budget, pruning, crash recovery and worker sharing are checked against
//! the Optuna study in the journal.

use peftc_search::record::{self, key};
use peftc_search::state::{NamedPoint, Outcome};
use peftc_search::storage::Storage;
use peftc_search::storage::journal::JournalFile;
use peftc_search::storage::model::{NewTrial, Op, Snapshot, TrialState};
use peftc_search::{Study, Value};
use serde_json::json;

mod common;
use common::*;
use std::collections::BTreeSet;
use std::path::Path;

/// The Optuna study `s` in the study folder's journal.
fn snapshot(dir: &Path) -> Snapshot {
    let j = JournalFile::new(&dir.join("journal.jsonl"), "s");
    j.begin().expect("begin").snapshot().clone()
}

/// A trial of `point` as a worker that died left it: running, or failed
/// and marked retaken; `first` is the number of the configuration's first
/// attempt. The journal handle never joins the study, so it holds no
/// worker lock.
fn dead_attempt(study: &Study, point: &NamedPoint, first: Option<u64>, state: TrialState) {
    let j = JournalFile::new(&study.dir.join("journal.jsonl"), "s");
    let mut tx = j.begin().expect("begin");
    let mut user_attrs = record::cost_attrs(
        &study
            .cost(&study.unnamed(point).expect("a point of the space"))
            .expect("cost"),
    );
    user_attrs.insert(key::WORKER.into(), json!("dead"));
    let system_attrs = first
        .map(|f| [(key::FAILED_TRIAL.to_string(), json!(f))].into())
        .unwrap_or_default();
    let id = tx
        .create_trial(NewTrial {
            params: record::params(&study.space, point),
            user_attrs,
            system_attrs,
        })
        .expect("trial");
    if state == TrialState::Fail {
        for op in [
            Op::TrialUserAttr {
                trial: id,
                key: key::RETAKEN.into(),
                value: json!(true),
            },
            Op::Finish {
                trial: id,
                state,
                values: None,
            },
        ] {
            tx.write(op).expect("write");
        }
    }
    tx.commit().expect("commit");
}

#[test]
fn tpe_trains_every_feasible_point_once_and_finds_the_optimum() {
    let d = temp_dir("optimum");
    let s = spec(
        &d,
        "    budget params <= 0.5%\n    maximize accuracy\n    trials = 16\n    seed = 3\n",
    );
    let study = Study::open(&s, &d.join("study"), None).expect("open");
    study.preflight().expect("some point fits");
    run(&study);
    let state = study.state().expect("state");
    // Only 13 points fit: the study ends when they are spent, each trained once.
    assert_eq!(state.finished().count(), 13);
    let head = state
        .trials
        .values()
        .find(|t| t.point["lora.r"] == Value::Int(0) && t.point["prefix.len"] == Value::Int(0))
        .expect("the empty configuration is feasible")
        .cost
        .trainable;
    for t in state.trials.values() {
        let (Value::Int(r), Value::Int(len)) = (&t.point["lora.r"], &t.point["prefix.len"]) else {
            panic!("{:?}", t.point)
        };
        assert_eq!(
            t.cost.trainable,
            head + 9216 * *r as u64 + 4608 * *len as u64
        );
        assert!(
            t.cost.trainable as f64 <= 0.005 * t.cost.total as f64,
            "trial {} trained over budget: {:?}",
            t.number,
            t.cost
        );
    }
    assert_eq!(
        state.infeasible.len(),
        11,
        "the other 11 points are recorded infeasible"
    );
    // The formula's best within budget: r = 2, len = 20 (0.9558).
    let best = peftc_search::report::best(&study, &state).expect("a best trial");
    assert_eq!(best.point["lora.r"], Value::Int(2));
    assert_eq!(best.point["prefix.len"], Value::Int(20));
    // best.peft is a plain spec that checks from the study folder.
    let text = std::fs::read_to_string(study.dir.join("best.peft")).expect("best.peft");
    assert!(text.contains("lora(r=2, alpha=16)"), "{text}");
    assert!(text.contains("prefix(len=20)"), "{text}");
    let file = peftc_grammar::parse(&text).expect("best.peft parses");
    let checked = peftc_compiler::check(
        &file,
        &peftc_compiler::CheckOptions {
            spec_dir: study.dir.clone(),
            model_override: None,
            lenient_data: false,
        },
    )
    .expect("best.peft checks from the study folder");
    assert!(checked.searches.is_empty());
    assert!(!checked.blocks[0].is_space());
    let front = std::fs::read_to_string(study.dir.join("pareto.json")).expect("pareto.json");
    let front: serde_json::Value = serde_json::from_str(&front).expect("json");
    assert!(front["front"].as_array().is_some_and(|f| !f.is_empty()));
}

#[test]
fn a_space_with_no_point_under_the_budget_is_reported_before_training() {
    let d = temp_dir("infeasible");
    let s = spec(&d, "    budget params <= 0.001%\n    maximize accuracy\n");
    let study = Study::open(&s, &d.join("study"), None).expect("open");
    let e = study.preflight().expect_err("nothing fits").to_string();
    assert!(e.contains("the smallest, lora.r=0 prefix.len=0"), "{e}");
    assert!(e.contains("trainable > 0.001%"), "{e}");
}

#[test]
fn successive_halving_stops_weak_trials_early() {
    let d = temp_dir("prune");
    let s = spec(
        &d,
        "    maximize accuracy\n    trials = 14\n    sampler = random\n    pruner = successive_halving\n    steps = 8\n    eval_every = 1\n    seed = 5\n",
    );
    let study = Study::open(&s, &d.join("study"), None).expect("open");
    let f = run(&study);
    let state = study.state().expect("state");
    let pruned: Vec<_> = state
        .finished()
        .filter(|t| matches!(t.outcome, Some(Outcome::Pruned { .. })))
        .collect();
    assert!(!pruned.is_empty(), "no trial was pruned");
    for t in &pruned {
        let ran = f
            .steps_run
            .iter()
            .find(|(n, _)| *n == t.number)
            .map(|x| x.1);
        assert!(ran < Some(8), "pruned trial {} ran {ran:?} steps", t.number);
    }
    // A pruned trial is never the best of the study.
    let best = peftc_search::report::best(&study, &state).expect("best");
    assert!(matches!(best.outcome, Some(Outcome::Complete { .. })));
}

#[test]
fn a_dead_workers_trial_is_retaken_with_its_number_and_point() {
    let d = temp_dir("orphan");
    let s = spec(
        &d,
        "    maximize accuracy\n    trials = 4\n    sampler = random\n",
    );
    let dir = d.join("study");
    let study = Study::open(&s, &dir, None).expect("open");
    // A first worker finished trial 0, then claimed trial 1 and died.
    let first = Study::open(&s, &dir, Some(1)).expect("open");
    run(&first);
    let claimed: NamedPoint = [
        ("lora.r".to_string(), Value::Int(4)),
        ("prefix.len".to_string(), Value::Int(5)),
    ]
    .into();
    dead_attempt(&study, &claimed, None, TrialState::Running);
    let before = study.state().expect("state").trials[&0].clone();
    run(&study);
    let state = study.state().expect("state");
    assert_eq!(state.trials.len(), 4);
    assert!(state.trials.values().all(|t| t.outcome.is_some()));
    assert_eq!(
        state.trials[&1].point, claimed,
        "the dead worker's point is retrained"
    );
    assert_eq!(
        state.trials[&1].attempts,
        [1, 2],
        "retaken as Optuna trial 2"
    );
    assert_eq!(
        state.trials[&0], before,
        "a finished trial is neither lost nor redone"
    );
    // In Optuna's terms: the dead worker's trial failed, a retry with the
    // same parameters completed (RetryFailedTrialCallback's attributes).
    let snap = snapshot(&dir);
    let states: Vec<TrialState> = snap.trials.iter().map(|t| t.state).collect();
    assert_eq!(
        states,
        [
            TrialState::Complete,
            TrialState::Fail,
            TrialState::Complete,
            TrialState::Complete,
            TrialState::Complete
        ]
    );
    assert_eq!(snap.trials[2].system_attrs[key::FAILED_TRIAL], json!(1));
    assert_eq!(snap.trials[2].system_attrs[key::RETRY_HISTORY], json!([1]));
    assert_eq!(snap.trials[2].params, snap.trials[1].params);
}

#[test]
fn two_workers_share_a_study_without_repeating_a_trial() {
    let d = temp_dir("workers");
    let s = spec(
        &d,
        "    maximize accuracy\n    trials = 10\n    sampler = tpe\n",
    );
    let dir = d.join("study");
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let (s, dir) = (s.clone(), dir.clone());
            std::thread::spawn(move || {
                let study = Study::open(&s, &dir, None).expect("open");
                run(&study).steps_run.len()
            })
        })
        .collect();
    let ran: Vec<usize> = handles
        .into_iter()
        .map(|h| h.join().expect("worker thread"))
        .collect();
    assert_eq!(ran.iter().sum::<usize>(), 10, "{ran:?}");
    let snap = snapshot(&dir);
    let numbers: Vec<u64> = snap.trials.iter().map(|t| t.number).collect();
    assert_eq!(numbers, (0..10).collect::<Vec<u64>>());
    assert!(snap.trials.iter().all(|t| t.state == TrialState::Complete));
    let space = study_space(&s);
    let points: BTreeSet<String> = snap
        .trials
        .iter()
        .map(|t| format!("{:?}", record::point(&space, &t.params)))
        .collect();
    assert_eq!(points.len(), 10, "a point was trained twice: {points:?}");
}

fn study_space(spec: &Path) -> peftc_search::Space {
    let d = temp_dir("space");
    Study::open(spec, &d, None).expect("open").space
}

#[test]
fn a_study_refuses_a_different_spec() {
    let d = temp_dir("different");
    let s = spec(&d, "    maximize accuracy\n    trials = 1\n");
    let dir = d.join("study");
    run(&Study::open(&s, &dir, None).expect("open"));
    let s2 = spec(&d, "    maximize accuracy\n    trials = 2\n    seed = 9\n");
    let study = Study::open(&s2, &dir, None).expect("open");
    let mut f = Formula {
        steps_run: Vec::new(),
    };
    let e = study
        .run_worker(&mut f, &mut |_| {})
        .expect_err("a different spec")
        .to_string();
    assert!(e.contains("holds a study `s` of a different spec"), "{e}");
}

#[test]
fn a_trial_that_kills_its_worker_three_times_is_failed_not_retaken() {
    let d = temp_dir("crashloop");
    let s = spec(
        &d,
        "    maximize accuracy\n    trials = 2\n    sampler = random\n",
    );
    let dir = d.join("study");
    let study = Study::open(&s, &dir, None).expect("open");
    study.create().expect("create the study");
    let point: NamedPoint = [
        ("lora.r".to_string(), Value::Int(8)),
        ("prefix.len".to_string(), Value::Int(20)),
    ]
    .into();
    dead_attempt(&study, &point, None, TrialState::Fail);
    dead_attempt(&study, &point, Some(0), TrialState::Fail);
    dead_attempt(&study, &point, Some(0), TrialState::Running);
    run(&study);
    let state = study.state().expect("state");
    match &state.trials[&0].outcome {
        Some(Outcome::Failed { reason }) => assert!(reason.contains("died 3 times"), "{reason}"),
        other => panic!("trial 0: {other:?}"),
    }
    assert_eq!(state.trials[&0].attempts, [0, 1, 2]);
    // The next configuration is Optuna's trial 3.
    assert!(matches!(
        state.trials[&3].outcome,
        Some(Outcome::Complete { .. })
    ));
}

#[test]
fn one_journal_file_holds_studies_by_name_apart_from_their_folders() {
    let d = temp_dir("journal-path");
    let journal = d.join("shared/optuna.jsonl");
    let s = spec(
        &d,
        "    maximize accuracy\n    trials = 3\n    sampler = random\n",
    );
    let at = |name: &str| peftc_search::StorageOptions {
        url: Some(peftc_search::StorageUrl::Journal(journal.clone())),
        study_name: Some(name.into()),
        heartbeat: Default::default(),
    };
    for name in ["first", "second"] {
        let study = Study::open_with(&s, &d.join(name), None, &at(name)).expect("open");
        run(&study);
        assert_eq!(study.state().expect("state").finished().count(), 3);
        assert!(
            !d.join(name).join("journal.jsonl").exists(),
            "the study lives in the journal it was given"
        );
        assert!(
            d.join(name).join("leaderboard.md").exists(),
            "reports stay in --study"
        );
    }
    for name in ["first", "second"] {
        let snap = JournalFile::new(&journal, name)
            .begin()
            .expect("begin")
            .snapshot()
            .clone();
        assert_eq!(snap.study.as_ref().map(|s| s.name.as_str()), Some(name));
        assert_eq!(snap.trials.len(), 3, "{name}");
    }
    // Trial ids are global to the file, numbers per study (as in Optuna).
    let second = JournalFile::new(&journal, "second")
        .begin()
        .expect("begin")
        .snapshot()
        .clone();
    let ids: Vec<u64> = second.trials.iter().map(|t| t.id).collect();
    assert_eq!(ids, [3, 4, 5]);
    let numbers: Vec<u64> = second.trials.iter().map(|t| t.number).collect();
    assert_eq!(numbers, [0, 1, 2]);
}
