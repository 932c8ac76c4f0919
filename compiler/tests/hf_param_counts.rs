//! Trainable and total parameter counts against Hugging Face PEFT's own
//! (`tests/fixtures/hf_param_counts.json`, written by
//! `tests/reference/param_counts.py` with transformers + peft).

use peftc_compiler::estimate::params;
use peftc_compiler::{CheckOptions, check, lower};
use serde_json::Value;
use std::path::PathBuf;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn spec_text(case: &Value) -> String {
    let config = repo().join(case["config"].as_str().expect("config"));
    let task = case["task"].as_str().expect("task");
    let labels = case["num_labels"]
        .as_u64()
        .map(|n| format!("    labels = {n}\n"))
        .unwrap_or_default();
    format!(
        "model \"{}\"\npeft case {{\n    {}\n}}\ntrain {{\n    adapter = case\n    task = {task}\n{labels}}}\n",
        config.display(),
        case["statements"].as_str().expect("statements")
    )
}

#[test]
fn counts_match_hugging_face_peft() {
    let text = std::fs::read_to_string(repo().join("tests/fixtures/hf_param_counts.json"))
        .expect("fixture");
    let fixture: Value = serde_json::from_str(&text).expect("json");
    let cases = fixture["cases"].as_array().expect("cases");
    assert!(cases.len() >= 30, "fixture has {} cases", cases.len());
    let mut failures = Vec::new();
    for case in cases {
        if case.get("error").is_some() {
            continue;
        }
        let src = spec_text(case);
        let file = peftc_grammar::parse(&src)
            .unwrap_or_else(|d| panic!("{}", d.render("case.peft", &src)));
        let checked = check(&file, &CheckOptions::default())
            .unwrap_or_else(|ds| panic!("{}", peftc_grammar::render_all(&ds, "case.peft", &src)));
        let block = checked.block("case").expect("block");
        let plan = lower(&checked, block, None).expect("lower");
        let p = params(&plan);
        let want_t = case["trainable"].as_u64().expect("trainable");
        let want_all = case["total"].as_u64().expect("total");
        let name = format!(
            "{} / {} / {}",
            case["name"], case["task"], case["statements"]
        );
        if p.trainable_params != want_t || p.total_params != want_all {
            failures.push(format!(
                "{name}: peftc trainable {} total {}, HF trainable {want_t} total {want_all}",
                p.trainable_params, p.total_params
            ));
        }
        if let Some(n) = case["targeted_modules_count"].as_u64()
            && !case["statements"]
                .as_str()
                .unwrap_or("")
                .starts_with("prefix")
            && !case["statements"]
                .as_str()
                .unwrap_or("")
                .starts_with("prompt")
            && plan.sites.len() as u64 != n
        {
            failures.push(format!(
                "{name}: {} sites, HF targeted {n} modules",
                plan.sites.len()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
