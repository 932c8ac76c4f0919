//! `peftc generate`: greedy decoding with the KV cache equals Hugging Face's
//! `generate` (`do_sample=False`) token for token on the real SmolLM2 GGUF,
//! alone and with a Hugging Face PEFT LoRA adapter (fixture from
//! `tests/reference/make_generate.py`); sampling is seeded; stop strings cut.

mod common;
use common::*;
use serde_json::Value;

fn fixture() -> Value {
    let text = std::fs::read_to_string(repo().join("tests/fixtures/generate/greedy.json"))
        .expect("fixture");
    serde_json::from_str(&text).expect("json")
}

fn generate(spec: &std::path::Path, extra: &[&str]) -> Value {
    let mut args = vec!["generate", spec.to_str().unwrap(), "--json"];
    args.extend_from_slice(extra);
    serde_json::from_str(ok(&args).trim()).expect("json")
}

#[test]
fn greedy_decoding_equals_hugging_face_generate_token_for_token() {
    let d = temp_dir("generate-greedy");
    let spec = smollm2_lora_spec(&d);
    let f = fixture();
    let n = f["max_tokens"].as_u64().expect("max_tokens").to_string();
    let adapter = repo().join("tests/fixtures/generate/lora");
    for case in f["cases"].as_array().expect("cases") {
        let prompt = case["prompt"].as_str().expect("prompt");
        let base = generate(&spec, &["--prompt", prompt, "--max-tokens", &n]);
        assert_eq!(
            base["prompt_tokens"].as_u64(),
            case["prompt_ids"].as_array().map(|a| a.len() as u64),
            "{prompt}: tokenized as transformers does"
        );
        assert_eq!(base["tokens"], case["base"], "{prompt}: base model");
        let lora = generate(
            &spec,
            &[
                "--prompt",
                prompt,
                "--max-tokens",
                &n,
                "--adapter",
                adapter.to_str().unwrap(),
            ],
        );
        assert_eq!(
            lora["tokens"], case["lora"],
            "{prompt}: with the LoRA adapter"
        );
        assert_eq!(lora["text"], case["lora_text"], "{prompt}: text");
    }
}

#[test]
fn sampling_is_seeded_and_stop_strings_cut_the_text() {
    let d = temp_dir("generate-sample");
    let spec = smollm2_lora_spec(&d);
    let sample = |seed: &str| {
        generate(
            &spec,
            &[
                "--prompt",
                "Gardening tips for the spring:",
                "--max-tokens",
                "12",
                "--temperature",
                "0.9",
                "--top-p",
                "0.95",
                "--seed",
                seed,
            ],
        )
    };
    let (a, b, c) = (sample("1"), sample("1"), sample("2"));
    assert_eq!(a["tokens"], b["tokens"], "one seed, one continuation");
    assert_ne!(
        a["tokens"], c["tokens"],
        "another seed, another continuation"
    );
    assert_eq!(a["finish_reason"], "length");
    // Greedy continues with "\n    if n == 0:"; stop at the first "==".
    let cut = generate(
        &spec,
        &[
            "--prompt",
            "def fibonacci(n):",
            "--max-tokens",
            "20",
            "--stop",
            "==",
        ],
    );
    assert_eq!(cut["text"], "\n    if n ", "{cut}");
    assert_eq!(cut["finish_reason"], "stop");
    // Streaming prints the same text.
    let out = ok(&[
        "generate",
        spec.to_str().unwrap(),
        "--prompt",
        "def fibonacci(n):",
        "--max-tokens",
        "20",
        "--stop",
        "==",
    ]);
    assert_eq!(out, "\n    if n \n");
}

#[test]
fn generation_refuses_a_classifier_and_bad_sampling_flags() {
    let d = temp_dir("generate-bad");
    let cls = minilm_spec(&d, "cls.peft", "lora(r=4) on layers[*].attn.{q, v}", "");
    let out = peftc(&["generate", cls.to_str().unwrap(), "--prompt", "hello"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("generation needs `task = causal_lm`"),
        "{}",
        stderr(&out)
    );
    let spec = smollm2_lora_spec(&d);
    let out = peftc(&[
        "generate",
        spec.to_str().unwrap(),
        "--prompt",
        "x",
        "--top-p",
        "0",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("probability"), "{}", stderr(&out));
}
