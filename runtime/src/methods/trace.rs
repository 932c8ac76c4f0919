//! Which fused kernel ran at which module: off unless a test turns it on, so
//! the plan's fusion decisions can be compared with what executed
//! (`runtime/tests/fusion_plan.rs`).

use peftc_compiler::ir::FusedOp;
use std::sync::Mutex;

static TRACE: Mutex<Option<Vec<(String, FusedOp)>>> = Mutex::new(None);

/// Starts recording (clears an earlier record).
pub fn start() {
    if let Ok(mut t) = TRACE.lock() {
        *t = Some(Vec::new());
    }
}

/// Stops recording and returns what ran, in order.
pub fn finish() -> Vec<(String, FusedOp)> {
    TRACE
        .lock()
        .ok()
        .and_then(|mut t| t.take())
        .unwrap_or_default()
}

/// Records that `op` ran at `path`.
pub(crate) fn fused(path: &str, op: FusedOp) {
    if let Ok(mut t) = TRACE.lock()
        && let Some(v) = t.as_mut()
    {
        v.push((path.to_string(), op));
    }
}
