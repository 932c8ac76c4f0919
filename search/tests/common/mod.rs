//! Shared by the study tests: a spec over LoRA rank × prefix length and a
//! closed-form evaluator in place of training.

#![allow(dead_code)]

use peftc_search::{Evaluator, Metrics, Study, TrialJob, TrialResult};
use std::path::{Path, PathBuf};

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("peftc-search-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

/// A spec over LoRA rank × prefix length on MiniLM's config (no weights needed:
/// the evaluator is a formula). LoRA on q, v adds 6·2·(384·r + r·384) = 9216·r
/// parameters, a prefix 6·2·len·384 = 4608·len; 0.5% of MiniLM (113,637) leaves
/// 13 of the 24 points: r ∈ {0, 2} with any len, r = 4 with len ≤ 10, r = 8
/// with len ≤ 5.
pub fn spec(dir: &Path, search: &str) -> PathBuf {
    let text = format!(
        "model \"{}\"\npeft a {{\n    lora(r={{0, 2, 4, 8, 16, 32}}, alpha=16) on layers[*].attn.{{q, v}}\n    prefix(len={{0, 5, 10, 20}}) on layers[*].attn\n}}\ntrain {{\n    adapter = a\n    task = classify\n    labels = 2\n    batch = 16\n    seq_len = 64\n}}\nsearch s {{\n    space = a\n{search}}}\n",
        repo().join("tests/fixtures/configs/minilm-l6").display()
    );
    let p = dir.join("s.peft");
    std::fs::write(&p, text).expect("write spec");
    p
}

pub fn int(job: &TrialJob, dim: &str) -> i64 {
    job.describe
        .split(' ')
        .find_map(|kv| kv.strip_prefix(&format!("{dim}=")))
        .and_then(|v| v.parse().ok())
        .expect("dimension in the description")
}

/// accuracy = 0.9 + 0.01·log2(1 + r) + 0.002·len, reaching it linearly over
/// the steps: best within budget is r = 16, len = 10.
pub struct Formula {
    pub steps_run: Vec<(u64, u64)>,
}

pub fn accuracy(r: i64, len: i64) -> f64 {
    0.9 + 0.01 * ((1 + r) as f64).log2() + 0.002 * len as f64
}

impl Evaluator for Formula {
    fn run(
        &mut self,
        job: &TrialJob,
        report: &mut dyn FnMut(u64, &Metrics) -> bool,
    ) -> Result<TrialResult, String> {
        let final_acc = accuracy(int(job, "lora.r"), int(job, "prefix.len"));
        let steps = job.steps.unwrap_or(8);
        let every = job.eval_every.unwrap_or(steps);
        let mut step = every;
        while step < steps {
            let m = Metrics::from([("accuracy".into(), final_acc * step as f64 / steps as f64)]);
            if !report(step, &m) {
                self.steps_run.push((job.number, step));
                return Ok(TrialResult::Pruned { step });
            }
            step += every;
        }
        self.steps_run.push((job.number, steps));
        Ok(TrialResult::Complete(Metrics::from([(
            "accuracy".into(),
            final_acc,
        )])))
    }

    fn finished(
        &mut self,
        study: &Study,
        state: &peftc_search::StudyState,
    ) -> Result<(), peftc_search::SearchError> {
        peftc_search::report::write_all(study, state)
    }
}

pub fn run(study: &Study) -> Formula {
    let mut f = Formula {
        steps_run: Vec::new(),
    };
    study.run_worker(&mut f, &mut |_| {}).expect("worker");
    f
}
