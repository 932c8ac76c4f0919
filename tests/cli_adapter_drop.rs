//! AdapterDrop on MiniLM: `infer --adapter-drop N` gives exactly the logits
//! of the same adapter with the lowest N layers' adapters zeroed (the closed
//! form of leaving them out), and `adapter_drop` in `train` changes what
//! trains but not whether it does.

mod common;
use common::*;
use peftc_runtime::weights::{read_safetensors_all_float, write_safetensors};
use std::path::Path;

const TEXTS: &[&str] = &["WIN a free prize now, call 0800", "see you at lunch"];

/// Adapters after every MLP, trained with `adapter_drop = drop`.
fn spec(d: &Path, name: &str, drop: usize) -> std::path::PathBuf {
    minilm_spec(
        d,
        name,
        "adapter(bottleneck=16) after layers[*].mlp",
        &format!("    adapter_drop = {drop}\n"),
    )
}

#[test]
fn dropping_the_lowest_adapters_is_zeroing_them() {
    let d = temp_dir("adapter-drop");
    let sp = spec(&d, "a.peft", 3);
    let run = d.join("run");
    let s = |p: &Path| p.display().to_string();
    ok(&["train", &s(&sp), "--out", &s(&run), "--max-steps", "4"]);
    let full = json_logits(&["infer", &s(&sp), "--adapter", &s(&run)], TEXTS);
    let dropped = json_logits(
        &[
            "infer",
            &s(&sp),
            "--adapter",
            &s(&run),
            "--adapter-drop",
            "2",
        ],
        TEXTS,
    );
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
    let closed_form = json_logits(&["infer", &s(&sp), "--adapter", &s(&z)], TEXTS);
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
