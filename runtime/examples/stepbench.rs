//! Times one training step (forward, backward) of a spec's block on a fixed
//! batch, in-process. A profiling aid; the benchmark of record is benches/compare.
//!
//!     cargo run --release -p peftc-runtime --example stepbench -- SPEC [BATCH SEQ STEPS]

use peftc_compiler::{CheckOptions, check, lower};
use peftc_runtime::CpuTrain;
use peftc_runtime::data::Batch;
use peftc_runtime::model::{Params, PeftModel};
use peftc_runtime::session::Session;
use peftc_runtime::train::host;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let spec_path = std::path::PathBuf::from(&args[1]);
    let batch: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(16);
    let seq: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(64);
    let steps: usize = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(5);
    let text = std::fs::read_to_string(&spec_path).expect("spec");
    let file = peftc_grammar::parse(&text).expect("parse");
    let opts = CheckOptions {
        lenient_data: false,
        spec_dir: spec_path.parent().expect("dir").to_path_buf(),
        model_override: None,
    };
    let c = check(&file, &opts).expect("check");
    let plan = lower(&c, c.default_block().expect("block"), None).expect("lower");
    let session = Session::open(plan.clone()).expect("session");
    let store = session.init_params(0).expect("params");
    let device = Default::default();
    let model = PeftModel::<CpuTrain>::load(&plan, session.weights, &device).expect("model");
    let ids: Vec<u32> = (0..batch * seq)
        .map(|i| 1000 + (i * 7919 % 20000) as u32)
        .collect();
    let seqs: Vec<&[u32]> = ids.chunks(seq).collect();
    let labels: Vec<usize> = (0..batch).map(|i| i % 2).collect();
    let b = if plan.task.kind == peftc_compiler::task::TaskKind::Classify {
        Batch::pad(&seqs, Some(&labels), 0)
    } else {
        Batch::pad(&seqs, None, 0)
    };
    let (mut tf, mut tb) = (0.0, 0.0);
    for step in 0..steps + 1 {
        let params = Params::<CpuTrain>::tracked(&store, &device);
        let ctx = model.ctx(&b, true, step as u64);
        let t0 = Instant::now();
        let out = model.forward(&b, &params, &ctx).expect("forward");
        let loss = model.loss(&out, &b);
        let _ = host(loss.clone());
        let t1 = Instant::now();
        let g = params.grads(&loss.backward(), &store);
        let t2 = Instant::now();
        std::hint::black_box(g);
        if step > 0 {
            tf += (t1 - t0).as_secs_f64();
            tb += (t2 - t1).as_secs_f64();
        }
    }
    let n = steps as f64;
    println!(
        "batch {batch} x seq {seq}: forward {:.1} ms, backward {:.1} ms, step {:.1} ms ({:.2} steps/s)",
        tf / n * 1e3,
        tb / n * 1e3,
        (tf + tb) / n * 1e3,
        n / (tf + tb)
    );
}
