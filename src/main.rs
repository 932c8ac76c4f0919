//! `peftc`: the command line. Each subcommand lives in `cli/`.

mod alloc;
mod cli;
mod serve;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    peftc_runtime::kernels::use_the_cpus_kernels();
    alloc::keep_freed_pages();
    // Rust ignores SIGPIPE, so a closed pipe (`peftc ... | head`) would make
    // every print fail; end quietly instead, as other command-line tools do.
    #[cfg(unix)]
    // SAFETY: called before any other thread exists; SIG_DFL is always valid.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let args = cli::Cli::parse();
    // No panic escapes as a crash: one inside peftc or a backend (burn,
    // cubecl, a driver) becomes an internal error, exit 1.
    let result = cli::panics::contain(|| cli::run(args));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            e.report();
            ExitCode::from(e.code())
        }
    }
}
