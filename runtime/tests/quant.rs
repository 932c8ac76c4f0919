//! NF4 (double-quantized) and int8 quantization of a real MiniLM weight
//! against bitsandbytes' own (`tests/reference/make_quant.py` wrote the
//! fixture): the same codes, block scales and dequantized values.

mod common;

use peftc_compiler::model::quantized_modules;
use peftc_compiler::{CheckOptions, Checked, check};
use peftc_runtime::weights::loftq::loftq;
use peftc_runtime::weights::{
    GgufForm, HostTensor, HostWeight, Int8Matrix, NF4_CODE, Nf4Matrix, PackedMatrix, Weights,
    dynamic_code, read_safetensors,
};
use safetensors::SafeTensors;
use std::path::PathBuf;

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/fixtures/quant/bnb.safetensors"
);

fn f32s(st: &SafeTensors, name: &str) -> Vec<f32> {
    let t = st.tensor(name).expect(name);
    t.data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn bytes(st: &SafeTensors, name: &str) -> Vec<u8> {
    st.tensor(name).expect(name).data().to_vec()
}

/// MiniLM's folder, or `None` (with a note) when the assets are missing.
fn minilm() -> Option<PathBuf> {
    let dir = common::assets().join("all-MiniLM-L6-v2");
    if !dir.exists() {
        eprintln!(
            "skipping: {} is missing (scripts/fetch-assets)",
            dir.display()
        );
        return None;
    }
    Some(dir)
}

/// MiniLM's first query projection `[384, 384]`.
fn query_weight() -> Option<HostTensor> {
    let w = read_safetensors(&minilm()?.join("model.safetensors"))
        .expect("MiniLM reads")
        .remove("encoder.layer.0.attention.self.query.weight")
        .expect("query weight");
    Some(w)
}

/// Rows 0..320 of MiniLM's first query projection, as the fixture took them.
fn weight() -> Option<HostTensor> {
    let w = query_weight()?;
    Some(HostTensor::new(
        vec![320, 384],
        w.data[..320 * 384].to_vec(),
    ))
}

/// The values of a coded matrix.
fn dense(m: impl Into<PackedMatrix>) -> Vec<f32> {
    m.into().to_dense().data
}

/// `spec` checked, its diagnostics rendered on failure.
fn checked(spec: &str) -> Checked {
    let file = peftc_grammar::parse(spec).expect("parse");
    check(&file, &CheckOptions::default())
        .unwrap_or_else(|d| panic!("{}", peftc_grammar::render_all(&d, "spec", spec)))
}

#[test]
fn code_books_are_bitsandbytes() {
    let raw = std::fs::read(FIXTURE).expect("fixture");
    let st = SafeTensors::deserialize(&raw).expect("fixture parses");
    assert_eq!(f32s(&st, "nf4.code"), NF4_CODE.to_vec());
    // torch.linspace's f32 rounding is not ours to the last bit: one ulp.
    common::close(
        "dynamic code",
        dynamic_code(),
        &f32s(&st, "dynamic.code"),
        1.2e-7,
    );
}

#[test]
fn nf4_matches_bitsandbytes() {
    let Some(w) = weight() else { return };
    let raw = std::fs::read(FIXTURE).expect("fixture");
    let st = SafeTensors::deserialize(&raw).expect("fixture parses");
    let m = Nf4Matrix::quantize(&w).expect("quantizes");
    let (codes, qabsmax, absmax2, offset) = m.parts();
    let want_offset = f32s(&st, "nf4.offset")[0];
    assert!(
        (offset - want_offset).abs() <= 2.4e-7 * want_offset.abs(),
        "offset {offset} vs {want_offset}"
    );
    // The offset is a mean (torch sums in f32, we in f64): scales within an ulp.
    common::close("absmax2", absmax2, &f32s(&st, "nf4.absmax2"), 2.4e-7);
    // bitsandbytes' native 8-bit quantizer settles near-ties between two
    // neighbouring codes its own way (5 of these 1,920 scales, each within
    // 1e-6 of a midpoint); every other block scale is the same code.
    let want_q = bytes(&st, "nf4.qabsmax");
    let ties: Vec<usize> = (0..want_q.len())
        .filter(|&i| qabsmax[i] != want_q[i])
        .collect();
    for &b in &ties {
        assert_eq!(
            (qabsmax[b] as i32 - want_q[b] as i32).abs(),
            1,
            "block {b}: scale code {} vs bnb {}",
            qabsmax[b],
            want_q[b]
        );
    }
    assert!(
        ties.len() * 200 <= want_q.len(),
        "{} scale codes differ",
        ties.len()
    );
    let want_codes = bytes(&st, "nf4.codes");
    let differ = codes
        .iter()
        .zip(&want_codes)
        .filter(|(a, b)| a != b)
        .count();
    assert_eq!(differ, 0, "{differ} of {} code bytes differ", codes.len());
    let ours = dense(m.clone());
    let want = f32s(&st, "nf4.dequant");
    let dyn_code = dynamic_code();
    for (b, (x, y)) in ours.chunks(64).zip(want.chunks(64)).enumerate() {
        if ties.contains(&b) {
            // The scale is one dynamic-code step off: values move by at most
            // that step times the group's scale (|NF4 code| <= 1).
            let step = (dyn_code[qabsmax[b] as usize] - dyn_code[want_q[b] as usize]).abs();
            let bound = step * absmax2[b / 256] * 1.0001;
            let d = x
                .iter()
                .zip(y)
                .map(|(p, q)| (p - q).abs())
                .fold(0f32, f32::max);
            assert!(d <= bound, "block {b}: {d} > {bound}");
        } else {
            common::close(&format!("nf4 dequant block {b}"), x, y, 1e-6);
        }
    }
    assert_eq!(m.byte_len(), 320 * 384 / 2 + 1920 + 8 * 4 + 4);
    // Row tiles read the same values as the whole.
    let mut tile = vec![0f32; 3 * 384];
    m.dequantize_rows(257, &mut tile);
    assert_eq!(tile, ours[257 * 384..260 * 384]);
}

#[test]
fn int8_matches_bitsandbytes() {
    let Some(w) = weight() else { return };
    let raw = std::fs::read(FIXTURE).expect("fixture");
    let st = SafeTensors::deserialize(&raw).expect("fixture parses");
    let m = Int8Matrix::quantize(&w).expect("quantizes");
    let (q, scale) = m.parts();
    let want_q: Vec<i8> = bytes(&st, "int8.q").into_iter().map(|b| b as i8).collect();
    assert_eq!(scale, f32s(&st, "int8.scale").as_slice());
    let differ = q.iter().zip(&want_q).filter(|(a, b)| a != b).count();
    assert_eq!(differ, 0, "{differ} of {} int8 codes differ", q.len());
    let worst = w
        .data
        .iter()
        .zip(&dense(m.clone()))
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    // Half a step of the largest row's scale.
    let step = scale.iter().fold(0f32, |m, s| m.max(*s)) / 127.0;
    assert!(
        worst <= 0.5 * step * (1.0 + 1e-5),
        "{worst} > {}",
        0.5 * step
    );
}

/// `model "MiniLM" quantize nf4 | int8`: the loaded base holds every linear
/// layer coded (embeddings and norms dense), in the bytes the compiler's
/// estimate counts, with the values of the quantizer applied to the weight.
#[test]
fn a_quantized_load_holds_what_the_compiler_counts() {
    let Some(dir) = minilm() else { return };
    let dense_w = read_safetensors(&dir.join("model.safetensors")).expect("MiniLM reads");
    for q in ["nf4", "int8"] {
        let checked = checked(&format!(
            "model \"{}\" quantize {q}\npeft b {{ lora(r=8) on layers[*].attn.{{q, v}} }}\n",
            dir.display()
        ));
        let model = &checked.model;
        assert_eq!(model.weights.dtype, q);
        let w = Weights::load(model, GgufForm::Packed).expect("loads");
        let coded: Vec<String> = quantized_modules(model)
            .map(|m| format!("{}.weight", m.path))
            .collect();
        // 6 layers x (q, k, v, o, up, down) and the pooler.
        assert_eq!(coded.len(), 37);
        let (mut params, mut bytes) = (0u64, 0u64);
        for name in w.names() {
            match w.weight(name).expect("held") {
                HostWeight::Packed(p) => {
                    assert!(coded.contains(&name.to_string()), "{name} coded");
                    assert_eq!(p.format(), q);
                    params += (p.rows() * p.cols()) as u64;
                    bytes += p.byte_len() as u64;
                }
                HostWeight::Dense(_) => assert!(!coded.contains(&name.to_string()), "{name} dense"),
            }
        }
        assert_eq!(
            (params, bytes),
            (model.weights.packed_params, model.weights.packed_bytes)
        );
        let name = "encoder.layer.3.intermediate.dense.weight";
        let want = match q {
            "nf4" => dense(Nf4Matrix::quantize(&dense_w[name]).expect("codes")),
            _ => dense(Int8Matrix::quantize(&dense_w[name]).expect("codes")),
        };
        assert_eq!(w.get(name).expect("held").data, want);
    }
}

/// LoftQ on MiniLM's first query weight, rank 8, one and two rounds, against
/// PEFT's `_low_rank_decomposition` on bitsandbytes' NF4 coding
/// (`tests/reference/make_loftq.py`): the same final codes, the same product
/// `B·A` (each factor is unique only up to the signs of its components), and
/// the quantization error `|W − Q − B·A|` below `|W − Q|`.
#[test]
fn loftq_matches_hf_peft() {
    let Some(w) = query_weight() else { return };
    let raw = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/quant/loftq.safetensors"
    ))
    .expect("fixture");
    let st = SafeTensors::deserialize(&raw).expect("fixture parses");
    let (n, r) = (384, 8);
    let product = |b: &[f32], a: &[f32]| -> Vec<f32> {
        let mut p = vec![0f32; n * n];
        for i in 0..n {
            for k in 0..r {
                for j in 0..n {
                    p[i * n + j] += b[i * r + k] * a[k * n + j];
                }
            }
        }
        p
    };
    for t in [1usize, 2] {
        let (q, a, b) = loftq(&w, r, t, |res| {
            Nf4Matrix::quantize(res).map(PackedMatrix::from)
        })
        .expect("loftq");
        let ours = product(&b.data, &a.data);
        let want = product(
            &f32s(&st, &format!("loftq{t}.B")),
            &f32s(&st, &format!("loftq{t}.A")),
        );
        common::close(&format!("T={t}: B·A"), &ours, &want, 1e-4);
        let want_codes = bytes(&st, &format!("loftq{t}.codes"));
        let codes = q.nf4().expect("an NF4 base").parts().0;
        let differ = codes
            .iter()
            .zip(&want_codes)
            .filter(|(x, y)| x != y)
            .count();
        // A second round codes W − B·A, whose f32 rounding differs from
        // torch's in the last bit: a value on a code midpoint may flip.
        assert!(
            differ * 10_000 <= codes.len(),
            "T={t}: {differ} code bytes differ"
        );
        let deq = q.to_dense().data;
        let norm = |f: &dyn Fn(usize) -> f32| (0..n * n).map(|e| f(e).powi(2)).sum::<f32>().sqrt();
        let before = norm(&|e| w.data[e] - deq[e]);
        let after = norm(&|e| w.data[e] - deq[e] - ours[e]);
        assert!(
            after < before,
            "T={t}: |W − Q − BA| {after} not below |W − Q| {before}"
        );
    }
}

