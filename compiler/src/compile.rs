//! The whole pipeline after checking, for one block: lower, build the IR,
//! estimate.

use crate::check::{Checked, CheckedBlock};
use crate::estimate::{
    FlopReport, MemoryReport, PackedBase, ParamReport, Workload, flops_per_step, memory, params,
};
use crate::ir::{Graph, build_graph};
use crate::plan::{Plan, Point, lower};
use peftc_grammar::Diagnostic;

/// Everything `peftc compile` reports about one block.
pub struct CompileOutput {
    pub plan: Plan,
    pub graph: Graph,
    pub params: ParamReport,
    pub memory: MemoryReport,
    pub flops: FlopReport,
    pub workload: Workload,
}

pub fn compile_block(
    checked: &Checked,
    block: &CheckedBlock,
    point: Option<&Point>,
    workload: Workload,
) -> Result<CompileOutput, Diagnostic> {
    let plan = lower(checked, block, point)?;
    let graph = build_graph(&plan)
        .map_err(|e| Diagnostic::error(format!("internal compiler error: {e}")))?;
    let params = params(&plan);
    let packed = PackedBase::of(&plan);
    let memory =
        memory(&graph, &workload, packed.as_ref()).map_err(|e| Diagnostic::error(e.to_string()))?;
    let flops = flops_per_step(&graph, &workload).map_err(|e| Diagnostic::error(e.to_string()))?;
    Ok(CompileOutput {
        plan,
        graph,
        params,
        memory,
        flops,
        workload,
    })
}
