//! `peftc train SPEC`: fine-tune the spec's block on its data.

use super::device::DeviceArg;
use super::output::{self, Kind, Opened};
use super::{CliError, plans};
use clap::Args;
use peftc_runtime::train::{TrainOptions, train};
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct TrainArgs {
    pub spec: PathBuf,
    /// Run folder (default: runs/<spec name>-<block>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[arg(long, value_parser = super::flags::count)]
    pub max_steps: Option<u64>,
    /// Checkpoint every N optimizer steps.
    #[arg(long, value_parser = super::flags::count)]
    pub save_every: Option<u64>,
    /// Continue the run in --out from its newest checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// Start the run in --out over (only the run's own files are removed), or
    /// write a run into a non-empty folder peftc did not write, beside what is there.
    #[arg(long)]
    pub force: bool,
    /// A step whose loss or gradients are not finite is skipped (no update)
    /// instead of stopping the run.
    #[arg(long)]
    pub skip_nonfinite: bool,
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    pub device: DeviceArg,
    #[arg(long)]
    pub seed: Option<u64>,
    #[arg(long)]
    pub block: Option<String>,
    #[arg(long)]
    pub model: Option<PathBuf>,
}

pub fn run(a: TrainArgs) -> Result<(), CliError> {
    let (spec, plan) = plans::from_spec(
        &a.spec,
        a.block.as_deref(),
        a.model.clone(),
        super::spec::Data::Reads,
    )?;
    let out = a.out.clone().unwrap_or_else(|| {
        let stem = a
            .spec
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "run".into());
        PathBuf::from("runs").join(format!("{stem}-{}", plan.block))
    });
    let data = plan.train.as_ref().and_then(|t| t.data.clone());
    let model = plans::model_dir(&plan);
    let mut inputs = vec![a.spec.as_path(), model.as_path()];
    inputs.extend(data.as_deref());
    let opened = output::open_in_place(&out, Kind::Train, a.force, &inputs)?;
    if opened == Opened::Existing && out.join("checkpoints").exists() && !a.resume {
        if !a.force {
            return Err(CliError::Input(format!(
                "`{}` already holds a run; pass --resume to continue it, --force to start it over, or choose another --out",
                out.display()
            )));
        }
        output::clear_owned(&out, Kind::Train)?;
    }
    // A run refused before its first write leaves no folder behind.
    let fresh = opened == Opened::New;
    let discard = || {
        if fresh {
            output::discard_if_untouched(&out);
        }
    };
    super::device::ensure(a.device).inspect_err(|_| discard())?;
    let opts = TrainOptions {
        out: out.clone(),
        max_steps: a.max_steps.map(|n| n as usize),
        save_every: a.save_every.map(|n| n as usize),
        resume: a.resume,
        seed: a.seed,
        spec_text: spec.source.clone(),
        skip_nonfinite: a.skip_nonfinite,
    };
    let summary = crate::with_backend!(a.device, train, |B, dev| train::<B>(plan, &opts, &dev))
        .inspect_err(|_| discard())?;
    if summary.already_done {
        println!(
            "already trained {} steps; adapter in {}",
            summary.steps,
            summary.adapter.display()
        );
        return Ok(());
    }
    let eval = summary
        .eval
        .as_ref()
        .map(|e| match (e.accuracy, e.perplexity) {
            (Some(acc), _) => format!(", held-out accuracy {acc:.4}"),
            (_, Some(p)) => format!(", held-out perplexity {p:.3}"),
            _ => String::new(),
        })
        .unwrap_or_default();
    println!(
        "trained {} steps in {:.1}s ({:.0} tokens/s), final loss {:.4}{eval}; adapter in {}",
        summary.steps,
        summary.seconds,
        summary.tokens as f64 / summary.seconds.max(1e-9),
        summary.final_loss,
        summary.adapter.display()
    );
    Ok(())
}
