//! `peftc infer SPEC --text T ... --json`: logits for texts. With several
//! `--adapter NAME=DIR` and texts written `NAME:TEXT`, every adapter runs in
//! one batch on one copy of the base (batched multi-adapter LoRA).

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
    /// A run or adapter folder; repeat as `NAME=DIR` to serve several
    /// adapters in one batch.
    #[arg(long)]
    pub adapter: Vec<String>,
    /// A text; `NAME:TEXT` picks the adapter when several are given.
    #[arg(long = "text", required = true)]
    pub texts: Vec<String>,
    #[arg(long)]
    pub json: bool,
    /// Fold the one adapter into the base weights first, then run the plain
    /// base (LoRA, (IA)³, BitFit): no per-token adapter cost.
    #[arg(long)]
    pub merged: bool,
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    pub device: DeviceArg,
    #[arg(long)]
    pub block: Option<String>,
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Read a `dylora` adapter at this rank (any of its trained ranks).
    #[arg(long, value_parser = super::flags::count)]
    pub rank: Option<u64>,
    /// AdapterDrop: leave out the methods of the lowest N layers (faster;
    /// a model trained with `adapter_drop` keeps its quality).
    #[arg(long, value_parser = super::flags::count)]
    pub adapter_drop: Option<u64>,
}

pub fn run(a: InferArgs) -> Result<(), CliError> {
    let (_spec, mut plan) = plans::from_spec(
        &a.spec,
        a.block.as_deref(),
        a.model.clone(),
        super::spec::Data::Estimates,
    )?;
    plans::cut_rank(&mut plan, a.rank)?;
    let seed = plan.train.as_ref().map(|t| t.seed).unwrap_or(0);
    let max_len = plan.train.as_ref().map(|t| t.seq_len).unwrap_or(512);
    super::device::ensure(a.device)?;
    let session = Session::open(plan.clone())?;
    let routing = Routing::parse(&a.adapter, &a.texts)?;
    let mut stores = Vec::new();
    for dir in routing.dirs() {
        let mut store = session.init_params(seed)?;
        if let Some(dir) = dir {
            peftc_runtime::adapter::load_into(&plan, &mut store, dir)?;
        }
        stores.push(store);
    }
    if routing.names.len() > 1 {
        peftc_runtime::model::routes::routable(&plan).map_err(CliError::Input)?;
    }
    let tokenizer = session.tokenizer;
    if a.merged && a.adapter_drop.is_some() {
        return Err(CliError::Input(
            "--adapter-drop leaves adapters out of an unmerged model; --merged has none to leave out".into(),
        ));
    }
    let (model_plan, weights) = if a.merged {
        if routing.paths.len() != 1 || routing.paths[0].is_none() {
            return Err(CliError::Input(
                "--merged folds one adapter into the base: give exactly one --adapter".into(),
            ));
        }
        let merged = peftc_runtime::merge::merged_weights(&plan, &stores[0], session.weights)?;
        // The plain base with the merged weights; the head stays a parameter.
        let mut base = plan.clone();
        base.sites.clear();
        base.trainable_biases.clear();
        let w = peftc_runtime::weights::Weights::from_map(PathBuf::from("(merged)"), merged);
        (base, w)
    } else {
        let kept = match a.adapter_drop {
            Some(n) => peftc_runtime::methods::drop_lowest(&plan, n as usize),
            None => plan.clone(),
        };
        (kept, session.weights)
    };
    let texts = &routing.texts;
    let logits = crate::with_backend!(a.device, infer, |B, dev| {
        let model = PeftModel::<B>::load(&model_plan, weights, &dev)?;
        if routing.names.len() > 1 {
            let refs: Vec<&_> = stores.iter().collect();
            let params = Params::<B>::routed(&refs, &dev);
            peftc_runtime::infer::infer_routed(
                &model,
                &params,
                &tokenizer,
                texts,
                max_len,
                &routing.adapter_of,
                refs.len(),
            )
        } else {
            let params = Params::<B>::constant(&stores[0], &dev);
            peftc_runtime::infer::infer(&model, &params, &tokenizer, texts, max_len)
        }
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
        if routing.names.len() > 1 {
            out["adapters"] = json!(
                routing
                    .adapter_of
                    .iter()
                    .map(|&k| routing.names[k].clone())
                    .collect::<Vec<_>>()
            );
        }
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
        for (i, (t, p)) in texts.iter().zip(&predictions).enumerate() {
            let t = if routing.names.len() > 1 {
                format!("{}:{t}", routing.names[routing.adapter_of[i]])
            } else {
                t.clone()
            };
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

/// Which adapters to load and which text uses which.
struct Routing {
    /// `None`: the spec's freshly initialized parameters (no adapter).
    paths: Vec<Option<PathBuf>>,
    names: Vec<String>,
    texts: Vec<String>,
    adapter_of: Vec<usize>,
}

impl Routing {
    fn parse(adapters: &[String], texts: &[String]) -> Result<Routing, CliError> {
        let single = |path: Option<PathBuf>| Routing {
            paths: vec![path],
            names: vec![String::new()],
            texts: texts.to_vec(),
            adapter_of: vec![0; texts.len()],
        };
        match adapters {
            [] => return Ok(single(None)),
            [one] if !one.contains('=') || PathBuf::from(one).exists() => {
                return Ok(single(Some(PathBuf::from(one))));
            }
            _ => {}
        }
        let mut paths = Vec::new();
        let mut names: Vec<String> = Vec::new();
        for a in adapters {
            let Some((name, path)) = a.split_once('=') else {
                return Err(CliError::Input(format!(
                    "with several adapters, write each as NAME=DIR (got `{a}`)"
                )));
            };
            if names.iter().any(|n| n == name) {
                return Err(CliError::Input(format!(
                    "adapter name `{name}` given twice"
                )));
            }
            names.push(name.to_string());
            paths.push(Some(PathBuf::from(path)));
        }
        let mut routed = Vec::new();
        let mut adapter_of = Vec::new();
        for t in texts {
            let k = t
                .split_once(':')
                .and_then(|(n, _)| names.iter().position(|m| m == n));
            let (Some(k), Some((_, text))) = (k, t.split_once(':')) else {
                return Err(CliError::Input(format!(
                    "with several adapters, write each text as NAME:TEXT with NAME one of {} (got `{t}`)",
                    names.join(", ")
                )));
            };
            adapter_of.push(k);
            routed.push(text.to_string());
        }
        Ok(Routing {
            paths,
            names,
            texts: routed,
            adapter_of,
        })
    }

    fn dirs(&self) -> impl Iterator<Item = Option<&PathBuf>> {
        self.paths.iter().map(Option::as_ref)
    }
}
