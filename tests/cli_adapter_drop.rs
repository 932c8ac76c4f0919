//! AdapterDrop on MiniLM: `infer --adapter-drop N` gives exactly the logits
//! of the same adapter with the lowest N layers' adapters zeroed (the closed
//! form of leaving them out), and `adapter_drop` in `train` changes what
//! trains but not whether it does.

mod common;
use common::*;
use peftc_runtime::weights::{read_safetensors_all_float, write_safetensors};
use std::path::Path;

const TEXTS: &[&str] = &["WIN a free prize now, call 0800", "see you at lunch"];

fn max_diff(a: &[Vec<f64>], b: &[Vec<f64>]) -> f64 {
    a.iter()
        .flatten()
        .zip(b.iter().flatten())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

fn logits(args: &[&str]) -> Vec<Vec<f64>> {
    let mut a: Vec<&str> = args.to_vec();
    a.push("--json");
    for t in TEXTS {
        a.extend(["--text", t]);
    }
    let out: serde_json::Value = serde_json::from_str(&ok(&a)).expect("json");
    out["logits"]
        .as_array()
        .expect("logits")
        .iter()
        .map(|r| {
            r.as_array()
                .expect("row")
                .iter()
                .filter_map(|x| x.as_f64())
                .collect()
        })
        .collect()
}

fn spec(d: &Path, name: &str, drop: usize) -> std::path::PathBuf {
    let sms = std::fs::read_to_string(asset("sms/spam_collection.csv")).expect("sms");
    let rows: Vec<&str> = sms.lines().filter(|l| l.contains('\t')).take(40).collect();
    write(d, "d.tsv", &(rows.join("\n") + "\n"));
    write(
        d,
        name,
        &format!(
            "model \"{}\"\npeft a {{\n    adapter(bottleneck=16) after layers[*].mlp\n}}\ntrain {{\n    adapter = a\n    task = classify\n    data = \"d.tsv\"\n    batch = 4\n    seq_len = 24\n    lr = 1e-2\n    adapter_drop = {drop}\n}}\n",
            asset("all-MiniLM-L6-v2").display()
        ),
    )
}

#[test]
fn dropping_the_lowest_adapters_is_zeroing_them() {
    let d = temp_dir("adapter-drop");
    let sp = spec(&d, "a.peft", 3);
    let run = d.join("run");
    let s = |p: &Path| p.display().to_string();
    ok(&["train", &s(&sp), "--out", &s(&run), "--max-steps", "4"]);
    let full = logits(&["infer", &s(&sp), "--adapter", &s(&run)]);
    let dropped = logits(&[
        "infer",
        &s(&sp),
        "--adapter",
        &s(&run),
        "--adapter-drop",
        "2",
    ]);
    assert!(
        max_diff(&full, &dropped) > 1e-5,
        "dropping two layers changed nothing"
    );

    // The same adapter with layers 0 and 1's adapters zeroed: each adds 0.
    let adapter =
        read_safetensors_all_float(&run.join("adapter/adapter.safetensors")).expect("adapter");
    let mut zeroed = adapter.clone();
    for (k, t) in zeroed.iter_mut() {
        if k.starts_with("encoder.layer.0.") || k.starts_with("encoder.layer.1.") {
            t.data.iter_mut().for_each(|v| *v = 0.0);
        }
    }
    let z = d.join("zeroed");
    std::fs::create_dir_all(&z).expect("dir");
    std::fs::copy(run.join("adapter/adapter.json"), z.join("adapter.json")).expect("meta");
    write_safetensors(&z.join("adapter.safetensors"), &zeroed, None).expect("write");
    let closed_form = logits(&["infer", &s(&sp), "--adapter", &s(&z)]);
    let diff = max_diff(&dropped, &closed_form);
    assert!(
        diff <= 1e-6,
        "--adapter-drop 2 is {diff:e} off the zeroed adapters"
    );

    let out = peftc(&[
        "infer",
        &s(&sp),
        "--adapter",
        &s(&run),
        "--adapter-drop",
        "2",
        "--merged",
        "--text",
        "hi",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
fn training_with_adapter_drop_trains_differently() {
    let d = temp_dir("adapter-drop-train");
    let s = |p: &Path| p.display().to_string();
    let run_with = |drop: usize| {
        let sp = spec(&d, &format!("a{drop}.peft"), drop);
        let run = d.join(format!("run{drop}"));
        ok(&["train", &s(&sp), "--out", &s(&run), "--max-steps", "4"]);
        read_safetensors_all_float(&run.join("adapter/adapter.safetensors")).expect("adapter")
    };
    let (plain, dropping) = (run_with(0), run_with(5));
    let k = "encoder.layer.0.mlp.adapter_after.down.weight";
    assert_ne!(
        plain[k].data, dropping[k].data,
        "AdapterDrop trained as plain training"
    );
    let top = "encoder.layer.5.mlp.adapter_after.up.weight";
    assert!(
        dropping[top].data.iter().any(|&v| v != 0.0),
        "the top layer trained"
    );
}
