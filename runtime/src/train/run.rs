//! The training loop. Every random draw and the data order are functions of
//! (seed, step), and the optimizer state is checkpointed with the parameters,
//! so a resumed run continues exactly where the killed one stopped.

use super::checkpoint::{self, CheckpointState};
use super::evaluate::{EvalResult, evaluate};
use super::metrics::Metrics;
use super::optim::AdamW;
use super::progress::Progress;
use super::schedule;
use super::step::{NonFinitePolicy, train_step};
use crate::adapter::native::{self, AdapterMeta};
use crate::data::{Batch, TaskData, prepare};
use crate::error::{Result, RuntimeError};
use crate::model::{ParamStore, Params, PeftModel, param_specs};
use crate::rng::key;
use crate::session::Session;
use burn::tensor::backend::AutodiffBackend;
use peftc_compiler::plan::Plan;
use peftc_compiler::train::TrainConfig;
use serde::Serialize;
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Debug, Clone)]
pub struct TrainOptions {
    pub out: PathBuf,
    pub max_steps: Option<usize>,
    pub save_every: Option<usize>,
    pub resume: bool,
    pub seed: Option<u64>,
    /// The spec's text, kept with the adapter.
    pub spec_text: String,
    /// Skip a step whose loss, gradients or update are not finite, instead of
    /// stopping with an error.
    pub skip_nonfinite: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct TrainSummary {
    pub steps: usize,
    pub final_loss: f32,
    pub eval: Option<EvalResult>,
    pub adapter: PathBuf,
    pub seconds: f64,
    pub tokens: usize,
    /// The run had already finished these steps: nothing was trained now.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub already_done: bool,
    /// The step at which the observer stopped the run (a pruned search trial);
    /// no adapter is written then.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<usize>,
}

fn fingerprint(spec: &str, plan: &Plan, seed: u64) -> String {
    format!(
        "{:016x}",
        key(&[
            crate::model::params::name_hash(spec),
            crate::model::params::name_hash(&plan.block),
            seed
        ])
    )
}

pub fn train<B: AutodiffBackend + crate::kernels::PeftKernels>(
    plan: Plan,
    opts: &TrainOptions,
    device: &B::Device,
) -> Result<TrainSummary> {
    train_observed::<B>(plan, opts, device, &mut |_, _| true)
}

/// [`train`], calling `observe(step, held-out metrics)` at every intermediate
/// evaluation (`eval_every`); the run stops there when it returns `false`.
pub fn train_observed<B: AutodiffBackend + crate::kernels::PeftKernels>(
    plan: Plan,
    opts: &TrainOptions,
    device: &B::Device,
    observe: &mut dyn FnMut(usize, &EvalResult) -> bool,
) -> Result<TrainSummary> {
    let mut cfg: TrainConfig = plan
        .train
        .clone()
        .ok_or_else(|| RuntimeError::Invalid("the spec has no `train` block".into()))?;
    if let Some(s) = opts.seed {
        cfg.seed = s;
    }
    let session = Session::open(plan.clone())?;
    let data = prepare(&plan, &cfg, &session.tokenizer)?;
    let pad = session.tokenizer.pad_id;
    let batcher = data.batcher(&cfg);
    let micro_per_epoch = batcher.batches_per_epoch();
    let steps_per_epoch = micro_per_epoch.div_ceil(cfg.grad_accum).max(1);
    let total = opts
        .max_steps
        .or(cfg.max_steps)
        .unwrap_or(cfg.epochs * steps_per_epoch)
        .max(1);
    let warmup = (cfg.warmup * total as f64).round() as usize;
    crate::methods::check_run(&plan, total, micro_per_epoch).map_err(RuntimeError::Invalid)?;
    let print = |s: String| eprintln!("{s}");
    print(format!(
        "peftc train: {} / block `{}`: {} train + {} held-out examples, {total} steps (batch {} x {} accum), {} trainable params",
        plan.model.model_type,
        plan.block,
        data.train.len(),
        data.eval.len(),
        cfg.batch,
        cfg.grad_accum,
        param_specs(&plan)
            .iter()
            .map(|s| s.shape.iter().product::<usize>())
            .sum::<usize>()
    ));

    let fp = fingerprint(&opts.spec_text, &plan, cfg.seed);
    std::fs::create_dir_all(&opts.out).map_err(|e| RuntimeError::write(&opts.out, e))?;
    let mut store = session.init_params(cfg.seed)?;
    let mut adam = AdamW::new(cfg.weight_decay as f32);
    let mut start = 0usize;
    if opts.resume
        && let Some(ck) = checkpoint::load_latest(&opts.out, cfg.weight_decay as f32)?
    {
        if ck.state.fingerprint != fp {
            return Err(RuntimeError::Invalid(format!(
                "`{}` holds a run of a different spec, block or seed; refusing to resume it",
                opts.out.display()
            )));
        }
        if ck.state.step > total {
            return Err(RuntimeError::Invalid(format!(
                "`{}` is already at step {}, past the {total} steps asked for; nothing was changed (ask for at least {} steps, or train into another --out)",
                opts.out.display(),
                ck.state.step,
                ck.state.step
            )));
        }
        store.load_from(ck.params, &opts.out)?;
        crate::methods::check_loaded(&plan, &store).map_err(|what| RuntimeError::Adapter {
            dir: opts.out.clone(),
            what,
        })?;
        adam = ck.adam;
        start = ck.state.step;
        if start == total && opts.out.join("adapter").join("adapter.json").is_file() {
            print(format!(
                "`{}` already finished its {total} steps; nothing to do",
                opts.out.display()
            ));
            return finished_summary(&opts.out, total);
        }
        print(format!("resuming from step {start}"));
    } else if !opts.resume && opts.out.join("checkpoints").exists() {
        return Err(RuntimeError::Invalid(format!(
            "`{}` already holds a run; pass --resume to continue it or choose another --out",
            opts.out.display()
        )));
    }
    let model = PeftModel::<B>::load(&plan, session.weights, device)?;
    let mut metrics = Metrics::open(&opts.out, start)?;
    let t0 = Instant::now();
    let mut tokens_seen = 0usize;
    let mut last_loss = f32::NAN;
    let mut progress = Progress::new(total, start);
    let mut last_eval = None;
    let policy = if opts.skip_nonfinite {
        NonFinitePolicy::Skip
    } else {
        NonFinitePolicy::Stop
    };
    // Micro-batch `m` of the run (epochs follow each other).
    let micro_batch = |m: usize| {
        let (epoch, within) = (m / micro_per_epoch, m % micro_per_epoch);
        let order = batcher.epoch_order(epoch);
        let idx = &order[within * cfg.batch..((within + 1) * cfg.batch).min(order.len())];
        data.train.batch(idx, pad)
    };
    if start == 0 {
        let calib = crate::methods::calibration_batches(&plan);
        if calib > 0 {
            print(format!(
                "choosing sparse entries from {calib} batches of the training data"
            ));
            let batches: Vec<Batch> = (0..calib).map(micro_batch).collect();
            crate::methods::before_training(&model, &mut store, &batches, &cfg, device)?;
        }
    }
    for step in start..total {
        let lr = cfg.lr * schedule::factor(cfg.schedule, step, warmup, total);
        let t_step = Instant::now();
        let micro: Vec<Batch> = (0..cfg.grad_accum)
            .map(|k| micro_batch(step * cfg.grad_accum + k))
            .collect();
        let stats = train_step(
            &model,
            &mut store,
            &mut adam,
            &cfg,
            &micro,
            step * cfg.grad_accum,
            step,
            total,
            lr,
            policy,
            device,
        )?;
        let done = step + 1;
        if let Some(why) = &stats.skipped {
            progress.println(format!("step {done}: skipped, no update ({why})"));
            metrics.push(json!({ "step": done, "skipped": why }))?;
            progress.update(done, "skipped".into());
        } else {
            let (loss_sum, step_tokens) = (stats.loss, stats.tokens);
            tokens_seen += step_tokens;
            last_loss = loss_sum;
            let dt = t_step.elapsed().as_secs_f64();
            let tps = step_tokens as f64 / dt.max(1e-9);
            metrics.push(Metrics::train_point(
                done,
                loss_sum,
                lr,
                tps,
                t0.elapsed().as_secs_f64(),
            ))?;
            progress.update(done, format!("loss {loss_sum:.4}  {tps:.0} tok/s"));
        }
        if let Some(every) = cfg.eval_every
            && done % every == 0
            && done < total
            && !data.eval.is_empty()
        {
            let r = run_eval(&model, &store, &data, &cfg, pad, device)?;
            progress.println(describe_eval(done, &r));
            metrics.push(eval_row(done, &r))?;
            let go_on = observe(done, &r);
            last_eval = Some(r);
            if !go_on {
                progress.finish();
                print(format!("stopped at step {done}"));
                return Ok(TrainSummary {
                    steps: done,
                    final_loss: last_loss,
                    eval: last_eval,
                    adapter: opts.out.join("adapter"),
                    seconds: t0.elapsed().as_secs_f64(),
                    tokens: tokens_seen,
                    stopped_at: Some(done),
                    already_done: false,
                });
            }
        }
        if let Some(every) = opts.save_every.or(cfg.save_every)
            && done % every == 0
            && done < total
        {
            let state = CheckpointState {
                step: done,
                adam_t: adam.t,
                fingerprint: fp.clone(),
            };
            checkpoint::save(&opts.out, &state, &store.values, &adam)?;
        }
    }
    progress.finish();
    let eval = if data.eval.is_empty() {
        last_eval
    } else {
        let r = run_eval(&model, &store, &data, &cfg, pad, device)?;
        print(describe_eval(total, &r));
        metrics.push(eval_row(total, &r))?;
        Some(r)
    };
    // The final checkpoint (so a later --resume with more steps continues) and the adapter.
    let state = CheckpointState {
        step: total,
        adam_t: adam.t,
        fingerprint: fp,
    };
    checkpoint::save(&opts.out, &state, &store.values, &adam)?;
    let adapter_dir = opts.out.join("adapter");
    let meta = meta(&plan, &data, &opts.spec_text, total);
    crate::atomic::replace_dir_with(&adapter_dir, |staged| {
        native::save(staged, &meta, &store.values)
    })?;
    metrics.plot(
        &opts.out,
        &format!("{} — {}", plan.model.model_type, plan.block),
    )?;
    let summary = TrainSummary {
        steps: total,
        final_loss: last_loss,
        eval,
        adapter: adapter_dir,
        seconds: t0.elapsed().as_secs_f64(),
        tokens: tokens_seen,
        stopped_at: None,
        already_done: false,
    };
    let json =
        serde_json::to_vec_pretty(&summary).map_err(|e| RuntimeError::Invalid(e.to_string()))?;
    crate::atomic::write_atomic(&opts.out.join("summary.json"), &json)?;
    Ok(summary)
}

/// The summary of a run that had already finished, from its `summary.json`.
fn finished_summary(run: &std::path::Path, total: usize) -> Result<TrainSummary> {
    let path = run.join("summary.json");
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).map_err(|e| RuntimeError::read(&path, e))?)
            .map_err(|e| RuntimeError::format(&path, e.to_string()))?;
    let eval = v
        .get("eval")
        .and_then(|e| serde_json::from_value(e.clone()).ok());
    Ok(TrainSummary {
        steps: total,
        final_loss: v["final_loss"].as_f64().unwrap_or(f64::NAN) as f32,
        eval,
        adapter: run.join("adapter"),
        seconds: 0.0,
        tokens: 0,
        stopped_at: None,
        already_done: true,
    })
}

