//! `peftc check` and `peftc compile` end to end, on real configs.

mod common;
use common::*;
use serde_json::Value;

fn minilm_spec(dir: &std::path::Path, statements: &str) -> std::path::PathBuf {
    let text = format!(
        "model \"{}\"\npeft a {{\n    {statements}\n}}\ntrain {{\n    adapter = a\n    task = classify\n    labels = 2\n    batch = 16\n    seq_len = 64\n}}\n",
        fixture_config("minilm-l6").display()
    );
    write(dir, "spec.peft", &text)
}

fn compile_json(args: &[&str]) -> Value {
    let out = peftc(args);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    serde_json::from_str(&stdout(&out)).expect("json")
}

#[test]
fn check_reports_what_a_block_does() {
    let d = temp_dir("check");
    let spec = minilm_spec(&d, "lora(r=8, alpha=16) on layers[*].attn.{q, v}");
    let out = peftc(&["check", spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let s = stdout(&out);
    // Trainable count as HF PEFT reports it (tests/fixtures/hf_param_counts.json).
    assert!(s.contains("74,498 trainable of 22,788,484"), "{s}");
    assert!(
        s.contains("attn.q, attn.v in layers 0-5 (12 modules)"),
        "{s}"
    );
}

#[test]
fn compile_json_has_the_contract_fields_and_closed_form_figures() {
    let d = temp_dir("json");
    let spec = minilm_spec(&d, "lora(r=8, alpha=16) on layers[*].attn.{q, v}");
    let j = compile_json(&["compile", spec.to_str().unwrap(), "--emit", "json"]);
    assert_eq!(j["trainable_params"], 74_498);
    assert_eq!(j["total_params"], 22_788_484);
    let pct = j["trainable_percent"].as_f64().unwrap();
    assert!((pct - 100.0 * 74_498.0 / 22_788_484.0).abs() < 1e-9);
    let mem = &j["memory_bytes"];
    for k in [
        "frozen_weights",
        "trainable_weights",
        "gradients",
        "optimizer_state",
        "activations",
        "peak",
    ] {
        assert!(mem[k].as_u64().is_some(), "memory_bytes.{k} missing");
    }
    // Frozen: every base parameter (BertModel, 22,713,216) in f32.
    assert_eq!(mem["frozen_weights"], 22_713_216u64 * 4);
    // Trainable: LoRA + classifier in f32; AdamW keeps two moments.
    assert_eq!(mem["trainable_weights"], 74_498u64 * 4);
    assert_eq!(mem["optimizer_state"], 2 * 74_498u64 * 4);

    // FLOPs from the closed form: B=16, S=64, T=B*S, h=384, I=1536, 6 layers, 12 heads, r=8.
    let (b, s, h, i, l, heads, r) = (16u64, 64u64, 384u64, 1536u64, 6u64, 12u64, 8u64);
    let t = b * s;
    let per_layer_linear = 2 * t * (4 * h * h + 2 * h * i);
    let attn = 4 * b * heads * s * s * (h / heads);
    let lora = 2 * (2 * t * r * (h + h));
    let head = 2 * b * h * h + 2 * b * h * 2;
    let fwd = l * (per_layer_linear + attn + lora) + head;
    // Backward: no input gradient for layer 0's q/k/v (their input needs none);
    // every other linear passes one; LoRA and attention cost twice their
    // forward; the classifier also computes its weight gradient.
    let bwd =
        l * per_layer_linear - 3 * 2 * t * h * h + l * (2 * attn + 2 * lora) + head + 2 * b * h * 2;
    assert_eq!(j["flops"]["forward"], fwd);
    assert_eq!(j["flops"]["backward"], bwd);
    assert_eq!(j["flops_per_step"], fwd + bwd);
}

#[test]
fn compiles_a_70b_config_that_is_not_on_disk() {
    let d = temp_dir("70b");
    let text = format!(
        "model \"{}\"\npeft all {{\n    lora(r=16, alpha=32) on layers[*].attn.{{q, k, v, o}}, layers[*].mlp.{{gate, up, down}}\n}}\n",
        fixture_config("llama2-70b").display()
    );
    let spec = write(&d, "spec.peft", &text);
    let j = compile_json(&[
        "compile",
        spec.to_str().unwrap(),
        "--emit",
        "json",
        "--batch",
        "1",
        "--seq",
        "4096",
    ]);
    // HF PEFT on the same config: 207,093,760 trainable of 69,183,741,952.
    assert_eq!(j["trainable_params"], 207_093_760u64);
    assert_eq!(j["total_params"], 69_183_741_952u64);
    assert_eq!(j["model"]["kv_heads"], 8);
    assert_eq!(j["ir"]["peft_nodes"], 80 * 7);
}

#[test]
fn emits_ir_and_dot() {
    let d = temp_dir("emit");
    let spec = minilm_spec(
        &d,
        "lora(r=8) on layers[*].attn.{q, v}\n    ia3() on layers[*].mlp.down",
    );
    let ir = stdout(&peftc(&["compile", spec.to_str().unwrap(), "--emit", "ir"]));
    assert_eq!(
        ir.lines().filter(|l| l.contains("= lora_delta ")).count(),
        12,
        "{ir}"
    );
    assert_eq!(ir.lines().filter(|l| l.contains("= ia3_scale ")).count(), 6);
    // The fusion pass: one line per site, naming what it fuses.
    let fused = |rule: &str| ir.lines().filter(|l| l.starts_with(rule)).count();
    assert_eq!(fused("fused_lora_linear "), 12, "{ir}");
    assert_eq!(fused("fused_ia3_linear "), 6, "{ir}");
    assert!(
        ir.lines().any(|l| l
            .starts_with("fused_lora_linear encoder.layer.0.attention.self.query = %")
            && l.contains(" linear + %")
            && l.contains(" lora_delta + %")
            && l.ends_with(" add")),
        "{ir}"
    );
    assert!(
        ir.lines().any(
            |l| l.starts_with("fused_ia3_linear encoder.layer.5.output.dense = %")
                && l.contains(" ia3_scale + %")
                && l.ends_with(" linear")
        ),
        "{ir}"
    );
    assert!(ir.contains(": [B, S, 1536]"), "symbolic shapes");
    let dot = stdout(&peftc(&[
        "compile",
        spec.to_str().unwrap(),
        "--emit",
        "dot",
    ]));
    assert!(dot.starts_with("digraph") && dot.trim_end().ends_with('}'));
}

#[test]
fn model_flag_overrides_the_spec_and_accepts_a_config_file() {
    let d = temp_dir("override");
    let spec = write(
        &d,
        "spec.peft",
        "model \"nowhere\"\npeft a { lora(r=8) on attn.{q, v} }\n",
    );
    let cfg = fixture_config("qwen2-0.5b").join("config.json");
    let j = compile_json(&[
        "compile",
        spec.to_str().unwrap(),
        "--model",
        cfg.to_str().unwrap(),
        "--emit",
        "json",
    ]);
    assert_eq!(j["model"]["model_type"], "qwen2");
    // q and v of 24 layers, r=8: 8*(896+896) + 8*(896+128).
    assert_eq!(
        j["trainable_params"],
        24 * (8 * (896 + 896) + 8 * (896 + 128))
    );
}

#[test]
fn mezo_holds_no_gradients_and_no_saved_activations() {
    let d = temp_dir("mezo");
    let spec = |optimizer: &str| {
        let text = format!(
            "model \"{}\"\npeft a {{ lora(r=8, alpha=16) on layers[*].attn.{{q, v}} }}\ntrain {{ adapter = a task = classify labels = 2 batch = 16 seq_len = 64 optimizer = {optimizer} }}\n",
            fixture_config("minilm-l6").display()
        );
        write(&d, &format!("{optimizer}.peft"), &text)
    };
    let mem = |optimizer: &str| {
        let s = spec(optimizer);
        compile_json(&["compile", s.to_str().unwrap(), "--emit", "json"])["memory_bytes"].clone()
    };
    let (mezo, adamw) = (mem("mezo"), mem("adamw"));
    assert_eq!(mezo["gradients"], 0);
    assert_eq!(mezo["activations"], 0);
    // Its state is the copy of θ a step restores.
    assert_eq!(mezo["optimizer_state"], 74_498u64 * 4);
    assert_eq!(mezo["frozen_weights"], adamw["frozen_weights"]);
    let (m, a) = (
        mezo["peak"].as_u64().unwrap(),
        adamw["peak"].as_u64().unwrap(),
    );
    assert!(m < a, "MeZO {m} below AdamW {a}");
}

#[test]
fn a_frozen_lm_head_is_estimated_a_chunk_at_a_time() {
    let d = temp_dir("head");
    let spec = |statements: &str| {
        let text = format!(
            "model \"{}\"\npeft a {{ {statements} }}\ntrain {{ adapter = a task = causal_lm batch = 4 seq_len = 128 }}\n",
            fixture_config("smollm2-135m").display()
        );
        let s = write(&d, "spec.peft", &text);
        compile_json(&["compile", s.to_str().unwrap(), "--emit", "json"])["memory_bytes"].clone()
    };
    let (tokens, vocab) = (4 * 128u64, 49_152u64);
    let logits = tokens * vocab * 4;
    // LoRA on q, v: the head is plain and frozen; the loss holds one chunk of
    // 170 rows of logits and their gradient, never the whole [512, 49152].
    let plain = spec("lora(r=8) on layers[*].attn.{q, v}");
    assert_eq!(plain["workspace"], 2 * 170 * vocab * 4);
    // A method on the head: its logits are built whole and saved (in place
    // of the head's input, which the chunked loss saves).
    let headed = spec("lora(r=8) on layers[*].attn.{q, v}, head");
    let (p, h) = (
        plain["activations"].as_u64().unwrap(),
        headed["activations"].as_u64().unwrap(),
    );
    let hidden = tokens * 576 * 4;
    assert!(h >= p + logits - hidden, "{h} against {p} + whole logits");
}

#[test]
fn smollm2_gguf_header_describes_the_same_model_as_its_config() {
    let gguf = asset("SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf");
    let d = temp_dir("gguf");
    let spec = write(
        &d,
        "spec.peft",
        "model \"unused\"\npeft a { lora(r=8, alpha=16) on layers[*].attn.{q, v} }\n",
    );
    let from_gguf = compile_json(&[
        "compile",
        spec.to_str().unwrap(),
        "--model",
        gguf.to_str().unwrap(),
        "--emit",
        "json",
    ]);
    let cfg = fixture_config("smollm2-135m");
    let from_cfg = compile_json(&[
        "compile",
        spec.to_str().unwrap(),
        "--model",
        cfg.to_str().unwrap(),
        "--emit",
        "json",
    ]);
    for k in [
        "layers",
        "hidden",
        "heads",
        "kv_heads",
        "intermediate",
        "vocab",
        "tied_embeddings",
    ] {
        assert_eq!(from_gguf["model"][k], from_cfg["model"][k], "{k}");
    }
    // HF PEFT: 460,800 trainable of 134,975,808 (LlamaForCausalLM, tied head).
    assert_eq!(from_gguf["trainable_params"], 460_800);
    assert_eq!(from_gguf["total_params"], 134_975_808u64);
    assert_eq!(from_gguf["model"]["weights"]["dtype"], "q4_1");
    // The quantized matrices stay packed: their bytes are the GGUF's (Q4_1: 20
    // bytes per 32 values; the Q8_0 embedding 34), the norms f32.
    let packed = &from_gguf["memory_bytes"]["packed"];
    assert_eq!(packed["format"], "q4_1");
    let (params, bytes) = (
        packed["params"].as_u64().expect("params"),
        packed["bytes"].as_u64().expect("bytes"),
    );
    let embed = 49_152 * 576;
    // Every matrix: 30 layers of q, k, v, o, gate, up, down, and the embedding.
    assert_eq!(
        params,
        30 * (2 * 576 * 576 + 2 * 576 * 192 + 3 * 576 * 1536) + embed
    );
    assert_eq!(bytes, embed / 32 * 34 + (params - embed) / 32 * 20);
    let frozen = from_gguf["memory_bytes"]["frozen_weights"]
        .as_u64()
        .expect("frozen");
    // The norms (two per layer and the final one) in f32.
    assert_eq!(frozen, bytes + (2 * 30 + 1) * 576 * 4);
    assert!(from_cfg["memory_bytes"]["packed"].is_null());
}

#[test]
fn bad_command_lines_are_errors_not_panics() {
    let out = peftc(&["compile", "/definitely/not/here.peft"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("cannot read"), "{}", stderr(&out));
    let d = temp_dir("badblock");
    let spec = minilm_spec(&d, "lora(r=8) on attn.q");
    let out = peftc(&["compile", spec.to_str().unwrap(), "--block", "b"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("no peft block `b`"),
        "{}",
        stderr(&out)
    );
}

/// Every spec in `examples/` passes `peftc check` against the real models.
#[test]
fn every_example_checks() {
    let dir = repo().join("examples");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).expect("examples") {
        let p = e.expect("entry").path();
        if p.extension().and_then(|x| x.to_str()) != Some("peft") {
            continue;
        }
        let out = peftc(&["check", p.to_str().expect("utf-8")]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}: {}",
            p.display(),
            stderr(&out)
        );
        n += 1;
    }
    assert!(n >= 5, "only {n} examples found");
}
