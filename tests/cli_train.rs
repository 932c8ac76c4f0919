//! `peftc train / eval / infer / export / merge` end to end on the real MiniLM
//! checkpoint and a slice of the real SMS spam data, plus resume after SIGKILL.

mod common;
use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A spec training LoRA on MiniLM over the first `rows` lines of SMS spam.
fn spec(dir: &Path, rows: usize, extra_train: &str) -> PathBuf {
    let sms = std::fs::read_to_string(asset("sms/spam_collection.csv")).expect("sms");
    let lines: Vec<&str> = sms.lines().filter(|l| l.contains('\t')).collect();
    // Both classes: take spam and ham lines alternately where possible.
    let (spam, ham): (Vec<&str>, Vec<&str>) = lines.iter().partition(|l| l.starts_with("spam"));
    let mut picked = Vec::new();
    for i in 0..rows {
        let src = if i % 3 == 0 { &spam } else { &ham };
        picked.push(src[i % src.len()]);
    }
    write(dir, "sms.tsv", &(picked.join("\n") + "\n"));
    let text = format!(
        "model \"{}\"\npeft qv {{\n    lora(r=4, alpha=8, dropout=0.1) on layers[*].attn.{{q, v}}\n}}\ntrain {{\n    adapter = qv\n    task = classify\n    data = \"sms.tsv\"\n    batch = 8\n    seq_len = 32\n    lr = 1e-3\n    eval_split = 0.25\n{extra_train}}}\n",
        asset("all-MiniLM-L6-v2").display()
    );
    write(dir, "spec.peft", &text)
}

#[test]
fn train_eval_infer_export_merge() {
    let d = temp_dir("train");
    let s = spec(&d, 48, "");
    let run = d.join("run");
    ok(&[
        "train",
        s.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
        "--max-steps",
        "4",
    ]);
    for f in [
        "adapter/adapter.json",
        "adapter/adapter.safetensors",
        "metrics.jsonl",
        "loss.svg",
        "summary.json",
    ] {
        assert!(run.join(f).is_file(), "missing {f}");
    }
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).expect("metrics");
    let rows: Vec<Value> = metrics
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(rows.iter().filter(|r| r.get("loss").is_some()).count(), 4);
    assert!(rows.iter().any(|r| r.get("accuracy").is_some()));
    assert!(
        std::fs::read_to_string(run.join("loss.svg"))
            .expect("svg")
            .starts_with("<svg")
    );

    let e: Value = serde_json::from_str(&ok(&[
        "eval",
        s.to_str().unwrap(),
        "--adapter",
        run.to_str().unwrap(),
        "--json",
    ]))
    .expect("json");
    let acc = e["accuracy"].as_f64().expect("accuracy");
    assert!((0.0..=1.0).contains(&acc) && e["loss"].as_f64().is_some());

    let texts = ["WINNER! Claim your free prize now", "see you at lunch"];
    let infer = |adapter: &Path| -> Vec<Vec<f64>> {
        let out = ok(&[
            "infer",
            s.to_str().unwrap(),
            "--adapter",
            adapter.to_str().unwrap(),
            "--text",
            texts[0],
            "--text",
            texts[1],
            "--json",
        ]);
        let v: Value = serde_json::from_str(&out).expect("json");
        v["logits"]
            .as_array()
            .expect("rows")
            .iter()
            .map(|r| {
                r.as_array()
                    .expect("row")
                    .iter()
                    .map(|x| x.as_f64().expect("f"))
                    .collect()
            })
            .collect()
    };
    let native = infer(&run);
    assert_eq!(native.len(), 2);
    assert_eq!(native[0].len(), 2);

    // HF export, then importing it back gives the same logits.
    let hf = d.join("hf");
    ok(&[
        "export",
        run.to_str().unwrap(),
        "--format",
        "hf",
        "--out",
        hf.to_str().unwrap(),
    ]);
    let cfg: Value =
        serde_json::from_slice(&std::fs::read(hf.join("adapter_config.json")).expect("config"))
            .expect("json");
    assert_eq!(cfg["peft_type"], "LORA");
    assert_eq!(cfg["task_type"], "SEQ_CLS");
    assert_eq!(cfg["r"], 4);
    let back = infer(&hf);
    for (a, b) in native.iter().flatten().zip(back.iter().flatten()) {
        assert!((a - b).abs() < 1e-6, "{a} vs {b}");
    }

    // Merged weights, loaded as a plain model (no adapter), give the same logits.
    let merged = d.join("merged");
    ok(&[
        "merge",
        run.to_str().unwrap(),
        "--out",
        merged.to_str().unwrap(),
    ]);
    assert!(merged.join("model.safetensors").is_file() && merged.join("config.json").is_file());
    let plain = write(
        &d,
        "merged.peft",
        &format!(
            "model \"{}\"\npeft none {{}}\ntrain {{ task = classify labels = 2 }}\n",
            merged.display()
        ),
    );
    let out = ok(&[
        "infer",
        plain.to_str().unwrap(),
        "--text",
        texts[0],
        "--text",
        texts[1],
        "--json",
    ]);
    let v: Value = serde_json::from_str(&out).expect("json");
    let merged_logits: Vec<f64> = v["logits"]
        .as_array()
        .expect("rows")
        .iter()
        .flat_map(|r| {
            r.as_array()
                .expect("row")
                .iter()
                .map(|x| x.as_f64().expect("f"))
        })
        .collect();
    for (a, b) in native.iter().flatten().zip(&merged_logits) {
        assert!((a - b).abs() < 1e-4, "merged {b} vs adapter {a}");
    }
}

