//! SparseAdapter on MiniLM: each pruning rule keeps exactly the entries its
//! sparsity says, the pruned weights stay exactly zero through training,
//! `compile` counts what trains, and a damaged mask is refused.

mod common;
use common::*;
use peftc_runtime::weights::{read_safetensors_all_float, write_safetensors};
use std::path::Path;

fn spec(d: &Path, name: &str, args: &str) -> std::path::PathBuf {
    minilm_spec(
        d,
        name,
        &format!("adapter(bottleneck=16, {args}) after layers[*].mlp"),
        "",
    )
}

#[test]
fn pruned_weights_stay_zero_and_count_as_frozen() {
    let d = temp_dir("sparse-adapter");
    let s = |p: &Path| p.display().to_string();
    let mut masks = Vec::new();
    for prune in ["magnitude", "random", "snip"] {
        let sp = spec(
            &d,
            &format!("{prune}.peft"),
            &format!("sparsity=0.75, prune={prune}"),
        );
        let compiled: serde_json::Value =
            serde_json::from_str(&ok(&["compile", &s(&sp), "--emit", "json"])).expect("json");
        // Per layer: down [16, 384] and up [384, 16] keep 1,536 of 6,144
        // each; the biases (16 + 384) train whole; the head 770.
        assert_eq!(
            compiled["trainable_params"],
            6 * (1536 * 2 + 16 + 384) + 770,
            "{prune}"
        );
        let run = d.join(format!("{prune}-run"));
        ok(&["train", &s(&sp), "--out", &s(&run), "--max-steps", "3"]);
        let t =
            read_safetensors_all_float(&run.join("adapter/adapter.safetensors")).expect("adapter");
        for proj in ["down", "up"] {
            let base = format!("encoder.layer.2.mlp.adapter_after.{proj}");
            let (w, m) = (&t[&format!("{base}.weight")], &t[&format!("{base}.mask")]);
            assert_eq!(
                m.data.iter().filter(|&&v| v == 1.0).count(),
                1536,
                "{prune} {proj}"
            );
            assert!(m.data.iter().all(|&v| v == 0.0 || v == 1.0));
            assert!(
                w.data
                    .iter()
                    .zip(&m.data)
                    .all(|(&w, &m)| m == 1.0 || w == 0.0),
                "{prune} {proj}: a pruned weight moved"
            );
            let moved = w
                .data
                .iter()
                .zip(&m.data)
                .filter(|(w, m)| **m == 1.0 && **w != 0.0)
                .count();
            // (SNIP may keep weights of units a ReLU leaves dead at first.)
            assert!(
                moved * 4 > 1536,
                "{prune} {proj}: only {moved} kept weights are non-zero"
            );
        }
        masks.push(
            t["encoder.layer.2.mlp.adapter_after.down.mask"]
                .data
                .clone(),
        );
        if prune == "snip" {
            // A mask that keeps a weight the spec prunes is refused.
            let mut bad = t.clone();
            let m = bad
                .get_mut("encoder.layer.2.mlp.adapter_after.down.mask")
                .expect("mask");
            let i = m
                .data
                .iter()
                .position(|&v| v == 0.0)
                .expect("a pruned entry");
            m.data[i] = 1.0;
            let file = run.join("adapter/adapter.safetensors");
            write_safetensors(&file, &bad, None).expect("write");
            let out = peftc(&["infer", &s(&sp), "--adapter", &s(&run), "--text", "hi"]);
            let err = stderr(&out);
            assert_eq!(out.status.code(), Some(2), "{err}");
            assert!(err.contains("down.mask") && err.contains("keeps"), "{err}");
        }
    }
    assert_ne!(masks[0], masks[2], "SNIP chose magnitude's entries");
    assert_ne!(masks[0], masks[1], "random chose magnitude's entries");
}
