//! `peftc`: the command line. Each subcommand lives in `cli/`.

mod alloc;
mod cli;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    alloc::keep_freed_pages();
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            e.report();
            ExitCode::from(e.code())
        }
    }
}
