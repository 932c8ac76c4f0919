//! Training memory of one step, per component.
//!
//! The model follows peftc's runtime, which keeps only what backward needs:
//! - frozen base weights in the compute dtype, but a quantized GGUF's
//!   matrices, which stay in their blocks unless `train { base = f32 }`
//!   (on the CPU; GPU backends expand them, see the runtime's `PACKED`);
//! - trainable weights, their gradients and the optimizer state in f32;
//! - activations saved for backward, each tensor once however many ops read it
//!   (a frozen linear saves nothing: its input gradient needs only the weight;
//!   dropout masks are regenerated from the seed, not stored);
//! - a workspace for the largest transient tensors of backward;
//! - a fixed runtime overhead (binary, allocator, tokenizer);
//! - for masks chosen by a dense phase before training (FishMask, LT-SFT,
//!   diff pruning), that phase's dense copies of the targeted weights: the
//!   peak is the larger of the phase and the training step.

use crate::ir::{Graph, LossKind, NodeId, Op};
use crate::train::{DType, OptimizerKind};
use serde::Serialize;
use std::collections::BTreeSet;

/// The shape of a training step.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Workload {
    pub batch: u64,
    pub seq: u64,
    pub dtype: DType,
    pub optimizer: OptimizerKind,
}

/// The frozen matrices held in their quantized blocks.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PackedBase {
    /// The dominant block format (`q4_1`).
    pub format: String,
    pub params: u64,
    pub bytes: u64,
}

impl PackedBase {
    /// What of `plan`'s base stays packed.
    pub fn of(plan: &crate::plan::Plan) -> Option<PackedBase> {
        let w = &plan.model.weights;
        (plan.base_packed() && w.packed_params > 0).then(|| PackedBase {
            format: w.dtype.clone(),
            params: w.packed_params,
            bytes: w.packed_bytes,
        })
    }
}

/// Bytes, per component.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemoryReport {
    pub frozen_weights: u64,
    /// The part of the frozen weights held in quantized blocks, if any.
    pub packed: Option<PackedBase>,
    pub trainable_weights: u64,
    pub gradients: u64,
    pub optimizer_state: u64,
    pub activations: u64,
    pub workspace: u64,
    pub runtime_overhead: u64,
    /// What a selection phase before training holds beside the base and
    /// the activations (0 for none).
    pub selection: u64,
    /// The resident peak: the training step (the components above but
    /// `selection`), or the selection phase where that is larger.
    pub peak: u64,
}

/// Process memory beyond tensors: code, allocator slack (mimalloc keeps freed
/// pages for reuse), tokenizer tables. Calibrated on measured peaks
/// (`/usr/bin/time -v peftc train`, 2026-12-04, after the loader stopped
/// copying each weight): with 80 MiB, MiniLM and SmolLM2 LoRA, SmolLM2 f32,
/// Qwen2.5-0.5B packed / f32 / NF4 and MeZO fall within ±10% of the peak
/// RSS; LST does not (see the workspace below).
const RUNTIME_OVERHEAD: u64 = 80 << 20;

/// Bytes of logits one chunk of the causal LM's fused head + loss holds (the
/// runtime's `kernels::head_loss`): the loss of a plain frozen head is taken
/// this many bytes of `[rows, vocab]` logits at a time.
pub const HEAD_CHUNK_BYTES: u64 = 32 << 20;

/// Rows of logits per chunk of the fused head + loss for `vocab` entries.
pub fn head_chunk_rows(vocab: usize) -> usize {
    (HEAD_CHUNK_BYTES as usize / 4usize.saturating_mul(vocab.max(1))).max(1)
}

/// An estimate too large for 64 bits: what it was and at which workload.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "{what} ({value}) does not fit in 64 bits at batch {batch} x seq {seq}: the workload or the model's dimensions are too large to estimate"
)]
pub struct Overflow {
    pub what: &'static str,
    pub value: u128,
    pub batch: u64,
    pub seq: u64,
}

/// `v` as a reported u64, or the overflow naming `what`.
pub(super) fn fit(v: u128, what: &'static str, w: &Workload) -> Result<u64, Overflow> {
    u64::try_from(v).map_err(|_| Overflow {
        what,
        value: v,
        batch: w.batch,
        seq: w.seq,
    })
}

