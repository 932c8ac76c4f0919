//! What a configuration costs before it is trained, from the compiler's
//! estimator, and whether it fits the search's budget.

use peftc_compiler::estimate::Workload;
use peftc_compiler::search_spec::{Budget, BudgetMetric, Limit};
use peftc_compiler::train::{DType, OptimizerKind, TrainConfig};
use peftc_compiler::{CheckOptions, check, compile_block};
use peftc_grammar::render_all;
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Cost {
    /// Trainable parameters as Hugging Face PEFT counts them.
    pub trainable: u64,
    pub total: u64,
    /// Estimated resident peak of a training step, bytes.
    pub memory: u64,
}

impl Cost {
    pub fn percent(&self) -> f64 {
        100.0 * self.trainable as f64 / self.total.max(1) as f64
    }

    pub fn describe(&self) -> String {
        format!(
            "{} trainable params ({:.3}%), {} estimated peak memory",
            self.trainable,
            self.percent(),
            bytes(self.memory)
        )
    }
}

pub fn bytes(b: u64) -> String {
    let b = b as f64;
    if b >= (1u64 << 30) as f64 {
        format!("{:.2} GiB", b / (1u64 << 30) as f64)
    } else {
        format!("{:.1} MiB", b / (1u64 << 20) as f64)
    }
}

/// Checks and compiles a concrete spec (no search values left) and returns
/// its cost. `Err` holds the rendered diagnostics.
pub fn cost_of(text: &str, spec_dir: &Path) -> Result<Cost, String> {
    let render = |d: Vec<peftc_grammar::Diagnostic>| render_all(&d, "configuration", text);
    let file = peftc_grammar::parse(text).map_err(|d| render(vec![d]))?;
    let opts = CheckOptions {
        // Pricing needs no data; the study read it when it opened.
        lenient_data: true,
        spec_dir: spec_dir.to_path_buf(),
        model_override: None,
    };
    let checked = check(&file, &opts).map_err(render)?;
    let block = checked.default_block().map_err(|d| render(vec![d]))?;
    let train = checked
        .train
        .as_ref()
        .map(|t| TrainConfig::from_args(&t.args, &checked.spec_dir));
    let workload = Workload {
        batch: train.as_ref().map(|t| t.batch as u64).unwrap_or(8).max(1),
        seq: train
            .as_ref()
            .map(|t| t.seq_len as u64)
            .unwrap_or(128)
            .max(1),
        dtype: train.as_ref().map(|t| t.dtype).unwrap_or(DType::F32),
        optimizer: train
            .as_ref()
            .map(|t| t.optimizer)
            .unwrap_or(OptimizerKind::Adamw),
    };
    let out = compile_block(&checked, block, None, workload).map_err(|d| render(vec![d]))?;
    Ok(Cost {
        trainable: out.params.trainable_params,
        total: out.params.total_params,
        memory: out.memory.peak,
    })
}

/// `Err` says which budget `c` breaks and by how much.
pub fn fits(c: &Cost, budgets: &[Budget]) -> Result<(), String> {
    for b in budgets {
        let (value, limit, what) = match (b.metric, b.limit) {
            (BudgetMetric::Params, Limit::Fraction(f)) => (
                c.trainable as f64 / c.total.max(1) as f64,
                f,
                format!("{:.3}% trainable > {:.3}%", c.percent(), f * 100.0),
            ),
            (BudgetMetric::Params, Limit::Count(n)) => (
                c.trainable as f64,
                n as f64,
                format!("{} trainable params > {n}", c.trainable),
            ),
            (BudgetMetric::Memory, Limit::Bytes(n)) => (
                c.memory as f64,
                n as f64,
                format!("{} estimated memory > {}", bytes(c.memory), bytes(n)),
            ),
            // The checker rejects other pairs; nothing to compare.
            _ => continue,
        };
        let over = if b.strict {
            value >= limit
        } else {
            value > limit
        };
        if over {
            return Err(what);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cost(trainable: u64, memory: u64) -> Cost {
        Cost {
            trainable,
            total: 1_000_000,
            memory,
        }
    }

    #[test]
    fn budgets_compare_fractions_counts_and_bytes() {
        let pct = Budget {
            metric: BudgetMetric::Params,
            limit: Limit::Fraction(0.005),
            strict: false,
        };
        assert!(fits(&cost(5_000, 0), std::slice::from_ref(&pct)).is_ok());
        let e = fits(&cost(5_001, 0), &[pct]).expect_err("over 0.5%");
        assert!(e.contains("0.500%"), "{e}");
        let mem = Budget {
            metric: BudgetMetric::Memory,
            limit: Limit::Bytes(1 << 30),
            strict: true,
        };
        assert!(fits(&cost(0, (1 << 30) - 1), std::slice::from_ref(&mem)).is_ok());
        assert!(fits(&cost(0, 1 << 30), &[mem]).is_err());
    }
}
