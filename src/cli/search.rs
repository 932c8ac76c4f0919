//! `peftc search SPEC --study DIR`: explore the spec's search space; every
//! trial trains through the runtime. Rerunning the command resumes the study.

use super::device::DeviceArg;
use super::{CliError, plans};
use clap::Args;
use peftc_runtime::train::{EvalResult, TrainOptions, train_observed};
use peftc_search::{
    Evaluator, Heartbeat, Metrics, SearchError, StorageOptions, StorageUrl, Study, StudyState,
    TrialJob, TrialResult,
};
use std::path::PathBuf;
use std::process::Command;

#[derive(Args, Debug)]
pub struct SearchArgs {
    pub spec: PathBuf,
    /// The study folder: trial runs, leaderboard, Pareto front, best.peft
    /// (and the study itself, `journal.jsonl`, unless --storage says otherwise).
    #[arg(long)]
    pub study: PathBuf,
    /// Where the Optuna study lives: `journal:PATH` (Optuna's journal file) or
    /// `postgresql://USER[:PASSWORD]@HOST[:PORT]/DB` (Optuna's RDB schema;
    /// workers on several machines share it). Default: journal:STUDY/journal.jsonl.
    #[arg(long, value_parser = StorageUrl::parse)]
    pub storage: Option<StorageUrl>,
    /// The Optuna study's name (default: the search block's name).
    #[arg(long)]
    pub study_name: Option<String>,
    /// Seconds between a PostgreSQL worker's heartbeats; a trial whose worker
    /// is silent for twice as long is failed and retaken by another.
    #[arg(long, default_value_t = 10.0, value_parser = seconds)]
    pub heartbeat: f64,
    /// Trials in all (overrides the search block's `trials`).
    #[arg(long, value_parser = super::flags::count)]
    pub trials: Option<u64>,
    /// Worker processes to run at once (overrides `workers`).
    #[arg(long, value_parser = super::flags::count)]
    pub workers: Option<u64>,
    /// Keep the study in a non-empty folder peftc did not write, beside what
    /// is there (nothing there is replaced or removed).
    #[arg(long)]
    pub force: bool,
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    pub device: DeviceArg,
    /// Run as one extra worker of a study another process leads.
    #[arg(long, hide = true)]
    pub worker: bool,
}

fn seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x.is_finite() && x > 0.0 => Ok(x),
        _ => Err(format!("`{s}` is not a positive number of seconds")),
    }
}

fn fail(e: SearchError) -> CliError {
    match e {
        SearchError::Spec(text) => CliError::Rendered(text),
        SearchError::Invalid(m) => CliError::Input(m),
        SearchError::Storage(e) if e.is_user_error() => CliError::Input(e.to_string()),
        SearchError::Storage(e) => CliError::Internal(e.to_string()),
    }
}

