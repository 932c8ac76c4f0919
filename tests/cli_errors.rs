//! Bad input to the runtime commands: each is a clear error naming the file,
//! tensor or line, a non-zero exit, and no panic.

mod common;
use common::*;
use std::path::Path;

fn fails(args: &[&str], needles: &[&str]) {
    let out = peftc(args);
    let err = stderr(&out);
    assert_eq!(
        out.status.code(),
        Some(2),
        "peftc {args:?} should fail with 2\n{err}"
    );
    assert!(!err.contains("panicked"), "panic: {err}");
    for n in needles {
        assert!(err.contains(n), "expected `{n}` in:\n{err}");
    }
}

fn minilm_spec(dir: &Path, model: &Path, data: &str, extra: &str) -> std::path::PathBuf {
    write(
        dir,
        "spec.peft",
        &format!(
            "model \"{}\"\npeft a {{ lora(r=4) on attn.{{q, v}} }}\ntrain {{ adapter = a task = classify data = \"{data}\" batch = 4 seq_len = 16 {extra} }}\n",
            model.display()
        ),
    )
}

#[test]
fn malformed_data_names_the_line() {
    let d = temp_dir("data");
    write(
        &d,
        "bad.tsv",
        "ham\tfine\nspam\tok too\nthis line has no tab\n",
    );
    let s = minilm_spec(&d, &asset("all-MiniLM-L6-v2"), "bad.tsv", "labels = 2");
    fails(
        &[
            "train",
            s.to_str().unwrap(),
            "--out",
            d.join("r").to_str().unwrap(),
        ],
        &["bad.tsv`:3", "no tab"],
    );
}

#[test]
fn empty_data_is_an_error() {
    let d = temp_dir("empty");
    write(&d, "empty.tsv", "\n\n");
    let s = minilm_spec(&d, &asset("all-MiniLM-L6-v2"), "empty.tsv", "labels = 2");
    fails(
        &[
            "train",
            s.to_str().unwrap(),
            "--out",
            d.join("r").to_str().unwrap(),
        ],
        &["empty.tsv"],
    );
}

#[test]
fn label_count_must_match_the_data() {
    let d = temp_dir("labels");
    write(&d, "three.tsv", "a\tone\nb\ttwo\nc\tthree\na\tfour\n");
    let s = minilm_spec(&d, &asset("all-MiniLM-L6-v2"), "three.tsv", "labels = 2");
    fails(
        &["check", s.to_str().unwrap()],
        &[
            "`labels = 2`, but the data has 3 classes (a, b, c)",
            "spec.peft:3:",
        ],
    );
}

/// A model folder with MiniLM's config (edited by `edit`) and its weights file
/// replaced by `weights` (or absent).
fn broken_model(
    dir: &Path,
    edit: impl Fn(&mut serde_json::Value),
    weights: Option<&[u8]>,
) -> std::path::PathBuf {
    let src = asset("all-MiniLM-L6-v2");
    let m = dir.join("model");
    std::fs::create_dir_all(&m).expect("mkdir");
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(src.join("config.json")).expect("config"))
            .expect("json");
    edit(&mut cfg);
    std::fs::write(m.join("config.json"), cfg.to_string()).expect("write");
    std::fs::copy(src.join("tokenizer.json"), m.join("tokenizer.json")).expect("tokenizer");
    if let Some(w) = weights {
        std::fs::write(m.join("model.safetensors"), w).expect("weights");
    }
    m
}

#[test]
fn missing_weights_file() {
    let d = temp_dir("noweights");
    let m = broken_model(&d, |_| {}, None);
    let s = minilm_spec(&d, &m, "x.tsv", "labels = 2");
    fails(
        &["infer", s.to_str().unwrap(), "--text", "hi"],
        &["model.safetensors", "no such file"],
    );
}

#[test]
fn truncated_weights_file() {
    let d = temp_dir("truncated");
    let full = std::fs::read(asset("all-MiniLM-L6-v2/model.safetensors")).expect("weights");
    let m = broken_model(&d, |_| {}, Some(&full[..full.len() / 2]));
    let s = minilm_spec(&d, &m, "x.tsv", "labels = 2");
    fails(
        &["infer", s.to_str().unwrap(), "--text", "hi"],
        &["model.safetensors", "not a valid safetensors file"],
    );
}

#[test]
fn tensor_with_the_wrong_shape_names_it() {
    let d = temp_dir("shape");
    let full = std::fs::read(asset("all-MiniLM-L6-v2/model.safetensors")).expect("weights");
    let m = broken_model(
        &d,
        |c| c["intermediate_size"] = serde_json::json!(1000),
        Some(&full),
    );
    let s = minilm_spec(&d, &m, "x.tsv", "labels = 2");
    fails(
        &["infer", s.to_str().unwrap(), "--text", "hi"],
        &[
            "encoder.layer.0.intermediate.dense.weight",
            "[1536, 384]",
            "[1000, 384]",
        ],
    );
}

#[test]
fn adapter_of_another_model_is_refused() {
    let d = temp_dir("othermodel");
    // A Hugging Face adapter saved for MiniLM, offered to a SmolLM2 spec.
    let hf = repo().join("tests/fixtures/golden/minilm_cls_lora/adapter");
    let s = write(
        &d,
        "smol.peft",
        &format!(
            "model \"{}\"\npeft a {{ lora(r=8, alpha=16) on attn.{{q, v}} }}\n",
            asset("SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf").display()
        ),
    );
    fails(
        &[
            "infer",
            s.to_str().unwrap(),
            "--adapter",
            hf.to_str().unwrap(),
            "--text",
            "hi",
        ],
        &["task_type `SEQ_CLS`", "causal_lm"],
    );
}

