//! The graph IR: the whole forward pass of model + task + PEFT methods as a
//! petgraph DAG of ops, each carrying a symbolic shape (`[B, S, 384]`), its
//! parameter counts, and whether gradients flow through it.
//!
//! Built in passes, each a small file: [`build`] lays down the base model,
//! [`insert`] splices in the plan's PEFT nodes, [`shape`] infers and checks
//! shapes, [`grad`] marks what needs gradients, [`fuse`] finds the fused
//! kernels (rules as data), [`emit`] prints it.

mod build;
mod build_bert;
mod build_llama;
mod emit;
pub mod fuse;
mod grad;
mod graph;
mod insert;
mod op;
mod shape;

pub use build::build_graph;
pub use emit::{to_dot, to_text};
pub use fuse::{FusedOp, Fusion, RULES, Rule};
pub use graph::{Anchor, Graph};
pub use op::{Act, DeltaCost, Dim, LossKind, Node, Op, Shape};

/// A node handle.
pub type NodeId = petgraph::stable_graph::NodeIndex;

/// An inconsistency between ops, found by a pass. Always a peftc bug, never the
/// user's: user errors are caught by the checker.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("IR error at node {node} (`{label}`): {what}")]
pub struct IrError {
    pub node: usize,
    pub label: String,
    pub what: String,
}
