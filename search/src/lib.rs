//! `peftc search`: hybrid PEFT architecture search (UniPELT / AutoPEFT style).
//!
//! A spec's `search` block names a `peft` block whose arguments hold sets and
//! ranges (`lora(r={0, 4, 8})`, `adapter(bottleneck=8..=64 log)`; 0 or
//! `enabled=false` leaves a method out), a budget, objectives, a sampler and a
//! pruner. The study samples a point ([`sampling`]), writes it as a plain spec
//! ([`instantiate`]), checks its cost with the compiler's estimator
//! ([`cost`]) and records it infeasible or trains it through an
//! [`Evaluator`] that reports intermediate metrics to the pruner
//! ([`pruning`]). The study is an Optuna study ([`storage`]: Optuna's journal
//! file or its PostgreSQL schema; [`record`]: how peftc's facts are written
//! there) that several processes share and a crashed one resumes from;
//! [`report`] writes the leaderboard, the Pareto front and `best.peft`.
//!
//! **This crate never depends on the runtime or burn**: its tests run in
//! seconds with a formula for an evaluator; the binary wires the runtime in.

mod claim;
pub mod cost;
mod error;
mod files;
pub mod instantiate;
pub mod local_postgres;
pub mod pruning;
pub mod record;
pub mod report;
mod rng;
pub mod sampling;
mod settings;
pub mod space;
pub mod state;
pub mod storage;
pub mod study;

pub use cost::Cost;
pub use space::{Space, Value};
pub use state::{StudyState, TrialRecord};
pub use storage::{Heartbeat, StorageUrl};
pub use study::{
    Evaluator, Metrics, SearchError, Settings, StorageOptions, Study, TrialJob, TrialResult,
};
