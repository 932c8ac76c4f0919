//! `peftc infer SPEC --text T ... --json`: logits for texts.

use super::device::DeviceArg;
use super::{CliError, plans};
use clap::Args;
use peftc_runtime::model::{Params, PeftModel};
use peftc_runtime::session::Session;
use serde_json::json;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct InferArgs {
    pub spec: PathBuf,
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    #[arg(long = "text", required = true)]
    pub texts: Vec<String>,
    #[arg(long)]
    pub json: bool,
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    pub device: DeviceArg,
    #[arg(long)]
    pub block: Option<String>,
    #[arg(long)]
    pub model: Option<PathBuf>,
}

pub fn run(a: InferArgs) -> Result<(), CliError> {
    let (_spec, plan) = plans::from_spec(&a.spec, a.block.as_deref(), a.model.clone())?;
    let fail = |e: peftc_runtime::RuntimeError| CliError::Input(e.to_string());
    let seed = plan.train.as_ref().map(|t| t.seed).unwrap_or(0);
    let max_len = plan.train.as_ref().map(|t| t.seq_len).unwrap_or(512);
    let session = Session::open(plan.clone()).map_err(fail)?;
    let mut store = session.init_params(seed).map_err(fail)?;
    if let Some(dir) = &a.adapter {
        peftc_runtime::adapter::load_into(&plan, &mut store, dir).map_err(fail)?;
    }
    let tokenizer = session.tokenizer;
    let logits = crate::with_backend!(a.device, infer, |B, dev| {
        let model = PeftModel::<B>::load(&plan, session.weights, &dev).map_err(fail)?;
        let params = Params::<B>::constant(&store, &dev);
        peftc_runtime::infer::infer(&model, &params, &tokenizer, &a.texts, max_len).map_err(fail)
    })?;
    let argmax = |row: &Vec<f32>| {
        row.iter()
            .enumerate()
            .max_by(|x, y| x.1.total_cmp(y.1))
            .map(|(i, _)| i)
            .unwrap_or(0)
    };
    let predictions: Vec<usize> = logits.iter().map(argmax).collect();
    let labels = plan.label_names.clone().unwrap_or_default();
    if a.json {
        let mut out = json!({ "logits": logits, "predictions": predictions });
        if !labels.is_empty() {
            out["labels"] = json!(labels);
            out["predicted_labels"] = json!(
                predictions
                    .iter()
                    .map(|&i| labels.get(i).cloned().unwrap_or_default())
                    .collect::<Vec<_>>()
            );
        }
        println!("{out}");
    } else {
        for (t, p) in a.texts.iter().zip(&predictions) {
            let what = labels
                .get(*p)
                .cloned()
                .or_else(|| tokenizer.decode(&[*p as u32]).ok())
                .unwrap_or_default();
            println!("{what}\t{t}");
        }
    }
    Ok(())
}
