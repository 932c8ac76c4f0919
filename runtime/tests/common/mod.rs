//! Helpers shared by the runtime's tests: kernel comparisons (CPU and
//! CubeCL), and plans on the real models.

#![allow(dead_code)]

use peftc_compiler::{CheckOptions, Plan, check, lower};
use peftc_runtime::model::ParamStore;
use std::path::PathBuf;

/// `a` equals the reference `b` within `tol` relative to `b`'s largest magnitude.
pub fn close(what: &str, a: &[f32], b: &[f32], tol: f32) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    let scale = b.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
    let d = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max);
    assert!(d <= tol * scale, "{what}: max diff {d:e} (scale {scale:e})");
}

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

/// Qwen2.5-Coder-0.5B-Instruct's GGUF under the assets folder.
pub const QWEN2_GGUF: &str = "Qwen2.5-Coder-0.5B-Instruct/qwen2.5-coder-0.5b-instruct.gguf";

/// The real model of `family` (`bert`: MiniLM; `qwen2`; otherwise SmolLM2), with `statements` as its one block.
pub fn plan(family: &str, statements: &str, task: &str) -> Plan {
    let model = match family {
        "bert" => assets().join("all-MiniLM-L6-v2"),
        "qwen2" => assets().join(QWEN2_GGUF),
        _ => assets().join("SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf"),
    };
    assert!(
        model.exists(),
        "missing {} — run scripts/fetch-assets",
        model.display()
    );
    let labels = if task == "classify" {
        "labels = 3\n"
    } else {
        ""
    };
    let spec = format!(
        "model \"{}\"\npeft b {{\n    {statements}\n}}\ntrain {{\n    adapter = b\n    task = {task}\n    {labels}}}\n",
        model.display()
    );
    let file = peftc_grammar::parse(&spec).expect("parse");
    let checked = check(&file, &CheckOptions::default())
        .unwrap_or_else(|d| panic!("{}", peftc_grammar::render_all(&d, "spec", &spec)));
    lower(&checked, checked.block("b").expect("block"), None).expect("lower")
}

/// Sets every LoRA `B` factor of `store` to `scale`·N(0, 1) (seeded): LoRA
/// starts with `B = 0`, where `A`'s gradient vanishes and the delta is zero.
pub fn perturb_lora_b(store: &mut ParamStore, seed: u64, scale: f32) {
    for (name, t) in store.values.iter_mut() {
        if name.contains("lora_B") {
            t.data = peftc_runtime::rng::normal(seed, t.data.len())
                .iter()
                .map(|v| scale * v)
                .collect();
        }
    }
}
