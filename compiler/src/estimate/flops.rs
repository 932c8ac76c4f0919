//! FLOPs of one training step: matrix products (2 per multiply-add) of the
//! forward pass, and of the backward pass where gradients flow — input
//! gradients through frozen layers, weight gradients only for trainable ones.
//! Elementwise work is left out: it is memory-bound and small beside the GEMMs.

use super::memory::{Overflow, Workload, fit};
use crate::ir::{Graph, Op};
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FlopReport {
    pub forward: u64,
    pub backward: u64,
    /// forward + backward.
    pub per_step: u64,
}

/// The FLOPs of one step, or the estimate that does not fit 64 bits.
pub fn flops_per_step(g: &Graph, w: &Workload) -> Result<FlopReport, Overflow> {
    let (mut fwd, mut bwd) = (0u128, 0u128);
    for n in g.g.node_indices() {
        let node = &g.g[n];
        let ins = g.inputs(n);
        let rows = |i: usize| -> u128 {
            ins.get(i)
                .map(|&x| {
                    let s = &g.g[x].shape;
                    let last = s.last().map(|d| d.eval(w.batch, w.seq)).unwrap_or(1).max(1);
                    s.numel(w.batch, w.seq) / last
                })
                .unwrap_or(0)
        };
        let in_grad = |i: usize| ins.get(i).is_some_and(|&x| g.g[x].requires_grad);
        match &node.op {
            Op::Linear { in_f, out_f, .. } => {
                let f = 2 * rows(0) * (*in_f as u128) * (*out_f as u128);
                fwd += f;
                if in_grad(0) {
                    bwd += f;
                }
                if node.trainable_params > 0 && node.frozen_params == 0 {
                    bwd += f;
                }
            }
            Op::LoraDelta { in_f, out_f, r, .. } | Op::Dora { in_f, out_f, r, .. } => {
                let f = 2 * rows(0) * (*r as u128) * (*in_f as u128 + *out_f as u128);
                fwd += f;
                // dA, dB and the input gradient through A.
                bwd += 2 * f;
                if matches!(node.op, Op::Dora { .. }) {
                    // The column norms of W + s*B*A: a rank-r product per step.
                    let w2 = 2 * (*r as u128) * (*in_f as u128) * (*out_f as u128);
                    fwd += w2;
                    bwd += w2;
                }
            }
            Op::Delta { cost, .. } => {
                let f = rows(0) * (cost.row_flops as u128 + cost.seq_flops as u128 * w.seq as u128)
                    + cost.step_flops as u128;
                fwd += f;
                bwd += 2 * f;
            }
            Op::Adapter {
                d_in,
                bottleneck,
                d_out,
                ..
            } => {
                let f = 2 * rows(0) * (*bottleneck as u128) * (*d_in as u128 + *d_out as u128);
                fwd += f;
                bwd += 2 * f;
            }
            Op::Attention {
                heads, head_dim, ..
            } => {
                let b = w.batch as u128;
                let q = ins
                    .first()
                    .map(|&x| g.g[x].shape.clone())
                    .unwrap_or_default();
                let s = q.0.get(1).map(|d| d.eval(w.batch, w.seq)).unwrap_or(0);
                let prefix = ins
                    .get(3)
                    .map(|&p| g.g[p].shape.0[1].eval(w.batch, w.seq))
                    .unwrap_or(0);
                // Q·Kᵀ and P·V.
                let f = 4 * b * (*heads as u128) * s * (s + prefix) * (*head_dim as u128);
                fwd += f;
                if node.requires_grad {
                    bwd += 2 * f;
                }
            }
            _ => {}
        }
    }
    Ok(FlopReport {
        forward: fit(fwd, "the forward FLOPs of one step", w)?,
        backward: fit(bwd, "the backward FLOPs of one step", w)?,
        per_step: fit(fwd + bwd, "the FLOPs of one step", w)?,
    })
}
