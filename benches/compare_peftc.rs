//! peftc's side of `benches/compare`: trains a spec's block on prepared batches
//! (the same ones the Hugging Face side trains on) and prints JSON with
//! per-step wall times and the process's peak RSS.
//!
//!     cargo bench --bench compare_peftc -- SPEC BATCHES.safetensors WARMUP STEPS

use peftc_compiler::{CheckOptions, check, lower};
use peftc_runtime::CpuTrain;
use peftc_runtime::data::Batch;
use peftc_runtime::model::PeftModel;
use peftc_runtime::session::Session;
use peftc_runtime::train::optim::AdamW;
use peftc_runtime::train::train_step;
use safetensors::SafeTensors;
use std::time::Instant;

/// The same allocator as the `peftc` binary.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn ints(st: &SafeTensors, name: &str) -> (Vec<usize>, Vec<i64>) {
    let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    let v = t
        .data()
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect();
    (t.shape().to_vec(), v)
}

fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(|l| l.to_string())
        })
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

fn main() {
    let args: Vec<String> = std::env::args().filter(|a| a != "--bench").collect();
    if args.len() < 5 {
        eprintln!("usage: compare_peftc SPEC BATCHES WARMUP STEPS");
        return;
    }
    let (spec_path, batches, warmup, steps) = (
        &args[1],
        &args[2],
        args[3].parse::<usize>().expect("warmup"),
        args[4].parse::<usize>().expect("steps"),
    );
    let text = std::fs::read_to_string(spec_path).expect("spec");
    let file = peftc_grammar::parse(&text).expect("parse");
    let dir = std::path::Path::new(spec_path)
        .parent()
        .expect("dir")
        .to_path_buf();
    let c = check(
        &file,
        &CheckOptions {
            spec_dir: dir,
            model_override: None,
        },
    )
    .unwrap_or_else(|d| panic!("{}", peftc_grammar::render_all(&d, spec_path, &text)));
    let plan = lower(&c, c.default_block().expect("block"), None).expect("lower");
    let cfg = plan.train.clone().expect("train block");
    let bytes = std::fs::read(batches).expect("batches");
    let st = SafeTensors::deserialize(&bytes).expect("safetensors");
    let (shape, ids) = ints(&st, "input_ids");
    let (_, mask) = ints(&st, "attention_mask");
    let (_, labels) = ints(&st, "labels");
    let (rows, seq) = (shape[0], shape[1]);
    let classify = labels.len() == rows;
    let per = cfg.batch;
    let data: Vec<Batch> = (0..rows / per)
        .map(|b| {
            let r = b * per..(b + 1) * per;
            Batch {
                rows: per,
                seq,
                input_ids: ids[r.start * seq..r.end * seq]
                    .iter()
                    .map(|&v| v as u32)
                    .collect(),
                mask: mask[r.start * seq..r.end * seq]
                    .iter()
                    .map(|&v| v as u8)
                    .collect(),
                labels: if classify {
                    labels[r].to_vec()
                } else {
                    labels[r.start * seq..r.end * seq].to_vec()
                },
            }
        })
        .collect();
    let session = Session::open(plan.clone()).expect("session");
    let mut store = session.init_params(cfg.seed).expect("params");
    let device = Default::default();
    let model = PeftModel::<CpuTrain>::load(&plan, session.weights, &device).expect("model");
    let mut adam = AdamW::new(cfg.weight_decay as f32);
    let mut times = Vec::new();
    let mut loss = 0.0;
    for i in 0..warmup + steps {
        let b = &data[i % data.len()];
        let t0 = Instant::now();
        let s = train_step(
            &model,
            &mut store,
            &mut adam,
            &cfg,
            std::slice::from_ref(b),
            i,
            i,
            cfg.lr,
            &device,
        )
        .expect("step");
        let dt = t0.elapsed().as_secs_f64();
        loss = s.loss;
        if i >= warmup {
            times.push(dt);
        }
    }
    println!(
        "{}",
        serde_json::json!({ "side": "peftc", "step_times": times, "peak_rss_bytes": peak_rss_bytes(), "final_loss": loss })
    );
}
