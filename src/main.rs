//! `peftc`: the command line. Each subcommand lives in `cli/`.

mod cli;

/// mimalloc keeps freed pages for reuse: training allocates and frees the same
/// activation-sized buffers every step, and the system allocator's fresh
/// `mmap`s cost 10% of a step in page faults.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            e.report();
            ExitCode::from(e.code())
        }
    }
}
