//! How long `peftc compile` takes on large configs that are not on disk beyond
//! their config.json: parse + check + lower + IR + estimates in-process, and the
//! whole `peftc compile --emit json` command (process start included).
//!
//! Run: `cargo bench --bench compile` (release build). Target: under 50 ms for
//! LLaMA-2-70B with LoRA on every linear layer of every block.

use peftc_compiler::estimate::Workload;
use peftc_compiler::train::{DType, OptimizerKind};
use peftc_compiler::{CheckOptions, check, compile_block};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn spec(config: &str) -> String {
    format!(
        "model \"{}\"\npeft all {{\n    lora(r=16, alpha=32) on layers[*].attn.{{q, k, v, o}}, layers[*].mlp.{{gate, up, down}}\n}}\n",
        repo().join("tests/fixtures/configs").join(config).display()
    )
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn in_process(text: &str) -> Duration {
    let t = Instant::now();
    let file = peftc_grammar::parse(text).expect("parses");
    let c = check(&file, &CheckOptions::default()).expect("checks");
    let b = c.default_block().expect("block");
    let w = Workload {
        batch: 1,
        seq: 4096,
        dtype: DType::Bf16,
        optimizer: OptimizerKind::Adamw,
    };
    let out = compile_block(&c, b, None, w).expect("compiles");
    std::hint::black_box(out.params.trainable_params);
    t.elapsed()
}

fn whole_command(path: &std::path::Path) -> Duration {
    let t = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_peftc"))
        .args([
            "compile",
            path.to_str().expect("path"),
            "--emit",
            "json",
            "--batch",
            "1",
            "--seq",
            "4096",
        ])
        .output()
        .expect("peftc runs");
    assert!(out.status.success());
    t.elapsed()
}

fn main() {
    let dir = std::env::temp_dir().join(format!("peftc-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    println!(
        "{:<12} {:>10} {:>12} {:>14}",
        "config", "IR nodes", "in-process", "peftc command"
    );
    for config in [
        "minilm-l6",
        "smollm2-135m",
        "llama2-7b",
        "llama2-13b",
        "llama2-70b",
    ] {
        let text = spec(config).replace(
            "mlp.{gate, up, down}",
            if config == "minilm-l6" {
                "mlp.{up, down}"
            } else {
                "mlp.{gate, up, down}"
            },
        );
        let path = dir.join(format!("{config}.peft"));
        std::fs::write(&path, &text).expect("write spec");
        let _ = in_process(&text); // warm the file cache
        let lib = median((0..30).map(|_| in_process(&text)).collect());
        let cmd = median((0..10).map(|_| whole_command(&path)).collect());
        let nodes = {
            let file = peftc_grammar::parse(&text).expect("parses");
            let c = check(&file, &CheckOptions::default()).expect("checks");
            let w = Workload {
                batch: 1,
                seq: 4096,
                dtype: DType::Bf16,
                optimizer: OptimizerKind::Adamw,
            };
            compile_block(&c, c.default_block().expect("block"), None, w)
                .expect("compiles")
                .graph
                .len()
        };
        println!(
            "{config:<12} {nodes:>10} {:>9.2} ms {:>11.2} ms",
            lib.as_secs_f64() * 1e3,
            cmd.as_secs_f64() * 1e3
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
