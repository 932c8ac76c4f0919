//! `peftc serve SPEC [--adapter NAME=DIR ...]`: many adapters on one base
//! behind an OpenAI-compatible HTTP server (see `crate::serve`).

use super::device::DeviceArg;
use super::{CliError, plans};
use clap::Args;
use peftc_runtime::engine::{Adapters, Engine, EngineConfig, Metrics};
use peftc_runtime::model::PeftModel;
use peftc_runtime::session::Session;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Args, Debug)]
pub struct ServeArgs {
    pub spec: PathBuf,
    /// An adapter to serve, `NAME=DIR` (a peftc run or adapter folder, or a
    /// Hugging Face PEFT folder); repeatable. More load at run time through
    /// `POST /v1/load_lora_adapter`.
    #[arg(long)]
    pub adapter: Vec<String>,
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// 0 picks a free port (printed when listening).
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// Adapters held in memory at once; others are read from disk on demand,
    /// evicting the least recently used.
    #[arg(long, default_value_t = 8, value_parser = super::flags::count)]
    pub max_adapters: u64,
    /// Tokens a step may process (decoded rows plus prompts prefilled).
    #[arg(long, default_value_t = 2048, value_parser = super::flags::count)]
    pub max_batch_tokens: u64,
    /// Sequences decoded at once.
    #[arg(long, default_value_t = 64, value_parser = super::flags::count)]
    pub max_sequences: u64,
    /// The name the base model is served under (default: the model file's).
    #[arg(long)]
    pub served_model_name: Option<String>,
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    pub device: DeviceArg,
    #[arg(long)]
    pub block: Option<String>,
    #[arg(long)]
    pub model: Option<PathBuf>,
}

fn parse_adapter(s: &str) -> Result<(String, PathBuf), CliError> {
    match s.split_once('=') {
        Some((name, dir)) if !name.is_empty() && !dir.is_empty() => {
            Ok((name.to_string(), PathBuf::from(dir)))
        }
        _ => Err(CliError::Input(format!(
            "--adapter `{s}`: expected NAME=DIR (the name clients send as `model`)"
        ))),
    }
}

pub fn run(a: ServeArgs) -> Result<(), CliError> {
    let adapters: Vec<(String, PathBuf)> = a
        .adapter
        .iter()
        .map(|s| parse_adapter(s))
        .collect::<Result<_, _>>()?;
    let (_spec, plan) = plans::from_spec(
        &a.spec,
        a.block.as_deref(),
        a.model.clone(),
        super::spec::Data::Estimates,
    )?;
    super::device::ensure(a.device)?;
    let listener = std::net::TcpListener::bind((a.host.as_str(), a.port))
        .map_err(|e| CliError::Input(format!("cannot listen on {}:{}: {e}", a.host, a.port)))?;
    let base = a
        .served_model_name
        .clone()
        .unwrap_or_else(|| model_name(&plan));
    let seed = plan.train.as_ref().map(|t| t.seed).unwrap_or(0);
    let session = Session::open(plan.clone())?;
    let template = session.init_params(seed)?;
    let tok = Arc::new(session.tokenizer);
    let weights = session.weights;
    let metrics = Arc::new(Metrics::default());
    let (commands, engine_rx) = std::sync::mpsc::channel();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let config = crate::serve::ServerConfig {
        listener,
        tok: tok.clone(),
        context: peftc_runtime::generate::context(&plan),
        kind: plan.task.kind,
        metrics: metrics.clone(),
    };
    let http = std::thread::Builder::new()
        .name("peftc-http".into())
        .spawn(move || crate::serve::http(config, commands, ready_rx))
        .map_err(|e| CliError::Internal(format!("cannot start the HTTP thread: {e}")))?;
    let engine_config = EngineConfig {
        max_adapters: a.max_adapters as usize,
        max_batch_tokens: a.max_batch_tokens as usize,
        max_sequences: a.max_sequences as usize,
    };
    let served = crate::with_backend!(a.device, infer, |B, dev| {
        let model = PeftModel::<B>::load(&plan, weights, &dev)?;
        let mut set = Adapters::<B>::new(&plan, template, &base, engine_config.max_adapters, &dev);
        for (name, dir) in &adapters {
            set.register(name, dir)
                .map_err(|e| CliError::Input(format!("--adapter {name}={}: {e}", dir.display())))?;
        }
        eprintln!(
            "peftc serve: {} on {:?}; models: {}",
            a.spec.display(),
            a.device,
            set.names().join(", ")
        );
        let _ = ready_tx.send(());
        Engine::new(model, tok, set, engine_config, metrics).run(engine_rx);
        Ok::<(), CliError>(())
    });
    let http = http
        .join()
        .map_err(|_| CliError::Internal("the HTTP thread panicked".into()))?;
    served?;
    http.map_err(CliError::Input)
}

/// The base model's name: its GGUF file's stem, or its folder's name.
fn model_name(plan: &peftc_compiler::plan::Plan) -> String {
    use peftc_compiler::model::ModelSource;
    let name = match &plan.model.source {
        ModelSource::Gguf(p) => p.file_stem(),
        ModelSource::ConfigJson(p) => p.parent().and_then(|d| d.file_name()),
    };
    name.map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "base".into())
}
