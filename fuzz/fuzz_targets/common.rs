//! Plans the loader targets check their inputs against: real model configs
//! from `tests/fixtures/configs`, one block per method with an HF form.

use peftc_compiler::{CheckOptions, Plan, check, lower};
use std::path::PathBuf;
use std::sync::OnceLock;

fn configs() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/configs")
}

const BLOCKS: &[(&str, &str)] = &[
    ("minilm-l6", "lora(r=4, alpha=8) on attn.{q, v}"),
    ("minilm-l6", "ia3() on attn.{k, v}, mlp.down"),
    ("minilm-l6", "prompt(len=4) on embed"),
    ("smollm2-135m", "lora(r=2, alpha=4, dora=true) on attn.q"),
    ("smollm2-135m", "prefix(len=3) on attn"),
];

/// One plan per entry of `BLOCKS`, built once.
pub fn plans() -> &'static [Plan] {
    static PLANS: OnceLock<Vec<Plan>> = OnceLock::new();
    PLANS.get_or_init(|| {
        BLOCKS
            .iter()
            .map(|(model, stmt)| {
                let task = if *model == "minilm-l6" {
                    "classify\n    labels = 2"
                } else {
                    "causal_lm"
                };
                let text = format!(
                    "peft b {{\n    {stmt}\n}}\ntrain {{\n    adapter = b\n    task = {task}\n}}\n"
                );
                let file = peftc_grammar::parse(&text).expect("fixture spec parses");
                let opts = CheckOptions {
                    spec_dir: configs(),
                    model_override: Some(configs().join(model)),
                    lenient_data: true,
                };
                let c = check(&file, &opts).expect("fixture spec checks");
                let b = c.default_block().expect("one block");
                lower(&c, b, None).expect("fixture spec lowers")
            })
            .collect()
    })
}
