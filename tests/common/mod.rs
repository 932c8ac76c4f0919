//! Helpers shared by the end-to-end tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixture_config(name: &str) -> PathBuf {
    repo().join("tests/fixtures/configs").join(name)
}

/// Where `scripts/fetch-assets` put the real models and data.
pub fn assets() -> PathBuf {
    if let Some(p) = std::env::var_os("PEFTC_ASSETS") {
        return PathBuf::from(p);
    }
    let cache = std::env::var_os("PEFTC_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/peftc")
        });
    cache.join("assets")
}

/// A real asset; fails the test with the fix if it is missing.
pub fn asset(rel: &str) -> PathBuf {
    let p = assets().join(rel);
    assert!(
        p.exists(),
        "missing asset {} — run scripts/fetch-assets",
        p.display()
    );
    p
}

/// A fresh, empty folder for one test.
pub fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!(
        "peftc-test-{}-{tag}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write");
    p
}

/// The binary under test: this build's `peftc`, or `PEFTC_BIN` (to run the
/// tests against another build, such as an older release).
pub fn bin() -> PathBuf {
    std::env::var_os("PEFTC_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_peftc")))
}

pub fn peftc(args: &[&str]) -> Output {
    Command::new(bin()).args(args).output().expect("run peftc")
}

/// Runs `peftc args`, asserts it succeeded, and returns its stdout.
pub fn ok(args: &[&str]) -> String {
    let out = peftc(args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "peftc {args:?}\n{}",
        stderr(&out)
    );
    stdout(&out)
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The logits of `texts` through `peftc infer --json` on `device`, one row
/// per text, with each `adapters` entry passed as `--adapter`.
pub fn infer_logits(spec: &Path, adapters: &[&str], texts: &[&str], device: &str) -> Vec<Vec<f64>> {
    let spec = spec.display().to_string();
    let mut args = vec!["infer", spec.as_str(), "--device", device];
    for a in adapters {
        args.extend(["--adapter", a]);
    }
    json_logits(&args, texts)
}

/// The logits `peftc ARGS --json --text T ...` prints, one row per text.
pub fn json_logits(args: &[&str], texts: &[&str]) -> Vec<Vec<f64>> {
    let mut args: Vec<&str> = args.to_vec();
    args.push("--json");
    for t in texts {
        args.extend(["--text", t]);
    }
    let out: serde_json::Value = serde_json::from_str(&ok(&args)).expect("json");
    out["logits"]
        .as_array()
        .expect("logits")
        .iter()
        .map(|r| {
            r.as_array()
                .expect("row")
                .iter()
                .map(|x| x.as_f64().expect("logit"))
                .collect()
        })
        .collect()
}

/// The largest absolute difference between two sets of logits.
pub fn max_diff(a: &[Vec<f64>], b: &[Vec<f64>]) -> f64 {
    a.iter()
        .flatten()
        .zip(b.iter().flatten())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

/// A spec training `statement` (and any `train` lines in `extra`) on the real
/// MiniLM over 24 SMS messages, one in three spam, written to `dir/name`
/// beside its data: batch 4, 24 tokens, lr 1e-2.
pub fn minilm_spec(dir: &Path, name: &str, statement: &str, extra: &str) -> PathBuf {
    let sms = std::fs::read_to_string(asset("sms/spam_collection.csv")).expect("sms");
    let (spam, ham): (Vec<&str>, Vec<&str>) = sms
        .lines()
        .filter(|l| l.contains('\t'))
        .partition(|l| l.starts_with("spam"));
    let rows: Vec<&str> = (0..24)
        .map(|i| if i % 3 == 0 { spam[i] } else { ham[i] })
        .collect();
    write(dir, "d.tsv", &(rows.join("\n") + "\n"));
    write(
        dir,
        name,
        &format!(
            "model \"{}\"\npeft b {{\n    {statement}\n}}\ntrain {{\n    adapter = b\n    task = classify\n    data = \"d.tsv\"\n    batch = 4\n    seq_len = 24\n    lr = 1e-2\n{extra}}}\n",
            asset("all-MiniLM-L6-v2").display()
        ),
    )
}

/// A spec training `statements` (one per line, indented) on the real
/// SmolLM2-135M GGUF as a causal LM over 40 one-line market reports, written
/// to `dir/name` beside its data: batch 2, `seq_len` tokens, lr 1e-3.
pub fn smollm2_spec(dir: &Path, name: &str, statements: &str, seq_len: usize) -> PathBuf {
    let corpus: String = (0..40)
        .map(|i| format!("The markets rose for the {i}th day as investors bought shares.\n"))
        .collect();
    write(dir, "c.txt", &corpus);
    write(
        dir,
        name,
        &format!(
            "model \"{}\"\npeft b {{\n    {statements}\n}}\ntrain {{\n    adapter = b\n    task = causal_lm\n    data = \"c.txt\"\n    batch = 2\n    seq_len = {seq_len}\n    lr = 1e-3\n}}\n",
            asset("SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf").display()
        ),
    )
}

/// The spec of the generation fixtures (tests/reference/make_generate.py):
/// LoRA r=4, alpha 8 on SmolLM2's q and v.
pub fn smollm2_lora_spec(dir: &Path) -> PathBuf {
    smollm2_spec(
        dir,
        "lora.peft",
        "lora(r=4, alpha=8) on layers[*].attn.{q, v}",
        64,
    )
}

/// A search over LoRA rank × prefix length on MiniLM and 64 real SMS texts:
/// 4 steps a trial, evaluated every 2.
pub fn sms_search_spec(dir: &Path, trials: u32) -> PathBuf {
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

/// A study after one of its workers was SIGKILLed mid-trial: `n`
/// configurations completed, each once; the killed trial is failed, marked
/// retaken, and a retake with its parameters completed. Returns the
/// completed trials.
pub fn assert_each_once_and_retaken(
    snap: &peftc_search::storage::model::Snapshot,
    n: usize,
    killed: &peftc_search::storage::model::TrialRow,
) -> Vec<peftc_search::storage::model::TrialRow> {
    use peftc_search::record::key;
    use peftc_search::storage::model::TrialState;
    use serde_json::json;
    let done: Vec<_> = snap
        .trials
        .iter()
        .filter(|t| t.state == TrialState::Complete)
        .cloned()
        .collect();
    assert_eq!(done.len(), n, "configurations complete: {:?}", snap.trials);
    let points: std::collections::BTreeSet<String> =
        done.iter().map(|t| format!("{:?}", t.params)).collect();
    assert_eq!(points.len(), n, "no configuration finished twice");
    let dead = &snap.trials[killed.number as usize];
    assert_eq!(dead.state, TrialState::Fail, "the killed trial failed");
    assert_eq!(dead.user_attrs[key::RETAKEN], json!(true));
    let retake = done
        .iter()
        .find(|t| t.system_attrs.get(key::FAILED_TRIAL) == Some(&json!(killed.number)))
        .expect("the killed trial was retaken and finished");
    assert_eq!(retake.params, killed.params);
    // Nothing else failed: every FAIL is a retaken one.
    assert!(
        snap.trials
            .iter()
            .filter(|t| t.state == TrialState::Fail)
            .all(|t| t.user_attrs.get(key::RETAKEN) == Some(&json!(true)))
    );
    done
}
