//! The peftc compiler: from a parsed `.peft` spec and a model's `config.json`
//! (or GGUF header) to a checked spec, a lowered [`plan::Plan`], the graph IR
//! and static estimates. No tensor library is involved: everything here runs
//! in milliseconds, for any model size.
//!
//! Pipeline: [`check::check`] → [`plan::lower`] → [`ir::build_graph`] →
//! [`estimate`]. [`compile`] runs them all.

// Diagnostics are the error type everywhere; they are built on cold paths
// and carry spans, labels and notes by value, so their size is no concern.
#![allow(clippy::result_large_err)]

pub mod check;
mod compile;
pub mod data;
pub mod estimate;
pub mod glob;
pub mod ir;
pub mod methods;
pub mod model;
pub mod plan;
pub mod search_spec;
pub mod select;
pub mod task;
pub mod train;

pub use check::{CheckOptions, Checked, check};
pub use compile::{CompileOutput, compile_block};
pub use plan::{Plan, Point, Site, lower};
