//! `peftc train SPEC`: fine-tune the spec's block on its data.

use super::device::DeviceArg;
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
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// Checkpoint every N optimizer steps.
    #[arg(long)]
    pub save_every: Option<usize>,
    /// Continue the run in --out from its newest checkpoint.
    #[arg(long)]
    pub resume: bool,
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
    let (spec, plan) = plans::from_spec(&a.spec, a.block.as_deref(), a.model.clone())?;
    let out = a.out.clone().unwrap_or_else(|| {
        let stem = a
            .spec
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "run".into());
        PathBuf::from("runs").join(format!("{stem}-{}", plan.block))
    });
    let opts = TrainOptions {
        out: out.clone(),
        max_steps: a.max_steps,
        save_every: a.save_every,
        resume: a.resume,
        seed: a.seed,
        spec_text: spec.source.clone(),
    };
    let summary = crate::with_backend!(a.device, train, |B, dev| train::<B>(plan, &opts, &dev))
        .map_err(|e| CliError::Input(e.to_string()))?;
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
