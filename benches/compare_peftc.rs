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

/// The same allocator, with the same setting, as the `peftc` binary.
#[path = "../src/alloc.rs"]
mod alloc;

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
    alloc::keep_freed_pages();
    let args: Vec<String> = std::env::args().filter(|a| a != "--bench").collect();
    if args.get(1).map(String::as_str) == Some("--infer") {
        return infer_mode(&args[1..]);
    }
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

/// `--infer SPEC BATCHES ROWS WARMUP STEPS ADAPTERS_DIR`: scores the first
/// ROWS rows of BATCHES in one batch, row `k` with the Hugging Face PEFT
/// adapter `ADAPTERS_DIR/a{k}` (the routed multi-adapter path), and prints the
/// per-batch wall times, peak RSS and the logits `hf_multi_lora.py` prints.
fn infer_mode(args: &[String]) {
    use peftc_runtime::Cpu;
    use peftc_runtime::model::Params;
    use peftc_runtime::model::routes::Routes;
    if args.len() < 7 {
        eprintln!("usage: compare_peftc --infer SPEC BATCHES ROWS WARMUP STEPS ADAPTERS_DIR");
        return;
    }
    let num = |i: usize| args[i].parse::<usize>().expect("number");
    let (spec_path, batches, rows, warmup, steps) = (&args[1], &args[2], num(3), num(4), num(5));
    let root = std::path::Path::new(&args[6]);
    let text = std::fs::read_to_string(spec_path).expect("spec");
    let file = peftc_grammar::parse(&text).expect("parse");
    let dir = std::path::Path::new(spec_path).parent().expect("dir");
    let c = check(
        &file,
        &CheckOptions {
            spec_dir: dir.to_path_buf(),
            model_override: None,
        },
    )
    .unwrap_or_else(|d| panic!("{}", peftc_grammar::render_all(&d, spec_path, &text)));
    let plan = lower(&c, c.default_block().expect("block"), None).expect("lower");
    let bytes = std::fs::read(batches).expect("batches");
    let st = SafeTensors::deserialize(&bytes).expect("safetensors");
    let (shape, ids) = ints(&st, "input_ids");
    let (_, mask) = ints(&st, "attention_mask");
    let seq = shape[1];
    let batch = Batch {
        rows,
        seq,
        input_ids: ids[..rows * seq].iter().map(|&v| v as u32).collect(),
        mask: mask[..rows * seq].iter().map(|&v| v as u8).collect(),
        labels: vec![0; rows * seq],
    };
    let session = Session::open(plan.clone()).expect("session");
    let stores: Vec<_> = (0..rows)
        .map(|k| {
            let mut s = session.init_params(0).expect("params");
            peftc_runtime::adapter::load_into(&plan, &mut s, &root.join(format!("a{k}")))
                .expect("adapter");
            s
        })
        .collect();
    let device = Default::default();
    let model = PeftModel::<Cpu>::load(&plan, session.weights, &device).expect("model");
    let refs: Vec<&_> = stores.iter().collect();
    let params = Params::<Cpu>::routed(&refs, &device);
    let mut ctx = model.ctx(&batch, false, 0);
    let adapter_of: Vec<usize> = (0..rows).collect();
    ctx.routes = Some(std::sync::Arc::new(Routes::new(
        &adapter_of,
        rows,
        seq,
        &device,
    )));
    let mut times = Vec::new();
    let mut logits = None;
    for i in 0..warmup + steps {
        let t0 = Instant::now();
        let out = model.forward(&batch, &params, &ctx).expect("forward");
        let dt = t0.elapsed().as_secs_f64();
        if i >= warmup {
            times.push(dt);
        }
        logits = Some(out.logits);
    }
    let logits = logits
        .expect("one pass")
        .into_data()
        .into_vec::<f32>()
        .expect("f32");
    let vocab = logits.len() / (rows * seq);
    const CHECK_POSITION: usize = 10;
    let check: Vec<Vec<f32>> = (0..rows)
        .map(|r| {
            let at = (r * seq + CHECK_POSITION) * vocab;
            logits[at..at + 4].to_vec()
        })
        .collect();
    println!(
        "{}",
        serde_json::json!({ "side": "peftc", "step_times": times, "peak_rss_bytes": peak_rss_bytes(), "check": check })
    );
}
