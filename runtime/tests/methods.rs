//! The method architecture's promises, for every method on both model
//! families: the runtime allocates exactly the trainable tensors `peftc
//! compile` counts (Hugging Face PEFT's `print_trainable_parameters`), and
//! every one of them is declared by its method's file.

use peftc_compiler::estimate::params;
use peftc_runtime::session::Session;

mod common;
use common::plan;

/// One statement per method (and per variant that changes its tensors).
pub const METHODS: &[(&str, &str)] = &[
    ("lora", "lora(r=4, alpha=8) on layers[*].attn.{q, v}"),
    ("lora gated", "lora(r=4) on layers[0..2].attn.q gated"),
    ("lora bias", "lora(r=2, bias=lora_only) on layers[*].attn.q"),
    ("dora", "dora(r=4) on layers[*].attn.{q, v}"),
    ("ia3", "ia3() on layers[*].attn.{k, v}, layers[*].mlp.down"),
    ("prompt", "prompt(len=5) on embed"),
    ("prefix", "prefix(len=3) on layers[*].attn"),
    (
        "prefix projected",
        "prefix(len=3, projection=16) on layers[0..2].attn",
    ),
    ("prefix gated", "prefix(len=2) on layers[*].attn gated"),
    (
        "adapter serial",
        "adapter(bottleneck=8) after layers[*].mlp",
    ),
    (
        "adapter parallel gated",
        "adapter(bottleneck=4, act=gelu) beside layers[*].attn gated",
    ),
    ("bitfit", "bitfit() on layers[-1]"),
    (
        "vera",
        "vera(r=16) on layers[*].attn.{q, v}, layers[*].mlp.up",
    ),
    ("loha", "loha(r=4) on layers[*].attn.{q, v}"),
    (
        "lokr",
        "lokr(r=4, decompose_both=true) on layers[*].attn.{q, v}, layers[*].mlp.up",
    ),
    ("lokr r16", "lokr(r=16) on layers[*].attn.{q, k}"),
    (
        "adalora",
        "adalora(init_r=6, target_r=4) on layers[*].attn.{q, v}, layers[*].mlp.up",
    ),
    ("ln", "ln() on layers[*].{attn_norm, mlp_norm}"),
    ("ptuning mlp", "ptuning(len=6, hidden=32) on embed"),
    (
        "ptuning lstm",
        "ptuning(len=3, encoder=lstm, hidden=16) on embed",
    ),
];

#[test]
fn the_runtime_allocates_what_compile_counts() {
    for family in ["bert", "llama"] {
        for task in [
            "classify",
            if family == "bert" {
                "feature"
            } else {
                "causal_lm"
            },
        ] {
            for (name, statement) in METHODS {
                if family == "llama" && *name == "bitfit" {
                    continue; // LLaMA layers have no biases to train
                }
                let plan = plan(family, statement, task);
                let estimate = params(&plan);
                let session = Session::open(plan.clone()).expect("session");
                let store = session.init_params(0).expect("init");
                let allocated: u64 = store
                    .values
                    .iter()
                    .filter(|(k, _)| store.trains(k))
                    .map(|(_, t)| t.numel() as u64)
                    .sum();
                assert_eq!(
                    allocated, estimate.trainable_params,
                    "{family} {task} {name}: runtime allocates {allocated}, compile counts {}",
                    estimate.trainable_params
                );
                assert!(allocated > 0, "{family} {task} {name}: nothing trains");
            }
        }
    }
}