pub fn run(a: SearchArgs) -> Result<(), CliError> {
    super::output::open_in_place(&a.study, super::output::Kind::Search, a.force, &[&a.spec])?;
    super::device::ensure(a.device)?;
    let kept = StorageOptions {
        url: a.storage.clone(),
        study_name: a.study_name.clone(),
        heartbeat: Heartbeat {
            interval_s: a.heartbeat,
            grace_s: 2.0 * a.heartbeat,
        },
    };
    let study = Study::open_with(&a.spec, &a.study, a.trials, &kept).map_err(fail)?;
    let s = &study.settings;
    let workers = a.workers.unwrap_or(s.workers);
    let mut children = Vec::new();
    if !a.worker {
        let fit = study.preflight().map_err(fail)?;
        // A study of another spec is refused before any worker starts.
        study.create().map_err(fail)?;
        eprintln!(
            "peftc search `{}` in {}: block `{}`, {} dimensions ({}), {} trials, sampler {:?}, pruner {:?}{}",
            study.name,
            study.storage(),
            study.space.block,
            study.space.dims.len(),
            study.space.names().join(", "),
            s.trials,
            s.sampler,
            s.pruner,
            fit.map(|n| format!(", {n} grid points within the budget"))
                .unwrap_or_default()
        );
        let exe = std::env::current_exe()
            .map_err(|e| CliError::Internal(format!("cannot find the peftc binary: {e}")))?;
        for _ in 1..workers {
            let mut c = Command::new(&exe);
            c.arg("search")
                .arg(&a.spec)
                .arg("--study")
                .arg(&a.study)
                .arg("--trials")
                .arg(s.trials.to_string())
                .arg("--device")
                .arg(format!("{:?}", a.device).to_lowercase())
                .arg("--study-name")
                .arg(&study.name)
                .arg("--heartbeat")
                .arg(a.heartbeat.to_string())
                .arg("--worker");
            if let Some(url) = &a.storage {
                c.arg("--storage").arg(match url {
                    StorageUrl::Journal(p) => format!("journal:{}", p.display()),
                    StorageUrl::Postgres(u) => u.clone(),
                });
            }
            children.push(
                c.spawn().map_err(|e| {
                    CliError::Internal(format!("cannot start a worker process: {e}"))
                })?,
            );
        }
    }
    let tag = if a.worker {
        format!("[worker {}] ", std::process::id())
    } else {
        String::new()
    };
    let mut eval = RuntimeEvaluator { device: a.device };
    let mut log = |m: &str| eprintln!("{tag}{m}");
    let mine = study.run_worker(&mut eval, &mut log).map_err(fail);
    for mut c in children {
        match c.wait() {
            Ok(st) if !st.success() => eprintln!("warning: a worker process exited with {st}"),
            Err(e) => eprintln!("warning: lost a worker process: {e}"),
            Ok(_) => {}
        }
    }
    mine?;
    if !a.worker {
        let state = study.state().map_err(fail)?;
        peftc_search::report::write_all(&study, &state).map_err(fail)?;
        let board = peftc_search::report::leaderboard(&study, &state);
        for line in board.lines().take(12) {
            println!("{line}");
        }
        println!(
            "study `{}` in {}; reports in {}: leaderboard.md, pareto.json, pareto.svg, best.peft",
            study.name,
            study.storage(),
            study.dir.display()
        );
    }
    Ok(())
}

/// Trials train through the runtime, each in its folder under `trials/`.
struct RuntimeEvaluator {
    device: DeviceArg,
}

fn metrics_of(r: &EvalResult) -> Metrics {
    let mut m = Metrics::new();
    m.insert("loss".into(), r.loss);
    if let Some(a) = r.accuracy {
        m.insert("accuracy".into(), a);
    }
    if let Some(p) = r.perplexity {
        m.insert("perplexity".into(), p);
    }
    m
}

impl Evaluator for RuntimeEvaluator {
    fn run(
        &mut self,
        job: &TrialJob,
        report: &mut dyn FnMut(u64, &Metrics) -> bool,
    ) -> Result<TrialResult, String> {
        let (spec, mut plan) =
            plans::from_spec(&job.spec_path, None, None, super::spec::Data::Reads)
                .map_err(|e| e.message())?;
        if let Some(t) = plan.train.as_mut()
            && let Some(every) = job.eval_every
        {
            t.eval_every = Some(every as usize);
        }
        let opts = TrainOptions {
            out: job.dir.join("run"),
            max_steps: job.steps.map(|s| s as usize),
            save_every: job.eval_every.map(|s| s as usize),
            // A trial retaken after a crash continues from its last checkpoint.
            resume: true,
            seed: None,
            spec_text: spec.source.clone(),
            // A trial that diverges fails; the study goes on.
            skip_nonfinite: false,
        };
        let mut observe = |step: usize, r: &EvalResult| report(step as u64, &metrics_of(r));
        // A panic inside training fails this trial, not the study.
        let summary = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            crate::with_backend!(self.device, train, |B, dev| train_observed::<B>(
                plan,
                &opts,
                &dev,
                &mut observe
            ))
        }))
        .map_err(|p| {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            format!("training panicked: {msg}")
        })?
        .map_err(|e| e.to_string())?;
        if let Some(step) = summary.stopped_at {
            return Ok(TrialResult::Pruned { step: step as u64 });
        }
        let eval = summary
            .eval
            .ok_or("the data has no held-out examples to evaluate the trial on")?;
        Ok(TrialResult::Complete(metrics_of(&eval)))
    }

    /// The reports, fresh after every trial.
    fn finished(&mut self, study: &Study, state: &StudyState) -> Result<(), SearchError> {
        peftc_search::report::write_all(study, state)
    }
}
