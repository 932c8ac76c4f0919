//! Packed (GGUF-quantized) frozen weights: every block type decodes as
//! gguf-py decodes it; the packed product and its input gradient equal the
//! dense reference's; and SmolLM2 held packed gives the logits and gradients
//! it gives expanded to f32 (`train { base = f32 }`).

mod common;
use burn::tensor::{Tensor, TensorData};
use common::{close, plan};
use peftc_compiler::model::gguf::GgmlType;
use peftc_compiler::train::BaseForm;
use peftc_runtime::burn;
use peftc_runtime::data::Batch;
use peftc_runtime::kernels::{self, reference};
use peftc_runtime::model::{Params, PeftModel};
use peftc_runtime::session::Session;
use peftc_runtime::weights::{PackedMatrix, dequantize};
use peftc_runtime::{Cpu, CpuTrain};
use std::sync::Arc;

type B = CpuTrain;

/// Block bytes and the offsets of the f16 scale fields, per type.
const TYPES: &[(&str, GgmlType, usize, &[usize])] = &[
    ("q4_0", GgmlType::Q4_0, 18, &[0]),
    ("q4_1", GgmlType::Q4_1, 20, &[0, 2]),
    ("q5_0", GgmlType::Q5_0, 22, &[0]),
    ("q5_1", GgmlType::Q5_1, 24, &[0, 2]),
    ("q8_0", GgmlType::Q8_0, 34, &[0]),
    ("q2_k", GgmlType::Q2K, 84, &[80, 82]),
    ("q3_k", GgmlType::Q3K, 110, &[108]),
    ("q4_k", GgmlType::Q4K, 144, &[0, 2]),
    ("q5_k", GgmlType::Q5K, 176, &[0, 2]),
    ("q6_k", GgmlType::Q6K, 210, &[208]),
];

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

#[test]
fn every_block_type_decodes_as_gguf_py_does() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/gguf/blocks.json");
    let fixture: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("fixture")).expect("json");
    for &(name, ty, _, _) in TYPES {
        let case = &fixture[name];
        let bytes = hex(case["bytes"].as_str().expect("bytes"));
        let want: Vec<f32> = case["values"]
            .as_array()
            .expect("values")
            .iter()
            .map(|v| v.as_f64().expect("f64") as f32)
            .collect();
        let mut got = vec![0f32; want.len()];
        assert!(dequantize(ty, &bytes, &mut got), "{name} decodes");
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(
                g.to_bits(),
                w.to_bits(),
                "{name}: value {i}: {g} against {w}"
            );
        }
    }
}

/// Random blocks of `ty` with finite scales in ±0.05, `[rows, cols]`.
fn random_packed(
    ty: GgmlType,
    block: usize,
    scales: &[usize],
    rows: usize,
    cols: usize,
) -> PackedMatrix {
    let per = ty.block().expect("block").0 as usize;
    let n_blocks = rows * cols / per;
    let noise = peftc_runtime::rng::normal(17 + block as u64, n_blocks * block);
    let mut bytes: Vec<u8> = noise.iter().map(|v| (v.to_bits() >> 7) as u8).collect();
    for b in 0..n_blocks {
        for &at in scales {
            let d = 0.05 * noise[b * block + at].tanh();
            let h = half::f16::from_f32(d).to_le_bytes();
            bytes[b * block + at..b * block + at + 2].copy_from_slice(&h);
        }
    }
    PackedMatrix::new(ty, rows, cols, bytes).expect("packed")
}

fn rand(shape: [usize; 2], seed: u64) -> Tensor<B, 2> {
    let v = peftc_runtime::rng::normal(seed, shape[0] * shape[1]);
    Tensor::<B, 2>::from_data(TensorData::new(v, shape), &Default::default())
}

fn host(t: Tensor<Cpu, 2>) -> Vec<f32> {
    t.into_data().into_vec::<f32>().expect("f32")
}

#[test]
fn packed_products_match_the_dense_reference() {
    // 300 rows of 256: two tiles of W; 1 and 3 rows take the row-dot path,
    // 5 and 37 split the rows of x over the cores.
    for &(name, ty, block, scales) in TYPES {
        let w = Arc::new(random_packed(ty, block, scales, 300, 256));
        for n in [1, 3, 5, 37] {
            let x = rand([n, 256], n as u64).require_grad();
            let b = rand([1, 300], 99).require_grad();
            let r = rand([n, 300], 5).detach();
            let y1 = kernels::packed_linear(x.clone(), &w, Some(b.clone()));
            let y2 = reference::packed_linear(x.clone(), &w, Some(b.clone()));
            let what = format!("{name}, {n} rows");
            close(
                &what,
                &host(y1.clone().inner()),
                &host(y2.clone().inner()),
                1e-5,
            );
            let g1 = (y1 * r.clone()).sum().backward();
            let g2 = (y2 * r).sum().backward();
            let dx = |g| host(x.grad(g).expect("dx"));
            let db = |g| host(b.grad(g).expect("db"));
            close(&format!("{what}: dx"), &dx(&g1), &dx(&g2), 1e-5);
            close(&format!("{what}: db"), &db(&g1), &db(&g2), 1e-6);
        }
    }
}

/// Logits and LoRA / DoRA gradients of SmolLM2 packed and expanded.
#[test]
fn smollm2_packed_equals_smollm2_in_f32() {
    let statements = "lora(r=4, alpha=8, dora=true) on layers[*].attn.{q, v}\n    lora(r=4) on layers[*].mlp.down";
    let run = |base: BaseForm| {
        let mut plan = plan("llama", statements, "causal_lm");
        plan.train.as_mut().expect("train block").base = base;
        let session = Session::open(plan.clone()).expect("session");
        let mut store = session.init_params(3).expect("init");
        common::perturb_lora_b(&mut store, 11, 0.02);
        let ids = session
            .tokenizer
            .encode_plain("Packed blocks hold the frozen weights of the model.")
            .expect("tokens");
        let dev = Default::default();
        let model = PeftModel::<B>::load(&plan, session.weights, &dev).expect("model");
        let params = Params::<B>::tracked(&store, &dev);
        let batch = Batch::pad(&[&ids, &ids[..ids.len() - 3]], None, 0);
        let ctx = model.ctx(&batch, false, 0);
        let out = model.forward(&batch, &params, &ctx).expect("forward");
        let logits = host(out.logits().inner());
        let loss = model.training_loss(&out, &batch, &params).expect("loss");
        let grads = params.grads(&loss.backward(), &store);
        (logits, grads)
    };
    let (l_packed, g_packed) = run(BaseForm::Packed);
    let (l_dense, g_dense) = run(BaseForm::F32);
    close("logits", &l_packed, &l_dense, 1e-5);
    assert_eq!(g_packed.len(), g_dense.len());
    for (name, g) in &g_packed {
        close(name, &g.data, &g_dense[name].data, 1e-4);
    }
}
