//! `--device wgpu` (lavapipe on machines without a GPU) against the CPU
//! backend, end to end on real MiniLM: the same training losses step by step,
//! and the same logits (max abs diff ≤ 1e-4) from the same adapter. The spec
//! exercises the CubeCL kernels: LoRA's fused expand, (IA)³'s column scale
//! and the adapter's GELU, forward and backward.

mod common;
use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};

fn spec(dir: &Path) -> PathBuf {
    spec_with(dir, "spec.peft", MIX, "2e-3")
}

const MIX: &str = "    lora(r=4, alpha=8) on layers[*].attn.{q, v}\n    ia3() on layers[*].mlp.down\n    adapter(bottleneck=8) after layers[4..5].mlp\n";

fn spec_with(dir: &Path, name: &str, methods: &str, lr: &str) -> PathBuf {
    let sms = std::fs::read_to_string(asset("sms/spam_collection.csv")).expect("sms");
    let lines: Vec<&str> = sms.lines().filter(|l| l.contains('\t')).take(40).collect();
    write(dir, "sms.tsv", &(lines.join("\n") + "\n"));
    let text = format!(
        "model \"{}\"\npeft mix {{\n{methods}}}\ntrain {{\n    adapter = mix\n    task = classify\n    data = \"sms.tsv\"\n    batch = 8\n    seq_len = 24\n    lr = {lr}\n    eval_split = 0.2\n}}\n",
        asset("all-MiniLM-L6-v2").display()
    );
    write(dir, name, &text)
}

/// `peftc train SPEC --out RUN --max-steps 3 EXTRA...`.
fn train_steps(spec: &Path, run: &Path, extra: &[&str]) {
    let (spec, run) = (spec.display().to_string(), run.display().to_string());
    let mut args = vec!["train", &spec, "--out", &run, "--max-steps", "3"];
    args.extend(extra);
    ok(&args);
}

fn losses(run: &Path) -> Vec<f64> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .expect("metrics")
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["loss"].as_f64())
        .collect()
}

fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

fn logits(spec: &Path, adapter: &Path, device: &str) -> Vec<f64> {
    let adapter = adapter.to_str().unwrap();
    let texts = [
        "WINNER! Claim your free prize now",
        "see you at lunch, bring the keys",
    ];
    infer(spec, &[adapter], &texts, device)
}

/// [`infer_logits`], rows concatenated.
fn infer(spec: &Path, adapters: &[&str], texts: &[&str], device: &str) -> Vec<f64> {
    infer_logits(spec, adapters, texts, device).concat()
}

#[test]
fn wgpu_trains_and_infers_like_the_cpu() {
    let d = temp_dir("wgpu");
    let s = spec(&d);
    let train = |device: &str| {
        let run = d.join(format!("run-{device}"));
        train_steps(&s, &run, &["--device", device]);
        run
    };
    let (cpu, gpu) = (train("cpu"), train("wgpu"));
    let (lc, lg) = (losses(&cpu), losses(&gpu));
    assert!(lc.len() >= 3, "cpu losses: {lc:?}");
    assert_eq!(lc.len(), lg.len(), "{lc:?} vs {lg:?}");
    for (a, b) in lc.iter().zip(&lg) {
        assert!(
            (a - b).abs() <= 1e-3 * a.abs().max(1.0),
            "losses {lc:?} vs {lg:?}"
        );
    }

    let adapter = cpu.join("adapter");
    let (a, b) = (logits(&s, &adapter, "cpu"), logits(&s, &adapter, "wgpu"));
    assert_eq!(a.len(), 4);
    let diff = max_abs_diff(&a, &b);
    eprintln!("losses cpu {lc:?}, wgpu {lg:?}; logits max abs diff {diff:e}");
    assert!(
        diff <= 1e-4,
        "logits differ by {diff:e}: cpu {a:?}, wgpu {b:?}"
    );
}

/// Several LoRA adapters in one batch: on wgpu through the SGMV kernel (rows
/// routed by adapter id), on the CPU through per-adapter segments; the same
/// logits, and each row's logits those of its adapter served alone.
#[test]
fn wgpu_serves_several_adapters_in_one_batch_like_the_cpu() {
    let d = temp_dir("wgpu-multi");
    let qv = "    lora(r=4, alpha=8) on layers[*].attn.{q, v}\n";
    let train = |name: &str, lr: &str| {
        let s = spec_with(&d, &format!("{name}.peft"), qv, lr);
        let run = d.join(name);
        train_steps(&s, &run, &[]);
        (s, run)
    };
    let (s, one) = train("one", "5e-3");
    let (_, two) = train("two", "2e-2");
    let a1 = format!("one={}", one.display());
    let a2 = format!("two={}", two.display());
    let texts = [
        "two:WINNER! Claim your free prize now",
        "one:see you at lunch, bring the keys",
        "two:ok see you",
        "one:URGENT you have won a holiday, call now",
    ];
    let cpu = infer(&s, &[&a1, &a2], &texts, "cpu");
    let gpu = infer(&s, &[&a1, &a2], &texts, "wgpu");
    assert_eq!(cpu.len(), 8);
    let diff = max_abs_diff(&cpu, &gpu);
    eprintln!("multi-adapter logits max abs diff {diff:e}");
    assert!(diff <= 1e-4, "cpu {cpu:?}\nwgpu {gpu:?}");
    // Row 0 is adapter two's alone; row 1 adapter one's.
    let alone2 = infer(
        &s,
        &[two.to_str().unwrap()],
        &["WINNER! Claim your free prize now"],
        "wgpu",
    );
    let alone1 = infer(
        &s,
        &[one.to_str().unwrap()],
        &["see you at lunch, bring the keys"],
        "wgpu",
    );
    for (i, (x, y)) in gpu[0..2]
        .iter()
        .zip(&alone2)
        .chain(gpu[2..4].iter().zip(&alone1))
        .enumerate()
    {
        assert!(
            (x - y).abs() <= 1e-4,
            "row logit {i}: batched {x} vs alone {y}"
        );
    }
    // The two adapters differ, so the routing is what made the rows agree.
    let other = infer(
        &s,
        &[one.to_str().unwrap()],
        &["WINNER! Claim your free prize now"],
        "wgpu",
    );
    let apart = max_abs_diff(&other, &alone2);
    assert!(
        apart > 1e-3,
        "the adapters give the same logits ({apart:e})"
    );
}

/// A decoder on wgpu: SmolLM2-135M (GGUF Q4_1 kept packed on the device, its
/// products through the dequant-matmul kernel; RoPE, RMSNorm,
/// SwiGLU through the cube kernel, grouped-query attention) gives the CPU's
/// next-token logits over the whole vocabulary.
#[test]
fn wgpu_runs_smollm2_like_the_cpu() {
    let spec = repo().join("examples/smollm2-bbc-lora.peft");
    let texts = ["The government announced new plans for"];
    let cpu = infer(&spec, &[], &texts, "cpu");
    let gpu = infer(&spec, &[], &texts, "wgpu");
    assert_eq!(cpu.len(), 49152);
    let diff = max_abs_diff(&cpu, &gpu);
    eprintln!("SmolLM2 logits max abs diff {diff:e}");
    assert!(diff <= 1e-4, "SmolLM2 logits differ by {diff:e}");
}
