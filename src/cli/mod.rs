//! Subcommands and their shared plumbing.

mod check;
mod compile;
pub mod device;
mod error;
mod eval;
mod export;
mod flags;
mod format;
mod generate;
mod infer;
mod merge;
mod output;
pub mod panics;
mod plans;
mod search;
mod serve;
mod spec;
mod train;

pub use error::CliError;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "peftc",
    version,
    about = "A compiler and runtime for parameter-efficient fine-tuning"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Check a spec against its model; print what each block does.
    Check {
        spec: PathBuf,
        /// Use this model (a folder with config.json or a .gguf, or a config.json) instead of the spec's.
        #[arg(long)]
        model: Option<PathBuf>,
    },
    /// Lower a block to the IR and print estimates of parameters, memory and FLOPs.
    Compile(compile::CompileArgs),
    /// Fine-tune the spec's block on its data.
    Train(train::TrainArgs),
    /// Held-out metrics of the spec's block, with a trained adapter.
    Eval(eval::EvalArgs),
    /// Logits for texts.
    Infer(infer::InferArgs),
    /// Continue a prompt with a causal LM and its adapter (KV cache; greedy or sampled).
    Generate(generate::GenerateArgs),
    /// Write a run's adapter in Hugging Face PEFT's format.
    Export(export::ExportArgs),
    /// Fold a run's adapter into the base weights and write a full checkpoint.
    Merge(merge::MergeArgs),
    /// Explore the spec's search space under its budget; rerun to resume.
    Search(search::SearchArgs),
    /// Serve the base and its adapters over an OpenAI-compatible HTTP API
    /// (continuous batching, adapters loaded and evicted at run time).
    Serve(serve::ServeArgs),
}

pub fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Check { spec, model } => check::run(&spec, model),
        Command::Compile(args) => compile::run(args),
        Command::Train(args) => train::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Infer(args) => infer::run(args),
        Command::Generate(args) => generate::run(args),
        Command::Export(args) => export::run(args),
        Command::Merge(args) => merge::run(args),
        Command::Search(args) => search::run(args),
        Command::Serve(args) => serve::run(args),
    }
}
