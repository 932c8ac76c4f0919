//! `peftc eval SPEC [--adapter RUN|DIR]`: held-out metrics.

use super::device::DeviceArg;
use super::{CliError, plans};
use clap::Args;
use peftc_runtime::data::prepare;
use peftc_runtime::model::{Params, PeftModel};
use peftc_runtime::session::Session;
use peftc_runtime::train::evaluate;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct EvalArgs {
    pub spec: PathBuf,
    /// A peftc run folder, a peftc adapter folder, or a Hugging Face PEFT adapter folder.
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    pub device: DeviceArg,
    #[arg(long)]
    pub block: Option<String>,
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Sequences per evaluation batch (default: the train block's batch).
    #[arg(long, value_parser = super::flags::count)]
    pub batch: Option<u64>,
    /// Read a `dylora` adapter at this rank (any of its trained ranks).
    #[arg(long, value_parser = super::flags::count)]
    pub rank: Option<u64>,
    /// AdapterDrop: leave out the methods of the lowest N layers (faster;
    /// a model trained with `adapter_drop` keeps its quality).
    #[arg(long, value_parser = super::flags::count)]
    pub adapter_drop: Option<u64>,
}

pub fn run(a: EvalArgs) -> Result<(), CliError> {
    let (_spec, mut plan) = plans::from_spec(
        &a.spec,
        a.block.as_deref(),
        a.model.clone(),
        super::spec::Data::Reads,
    )?;
    plans::cut_rank(&mut plan, a.rank)?;
    let cfg = plan.train.clone().ok_or_else(|| {
        CliError::Input("the spec has no `train` block naming the data to evaluate on".into())
    })?;
    super::device::ensure(a.device)?;
    let session = Session::open(plan.clone())?;
    let mut store = session.init_params(cfg.seed)?;
    if let Some(dir) = &a.adapter {
        peftc_runtime::adapter::load_into(&plan, &mut store, dir)?;
    }
    let data = prepare(&plan, &cfg, &session.tokenizer)?;
    let pad = session.tokenizer.pad_id;
    let batch = a.batch.map_or(cfg.batch, |b| b as usize);
    let model_plan = match a.adapter_drop {
        Some(n) => peftc_runtime::methods::drop_lowest(&plan, n as usize),
        None => plan.clone(),
    };
    let result = crate::with_backend!(a.device, infer, |B, dev| {
        let model = PeftModel::<B>::load(&model_plan, session.weights, &dev)?;
        let params = Params::<B>::constant(&store, &dev);
        evaluate(&model, &params, &data.eval, batch, pad)
    })?;
    if a.json {
        println!(
            "{}",
            serde_json::to_string(&result).map_err(|e| CliError::Internal(e.to_string()))?
        );
    } else {
        match (result.accuracy, result.perplexity) {
            (Some(acc), _) => println!(
                "held-out accuracy {acc:.4}, loss {:.4} ({} examples)",
                result.loss, result.examples
            ),
            (_, Some(p)) => println!(
                "held-out perplexity {p:.3}, loss {:.4} ({} windows)",
                result.loss, result.examples
            ),
            _ => println!("held-out loss {:.4}", result.loss),
        }
    }
    Ok(())
}
