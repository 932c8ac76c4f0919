//! SSF and `full()` end to end: trained on MiniLM, merged into a checkpoint
//! whose weights are the closed form of the fold (SSF: `diag(γ)·W`,
//! `γ ⊙ b + β`; full: the trained copies themselves), with the unmerged
//! logits; SSF after a block is refused by `merge` with the reason; and both
//! train on SmolLM2 together with a mask.

mod common;
use common::*;
use peftc_runtime::weights::{read_safetensors, read_safetensors_all_float};
use std::path::{Path, PathBuf};

const TEXTS: &[&str] = &["WIN a free prize now, call 0800", "see you at lunch"];

/// Trains `statement` for two steps and merges it: (spec, run, merged).
fn train_and_merge(d: &Path, name: &str, statement: &str) -> (PathBuf, PathBuf, PathBuf) {
    let sp = minilm_spec(d, &format!("{name}.peft"), statement, "");
    let run = d.join(format!("{name}-run"));
    let merged = d.join(format!("{name}-merged"));
    let s = |p: &Path| p.display().to_string();
    ok(&["train", &s(&sp), "--out", &s(&run), "--max-steps", "2"]);
    ok(&["merge", &s(&run), "--out", &s(&merged)]);
    let unmerged = infer_logits(&sp, &[&s(&run)], TEXTS, "cpu");
    assert!(
        max_diff(&unmerged, &infer_logits(&sp, &[], TEXTS, "cpu")) > 1e-4,
        "{name}: training changed nothing"
    );
    let merged_run = json_logits(
        &["infer", &s(&sp), "--merged", "--adapter", &s(&run)],
        TEXTS,
    );
    let diff = max_diff(&unmerged, &merged_run);
    assert!(
        diff <= 1e-4,
        "{name}: merged logits {diff:e} off the unmerged ones"
    );
    (sp, run, merged)
}

fn close(what: &str, a: &[f32], b: &[f32], tol: f32) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    let worst = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(worst <= tol, "{what}: off by {worst:e}");
}

/// Trains SSF per `statement`, merges, and checks the merged `module`
/// against the closed form of the fold: each output channel's weights
/// (a linear's row, a norm's element) times its scale, `scale ⊙ b + shift`.
fn check_ssf_fold(tag: &str, statement: &str, module: &str) {
    let d = temp_dir(tag);
    let (_, run, merged) = train_and_merge(&d, tag, statement);
    let base = read_safetensors(&asset("all-MiniLM-L6-v2/model.safetensors")).expect("base");
    let after = read_safetensors(&merged.join("model.safetensors")).expect("merged");
    let adapter =
        read_safetensors_all_float(&run.join("adapter/adapter.safetensors")).expect("adapter");
    let m = module;
    let (g, s) = (
        &adapter[&format!("{m}.ssf_scale")],
        &adapter[&format!("{m}.ssf_shift")],
    );
    assert!(g.data.iter().any(|&v| v != 1.0), "the scale trained");
    let (w, b) = (&base[&format!("{m}.weight")], &base[&format!("{m}.bias")]);
    let per_channel = w.data.len() / g.data.len();
    let want_w: Vec<f32> = w
        .data
        .iter()
        .enumerate()
        .map(|(e, &x)| x * g.data[e / per_channel])
        .collect();
    let want_b: Vec<f32> = b
        .data
        .iter()
        .zip(&g.data)
        .zip(&s.data)
        .map(|((&b, &g), &s)| b * g + s)
        .collect();
    close(
        "weight",
        &after[&format!("bert.{m}.weight")].data,
        &want_w,
        0.0,
    );
    close("bias", &after[&format!("bert.{m}.bias")].data, &want_b, 0.0);
}

#[test]
fn ssf_folds_into_a_linear_layer_as_its_closed_form() {
    check_ssf_fold(
        "ssf",
        "ssf() after layers[*].attn.{q, v}",
        "encoder.layer.3.attention.self.value",
    );
}

/// After a LayerNorm, SSF folds into the norm's weight and bias.
#[test]
fn ssf_folds_into_a_layer_norm_as_its_closed_form() {
    check_ssf_fold(
        "ssfn",
        "ssf() after layers[*].attn_norm",
        "encoder.layer.1.attention.output.LayerNorm",
    );
}

#[test]
fn ssf_after_a_block_is_refused_by_merge_with_the_reason() {
    let d = temp_dir("ssf-block");
    let sp = minilm_spec(&d, "b.peft", "ssf() after layers[*].mlp", "");
    let run = d.join("run");
    let merged = d.join("merged");
    let s = |p: &Path| p.display().to_string();
    ok(&["train", &s(&sp), "--out", &s(&run), "--max-steps", "1"]);
    let out = peftc(&["merge", &s(&run), "--out", &s(&merged)]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("ssf") && err.contains("cannot be folded"),
        "{err}"
    );
    assert!(!merged.exists(), "a refused merge leaves no folder");
}

#[test]
fn full_trains_every_tensor_of_a_block_and_merges_the_copies() {
    let d = temp_dir("full");
    let (_, run, merged) = train_and_merge(&d, "full", "full() on layers[5].attn");
    let base = read_safetensors(&asset("all-MiniLM-L6-v2/model.safetensors")).expect("base");
    let after = read_safetensors(&merged.join("model.safetensors")).expect("merged");
    let adapter =
        read_safetensors_all_float(&run.join("adapter/adapter.safetensors")).expect("adapter");
    // The attention block's four projections and its output norm, weights
    // and biases: 10 tensors, every one trained and merged as trained.
    let own: Vec<&String> = adapter
        .keys()
        .filter(|k| k.starts_with("encoder.layer.5.attention."))
        .collect();
    assert_eq!(own.len(), 10, "{own:?}");
    for k in own {
        let t = &adapter[k];
        assert_ne!(t.data, base[k].data, "`{k}` did not train");
        assert_eq!(
            after[&format!("bert.{k}")].data,
            t.data,
            "`{k}` merged as trained"
        );
    }
    // Nothing outside the block moved.
    let other = "encoder.layer.4.attention.self.query.weight";
    assert_eq!(after[&format!("bert.{other}")].data, base[other].data);
}

/// Masks, SSF and `full()` on SmolLM2 (LLaMA family, GGUF): one step of
/// each trains to a finite loss and an adapter that changes the logits.
#[test]
fn masks_ssf_and_full_train_on_smollm2() {
    let d = temp_dir("smollm2-selective");
    let sp = smollm2_spec(
        &d,
        "s.peft",
        "mask(density=0.001, by=fisher, calib=2) on layers[*].mlp.{gate, up, down}\n    mask(density=0.05, structure=column) on layers[*].attn.o\n    ssf() after layers[*].attn\n    ssf() after layers[*].mlp_norm\n    full() on final_norm",
        32,
    );
    let run = d.join("run");
    let s = |p: &Path| p.display().to_string();
    ok(&["train", &s(&sp), "--out", &s(&run), "--max-steps", "2"]);
    let texts = ["The markets rose"];
    let trained = infer_logits(&sp, &[&s(&run)], &texts, "cpu");
    let untrained = infer_logits(&sp, &[], &texts, "cpu");
    assert!(trained.iter().flatten().all(|v| v.is_finite()));
    assert!(
        max_diff(&trained, &untrained) > 1e-4,
        "training changed nothing"
    );
}
