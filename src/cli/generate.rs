//! `peftc generate SPEC [--adapter RUN|DIR] --prompt TEXT`: continue a text
//! with a causal LM and its adapter, printing the continuation as it comes.

use super::device::DeviceArg;
use super::{CliError, plans};
use clap::Args;
use peftc_runtime::generate::{FinishReason, GenerateOptions, generate};
use peftc_runtime::model::{Params, PeftModel};
use peftc_runtime::session::Session;
use serde_json::json;
use std::io::Write;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct GenerateArgs {
    pub spec: PathBuf,
    /// A run or adapter folder (peftc's or Hugging Face PEFT's).
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    #[arg(long)]
    pub prompt: String,
    #[arg(long, default_value_t = 64)]
    pub max_tokens: usize,
    /// 0 is greedy decoding.
    #[arg(long, default_value_t = 0.0, value_parser = non_negative)]
    pub temperature: f64,
    #[arg(long, default_value_t = 1.0, value_parser = probability)]
    pub top_p: f64,
    /// Sample among the k most probable tokens (0: all).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Stop before this text (repeatable).
    #[arg(long)]
    pub stop: Vec<String>,
    /// Send the prompt as a user message through the model's chat template.
    #[arg(long)]
    pub chat: bool,
    /// Print one JSON object (text, tokens, finish reason) at the end.
    #[arg(long)]
    pub json: bool,
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    pub device: DeviceArg,
    #[arg(long)]
    pub block: Option<String>,
    #[arg(long)]
    pub model: Option<PathBuf>,
}

fn non_negative(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x.is_finite() && x >= 0.0 => Ok(x),
        _ => Err(format!("`{s}` is not a number ≥ 0")),
    }
}

fn probability(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x > 0.0 && x <= 1.0 => Ok(x),
        _ => Err(format!("`{s}` is not a probability in (0, 1]")),
    }
}

pub fn run(a: GenerateArgs) -> Result<(), CliError> {
    let (_spec, plan) = plans::from_spec(
        &a.spec,
        a.block.as_deref(),
        a.model.clone(),
        super::spec::Data::Estimates,
    )?;
    if plan.task.kind != peftc_compiler::task::TaskKind::CausalLm {
        return Err(CliError::Input(format!(
            "`{}` trains a {:?} model; generation needs `task = causal_lm`",
            a.spec.display(),
            plan.task.kind
        )));
    }
    super::device::ensure(a.device)?;
    let seed = plan.train.as_ref().map(|t| t.seed).unwrap_or(0);
    let session = Session::open(plan.clone())?;
    let mut store = session.init_params(seed)?;
    if let Some(dir) = &a.adapter {
        peftc_runtime::adapter::load_into(&plan, &mut store, dir)?;
    }
    let text = if a.chat {
        let template = session.tokenizer.chat.as_ref().ok_or_else(|| {
            CliError::Input(format!(
                "--chat: `{}`'s model ships no chat template",
                a.spec.display()
            ))
        })?;
        let user = peftc_runtime::tokenizer::Message {
            role: "user".into(),
            content: a.prompt.clone(),
        };
        template.render(&[user])?
    } else {
        a.prompt.clone()
    };
    let prompt = session.tokenizer.encode_plain(&text)?;
    let opts = GenerateOptions {
        max_tokens: a.max_tokens,
        temperature: a.temperature,
        top_p: a.top_p,
        top_k: a.top_k,
        seed: a.seed,
        stop: a.stop.clone(),
    };
    let tokenizer = session.tokenizer;
    let weights = session.weights;
    let stream = !a.json;
    let out = crate::with_backend!(a.device, infer, |B, dev| {
        let model = PeftModel::<B>::load(&plan, weights, &dev)?;
        let params = Params::<B>::constant(&store, &dev);
        let mut stdout = std::io::stdout();
        generate(&model, &params, &tokenizer, &prompt, &opts, &mut |piece| {
            if stream {
                let _ = stdout.write_all(piece.as_bytes());
                let _ = stdout.flush();
            }
        })
    })?;
    if a.json {
        println!(
            "{}",
            json!({
                "text": out.text,
                "tokens": out.tokens,
                "prompt_tokens": out.prompt_tokens,
                "finish_reason": match out.finish {
                    FinishReason::Length => "length",
                    FinishReason::Stop => "stop",
                },
                "prefill_seconds": out.prefill_seconds,
                "decode_seconds": out.decode_seconds,
            })
        );
    } else {
        println!();
    }
    Ok(())
}
