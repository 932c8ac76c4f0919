//! peftc's side of `benches/compare`: trains a spec's block on prepared batches
//! (the same ones the Hugging Face side trains on) and prints JSON with
//! per-step wall times and the process's peak RSS.
//!
//!     cargo bench --bench compare_peftc -- SPEC BATCHES.safetensors WARMUP STEPS

use peftc_compiler::{CheckOptions, Plan, check, lower};
use peftc_runtime::CpuTrain;
use peftc_runtime::data::Batch;
use peftc_runtime::model::{Params, PeftModel};
use peftc_runtime::session::Session;
use peftc_runtime::train::optim::AdamW;
use peftc_runtime::train::{NonFinitePolicy, host, train_step};
use safetensors::SafeTensors;
use std::process::ExitCode;
use std::time::Instant;

/// The same allocator, with the same setting, as the `peftc` binary.
#[path = "../src/alloc.rs"]
mod alloc;

type R<T> = Result<T, String>;

/// An i64 tensor of the prepared batches: its shape and values.
fn ints(st: &SafeTensors, name: &str) -> R<(Vec<usize>, Vec<i64>)> {
    let t = st
        .tensor(name)
        .map_err(|e| format!("batches: {name}: {e}"))?;
    let v = t
        .data()
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
        .collect();
    Ok((t.shape().to_vec(), v))
}

/// The spec's default block, checked against its real model and lowered.
fn plan(spec_path: &str) -> R<Plan> {
    let text = std::fs::read_to_string(spec_path).map_err(|e| format!("{spec_path}: {e}"))?;
    let file = peftc_grammar::parse(&text)
        .map_err(|d| peftc_grammar::render_all(&[d], spec_path, &text))?;
    let dir = std::path::Path::new(spec_path)
        .parent()
        .unwrap_or(std::path::Path::new("."))
        .to_path_buf();
    let options = CheckOptions {
        lenient_data: false,
        spec_dir: dir,
        model_override: None,
    };
    let c = check(&file, &options).map_err(|d| peftc_grammar::render_all(&d, spec_path, &text))?;
    let render = |d| peftc_grammar::render_all(&[d], spec_path, &text);
    let block = c.default_block().map_err(render)?;
    lower(&c, block, None).map_err(render)
}

