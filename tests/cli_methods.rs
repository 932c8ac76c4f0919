//! Every method with a Hugging Face PEFT form, end to end on the real
//! MiniLM: trained by `peftc train`, exported with `peftc export --format
//! hf` and read back through `--adapter HF_DIR` with the run's logits; every
//! mergeable one folded by `infer --merged` with the unmerged logits. (The
//! exported files against HF PEFT itself: `tests/reference/check_export.py`;
//! HF-saved adapters read by peftc: `runtime/tests/golden.rs`.)

mod common;
use common::*;
use std::path::Path;

const TEXTS: &[&str] = &[
    "WIN a free prize now, call 0800",
    "see you at lunch tomorrow",
];

#[test]
fn every_hf_method_exports_reads_back_and_merges() {
    let cases = [
        ("lora", "lora(r=4, alpha=8) on layers[*].attn.{q, v}", true),
        ("dora", "dora(r=4) on layers[*].attn.q", true),
        (
            "ia3",
            "ia3() on layers[*].attn.{k, v}, layers[*].mlp.down",
            true,
        ),
        ("prompt", "prompt(len=4) on embed", false),
        (
            "vera",
            "vera(r=16) on layers[*].attn.{q, v}, layers[*].mlp.up",
            true,
        ),
        ("loha", "loha(r=4, alpha=8) on layers[*].attn.{q, v}", true),
        (
            "lokr",
            "lokr(r=4, alpha=8, decompose_both=true) on layers[*].attn.q, layers[*].mlp.up",
            true,
        ),
        ("ln", "ln() on layers[*].{attn_norm, mlp_norm}", true),
        // Two steps prune at the second (tinit = 0): the HF file holds the
        // kept triplets only, and reads back to the same logits.
        (
            "adalora",
            "adalora(init_r=4, target_r=2, alpha=8) on layers[*].attn.{q, v}",
            true,
        ),
        ("ptuning mlp", "ptuning(len=4, hidden=32) on embed", false),
        (
            "ptuning lstm",
            "ptuning(len=3, encoder=lstm, hidden=16) on embed",
            false,
        ),
    ];
    let d = temp_dir("methods");
    for (name, statement, mergeable) in cases {
        let sp = minilm_spec(&d, &format!("{name}.peft"), statement, "");
        let run = d.join(format!("{name}-run"));
        let hf = d.join(format!("{name}-hf"));
        let s = |p: &Path| p.display().to_string();
        ok(&["train", &s(&sp), "--out", &s(&run), "--max-steps", "2"]);
        ok(&["export", &s(&run), "--format", "hf", "--out", &s(&hf)]);
        let from_run = infer_logits(&sp, &[&s(&run)], TEXTS, "cpu");
        let from_hf = infer_logits(&sp, &[&s(&hf)], TEXTS, "cpu");
        let diff = max_diff(&from_run, &from_hf);
        assert!(
            diff <= 1e-6,
            "{name}: the exported adapter reads back {diff:e} off"
        );
        let untrained = infer_logits(&sp, &[], TEXTS, "cpu");
        assert!(
            max_diff(&from_run, &untrained) > 1e-4,
            "{name}: two steps of training changed nothing; the test would prove nothing"
        );
        if mergeable {
            let mut args = vec!["infer", sp.to_str().expect("utf-8"), "--json", "--merged"];
            let run_s = s(&run);
            args.extend(["--adapter", &run_s]);
            for t in TEXTS {
                args.extend(["--text", t]);
            }
            let out: serde_json::Value = serde_json::from_str(&ok(&args)).expect("json");
            let merged: Vec<Vec<f64>> = out["logits"]
                .as_array()
                .expect("logits")
                .iter()
                .map(|r| {
                    r.as_array()
                        .expect("row")
                        .iter()
                        .map(|x| x.as_f64().expect("f"))
                        .collect()
                })
                .collect();
            let diff = max_diff(&from_run, &merged);
            assert!(
                diff <= 1e-4,
                "{name}: merged logits {diff:e} off the unmerged ones"
            );
        }
    }
}