#[test]
fn unknown_gguf_quantization_names_the_tensor() {
    let d = temp_dir("gguf");
    let path = d.join("tiny.gguf");
    std::fs::write(&path, tiny_gguf_with_q8_k()).expect("gguf");
    let s = write(
        &d,
        "tiny.peft",
        &format!(
            "model \"{}\"\npeft a {{ lora(r=2) on attn.q }}\n",
            path.display()
        ),
    );
    fails(
        &["infer", s.to_str().unwrap(), "--text", "hi"],
        &["token_embd.weight", "q8_k", "cannot read"],
    );
}

/// A one-layer LLaMA GGUF whose embedding is Q8_K (llama.cpp's intermediate
/// dot-product type, which no model stores and peftc does not decode).
fn tiny_gguf_with_q8_k() -> Vec<u8> {
    fn s(b: &mut Vec<u8>, v: &str) {
        b.extend((v.len() as u64).to_le_bytes());
        b.extend(v.as_bytes());
    }
    let mut b = b"GGUF".to_vec();
    b.extend(3u32.to_le_bytes());
    b.extend(1u64.to_le_bytes());
    let kv: &[(&str, u32)] = &[
        ("llama.block_count", 1),
        ("llama.embedding_length", 256),
        ("llama.feed_forward_length", 512),
        ("llama.attention.head_count", 4),
        ("llama.vocab_size", 256),
    ];
    b.extend((kv.len() as u64 + 3).to_le_bytes());
    s(&mut b, "general.architecture");
    b.extend(8u32.to_le_bytes());
    s(&mut b, "llama");
    for (k, v) in kv {
        s(&mut b, k);
        b.extend(4u32.to_le_bytes());
        b.extend(v.to_le_bytes());
    }
    s(&mut b, "tokenizer.ggml.model");
    b.extend(8u32.to_le_bytes());
    s(&mut b, "gpt2");
    s(&mut b, "tokenizer.ggml.tokens");
    b.extend(9u32.to_le_bytes());
    b.extend(8u32.to_le_bytes());
    b.extend(2u64.to_le_bytes());
    s(&mut b, "h");
    s(&mut b, "i");
    // tensor directory: token_embd.weight [256, 256] q8_k
    s(&mut b, "token_embd.weight");
    b.extend(2u32.to_le_bytes());
    b.extend(256u64.to_le_bytes());
    b.extend(256u64.to_le_bytes());
    b.extend(15u32.to_le_bytes());
    b.extend(0u64.to_le_bytes());
    while !b.len().is_multiple_of(32) {
        b.push(0);
    }
    b.extend(vec![0u8; 256 * 256 / 256 * 292]);
    b
}

#[test]
fn exploding_loss_stops_with_an_error() {
    let d = temp_dir("nan");
    let sms = std::fs::read_to_string(asset("sms/spam_collection.csv")).expect("sms");
    let rows: Vec<&str> = sms.lines().take(40).collect();
    write(&d, "d.tsv", &rows.join("\n"));
    let s = minilm_spec(
        &d,
        &asset("all-MiniLM-L6-v2"),
        "d.tsv",
        "lr = 1e30 max_grad_norm = 0",
    );
    fails(
        &[
            "train",
            s.to_str().unwrap(),
            "--out",
            d.join("r").to_str().unwrap(),
            "--max-steps",
            "8",
        ],
        &[
            "at step",
            "stopping (nothing was written after the last checkpoint)",
        ],
    );
}

#[test]
fn a_run_folder_is_not_overwritten_or_resumed_with_another_spec() {
    let d = temp_dir("refuse");
    let sms = std::fs::read_to_string(asset("sms/spam_collection.csv")).expect("sms");
    let rows: Vec<&str> = sms.lines().take(40).collect();
    write(&d, "d.tsv", &rows.join("\n"));
    let s = minilm_spec(&d, &asset("all-MiniLM-L6-v2"), "d.tsv", "");
    let run = d.join("r");
    let out = peftc(&[
        "train",
        s.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
        "--max-steps",
        "1",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    fails(
        &[
            "train",
            s.to_str().unwrap(),
            "--out",
            run.to_str().unwrap(),
            "--max-steps",
            "1",
        ],
        &["already holds a run", "--resume"],
    );
    let other = write(
        &d,
        "other.peft",
        &std::fs::read_to_string(&s)
            .expect("spec")
            .replace("r=4", "r=2"),
    );
    fails(
        &[
            "train",
            other.to_str().unwrap(),
            "--out",
            run.to_str().unwrap(),
            "--max-steps",
            "2",
            "--resume",
        ],
        &["different spec"],
    );
}

#[test]
fn search_needs_a_search_block_and_a_space() {
    let d = temp_dir("search");
    write(&d, "x.tsv", "ham\thi\nspam\twin\n");
    let study = d.join("study");
    let no_search = minilm_spec(&d, &fixture_config("minilm-l6"), "x.tsv", "labels = 2");
    fails(
        &[
            "search",
            no_search.to_str().unwrap(),
            "--study",
            study.to_str().unwrap(),
        ],
        &["has no `search` block", "search s {"],
    );
    let flat = write(
        &d,
        "flat.peft",
        &format!(
            "model \"{}\"\npeft a {{ lora(r=4) on attn.{{q, v}} }}\ntrain {{ adapter = a task = classify labels = 2 }}\nsearch s {{ space = a }}\n",
            fixture_config("minilm-l6").display()
        ),
    );
    fails(
        &[
            "search",
            flat.to_str().unwrap(),
            "--study",
            study.to_str().unwrap(),
        ],
        &["explores block `a`, which has no set"],
    );
}
