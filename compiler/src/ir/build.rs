//! The driver: lays down the base model, then runs the passes in order —
//! insert, shape inference, gradient marking, fusion.

use super::graph::Graph;
use super::op::{Node, Op};
use super::{IrError, build_bert, build_llama, fuse, grad, insert, shape};
use crate::model::{Family, ModuleKind};
use crate::plan::Plan;

/// Frozen and trainable parameters of a base module's node, given the plan's
/// trainable biases and tied weights.
pub(super) fn module_params(plan: &Plan, path: &str) -> (u64, u64) {
    let Some(m) = plan.modules.iter().find(|m| m.path == path) else {
        return (0, 0);
    };
    let total = m.counted_params();
    let head_trains = m.role == Some(crate::model::Role::Head)
        && plan.task.kind == crate::task::TaskKind::Classify;
    if head_trains {
        return (0, total);
    }
    let bias = match (&m.kind, plan.trainable_biases.iter().any(|b| b == path)) {
        (ModuleKind::Linear { .. } | ModuleKind::LayerNorm { .. }, true) => {
            m.kind.bias_len().unwrap_or(0) as u64
        }
        _ => 0,
    };
    (total - bias, bias)
}

/// Builds the IR of `plan`: base model, task head, PEFT nodes; shapes inferred
/// and gradient flow marked.
pub fn build_graph(plan: &Plan) -> Result<Graph, IrError> {
    let mut g = Graph::new();
    match plan.model.family {
        Family::Bert => build_bert::build(plan, &mut g),
        Family::Llama => build_llama::build(plan, &mut g),
    }
    insert::insert_sites(plan, &mut g)?;
    shape::infer(&mut g)?;
    grad::mark(&mut g);
    g.fusions = fuse::fuse(&g);
    Ok(g)
}

/// Shorthand for the builders: a node for module `path` with its parameters.
pub(super) fn module_node(plan: &Plan, op: Op, path: &str, layer: Option<usize>) -> Node {
    let (frozen, trainable) = module_params(plan, path);
    Node::new(op, path, layer).with_params(frozen, trainable)
}
