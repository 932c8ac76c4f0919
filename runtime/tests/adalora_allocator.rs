//! AdaLoRA's rank allocator against HF PEFT's `RankAllocator`, step for step:
//! `tests/fixtures/adalora_allocator/` (written by
//! `tests/reference/make_adalora_allocator.py`) holds ten steps of a real
//! MiniLM run — the tensors after each optimizer update, that step's
//! gradients, and what `update_and_allocate(step)` left: E with its pruned
//! triplets zeroed and the rank pattern. peftc's allocator, fed the same
//! tensors, must prune the same triplets (the smoothed importance it keeps
//! between steps included) and leave E identical.

use peftc_compiler::{CheckOptions, check, lower};
use peftc_runtime::methods::after_update;
use peftc_runtime::session::Session;
use peftc_runtime::weights::{HostTensor, read_safetensors};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn minilm() -> PathBuf {
    let cache = std::env::var_os("PEFTC_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/peftc")
        });
    let p = std::env::var_os("PEFTC_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache.join("assets"))
        .join("all-MiniLM-L6-v2");
    assert!(
        p.exists(),
        "missing {} — run scripts/fetch-assets",
        p.display()
    );
    p
}

/// The tensors of step `s` under `kind` (`param`, `grad`, `after`, `pattern`).
fn at(io: &BTreeMap<String, HostTensor>, s: usize, kind: &str) -> BTreeMap<String, HostTensor> {
    let prefix = format!("s{s}.{kind}.");
    io.iter()
        .filter_map(|(k, v)| k.strip_prefix(&prefix).map(|n| (n.to_string(), v.clone())))
        .collect()
}

#[test]
fn prunes_the_triplets_hf_prunes() {
    let dir = repo().join("tests/fixtures/adalora_allocator");
    let case: Value =
        serde_json::from_slice(&std::fs::read(dir.join("case.json")).expect("case.json"))
            .expect("json");
    let io = read_safetensors(&dir.join("steps.safetensors")).expect("steps");
    let total = case["total_step"].as_u64().expect("total_step") as usize;
    let spec = format!(
        "model \"{}\"\npeft case {{\n    {}\n}}\ntrain {{\n    adapter = case\n    task = classify\n    labels = 2\n}}\n",
        minilm().display(),
        case["statement"].as_str().expect("statement")
    );
    let file = peftc_grammar::parse(&spec).expect("parse");
    let checked = check(&file, &CheckOptions::default())
        .unwrap_or_else(|d| panic!("{}", peftc_grammar::render_all(&d, "case", &spec)));
    let plan = lower(&checked, checked.block("case").expect("block"), None).expect("lower");
    let mut store = Session::open(plan.clone())
        .expect("session")
        .init_params(0)
        .expect("init");
    let mut state = BTreeMap::new();
    let mut pruned_seen = 0;
    for s in 0..total {
        for (k, v) in at(&io, s, "param") {
            assert!(store.values.contains_key(&k), "the plan has no `{k}`");
            store.values.insert(k, v);
        }
        let grads = at(&io, s, "grad");
        after_update(&plan, s, total, &mut store, &grads, &mut state).expect("allocate");
        for (k, want) in at(&io, s, "after") {
            let got = &store.values[&k];
            assert_eq!(got.data, want.data, "step {s}: `{k}` after the allocator");
        }
        for kind in ["ipt_bar", "unc_bar"] {
            let want = at(&io, s, kind);
            for (k, want) in &want {
                let got = &state[&format!("adalora.{kind}.{k}")];
                let scale = want
                    .data
                    .iter()
                    .fold(0f32, |m, v| m.max(v.abs()))
                    .max(1e-30);
                let d = got
                    .iter()
                    .zip(&want.data)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                assert!(
                    d <= 1e-6 * scale,
                    "step {s}: {kind} of `{k}` differs by {d:e}"
                );
            }
            if want.is_empty() {
                assert!(
                    !state.keys().any(|k| k.contains(kind)),
                    "step {s}: HF has reset {kind}, peftc kept it"
                );
            }
        }
        for (k, want) in at(&io, s, "pattern") {
            let name = k.replace(".lora_E", ".rank_pattern");
            let got = &store.values[&name];
            assert_eq!(got.data, want.data, "step {s}: the rank pattern of `{k}`");
            pruned_seen += want.data.iter().filter(|&&x| x == 0.0).count();
        }
    }
    // The fixture exercises pruning (and its fixed final phase), not only
    // the warm-up.
    assert!(pruned_seen > 0, "the fixture never pruned");
}
