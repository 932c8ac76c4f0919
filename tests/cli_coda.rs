//! CoDA end to end: it trains on MiniLM and SmolLM2 (its router learns
//! from zero); with `k` covering every sequence it is exactly a parallel
//! adapter beside each layer (every λ is 1, so the routed layer is the
//! layer), the closed form checked against peftc's own `adapter beside`;
//! `peftc compile` counts its tensors; and the checker refuses it beside a
//! soft prompt or on a module that is not a layer. The numerics against a
//! transformers-based reference are the golden cases `minilm_cls_coda` and
//! `smollm2_coda` (`runtime/tests/golden.rs`).

mod common;
use common::*;
use peftc_runtime::weights::{read_safetensors_all_float, write_safetensors};
use std::path::Path;

const TEXTS: &[&str] = &[
    "WIN a free prize now, call 0800 to claim your reward today",
    "see you at lunch",
];

#[test]
fn coda_trains_on_minilm_and_its_router_learns() {
    let d = temp_dir("coda-minilm");
    let sp = minilm_spec(
        &d,
        "c.peft",
        "coda(bottleneck=16, k=6) beside layers[*]",
        "",
    );
    let s = |p: &Path| p.display().to_string();
    // Parameters: per layer the router [h], down [b, h] + [b], up [h, b] + [h];
    // plus the classifier (h·2 + 2), as HF would count its modules_to_save.
    let compiled: serde_json::Value =
        serde_json::from_str(&ok(&["compile", &s(&sp), "--emit", "json"])).expect("json");
    let (h, b, layers) = (384u64, 16u64, 6u64);
    let want = layers * (h + b * h + b + h * b + h) + h * 2 + 2;
    assert_eq!(compiled["trainable_params"].as_u64(), Some(want));

    let run = d.join("run");
    ok(&["train", &s(&sp), "--out", &s(&run), "--max-steps", "4"]);
    let adapter =
        read_safetensors_all_float(&run.join("adapter/adapter.safetensors")).expect("adapter");
    for l in 0..6 {
        let r = &adapter[&format!("encoder.layer.{l}.coda.router.weight")];
        assert!(
            r.data.iter().any(|v| v.abs() > 0.0),
            "layer {l}'s router did not move from zero"
        );
    }
    let logits = infer_logits(&sp, &[&s(&run)], TEXTS, "cpu");
    assert!(logits.iter().flatten().all(|v| v.is_finite()));
    let eval: serde_json::Value =
        serde_json::from_str(&ok(&["eval", &s(&sp), "--adapter", &s(&run), "--json"]))
            .expect("json");
    assert!(
        eval["accuracy"]
            .as_f64()
            .is_some_and(|a| (0.0..=1.0).contains(&a))
    );
}

#[test]
fn coda_routing_every_token_is_a_parallel_adapter() {
    let d = temp_dir("coda-all");
    let s = |p: &Path| p.display().to_string();
    // k above seq_len (24): every λ is 1 and the layer sees all tokens.
    let coda = minilm_spec(
        &d,
        "c.peft",
        "coda(bottleneck=16, k=64) beside layers[*]",
        "",
    );
    let run = d.join("coda-run");
    ok(&["train", &s(&coda), "--out", &s(&run), "--max-steps", "3"]);
    let par = minilm_spec(&d, "p.peft", "adapter(bottleneck=16) beside layers[*]", "");
    let prun = d.join("adapter-run");
    ok(&["train", &s(&par), "--out", &s(&prun), "--max-steps", "1"]);

    // The parallel adapter holding CoDA's light branch and head.
    let trained =
        read_safetensors_all_float(&run.join("adapter/adapter.safetensors")).expect("coda");
    let mut as_adapter =
        read_safetensors_all_float(&prun.join("adapter/adapter.safetensors")).expect("adapter");
    for (k, t) in as_adapter.iter_mut() {
        let from = k.replace(".adapter_beside.", ".coda.");
        *t = trained
            .get(&from)
            .unwrap_or_else(|| panic!("no `{from}` in the CoDA adapter"))
            .clone();
    }
    let z = d.join("closed-form");
    std::fs::create_dir_all(&z).expect("dir");
    std::fs::copy(prun.join("adapter/adapter.json"), z.join("adapter.json")).expect("meta");
    write_safetensors(&z.join("adapter.safetensors"), &as_adapter, None).expect("write");

    let via_coda = infer_logits(&coda, &[&s(&run)], TEXTS, "cpu");
    let via_adapter = infer_logits(&par, &[&s(&z)], TEXTS, "cpu");
    let diff = max_diff(&via_coda, &via_adapter);
    assert!(
        diff < 1e-4,
        "CoDA with k = all differs from the adapter by {diff}"
    );
    let base = infer_logits(&par, &[], TEXTS, "cpu");
    assert!(
        max_diff(&via_coda, &base) > 1e-4,
        "training changed nothing"
    );

    // Routing fewer tokens than a text has changes its logits.
    let few = minilm_spec(
        &d,
        "f.peft",
        "coda(bottleneck=16, k=2) beside layers[*]",
        "",
    );
    let via_few = infer_logits(&few, &[&s(&run)], TEXTS, "cpu");
    assert!(
        max_diff(&via_few, &via_coda) > 1e-4,
        "k = 2 routed every token"
    );
}

#[test]
fn coda_trains_on_smollm2() {
    let d = temp_dir("coda-smollm2");
    let sp = smollm2_spec(&d, "s.peft", "coda(bottleneck=8, k=8) beside layers[*]", 24);
    let run = d.join("run");
    let s = |p: &Path| p.display().to_string();
    ok(&["train", &s(&sp), "--out", &s(&run), "--max-steps", "2"]);
    let texts = ["The markets rose for the third day as investors bought"];
    let trained = infer_logits(&sp, &[&s(&run)], &texts, "cpu");
    assert!(trained.iter().flatten().all(|v| v.is_finite()));
    let untrained = infer_logits(&sp, &[], &texts, "cpu");
    assert!(
        max_diff(&trained, &untrained) > 1e-4,
        "training changed nothing"
    );
}

#[test]
fn coda_is_refused_beside_a_prompt_and_off_a_layer() {
    let d = temp_dir("coda-errors");
    let s = |p: &Path| p.display().to_string();
    let sp = minilm_spec(
        &d,
        "a.peft",
        "coda(bottleneck=8, k=4) beside layers[*]\n    prompt(len=4) on embed",
        "",
    );
    let out = peftc(&["check", &s(&sp)]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("`prompt` cannot share a block with `coda`"),
        "{}",
        stderr(&out)
    );
    let sp = minilm_spec(
        &d,
        "b.peft",
        "coda(bottleneck=8, k=4) beside layers[*].attn",
        "",
    );
    let out = peftc(&["check", &s(&sp)]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("a transformer layer"),
        "{}",
        stderr(&out)
    );
    let sp = minilm_spec(&d, "c.peft", "coda(bottleneck=8, k=0) beside layers[*]", "");
    let out = peftc(&["check", &s(&sp)]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("`k` must be an integer in 1..")
            && stderr(&out).contains("c.peft:3:"),
        "{}",
        stderr(&out)
    );
}