/// Training memory of one step, or the component that does not fit 64 bits.
pub fn memory(
    g: &Graph,
    w: &Workload,
    packed: Option<&PackedBase>,
) -> Result<MemoryReport, Overflow> {
    let act_bytes = w.dtype.bytes() as u128;
    let mut frozen = 0u128;
    let mut trainable = 0u128;
    for n in g.g.node_indices() {
        frozen += g.g[n].frozen_params as u128;
        trainable += g.g[n].trainable_params as u128;
    }
    let numel = |n: NodeId| g.g[n].shape.numel(w.batch, w.seq);
    let mut saved: BTreeSet<NodeId> = BTreeSet::new();
    let mut extra = 0u128; // saved tensors that are not a node's output (probabilities, stats)
    // The logits a next-token loss reads take their own gradient in place
    // (the runtime's cross-entropy backward writes over them): they are saved
    // activations, not workspace.
    let in_place: BTreeSet<NodeId> =
        g.g.node_indices()
            .filter(|&n| matches!(g.g[n].op, Op::Loss(LossKind::NextToken { .. })))
            .filter_map(|n| g.inputs(n).first().copied())
            .collect();
    // A plain frozen head (no method on it) is applied inside the loss a
    // chunk of rows at a time: its logits never exist whole; the loss keeps
    // the head's input and, in the backward, one chunk's logits and their
    // gradient.
    let chunked_head: Option<(NodeId, NodeId)> =
        g.g.node_indices()
            .filter(|&n| matches!(g.g[n].op, Op::Loss(LossKind::NextToken { .. })))
            .filter_map(|n| g.inputs(n).first().copied())
            .find(|&h| matches!(g.g[h].op, Op::Linear { .. }) && g.g[h].trainable_params == 0)
            .and_then(|h| g.inputs(h).first().map(|&x| (h, x)));
    let mut head_chunk = 0u128;
    // The largest activation (but for logits, see `in_place`), and the
    // largest one backward differentiates.
    let (mut largest, mut largest_grad) = (0u128, 0u128);
    let mut selection = 0u128;
    for n in g.g.node_indices() {
        let node = &g.g[n];
        if let Op::Delta { cost, .. } = &node.op {
            selection += cost.selection_bytes as u128;
        }
        match chunked_head {
            Some((head, _)) if head == n => {
                let vocab = node.shape.last().map(|d| d.eval(1, 1)).unwrap_or(1).max(1);
                let rows = (numel(n) / vocab).min(head_chunk_rows(vocab as usize) as u128);
                head_chunk = 2 * rows * vocab;
            }
            _ if !in_place.contains(&n) => {
                largest = largest.max(numel(n));
                if node.requires_grad {
                    largest_grad = largest_grad.max(numel(n));
                }
            }
            _ => {}
        }
        if !node.requires_grad {
            continue;
        }
        let ins = g.inputs(n);
        let in_grad = |i: usize| ins.get(i).is_some_and(|&x| g.g[x].requires_grad);
        match &node.op {
            Op::Linear { .. }
                // The weight gradient needs the input; the input gradient does not.
                if node.trainable_params > 0 && node.frozen_params == 0 => {
                    saved.extend(ins.first());
                }
            Op::LayerNorm { .. } | Op::RmsNorm { .. }
                if in_grad(0) => {
                    saved.extend(ins.first());
                    extra += numel(n)
                        / node
                            .shape
                            .last()
                            .map(|d| d.eval(w.batch, w.seq))
                            .unwrap_or(1)
                            .max(1);
                }
            Op::Act(_) | Op::Ia3 { .. } | Op::ScaleShift { .. } => saved.extend(ins.first()),
            Op::Mul => saved.extend(ins.iter().take(2)),
            Op::Attention { heads, .. } => {
                saved.extend(ins.iter().take(4));
                // Softmax probabilities [B, heads, S, T].
                let q = ins
                    .first()
                    .map(|&x| g.g[x].shape.clone())
                    .unwrap_or_default();
                let s = q.0.get(1).map(|d| d.eval(w.batch, w.seq)).unwrap_or(0);
                let prefix = ins
                    .get(3)
                    .map(|&p| g.g[p].shape.0[1].eval(w.batch, w.seq))
                    .unwrap_or(0);
                extra += w.batch as u128 * *heads as u128 * s * (s + prefix);
            }
            Op::LoraDelta { r, .. } | Op::Dora { r, .. } => {
                saved.extend(ins.iter().take(2));
                let x = ins.first().map(|&x| numel(x)).unwrap_or(0);
                let in_f = ins
                    .first()
                    .and_then(|&x| g.g[x].shape.last())
                    .map(|d| d.eval(1, 1))
                    .unwrap_or(1)
                    .max(1);
                extra += x / in_f * *r as u128;
            }
            Op::Delta { cost, .. } => {
                saved.extend(ins.first());
                let x = ins.first().map(|&x| numel(x)).unwrap_or(0);
                let in_f = ins
                    .first()
                    .and_then(|&x| g.g[x].shape.last())
                    .map(|d| d.eval(1, 1))
                    .unwrap_or(1)
                    .max(1);
                extra += x / in_f * (cost.row_saved as u128 + cost.seq_saved as u128 * w.seq as u128)
                    + cost.step_saved as u128;
            }
            Op::Adapter { bottleneck, .. } => {
                saved.extend(ins.first());
                let x = ins.first().map(|&x| numel(x)).unwrap_or(0);
                let d_in = ins
                    .first()
                    .and_then(|&x| g.g[x].shape.last())
                    .map(|d| d.eval(1, 1))
                    .unwrap_or(1)
                    .max(1);
                extra += x / d_in * *bottleneck as u128;
            }
            Op::Loss(LossKind::Classify { classes }) => extra += w.batch as u128 * *classes as u128,
            Op::Loss(LossKind::NextToken { .. }) => match chunked_head {
                Some((_, hidden)) => {
                    saved.insert(hidden);
                }
                None => saved.extend(ins.first()),
            },
            _ => {}
        }
    }
    let trainable_bytes = trainable * 4;
    // (saved activations, gradients, optimizer state). MeZO runs forward
    // passes only: nothing is saved for a backward, there are no gradients,
    // and its state is the copy of the parameters a step restores.
    let (activations, gradients, optimizer_state) = match w.optimizer {
        OptimizerKind::Adamw | OptimizerKind::Sgd => {
            let saved = (saved.iter().map(|&n| numel(n)).sum::<u128>() + extra) * act_bytes;
            let state = match w.optimizer {
                OptimizerKind::Adamw => 2 * trainable_bytes,
                OptimizerKind::Sgd | OptimizerKind::Mezo => 0,
            };
            (saved, trainable_bytes, state)
        }
        OptimizerKind::Mezo => (0, 0, trainable_bytes),
    };
    let workspace = match w.optimizer {
        // Backward holds a gradient and a scratch buffer the size of the
        // largest activation it differentiates beside the saved tensors
        // (a frozen backbone below every trainable tensor, as under LST,
        // takes no part in backward; its forward's temporaries, which this
        // does not price, are why LST's estimate is 12% / 14% under the
        // measured peak on MiniLM / SmolLM2, 2026-12-04).
        OptimizerKind::Adamw | OptimizerKind::Sgd => (2 * largest_grad).max(head_chunk),
        // Forward passes only. A layer's transient tensors peak in its MLP
        // and attention: the projection's and the activation's outputs, the
        // attention's scores and probabilities, about four tensors of the
        // widest activation; the head's chunk holds its logits and the
        // cross-entropy's softmax of them (`head_chunk`'s two). The allocator
        // keeps the layers' freed pages while the head runs (sizes differ),
        // so the two add up. Measured (`/usr/bin/time -v peftc train`, LoRA
        // r=8 q,v, 4 steps, 2026-12-04): MiniLM at batch 16 / 32 / 64 × 64
        // peaks at 181 / 204 / 284 MiB against 191 / 215 / 263 estimated;
        // SmolLM2-135M Q4_1 at batch 1 / 4 / 8 × 128 (`eval_max = 16`) at
        // 240 / 266 / 242 MiB against 227 / 251 / 263. (Three tensors fit
        // batch 16 better, +2%, but missed batch 64 by −16%.)
        OptimizerKind::Mezo => 4 * largest + head_chunk,
    } * act_bytes;
    let frozen_weights = match packed {
        Some(p) => frozen.saturating_sub(p.params as u128) * act_bytes + p.bytes as u128,
        None => frozen * act_bytes,
    };
    let shared = frozen_weights + activations + workspace + RUNTIME_OVERHEAD as u128;
    let step = shared + trainable_bytes + gradients + optimizer_state;
    let peak = step.max(shared + selection);
    Ok(MemoryReport {
        frozen_weights: fit(frozen_weights, "the frozen weights' bytes", w)?,
        packed: packed.cloned(),
        trainable_weights: fit(trainable_bytes, "the trainable weights' bytes", w)?,
        gradients: fit(gradients, "the gradients' bytes", w)?,
        optimizer_state: fit(optimizer_state, "the optimizer state's bytes", w)?,
        activations: fit(activations, "the saved activations' bytes", w)?,
        workspace: fit(workspace, "the backward workspace's bytes", w)?,
        runtime_overhead: RUNTIME_OVERHEAD,
        selection: fit(selection, "the selection phase's bytes", w)?,
        peak: fit(peak, "the peak memory of one step", w)?,
    })
}