#[test]
fn killed_run_resumes_to_the_same_adapter() {
    let d = temp_dir("resume");
    let s = spec(&d, 64, "    seed = 3\n");
    let full = d.join("full");
    ok(&[
        "train",
        s.to_str().unwrap(),
        "--out",
        full.to_str().unwrap(),
        "--max-steps",
        "6",
        "--save-every",
        "2",
    ]);

    let cut = d.join("cut");
    let mut child = Command::new(env!("CARGO_BIN_EXE_peftc"))
        .args([
            "train",
            s.to_str().unwrap(),
            "--out",
            cut.to_str().unwrap(),
            "--max-steps",
            "6",
            "--save-every",
            "2",
        ])
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let t0 = Instant::now();
    let latest = cut.join("checkpoints/latest");
    loop {
        if std::fs::read_to_string(&latest).is_ok_and(|s| s.trim() == "step-0000002") {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(300),
            "no checkpoint appeared"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    assert!(
        !cut.join("adapter").exists(),
        "the run finished before it was killed"
    );
    ok(&[
        "train",
        s.to_str().unwrap(),
        "--out",
        cut.to_str().unwrap(),
        "--max-steps",
        "6",
        "--save-every",
        "2",
        "--resume",
    ]);
    let a = std::fs::read(full.join("adapter/adapter.safetensors")).expect("full adapter");
    let b = std::fs::read(cut.join("adapter/adapter.safetensors")).expect("resumed adapter");
    assert!(a == b, "resumed adapter differs from the uninterrupted one");
}

#[test]
fn several_adapters_in_one_batch_match_each_alone() {
    let d = temp_dir("multi");
    let s = spec(&d, 48, "");
    let runs: Vec<PathBuf> = [1, 2]
        .iter()
        .map(|seed| {
            let out = d.join(format!("run{seed}"));
            ok(&[
                "train",
                s.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
                "--max-steps",
                "3",
                "--seed",
                &seed.to_string(),
            ]);
            out
        })
        .collect();
    let texts = [
        "WINNER!! Claim your free prize now",
        "see you at lunch?",
        "Call 0800 to win a holiday",
    ]
    .map(String::from);
    let alone: Vec<Vec<Vec<f64>>> = runs
        .iter()
        .map(|r| {
            infer_logits(
                &s,
                &[r.display().to_string().as_str()],
                &strs(&texts),
                "cpu",
            )
        })
        .collect();
    assert_ne!(alone[0], alone[1], "the two adapters differ");
    // The adapter folded into the base weights gives the same logits.
    let unmerged = &alone[0];
    let folded = {
        let mut args = vec![
            "infer".to_string(),
            s.display().to_string(),
            "--json".into(),
            "--merged".into(),
            "--adapter".into(),
            runs[0].display().to_string(),
        ];
        for t in &texts {
            args.extend(["--text".into(), t.clone()]);
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let j: Value = serde_json::from_str(&ok(&refs)).expect("json");
        j["logits"].clone()
    };
    for (row, want) in folded.as_array().expect("rows").iter().zip(unmerged) {
        for (x, y) in row.as_array().expect("row").iter().zip(want) {
            let x = x.as_f64().expect("number");
            assert!((x - y).abs() < 1e-4, "--merged {x} vs adapter {y}");
        }
    }
    // Interleaved rows, each tagged with its adapter.
    let order = [(1, 0), (0, 0), (0, 2), (1, 1), (1, 2), (0, 1)];
    let tagged: Vec<String> = order
        .iter()
        .map(|&(k, t)| format!("{}:{}", ["a", "b"][k], texts[t]))
        .collect();
    let adapters = vec![
        format!("a={}", runs[0].display()),
        format!("b={}", runs[1].display()),
    ];
    let batched = infer_logits(&s, &strs(&adapters), &strs(&tagged), "cpu");
    for (row, &(k, t)) in batched.iter().zip(&order) {
        for (x, y) in row.iter().zip(&alone[k][t]) {
            assert!(
                (x - y).abs() < 1e-5,
                "adapter {k}, text {t}: {row:?} vs {:?}",
                alone[k][t]
            );
        }
    }
    // A text without a known adapter name is refused.
    let out = peftc(&[
        "infer",
        s.to_str().unwrap(),
        "--adapter",
        &adapters[0],
        "--adapter",
        &adapters[1],
        "--text",
        "c:hello",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("NAME:TEXT"), "{}", stderr(&out));
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}