/// LoftQ from a spec: `lora(r=8, alpha=8, init=loftq)` on q, v of the NF4
/// MiniLM starts nearer the full-precision model than QLoRA's `B = 0` start
/// (its factors carry the rank-8 part of the quantization error).
#[test]
fn loftq_init_starts_nearer_the_full_precision_model() {
    use peftc_runtime::CpuTrain;
    use peftc_runtime::data::Batch;
    use peftc_runtime::model::{Params, PeftModel};
    use peftc_runtime::session::Session;
    use peftc_runtime::train::host;
    let Some(dir) = minilm() else { return };
    let hidden = |model_line: &str, statement: &str| -> Vec<f32> {
        let checked = checked(&format!(
            "{model_line}\npeft b {{\n    {statement}\n}}\ntrain {{\n    adapter = b\n    task = feature\n}}\n"
        ));
        let plan = peftc_compiler::lower(&checked, checked.block("b").expect("block"), None)
            .expect("lower");
        let session = Session::open(plan.clone()).expect("session");
        let store = session.init_params(0).expect("init");
        let batch = Batch {
            rows: 2,
            seq: 6,
            input_ids: vec![
                101, 2023, 2003, 1037, 3231, 102, 101, 7592, 2088, 999, 102, 0,
            ],
            mask: vec![1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0],
            labels: vec![],
        };
        let device = Default::default();
        let model = PeftModel::<CpuTrain>::load(&plan, session.weights, &device).expect("model");
        let params = Params::<CpuTrain>::constant(&store, &device);
        let ctx = model.ctx(&batch, false, 0);
        host(
            model
                .forward(&batch, &params, &ctx)
                .expect("forward")
                .logits(),
        )
    };
    let m = format!("model \"{}\"", dir.display());
    let q = format!("{m} quantize nf4");
    let targets = "on layers[*].attn.{q, v}";
    let full = hidden(&m, &format!("lora(r=8, alpha=8) {targets}"));
    let qlora = hidden(&q, &format!("lora(r=8, alpha=8) {targets}"));
    let loftq = hidden(&q, &format!("lora(r=8, alpha=8, init=loftq) {targets}"));
    let dist = |a: &[f32]| -> f32 {
        a.iter()
            .zip(&full)
            .map(|(x, y)| (x - y).powi(2))
            .sum::<f32>()
            .sqrt()
    };
    let (d_qlora, d_loftq) = (dist(&qlora), dist(&loftq));
    assert!(
        d_loftq < d_qlora,
        "LoftQ {d_loftq} not nearer than QLoRA {d_qlora}"
    );
}
