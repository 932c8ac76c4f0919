//! DyLoRA end to end on MiniLM: one run read at every rank; each cut
//! exports as a Hugging Face LoRA of that rank which reads back with the
//! same logits, and folds into the weights with them; ranks outside the
//! trained ones are refused.

mod common;
use common::*;
use std::path::Path;

const TEXTS: &[&str] = &["WIN a free prize now, call 0800", "see you at lunch"];

#[test]
fn one_dylora_run_serves_every_rank() {
    let d = temp_dir("dylora");
    let sp = minilm_spec(
        &d,
        "dy.peft",
        "dylora(r=4, min_r=1, alpha=8) on layers[*].attn.{q, v}",
        "",
    );
    let run = d.join("run");
    let s = |p: &Path| p.display().to_string();
    ok(&["train", &s(&sp), "--out", &s(&run), "--max-steps", "6"]);
    let mut at_rank = Vec::new();
    for k in 1..=4u32 {
        let ks = k.to_string();
        let native = json_logits(
            &["infer", &s(&sp), "--adapter", &s(&run), "--rank", &ks],
            TEXTS,
        );
        let hf = d.join(format!("hf{k}"));
        ok(&[
            "export",
            &s(&run),
            "--format",
            "hf",
            "--rank",
            &ks,
            "--out",
            &s(&hf),
        ]);
        let cfg: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(hf.join("adapter_config.json")).expect("config"),
        )
        .expect("json");
        assert_eq!(cfg["peft_type"], "LORA");
        assert_eq!(cfg["r"], k, "the export is a LoRA of the cut rank");
        let from_hf = json_logits(
            &["infer", &s(&sp), "--adapter", &s(&hf), "--rank", &ks],
            TEXTS,
        );
        assert!(
            max_diff(&native, &from_hf) <= 1e-6,
            "rank {k}: the HF export reads back off"
        );
        let merged = json_logits(
            &[
                "infer",
                &s(&sp),
                "--adapter",
                &s(&run),
                "--rank",
                &ks,
                "--merged",
            ],
            TEXTS,
        );
        assert!(
            max_diff(&native, &merged) <= 1e-4,
            "rank {k}: merged logits off the unmerged ones"
        );
        let eval = ok(&[
            "eval",
            &s(&sp),
            "--adapter",
            &s(&run),
            "--rank",
            &ks,
            "--json",
        ]);
        assert!(eval.contains("accuracy"), "{eval}");
        at_rank.push(native);
    }
    assert!(
        max_diff(&at_rank[0], &at_rank[3]) > 1e-5,
        "rank 1 and rank 4 give the same logits: the ranks did not train apart"
    );
    let untrained = json_logits(&["infer", &s(&sp)], TEXTS);
    assert!(
        max_diff(&at_rank[0], &untrained) > 1e-4,
        "rank 1 did not train"
    );

    let out = peftc(&[
        "infer",
        &s(&sp),
        "--adapter",
        &s(&run),
        "--rank",
        "5",
        "--text",
        "hi",
    ]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("outside") && err.contains("1..=4"), "{err}");
}