/// A number argument.
fn num(args: &[String], i: usize, what: &str) -> R<usize> {
    args[i]
        .parse()
        .map_err(|e| format!("{what} `{}`: {e}", args[i]))
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

fn main() -> ExitCode {
    peftc_runtime::kernels::use_the_cpus_kernels();
    alloc::keep_freed_pages();
    let args: Vec<String> = std::env::args().filter(|a| a != "--bench").collect();
    let run = if args.get(1).map(String::as_str) == Some("--infer") {
        infer_mode(&args[1..])
    } else {
        train_mode(&args)
    };
    match run {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("compare_peftc: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `SPEC BATCHES WARMUP STEPS`: trains the spec's block on the batches.
fn train_mode(args: &[String]) -> R<()> {
    if args.len() < 5 {
        return Err("usage: compare_peftc SPEC BATCHES WARMUP STEPS".into());
    }
    let (spec_path, batches) = (&args[1], &args[2]);
    let (warmup, steps) = (num(args, 3, "warmup")?, num(args, 4, "steps")?);
    let plan = plan(spec_path)?;
    let cfg = plan
        .train
        .clone()
        .ok_or_else(|| format!("{spec_path}: no train block"))?;
    let bytes = std::fs::read(batches).map_err(|e| format!("{batches}: {e}"))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| format!("{batches}: {e}"))?;
    let (shape, ids) = ints(&st, "input_ids")?;
    let (_, mask) = ints(&st, "attention_mask")?;
    let (_, labels) = ints(&st, "labels")?;
    let (rows, seq) = (shape[0], shape[1]);
    let classify = labels.len() == rows;
    let per = cfg.batch;
    let mut data: Vec<Batch> = (0..rows / per)
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
    // A causal LM's last batch is held out: scored after the steps, as the
    // Hugging Face side scores it (`heldout_loss`).
    let held = match (classify, data.len() > 1) {
        (false, true) => data.pop(),
        _ => None,
    };
    let session = Session::open(plan.clone()).map_err(|e| e.to_string())?;
    let mut store = session.init_params(cfg.seed).map_err(|e| e.to_string())?;
    let device = Default::default();
    let model =
        PeftModel::<CpuTrain>::load(&plan, session.weights, &device).map_err(|e| e.to_string())?;
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
            warmup + steps,
            cfg.lr,
            NonFinitePolicy::Stop,
            &device,
        )
        .map_err(|e| format!("step {i}: {e}"))?;
        let dt = t0.elapsed().as_secs_f64();
        loss = s.loss;
        if i >= warmup {
            times.push(dt);
        }
    }
    let rss = peak_rss_bytes();
    let heldout = match &held {
        Some(b) => {
            let params = Params::<CpuTrain>::constant(&store, &device);
            let ctx = model.ctx(b, false, 0);
            let out = model
                .forward_for_loss(b, &params, &ctx)
                .map_err(|e| format!("held-out batch: {e}"))?;
            let l = model
                .training_loss(&out, b, &params)
                .map_err(|e| format!("held-out loss: {e}"))?;
            host(l).first().copied().map(f64::from)
        }
        None => None,
    };
    println!(
        "{}",
        serde_json::json!({ "side": "peftc", "step_times": times, "peak_rss_bytes": rss, "final_loss": loss, "heldout_loss": heldout })
    );
    Ok(())
}

/// `--infer SPEC BATCHES ROWS WARMUP STEPS ADAPTERS_DIR`: scores the first
/// ROWS rows of BATCHES in one batch, row `k` with the Hugging Face PEFT
/// adapter `ADAPTERS_DIR/a{k}` (the routed multi-adapter path), and prints the
/// per-batch wall times, peak RSS and the logits `hf_multi_lora.py` prints.
fn infer_mode(args: &[String]) -> R<()> {
    use peftc_runtime::Cpu;
    use peftc_runtime::model::Params;
    use peftc_runtime::model::routes::Routes;
    if args.len() < 7 {
        return Err(
            "usage: compare_peftc --infer SPEC BATCHES ROWS WARMUP STEPS ADAPTERS_DIR".into(),
        );
    }
    let (spec_path, batches) = (&args[1], &args[2]);
    let rows = num(args, 3, "rows")?;
    let (warmup, steps) = (num(args, 4, "warmup")?, num(args, 5, "steps")?);
    let root = std::path::Path::new(&args[6]);
    let plan = plan(spec_path)?;
    let bytes = std::fs::read(batches).map_err(|e| format!("{batches}: {e}"))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| format!("{batches}: {e}"))?;
    let (shape, ids) = ints(&st, "input_ids")?;
    let (_, mask) = ints(&st, "attention_mask")?;
    let seq = shape[1];
    if ids.len() < rows * seq {
        return Err(format!("{batches}: fewer than {rows} rows"));
    }
    let batch = Batch {
        rows,
        seq,
        input_ids: ids[..rows * seq].iter().map(|&v| v as u32).collect(),
        mask: mask[..rows * seq].iter().map(|&v| v as u8).collect(),
        labels: vec![0; rows * seq],
    };
    let session = Session::open(plan.clone()).map_err(|e| e.to_string())?;
    let stores = (0..rows)
        .map(|k| {
            let mut s = session.init_params(0).map_err(|e| e.to_string())?;
            let dir = root.join(format!("a{k}"));
            peftc_runtime::adapter::load_into(&plan, &mut s, &dir)
                .map_err(|e| format!("{}: {e}", dir.display()))?;
            Ok(s)
        })
        .collect::<R<Vec<_>>>()?;
    let device = Default::default();
    let model =
        PeftModel::<Cpu>::load(&plan, session.weights, &device).map_err(|e| e.to_string())?;
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
        let out = model
            .forward(&batch, &params, &ctx)
            .map_err(|e| e.to_string())?;
        let dt = t0.elapsed().as_secs_f64();
        if i >= warmup {
            times.push(dt);
        }
        logits = Some(out.logits());
    }
    let logits = logits
        .ok_or("no timed pass: STEPS + WARMUP is 0")?
        .into_data()
        .into_vec::<f32>()
        .map_err(|e| format!("logits: {e:?}"))?;
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
    Ok(())
}
