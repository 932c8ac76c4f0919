//! QLoRA end to end on MiniLM: `model "..." quantize nf4` trains LoRA on the
//! NF4 base, `merge` writes the dequantized base with the delta folded in
//! (a layer no method touches comes out exactly as NF4 decodes it), and the
//! merged logits are the unmerged ones; `compile` shows the coded base.

mod common;
use common::*;
use peftc_runtime::weights::{Nf4Matrix, PackedMatrix, read_safetensors};
use std::path::{Path, PathBuf};

const TEXTS: &[&str] = &["WIN a free prize now, call 0800", "see you at lunch"];

/// `minilm_spec` with `quantize nf4` on its model line.
fn nf4_spec(d: &Path, name: &str, statement: &str) -> PathBuf {
    let sp = minilm_spec(d, name, statement, "");
    let text = std::fs::read_to_string(&sp).expect("spec");
    let model_line = text.lines().next().expect("model line").to_string();
    std::fs::write(
        &sp,
        text.replacen(&model_line, &format!("{model_line} quantize nf4"), 1),
    )
    .expect("spec");
    sp
}

#[test]
fn qlora_trains_merges_dequantized_and_keeps_the_logits() {
    let d = temp_dir("qlora");
    let sp = nf4_spec(&d, "q.peft", "lora(r=4, alpha=8) on layers[*].attn.{q, v}");
    let s = |p: &Path| p.display().to_string();
    let compiled = ok(&["compile", &s(&sp)]);
    assert!(
        compiled.contains("in nf4 blocks, kept packed") && compiled.contains("params (nf4)"),
        "{compiled}"
    );
    let (run, merged) = (d.join("run"), d.join("merged"));
    ok(&["train", &s(&sp), "--out", &s(&run), "--max-steps", "2"]);
    ok(&["merge", &s(&run), "--out", &s(&merged)]);

    let base = read_safetensors(&asset("all-MiniLM-L6-v2/model.safetensors")).expect("base");
    let after = read_safetensors(&merged.join("model.safetensors")).expect("merged");
    let key = "encoder.layer.2.attention.self.key.weight";
    let want = PackedMatrix::from(Nf4Matrix::quantize(&base[key]).expect("codes")).to_dense();
    assert_eq!(after[&format!("bert.{key}")].data, want.data, "{key}");
    // Embeddings stay as they were.
    let emb = "embeddings.word_embeddings.weight";
    assert_eq!(after[&format!("bert.{emb}")].data, base[emb].data);

    let unmerged = infer_logits(&sp, &[&s(&run)], TEXTS, "cpu");
    let merged_run = json_logits(
        &["infer", &s(&sp), "--merged", "--adapter", &s(&run)],
        TEXTS,
    );
    let diff = max_diff(&unmerged, &merged_run);
    assert!(diff <= 1e-4, "merged logits {diff:e} off the unmerged ones");
}

/// LoftQ: trains from the SVD factors and merges into a checkpoint with the
/// base's own tensor names only (the factors LoftQ leaves beside the base
/// weights are not written).
#[test]
fn loftq_trains_and_merges_without_its_factors() {
    let d = temp_dir("loftq");
    let sp = nf4_spec(
        &d,
        "l.peft",
        "lora(r=4, alpha=4, init=loftq, loftq_iter=2) on layers[*].attn.{q, v}",
    );
    let s = |p: &Path| p.display().to_string();
    let (run, merged) = (d.join("run"), d.join("merged"));
    ok(&["train", &s(&sp), "--out", &s(&run), "--max-steps", "1"]);
    ok(&["merge", &s(&run), "--out", &s(&merged)]);
    let base = read_safetensors(&asset("all-MiniLM-L6-v2/model.safetensors")).expect("base");
    let after = read_safetensors(&merged.join("model.safetensors")).expect("merged");
    assert!(
        after.keys().all(|k| !k.contains("loftq")),
        "{:?}",
        after.keys()
    );
    for k in base.keys() {
        assert!(
            after.contains_key(&format!("bert.{k}")) || after.contains_key(k),
            "{k} kept"
        );
    }
}