/// AdaLoRA's allocator keeps state between steps (smoothed importance): a
/// run resumed from a checkpoint must prune as the uninterrupted one did,
/// to the byte.
#[test]
fn adalora_resumes_to_the_same_adapter() {
    let d = temp_dir("adalora-resume");
    let sp = minilm_spec(
        &d,
        "ada.peft",
        "adalora(init_r=4, target_r=2, alpha=8, tfinal=1) on layers[*].attn.{q, v}",
        "",
    );
    let s = |p: &Path| p.display().to_string();
    let full = d.join("full");
    let train = |out: &Path, resume: bool| {
        let mut args = vec!["train".to_string(), s(&sp), "--out".into(), s(out)];
        args.extend(["--max-steps", "6", "--save-every", "3"].map(String::from));
        if resume {
            args.push("--resume".into());
        }
        ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    };
    train(&full, false);
    // The same run stopped after its step-3 checkpoint.
    let cut = d.join("cut");
    let copy = std::process::Command::new("cp")
        .args(["-a", &s(&full), &s(&cut)])
        .status()
        .expect("cp");
    assert!(copy.success());
    std::fs::remove_dir_all(cut.join("adapter")).expect("rm adapter");
    std::fs::remove_dir_all(cut.join("checkpoints/step-0000006")).expect("rm step 6");
    std::fs::write(cut.join("checkpoints/latest"), "step-0000003").expect("latest");
    let optimizer = std::fs::read(cut.join("checkpoints/step-0000003/optimizer.safetensors"))
        .expect("optimizer state");
    assert!(
        String::from_utf8_lossy(&optimizer).contains("x.adalora.ipt_bar."),
        "the checkpoint holds no allocator state"
    );
    train(&cut, true);
    let a = std::fs::read(full.join("adapter/adapter.safetensors")).expect("full");
    let b = std::fs::read(cut.join("adapter/adapter.safetensors")).expect("resumed");
    assert!(
        a == b,
        "the resumed AdaLoRA run differs from the uninterrupted one"
    );
}

/// A run too short for AdaLoRA's schedule is refused before it starts (HF:
/// `tinit < total_step - tfinal`).
#[test]
fn adalora_refuses_a_run_with_no_steps_to_prune_in() {
    let d = temp_dir("adalora-short");
    let sp = minilm_spec(
        &d,
        "ada.peft",
        "adalora(init_r=4, target_r=2, tinit=2, tfinal=2) on layers[*].attn.q",
        "",
    );
    let out = d.join("run");
    let o = peftc(&[
        "train",
        sp.to_str().expect("utf-8"),
        "--out",
        out.to_str().expect("utf-8"),
        "--max-steps",
        "4",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("leave none of the run's 4 steps to prune in"),
        "{}",
        stderr(&o)
    );
    assert!(!out.exists(), "the refused run left a folder");
}

/// An HF AdaLoRA adapter whose `rank_pattern` names a module the spec's
/// block lacks, or holds the wrong number of triplets, is refused, naming
/// the file and the entry.
#[test]
fn adalora_rank_patterns_that_do_not_fit_are_refused() {
    let d = temp_dir("adalora-pattern");
    let sp = minilm_spec(
        &d,
        "ada.peft",
        "adalora(init_r=4, target_r=2, alpha=8) on layers[*].attn.{q, v}",
        "",
    );
    let s = |p: &Path| p.display().to_string();
    let (run, hf) = (d.join("run"), d.join("hf"));
    ok(&["train", &s(&sp), "--out", &s(&run), "--max-steps", "2"]);
    ok(&["export", &s(&run), "--format", "hf", "--out", &s(&hf)]);
    let config = hf.join("adapter_config.json");
    let original: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config).expect("config")).expect("json");
    assert!(
        original["rank_pattern"].is_object(),
        "two steps did not prune; the test would prove nothing"
    );
    let q0 = "bert.encoder.layer.0.attention.self.query.lora_E";
    for (key, value, expect) in [
        (
            "bert.encoder.layer.0.attention.self.key.lora_E",
            serde_json::json!([true, true, true, true]),
            "names no AdaLoRA module",
        ),
        (q0, serde_json::json!([true, false]), "not 4 booleans"),
    ] {
        let mut c = original.clone();
        c["rank_pattern"][key] = value;
        std::fs::write(&config, serde_json::to_vec(&c).expect("json")).expect("write");
        let o = peftc(&["infer", &s(&sp), "--adapter", &s(&hf), "--text", "hello"]);
        assert_eq!(o.status.code(), Some(2), "{key}: {}", stderr(&o));
        for want in [expect, "adapter_config.json", key] {
            assert!(
                stderr(&o).contains(want),
                "{key}: no `{want}` in {}",
                stderr(&o)
            );
        }
    }
}
