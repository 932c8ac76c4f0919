//! Progress on long work: a bar on a terminal, a line every few percent
//! otherwise (logs, CI).

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;

pub struct Progress {
    bar: Option<ProgressBar>,
    total: usize,
    last_line: usize,
}

impl Progress {
    pub fn new(total: usize, start: usize) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = ProgressBar::new(total as u64);
            b.set_style(
                ProgressStyle::with_template(
                    "{bar:30} {pos}/{len} steps  {msg}  [{elapsed_precise} < {eta_precise}]",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            b.set_position(start as u64);
            b
        });
        Progress {
            bar,
            total,
            last_line: start,
        }
    }

    pub fn update(&mut self, step: usize, msg: String) {
        match &self.bar {
            Some(b) => {
                b.set_position(step as u64);
                b.set_message(msg);
            }
            None => {
                let every = (self.total / 20).max(1);
                if step >= self.last_line + every || step == self.total {
                    self.last_line = step;
                    eprintln!("step {step}/{}  {msg}", self.total);
                }
            }
        }
    }

    pub fn println(&self, line: String) {
        match &self.bar {
            Some(b) => b.println(line),
            None => eprintln!("{line}"),
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
