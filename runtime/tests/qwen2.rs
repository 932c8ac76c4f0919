//! Qwen2.5-Coder-0.5B-Instruct from its GGUF (Q5_0 / Q8_0 / Q4_K / Q6_K
//! tensors, packed in memory) against transformers' own GGUF load of the same
//! file (`tests/reference/make_qwen2.py`, fixtures in `tests/fixtures/qwen2`):
//! the tokenizer token for token, the ChatML rendering, and the logits over
//! the whole 151,936-token vocabulary at held-out positions (max abs diff
//! ≤ 1e-3), with each text's mean next-token loss.

mod common;

use common::{assets, plan};
use peftc_runtime::CpuTrain;
use peftc_runtime::data::Batch;
use peftc_runtime::model::{Params, PeftModel};
use peftc_runtime::session::Session;
use peftc_runtime::tokenizer::{Message, TextTokenizer};
use peftc_runtime::train::host;
use peftc_runtime::weights::read_safetensors;
use serde_json::Value;
use std::path::PathBuf;

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/qwen2")
}

fn case() -> Value {
    serde_json::from_slice(&std::fs::read(fixture().join("case.json")).expect("case.json"))
        .expect("json")
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("ids")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

/// The model is fetched by `scripts/fetch-assets` unless `PEFTC_FETCH_QWEN=0`;
/// CI sets `PEFTC_REQUIRE_QWEN=1`, so there a missing file fails.
fn available() -> bool {
    let p = assets().join(common::QWEN2_GGUF);
    let there = p.exists();
    if !there {
        assert!(
            std::env::var("PEFTC_REQUIRE_QWEN").as_deref() != Ok("1"),
            "missing {} — run scripts/fetch-assets",
            p.display()
        );
        eprintln!("skipping: {} is not fetched", p.display());
    }
    there
}

#[test]
fn tokenizer_and_chat_template_match_transformers() {
    if !available() {
        return;
    }
    let c = case();
    let plan = plan("qwen2", "", "causal_lm");
    let tok = TextTokenizer::for_model(&plan.model).expect("tokenizer");
    for probe in c["probes"].as_array().expect("probes") {
        let text = probe["text"].as_str().expect("text");
        let got = tok.encode_plain(text).expect("encode");
        assert_eq!(got, ids(&probe["ids"]), "{text:?}");
    }
    for held in c["held_out"].as_array().expect("held_out") {
        let text = held["text"].as_str().expect("text");
        assert_eq!(tok.encode_plain(text).expect("encode"), ids(&held["ids"]));
    }
    let messages: Vec<Message> =
        serde_json::from_value(c["chat"]["messages"].clone()).expect("messages");
    let chat = tok.chat.as_ref().expect("the GGUF ships a chat template");
    let text = chat.render(&messages).expect("render");
    assert_eq!(text, c["chat"]["text"].as_str().expect("chat text"));
    assert_eq!(
        tok.encode_plain(&text).expect("encode"),
        ids(&c["chat"]["ids"])
    );
}

#[test]
fn logits_over_the_vocabulary_match_transformers() {
    if !available() {
        return;
    }
    let c = case();
    let plan = plan("qwen2", "", "causal_lm");
    let d = &plan.model.dims;
    assert_eq!(d.vocab, c["vocab"].as_u64().expect("vocab") as usize);
    assert_eq!(d.rope_theta, c["rope_theta"].as_f64().expect("rope_theta"));
    assert_eq!(
        d.tied_embeddings,
        c["tie_word_embeddings"].as_bool().expect("tied")
    );
    assert!(d.qkv_bias, "Qwen2 has q/k/v biases");
    let v = d.vocab;
    let want = read_safetensors(&fixture().join("logits.safetensors")).expect("logits");
    let session = Session::open(plan.clone()).expect("session");
    let store = session.init_params(0).expect("init");
    let device = Default::default();
    let model = PeftModel::<CpuTrain>::load(&plan, session.weights, &device).expect("model");
    let params = Params::<CpuTrain>::constant(&store, &device);
    for (i, held) in c["held_out"]
        .as_array()
        .expect("held_out")
        .iter()
        .enumerate()
    {
        let ids = ids(&held["ids"]);
        let n = ids.len();
        let batch = Batch {
            rows: 1,
            seq: n,
            labels: ids.iter().map(|&t| t as i64).collect(),
            input_ids: ids,
            mask: vec![1; n],
        };
        let ctx = model.ctx(&batch, false, 0);
        let out = model.forward(&batch, &params, &ctx).expect("forward");
        let logits = host(out.logits());
        assert_eq!(logits.len(), n * v);
        let reference = &want[&format!("logits.{i}")].data;
        let positions: Vec<usize> = held["positions"]
            .as_array()
            .expect("positions")
            .iter()
            .map(|p| p.as_u64().expect("position") as usize)
            .collect();
        assert_eq!(reference.len(), positions.len() * v);
        for (k, &pos) in positions.iter().enumerate() {
            let ours = &logits[pos * v..(pos + 1) * v];
            let theirs = &reference[k * v..(k + 1) * v];
            let diff = ours
                .iter()
                .zip(theirs)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(
                diff <= 1e-3,
                "held-out {i}, position {pos}: max abs logit diff {diff:e} > 1e-3"
            );
        }
        let loss = host(model.training_loss(&out, &batch, &params).expect("loss"))[0];
        let want_loss = held["loss"].as_f64().expect("loss") as f32;
        assert!(
            (loss - want_loss).abs() <= 1e-4 * want_loss.abs().max(1.0),
            "held-out {i}: loss {loss} vs transformers' {want_loss}"
        );
    }
}
