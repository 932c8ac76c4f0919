//! `peftc search` end to end on the real MiniLM checkpoint and a slice of the
//! real SMS spam data: SIGKILL and resume, two worker processes on one study,
//! and `best.peft` retraining to the metric the study reported.

mod common;
use common::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn spec(dir: &Path, trials: u32) -> PathBuf {
    let sms = std::fs::read_to_string(asset("sms/spam_collection.csv")).expect("sms");
    let lines: Vec<&str> = sms.lines().filter(|l| l.contains('\t')).collect();
    let (spam, ham): (Vec<&str>, Vec<&str>) = lines.iter().partition(|l| l.starts_with("spam"));
    let picked: Vec<&str> = (0..64)
        .map(|i| {
            if i % 3 == 0 {
                spam[i % spam.len()]
            } else {
                ham[i % ham.len()]
            }
        })
        .collect();
    write(dir, "sms.tsv", &(picked.join("\n") + "\n"));
    let text = format!(
        "model \"{}\"\n\
         peft hybrid {{\n    lora(r={{0, 2, 4}}, alpha=8) on layers[*].attn.{{q, v}}\n    prefix(len={{0, 2}}) on layers[*].attn\n}}\n\
         train {{\n    adapter = hybrid\n    task = classify\n    data = \"sms.tsv\"\n    batch = 8\n    seq_len = 32\n    lr = 1e-3\n    eval_split = 0.25\n    seed = 2\n}}\n\
         search s {{\n    space = hybrid\n    budget params <= 0.5%\n    maximize accuracy\n    trials = {trials}\n    sampler = random\n    seed = 1\n    steps = 4\n    eval_every = 2\n}}\n",
        asset("all-MiniLM-L6-v2").display()
    );
    write(dir, "search.peft", &text)
}

/// The journal's events, as JSON.
fn journal(study: &Path) -> Vec<Value> {
    std::fs::read_to_string(study.join("journal.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn of_kind<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["event"] == kind).collect()
}

#[test]
fn a_killed_search_resumes_without_losing_or_repeating_a_trial() {
    let d = temp_dir("search-kill");
    let s = spec(&d, 3);
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
        let ev = journal(&study);
        let claimed_1 = of_kind(&ev, "claim").iter().any(|c| c["trial"] == 1);
        if !of_kind(&ev, "finish").is_empty() && claimed_1 {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(300), "no trial finished");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    let before = journal(&study);
    let first = of_kind(&before, "finish")[0].clone();
    assert!(
        of_kind(&before, "finish").len() < 3,
        "the search ended before it was killed"
    );

    let out = ok(&[
        "search",
        s.to_str().unwrap(),
        "--study",
        study.to_str().unwrap(),
    ]);
    assert!(out.contains("leaderboard.md"), "{out}");
    let after = journal(&study);
    let finishes = of_kind(&after, "finish");
    let numbers: Vec<u64> = finishes
        .iter()
        .filter_map(|f| f["trial"].as_u64())
        .collect();
    let mut sorted = numbers.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        [0, 1, 2],
        "each trial finished exactly once: {numbers:?}"
    );
    assert_eq!(finishes[0], &first, "the finished trial was kept as it was");
    // Trial 1 was retaken by the new process with the point the dead one drew.
    let claims_1: Vec<&Value> = of_kind(&after, "claim")
        .into_iter()
        .filter(|c| c["trial"] == 1)
        .collect();
    assert!(claims_1.len() <= 2, "{claims_1:?}");
    assert!(claims_1.windows(2).all(|w| w[0]["point"] == w[1]["point"]));
    for f in ["leaderboard.md", "pareto.json", "pareto.svg", "best.peft"] {
        assert!(study.join(f).exists(), "no {f}");
    }

    // best.peft trains with `peftc train` to the accuracy the study reported.
    let accuracy = |f: &&Value| f["outcome"]["metrics"]["accuracy"].as_f64();
    let best = finishes
        .iter()
        .filter_map(|f| Some((accuracy(f)?, f["trial"].as_u64()?)))
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
    let s = spec(&d, 4);
    let study = d.join("study");
    ok(&[
        "search",
        s.to_str().unwrap(),
        "--study",
        study.to_str().unwrap(),
        "--workers",
        "2",
    ]);
    let ev = journal(&study);
    let mut finished: BTreeMap<u64, usize> = BTreeMap::new();
    for f in of_kind(&ev, "finish") {
        *finished
            .entry(f["trial"].as_u64().expect("trial"))
            .or_default() += 1;
    }
    assert_eq!(
        finished,
        (0..4).map(|n| (n, 1)).collect::<BTreeMap<u64, usize>>(),
        "each of the 4 trials finished once"
    );
    let workers: BTreeSet<&str> = of_kind(&ev, "claim")
        .iter()
        .filter_map(|c| c["worker"].as_str())
        .collect();
    assert_eq!(
        workers.len(),
        2,
        "both processes trained trials: {workers:?}"
    );
    let points: BTreeSet<String> = of_kind(&ev, "claim")
        .iter()
        .map(|c| c["point"].to_string())
        .collect();
    assert_eq!(points.len(), 4, "no configuration was trained twice");
}

#[test]
fn a_search_over_the_budget_fails_before_training() {
    let d = temp_dir("search-budget");
    let s = spec(&d, 3);
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
