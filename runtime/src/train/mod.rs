//! Training: the loop, AdamW, schedules, checkpoints, metrics, evaluation.

pub mod checkpoint;
pub mod evaluate;
pub mod metrics;
pub mod mezo;
pub mod optim;
mod progress;
mod run;
pub mod schedule;
mod step;

pub use evaluate::{EvalResult, evaluate, host};
pub use run::{TrainOptions, TrainSummary, train, train_observed};
pub use step::{NonFinitePolicy, StepStats, first_non_finite, train_step};
