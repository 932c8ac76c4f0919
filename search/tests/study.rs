//! Studies end to end with a closed-form evaluator in place of training: the
//! optimum is known, so the tests can say whether the search found it, and
//! the budget, pruning, crash recovery and worker sharing are checked against
//! the journal.

use peftc_search::journal::{Event, Journal, Outcome};
use peftc_search::{Evaluator, Metrics, Study, TrialJob, TrialResult, Value};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("peftc-search-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

/// A spec over LoRA rank × prefix length on MiniLM's config (no weights needed:
/// the evaluator is a formula). LoRA on q, v adds 6·2·(384·r + r·384) = 9216·r
/// parameters, a prefix 6·2·len·384 = 4608·len; 0.5% of MiniLM (113,637) leaves
/// 13 of the 24 points: r ∈ {0, 2} with any len, r = 4 with len ≤ 10, r = 8
/// with len ≤ 5.
fn spec(dir: &Path, search: &str) -> PathBuf {
    let text = format!(
        "model \"{}\"\npeft a {{\n    lora(r={{0, 2, 4, 8, 16, 32}}, alpha=16) on layers[*].attn.{{q, v}}\n    prefix(len={{0, 5, 10, 20}}) on layers[*].attn\n}}\ntrain {{\n    adapter = a\n    task = classify\n    labels = 2\n    batch = 16\n    seq_len = 64\n}}\nsearch s {{\n    space = a\n{search}}}\n",
        repo().join("tests/fixtures/configs/minilm-l6").display()
    );
    let p = dir.join("s.peft");
    std::fs::write(&p, text).expect("write spec");
    p
}

fn int(job: &TrialJob, dim: &str) -> i64 {
    job.describe
        .split(' ')
        .find_map(|kv| kv.strip_prefix(&format!("{dim}=")))
        .and_then(|v| v.parse().ok())
        .expect("dimension in the description")
}

/// accuracy = 0.9 + 0.01·log2(1 + r) + 0.002·len, reaching it linearly over
/// the steps: best within budget is r = 16, len = 10.
struct Formula {
    steps_run: Vec<(u64, u64)>,
}

fn accuracy(r: i64, len: i64) -> f64 {
    0.9 + 0.01 * ((1 + r) as f64).log2() + 0.002 * len as f64
}

impl Evaluator for Formula {
    fn run(
        &mut self,
        job: &TrialJob,
        report: &mut dyn FnMut(u64, &Metrics) -> bool,
    ) -> Result<TrialResult, String> {
        let final_acc = accuracy(int(job, "lora.r"), int(job, "prefix.len"));
        let steps = job.steps.unwrap_or(8);
        let every = job.eval_every.unwrap_or(steps);
        let mut step = every;
        while step < steps {
            let m = Metrics::from([("accuracy".into(), final_acc * step as f64 / steps as f64)]);
            if !report(step, &m) {
                self.steps_run.push((job.number, step));
                return Ok(TrialResult::Pruned { step });
            }
            step += every;
        }
        self.steps_run.push((job.number, steps));
        Ok(TrialResult::Complete(Metrics::from([(
            "accuracy".into(),
            final_acc,
        )])))
    }

    fn finished(
        &mut self,
        study: &Study,
        state: &peftc_search::StudyState,
    ) -> Result<(), peftc_search::SearchError> {
        peftc_search::report::write_all(study, state)
    }
}

fn events(dir: &Path) -> Vec<Event> {
    let j = Journal::new(dir);
    let g = j.lock().expect("lock");
    j.read(&g).expect("read").0
}

fn run(study: &Study) -> Formula {
    let mut f = Formula {
        steps_run: Vec::new(),
    };
    study.run_worker(&mut f, &mut |_| {}).expect("worker");
    f
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
    let j = Journal::new(&dir);
    let claimed: peftc_search::journal::NamedPoint = [
        ("lora.r".to_string(), Value::Int(4)),
        ("prefix.len".to_string(), Value::Int(5)),
    ]
    .into();
    {
        let g = j.lock().expect("lock");
        j.append(
            &g,
            &Event::Claim {
                trial: 1,
                worker: "4242-dead".into(),
                point: claimed.clone(),
                cost: study.cost(&[Value::Int(4), Value::Int(5)]).expect("cost"),
                time: 0.0,
            },
        )
        .expect("append");
    }
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
        state.trials[&0], before,
        "a finished trial is neither lost nor redone"
    );
    let finishes: Vec<u64> = events(&dir)
        .iter()
        .filter_map(|e| match e {
            Event::Finish { trial, .. } => Some(*trial),
            _ => None,
        })
        .collect();
    assert_eq!(finishes, [0, 1, 2, 3], "each trial finished exactly once");
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
    let ev = events(&dir);
    let claims: Vec<(u64, String)> = ev
        .iter()
        .filter_map(|e| match e {
            Event::Claim { trial, point, .. } => Some((*trial, format!("{point:?}"))),
            _ => None,
        })
        .collect();
    let numbers: BTreeSet<u64> = claims.iter().map(|c| c.0).collect();
    let points: BTreeSet<&String> = claims.iter().map(|c| &c.1).collect();
    assert_eq!(numbers, (0..10).collect(), "{claims:?}");
    assert_eq!(points.len(), 10, "a point was trained twice: {claims:?}");
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
    assert!(e.contains("holds a study of a different spec"), "{e}");
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
    let j = Journal::new(&dir);
    let point: peftc_search::journal::NamedPoint = [
        ("lora.r".to_string(), Value::Int(8)),
        ("prefix.len".to_string(), Value::Int(20)),
    ]
    .into();
    {
        let g = j.lock().expect("lock");
        for w in ["1-dead", "2-dead", "3-dead"] {
            j.append(
                &g,
                &Event::Claim {
                    trial: 0,
                    worker: w.into(),
                    point: point.clone(),
                    cost: study.cost(&[Value::Int(8), Value::Int(20)]).expect("cost"),
                    time: 0.0,
                },
            )
            .expect("append");
        }
    }
    run(&study);
    let state = study.state().expect("state");
    match &state.trials[&0].outcome {
        Some(Outcome::Failed { reason }) => assert!(reason.contains("died 3 times"), "{reason}"),
        other => panic!("trial 0: {other:?}"),
    }
    assert!(matches!(
        state.trials[&1].outcome,
        Some(Outcome::Complete { .. })
    ));
}
