//! Tokenization parity with Hugging Face: the ids transformers produced for the
//! golden fixtures' texts (MiniLM's tokenizer.json; SmolLM2's GGUF vocabulary).

use peftc_compiler::model::load_model;
use peftc_runtime::tokenizer::TextTokenizer;
use serde_json::Value;
use std::path::PathBuf;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn assets() -> PathBuf {
    std::env::var_os("PEFTC_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let cache = std::env::var_os("PEFTC_CACHE")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/peftc")
                });
            cache.join("assets")
        })
}

fn case(name: &str) -> Value {
    let p = repo()
        .join("tests/fixtures/golden")
        .join(name)
        .join("case.json");
    serde_json::from_slice(&std::fs::read(p).expect("case.json")).expect("json")
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("ids")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

#[test]
fn minilm_matches_transformers() {
    let model = load_model(&assets().join("all-MiniLM-L6-v2")).expect("model");
    let tok = TextTokenizer::for_model(&model).expect("tokenizer");
    let c = case("minilm_feature_base");
    for (text, want) in c["texts"]
        .as_array()
        .expect("texts")
        .iter()
        .zip(c["token_ids"].as_array().expect("ids"))
    {
        let got = tok
            .encode(text.as_str().expect("text"), 512)
            .expect("encode");
        assert_eq!(got, ids(want), "{text}");
    }
    // Truncation keeps [SEP] last.
    let short = tok
        .encode("one two three four five six seven", 5)
        .expect("encode");
    assert_eq!(short.len(), 5);
    assert_eq!(short[0], 101);
    assert_eq!(short[4], 102);
}

#[test]
fn smollm2_gguf_vocabulary_matches_transformers() {
    let model = load_model(&assets().join("SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf"))
        .expect("model");
    let tok = TextTokenizer::for_model(&model).expect("tokenizer");
    let c = case("smollm2_base");
    for (text, want) in c["texts"]
        .as_array()
        .expect("texts")
        .iter()
        .zip(c["token_ids"].as_array().expect("ids"))
    {
        assert_eq!(
            tok.encode_plain(text.as_str().expect("text"))
                .expect("encode"),
            ids(want),
            "{text}"
        );
    }
    // Digits one per token, as llama.cpp's `smollm` pre-tokenizer and transformers agree.
    let probe = c["digits_probe"].as_str().expect("probe");
    assert_eq!(
        tok.encode_plain(probe).expect("encode"),
        ids(&c["digits_probe_ids"])
    );
    assert_eq!(
        tok.decode(&tok.encode_plain("Hello world").expect("encode"))
            .expect("decode"),
        "Hello world"
    );
}
