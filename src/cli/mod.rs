//! Subcommands and their shared plumbing.

mod check;
mod compile;
mod error;
mod format;
mod spec;

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
}

pub fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Check { spec, model } => check::run(&spec, model),
        Command::Compile(args) => compile::run(args),
    }
}
