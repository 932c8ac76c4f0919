//! Every method with a Hugging Face PEFT form, end to end on the real
//! MiniLM: trained by `peftc train`, exported with `peftc export --format
//! hf` and read back through `--adapter HF_DIR` with the run's logits; every
//! mergeable one folded by `infer --merged` with the unmerged logits. (The
//! exported files against HF PEFT itself: `tests/reference/check_export.py`;
//! HF-saved adapters read by peftc: `runtime/tests/golden.rs`.)

mod common;
use common::*;
use std::path::Path;

fn spec(dir: &Path, name: &str, statement: &str) -> std::path::PathBuf {
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
            "model \"{}\"\npeft b {{\n    {statement}\n}}\ntrain {{\n    adapter = b\n    task = classify\n    data = \"d.tsv\"\n    batch = 4\n    seq_len = 24\n    lr = 1e-2\n}}\n",
            asset("all-MiniLM-L6-v2").display()
        ),
    )
}

fn max_diff(a: &[Vec<f64>], b: &[Vec<f64>]) -> f64 {
    a.iter()
        .flatten()
        .zip(b.iter().flatten())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

const TEXTS: &[&str] = &[
    "WIN a free prize now, call 0800",
    "see you at lunch tomorrow",
];

#[test]
fn every_hf_method_exports_reads_back_and_merges() {
    let cases = [
        ("lora", "lora(r=4, alpha=8) on layers[*].attn.{q, v}", true),
        ("dora", "dora(r=4) on layers[*].attn.q", true),
        (
            "ia3",
            "ia3() on layers[*].attn.{k, v}, layers[*].mlp.down",
            true,
        ),
        ("prompt", "prompt(len=4) on embed", false),
        (
            "vera",
            "vera(r=16) on layers[*].attn.{q, v}, layers[*].mlp.up",
            true,
        ),
        ("loha", "loha(r=4, alpha=8) on layers[*].attn.{q, v}", true),
        (
            "lokr",
            "lokr(r=4, alpha=8, decompose_both=true) on layers[*].attn.q, layers[*].mlp.up",
            true,
        ),
        ("ln", "ln() on layers[*].{attn_norm, mlp_norm}", true),
        ("ptuning mlp", "ptuning(len=4, hidden=32) on embed", false),
        (
            "ptuning lstm",
            "ptuning(len=3, encoder=lstm, hidden=16) on embed",
            false,
        ),
    ];
    let d = temp_dir("methods");
    for (name, statement, mergeable) in cases {
        let sp = spec(&d, &format!("{name}.peft"), statement);
        let run = d.join(format!("{name}-run"));
        let hf = d.join(format!("{name}-hf"));
        let s = |p: &Path| p.display().to_string();
        ok(&["train", &s(&sp), "--out", &s(&run), "--max-steps", "2"]);
        ok(&["export", &s(&run), "--format", "hf", "--out", &s(&hf)]);
        let from_run = infer_logits(&sp, &[&s(&run)], TEXTS, "cpu");
        let from_hf = infer_logits(&sp, &[&s(&hf)], TEXTS, "cpu");
        let diff = max_diff(&from_run, &from_hf);
        assert!(
            diff <= 1e-6,
            "{name}: the exported adapter reads back {diff:e} off"
        );
        let untrained = infer_logits(&sp, &[], TEXTS, "cpu");
        assert!(
            max_diff(&from_run, &untrained) > 1e-4,
            "{name}: two steps of training changed nothing; the test would prove nothing"
        );
        if mergeable {
            let mut args = vec!["infer", sp.to_str().expect("utf-8"), "--json", "--merged"];
            let run_s = s(&run);
            args.extend(["--adapter", &run_s]);
            for t in TEXTS {
                args.extend(["--text", t]);
            }
            let out: serde_json::Value = serde_json::from_str(&ok(&args)).expect("json");
            let merged: Vec<Vec<f64>> = out["logits"]
                .as_array()
                .expect("logits")
                .iter()
                .map(|r| {
                    r.as_array()
                        .expect("row")
                        .iter()
                        .map(|x| x.as_f64().expect("f"))
                        .collect()
                })
                .collect();
            let diff = max_diff(&from_run, &merged);
            assert!(
                diff <= 1e-4,
                "{name}: merged logits {diff:e} off the unmerged ones"
            );
        }
    }
}