fn meta(plan: &Plan, data: &TaskData, spec: &str, steps: usize) -> AdapterMeta {
    AdapterMeta {
        format: native::FORMAT.into(),
        version: 1,
        block: plan.block.clone(),
        model_type: plan.model.model_type.clone(),
        task: plan.task.kind.name().into(),
        label_names: data.label_names.clone(),
        spec: spec.to_string(),
        // Absolute, so the recorded spec resolves from any working directory.
        spec_dir: std::fs::canonicalize(&plan.spec_dir)
            .unwrap_or_else(|_| plan.spec_dir.clone())
            .display()
            .to_string(),
        params: param_specs(plan)
            .into_iter()
            .map(|s| (s.name, s.shape))
            .collect(),
        steps: Some(steps),
    }
}

fn run_eval<B: AutodiffBackend + crate::kernels::PeftKernels>(
    model: &PeftModel<B>,
    store: &ParamStore,
    data: &TaskData,
    cfg: &TrainConfig,
    pad: u32,
    device: &B::Device,
) -> Result<EvalResult> {
    let params = Params::<B>::constant(store, device);
    evaluate(model, &params, &data.eval, cfg.batch, pad)
}

fn eval_row(step: usize, r: &EvalResult) -> serde_json::Value {
    let mut v = json!({ "step": step, "eval_loss": r.loss });
    if let Some(a) = r.accuracy {
        v["accuracy"] = json!(a);
    }
    if let Some(p) = r.perplexity {
        v["perplexity"] = json!(p);
    }
    v
}

fn describe_eval(step: usize, r: &EvalResult) -> String {
    match (r.accuracy, r.perplexity) {
        (Some(a), _) => format!(
            "eval @ {step}: loss {:.4}, accuracy {:.4} ({} examples)",
            r.loss, a, r.examples
        ),
        (_, Some(p)) => format!(
            "eval @ {step}: loss {:.4}, perplexity {:.3} ({} windows)",
            r.loss, p, r.examples
        ),
        _ => format!("eval @ {step}: loss {:.4}", r.loss),
    }
}
