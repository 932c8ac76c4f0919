//! The fused ops on `Autodiff<B>`: when `B` has its own kernels, one graph node
//! per op whose backward calls `B`'s backward kernel (saving only what that
//! kernel needs); otherwise burn differentiates the reference composition.

use super::{
    AdapterFn, AdapterParams, AttnInputs, AttnShape, HeadWeight, PeftKernels, RopeShape,
    SparseIndex, head_loss, prim, reference, tensor,
};
use crate::weights::PackedMatrix;
use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::tensor::ops::FloatTensor;
use std::sync::Arc;

/// Adds `g` to the gradient of `parent` when that parent needs one.
macro_rules! register {
    ($b:ty, $grads:expr, $parent:expr, $g:expr) => {
        if let Some(node) = $parent {
            $grads.register::<$b>(node.id, $g);
        }
    };
}

/// [`register!`] for several `[parent, gradient]` pairs, each gradient an `Option`.
macro_rules! register_all {
    ($b:ty, $grads:expr, $([$parent:expr, $g:expr]),+) => {
        $(if let Some(g) = $g {
            register!($b, $grads, $parent, g);
        })+
    };
}

#[derive(Debug)]
struct GeluNode;

impl<B: PeftKernels> Backward<B, 1> for GeluNode {
    type State = FloatTensor<B>;
    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [px] = ops.parents;
        let dy = grads.consume::<B>(&ops.node);
        register!(B, grads, px, B::k_gelu_backward(ops.state, dy));
    }
}

#[derive(Debug)]
struct SiluMulNode;

impl<B: PeftKernels> Backward<B, 2> for SiluMulNode {
    type State = (FloatTensor<B>, FloatTensor<B>);
    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [pg, pu] = ops.parents;
        let dy = grads.consume::<B>(&ops.node);
        let (g, u) = ops.state;
        let (dg, du) = B::k_silu_mul_backward(g, u, dy);
        register!(B, grads, pg, dg);
        register!(B, grads, pu, du);
    }
}

#[derive(Debug)]
struct LayerNormNode;

impl<B: PeftKernels> Backward<B, 3> for LayerNormNode {
    type State = (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>);
    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [px, pg, pb] = ops.parents;
        let dy = grads.consume::<B>(&ops.node);
        let (x, gamma, stats) = ops.state;
        let (dx, dg, db) = B::k_layer_norm_backward(x, gamma, stats, dy);
        register!(B, grads, px, dx);
        register!(B, grads, pg, dg);
        register!(B, grads, pb, db);
    }
}

#[derive(Debug)]
struct RmsNormNode;

impl<B: PeftKernels> Backward<B, 2> for RmsNormNode {
    type State = (FloatTensor<B>, FloatTensor<B>, f64);
    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [px, pw] = ops.parents;
        let dy = grads.consume::<B>(&ops.node);
        let (x, w, eps) = ops.state;
        let (dx, dw) = B::k_rms_norm_backward(x, w, eps, dy);
        register!(B, grads, px, dx);
        register!(B, grads, pw, dw);
    }
}

#[derive(Debug)]
struct DropoutNode;

impl<B: PeftKernels> Backward<B, 1> for DropoutNode {
    type State = (f64, u64);
    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [px] = ops.parents;
        let dy = grads.consume::<B>(&ops.node);
        let (p, key) = ops.state;
        register!(B, grads, px, B::k_dropout(dy, p, key));
    }
}

#[derive(Debug)]
struct AttentionNode;

type AttnState<B> = (
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
    Option<FloatTensor<B>>,
    Option<FloatTensor<B>>,
    FloatTensor<B>,
    AttnShape,
);

impl<B: PeftKernels> Backward<B, 5> for AttentionNode {
    type State = AttnState<B>;
    fn backward(self, ops: Ops<Self::State, 5>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [pq, pk, pv, ppk, ppv] = ops.parents;
        let dout = grads.consume::<B>(&ops.node);
        let (q, k, v, kp, vp, probs, shape) = ops.state;
        let (dq, dk, dv, dpk, dpv) = B::k_attention_backward(
            AttnInputs {
                q,
                k,
                v,
                pk: kp,
                pv: vp,
            },
            probs,
            dout,
            &shape,
        );
        register!(B, grads, pq, dq);
        register!(B, grads, pk, dk);
        register!(B, grads, pv, dv);
        if let Some(g) = dpk {
            register!(B, grads, ppk, g);
        }
        if let Some(g) = dpv {
            register!(B, grads, ppv, g);
        }
    }
}

#[derive(Debug)]
struct RopeNode;

impl<B: PeftKernels> Backward<B, 1> for RopeNode {
    type State = RopeShape;
    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [px] = ops.parents;
        let dy = grads.consume::<B>(&ops.node);
        register!(B, grads, px, B::k_rope(dy, &ops.state, true));
    }
}

#[derive(Debug)]
struct CrossEntropyNode;

impl<B: PeftKernels> Backward<B, 1> for CrossEntropyNode {
    type State = (FloatTensor<B>, FloatTensor<B>, Arc<Vec<i64>>, Arc<Vec<f32>>);
    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [px] = ops.parents;
        let dloss = grads.consume::<B>(&ops.node);
        let (logits, lse, t, w) = ops.state;
        register!(
            B,
            grads,
            px,
            B::k_cross_entropy_backward(logits, lse, &t, &w, dloss)
        );
    }
}

#[derive(Debug)]
struct HeadCrossEntropyNode;

/// The hidden states, the head, targets, weights, rows per chunk and each
/// chunk's log-sum-exps: everything to recompute the chunks' logits.
type HeadState<B> = (
    FloatTensor<B>,
    HeadWeight<B>,
    Arc<Vec<i64>>,
    Arc<Vec<f32>>,
    usize,
    Vec<Option<FloatTensor<B>>>,
);

impl<B: PeftKernels> Backward<B, 1> for HeadCrossEntropyNode {
    type State = HeadState<B>;
    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [ph] = ops.parents;
        let dloss = grads.consume::<B>(&ops.node);
        let (h, head, t, w, rows, lses) = ops.state;
        register!(
            B,
            grads,
            ph,
            head_loss::backward::<B>(&h, &head, &t, &w, rows, lses, dloss)
        );
    }
}

#[derive(Debug)]
struct LinearNode;

impl<B: PeftKernels> Backward<B, 3> for LinearNode {
    /// The input (kept only when the weight trains), the weight, whether a bias exists.
    type State = (Option<FloatTensor<B>>, FloatTensor<B>, bool);
    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [px, pw, pb] = ops.parents;
        let dy = grads.consume::<B>(&ops.node);
        let (x, w, has_bias) = ops.state;
        let pb = if has_bias { pb } else { None };
        let need = [px.is_some(), pw.is_some() && x.is_some(), pb.is_some()];
        let (dx, dw, db) = B::k_linear_backward(x, w, dy, need);
        if let Some(g) = dx {
            register!(B, grads, px, g);
        }
        if let Some(g) = dw {
            register!(B, grads, pw, g);
        }
        if let Some(g) = db {
            register!(B, grads, pb, g);
        }
    }
}

#[derive(Debug)]
struct PackedLinearNode;

impl<B: PeftKernels> Backward<B, 2> for PackedLinearNode {
    /// The packed weight and whether a bias exists (the input is not kept:
    /// the frozen weight takes no gradient).
    type State = (Arc<PackedMatrix>, bool);
    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [px, pb] = ops.parents;
        let dy = grads.consume::<B>(&ops.node);
        let (w, has_bias) = ops.state;
        let pb = if has_bias { pb } else { None };
        if pb.is_some() {
            let db = prim(tensor::<B, 2>(dy.clone()).sum_dim(0));
            register!(B, grads, pb, db);
        }
        register!(B, grads, px, B::k_packed_linear_dx(&w, dy));
    }
}

#[derive(Debug)]
struct ScaleColsNode;

impl<B: PeftKernels> Backward<B, 2> for ScaleColsNode {
    /// The input (kept only when the scale trains) and the scale.
    type State = (Option<FloatTensor<B>>, FloatTensor<B>);
    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [px, pl] = ops.parents;
        let dy = grads.consume::<B>(&ops.node);
        let (x, l) = ops.state;
        if let (Some(x), Some(_)) = (x, &pl) {
            register!(B, grads, pl, B::k_col_dot(dy.clone(), x));
        }
        register!(B, grads, px, B::k_scale_cols(dy, l));
    }
}

#[derive(Debug)]
struct DoraMixNode;

impl<B: PeftKernels> Backward<B, 4> for DoraMixNode {
    /// `base + delta` (kept only when the magnitude trains) and the magnitude.
    type State = (Option<FloatTensor<B>>, FloatTensor<B>);
    fn backward(self, ops: Ops<Self::State, 4>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [py, pbase, pdelta, pmag] = ops.parents;
        let g = grads.consume::<B>(&ops.node);
        let (sum, mag) = ops.state;
        if let (Some(sum), Some(_)) = (sum, &pmag) {
            register!(B, grads, pmag, B::k_col_dot(g.clone(), sum));
        }
        if pbase.is_some() {
            let m1 = prim(tensor::<B, 2>(mag.clone()).sub_scalar(1.0));
            register!(B, grads, pbase, B::k_scale_cols(g.clone(), m1));
        }
        if pdelta.is_some() {
            register!(B, grads, pdelta, B::k_scale_cols(g.clone(), mag));
        }
        register!(B, grads, py, g);
    }
}

#[derive(Debug)]
struct LoraExpandNode;

impl<B: PeftKernels> Backward<B, 3> for LoraExpandNode {
    /// `u` (kept only when `b` trains), `b` (kept only when `u` needs a
    /// gradient), the scale.
    type State = (Option<FloatTensor<B>>, Option<FloatTensor<B>>, f64);
    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [py, pu, pb] = ops.parents;
        let dy = grads.consume::<B>(&ops.node);
        let (u, b, scale) = ops.state;
        let (du, db) = B::k_lora_expand_backward(
            u.filter(|_| pb.is_some()),
            b.filter(|_| pu.is_some()),
            dy.clone(),
            scale,
        );
        if let Some(g) = du {
            register!(B, grads, pu, g);
        }
        if let Some(g) = db {
            register!(B, grads, pb, g);
        }
        register!(B, grads, py, dy);
    }
}

#[derive(Debug)]
struct AdapterNode;

impl<B: PeftKernels> Backward<B, 6> for AdapterNode {
    /// `x` (kept only when the down projection's weight trains), `z`, the
    /// weights, the function.
    type State = (
        Option<FloatTensor<B>>,
        FloatTensor<B>,
        AdapterParams<FloatTensor<B>>,
        AdapterFn,
    );
    fn backward(self, ops: Ops<Self::State, 6>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [pres, px, pd, pdb, pu, pub_] = ops.parents;
        let dy = grads.consume::<B>(&ops.node);
        let (x, z, w, f) = ops.state;
        let need = [&px, &pd, &pdb, &pu, &pub_].map(|p| p.is_some());
        let g = B::k_adapter_backward(x, z, w, dy.clone(), f, need);
        register_all!(B, grads, [px, g.x], [pd, g.params.down]);
        register_all!(B, grads, [pdb, g.params.down_bias], [pu, g.params.up]);
        register_all!(B, grads, [pub_, g.params.up_bias]);
        register!(B, grads, pres, dy);
    }
}

#[derive(Debug)]
struct SparseDeltaNode;

impl<B: PeftKernels> Backward<B, 3> for SparseDeltaNode {
    /// `x` (kept only when the values train), the values (kept only when `x`
    /// needs a gradient), the positions, the input width.
    type State = (
        Option<FloatTensor<B>>,
        Option<FloatTensor<B>>,
        Arc<SparseIndex>,
        usize,
    );
    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [py, px, pv] = ops.parents;
        let dy = grads.consume::<B>(&ops.node);
        let (x, v, idx, in_f) = ops.state;
        let (dx, dv) = B::k_sparse_delta_backward(
            x.filter(|_| pv.is_some()),
            v.filter(|_| px.is_some()),
            &idx,
            dy.clone(),
            in_f,
        );
        register_all!(B, grads, [px, dx], [pv, dv]);
        register!(B, grads, py, dy);
    }
}

impl<B: PeftKernels, C: CheckpointStrategy> PeftKernels for Autodiff<B, C> {
    const PACKED: bool = B::PACKED;

    fn op_packed_linear(
        x: FloatTensor<Self>,
        w: Arc<PackedMatrix>,
        b: Option<FloatTensor<Self>>,
    ) -> FloatTensor<Self> {
        let nodes = [
            x.node.clone(),
            b.as_ref()
                .map(|t| t.node.clone())
                .unwrap_or_else(|| x.node.clone()),
        ];
        let has_bias = b.is_some();
        match PackedLinearNode
            .prepare::<C>(nodes)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let y = B::k_packed_linear(x.primitive, &w, b.map(|t| t.primitive));
                prep.finish((w, has_bias), y)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(B::k_packed_linear(x.primitive, &w, b.map(|t| t.primitive)))
            }
        }
    }

    fn op_sparse_delta(
        y: FloatTensor<Self>,
        x: FloatTensor<Self>,
        values: FloatTensor<Self>,
        idx: Arc<SparseIndex>,
    ) -> FloatTensor<Self> {
        if !B::FUSED {
            return prim(super::sparse::reference::<Self>(
                tensor(y),
                tensor(x),
                tensor(values),
                &idx,
            ));
        }
        let x_needs = x.node.clone_if_require_grad().is_some();
        let v_trains = values.node.clone_if_require_grad().is_some();
        let in_f = burn::tensor::TensorMetadata::shape(&x.primitive).dims::<2>()[1];
        match SparseDeltaNode
            .prepare::<C>([y.node.clone(), x.node.clone(), values.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let out = B::k_sparse_delta(
                    y.primitive,
                    x.primitive.clone(),
                    values.primitive.clone(),
                    &idx,
                );
                let state = (
                    v_trains.then_some(x.primitive),
                    x_needs.then_some(values.primitive),
                    idx,
                    in_f,
                );
                prep.finish(state, out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::k_sparse_delta(
                y.primitive,
                x.primitive,
                values.primitive,
                &idx,
            )),
        }
    }

    fn op_adapter(
        res: FloatTensor<Self>,
        x: FloatTensor<Self>,
        w: AdapterParams<FloatTensor<Self>>,
        f: AdapterFn,
    ) -> FloatTensor<Self> {
        if !B::FUSED {
            let (out, _) = reference::adapter::<Self>(tensor(res), tensor(x), w.map(tensor), f);
            return prim(out);
        }
        let down_trains = w.down.node.clone_if_require_grad().is_some();
        let nodes = [
            res.node.clone(),
            x.node.clone(),
            w.down.node.clone(),
            w.down_bias.node.clone(),
            w.up.node.clone(),
            w.up_bias.node.clone(),
        ];
        let inner = w.map(|t| t.primitive);
        match AdapterNode.prepare::<C>(nodes).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (out, z) = B::k_adapter(res.primitive, x.primitive.clone(), inner.clone(), f);
                let state = (down_trains.then_some(x.primitive), z, inner, f);
                prep.finish(state, out)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(B::k_adapter(res.primitive, x.primitive, inner, f).0)
            }
        }
    }

    fn op_lora_expand(
        y: FloatTensor<Self>,
        u: FloatTensor<Self>,
        b: FloatTensor<Self>,
        scale: f64,
    ) -> FloatTensor<Self> {
        if !B::FUSED {
            return prim(reference::lora_expand::<Self>(
                tensor(y),
                tensor(u),
                tensor(b),
                scale,
            ));
        }
        let u_needs = u.node.clone_if_require_grad().is_some();
        let b_trains = b.node.clone_if_require_grad().is_some();
        match LoraExpandNode
            .prepare::<C>([y.node.clone(), u.node.clone(), b.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let out =
                    B::k_lora_expand(y.primitive, u.primitive.clone(), b.primitive.clone(), scale);
                let state = (
                    b_trains.then_some(u.primitive),
                    u_needs.then_some(b.primitive),
                    scale,
                );
                prep.finish(state, out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::k_lora_expand(
                y.primitive,
                u.primitive,
                b.primitive,
                scale,
            )),
        }
    }

    fn op_scale_cols(x: FloatTensor<Self>, l: FloatTensor<Self>) -> FloatTensor<Self> {
        if !B::FUSED {
            return prim(reference::scale_cols::<Self>(tensor(x), tensor(l)));
        }
        let l_trains = l.node.clone_if_require_grad().is_some();
        match ScaleColsNode
            .prepare::<C>([x.node.clone(), l.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let y = B::k_scale_cols(x.primitive.clone(), l.primitive.clone());
                prep.finish((l_trains.then_some(x.primitive), l.primitive), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::k_scale_cols(x.primitive, l.primitive)),
        }
    }

    fn op_dora_mix(
        y: FloatTensor<Self>,
        base: FloatTensor<Self>,
        delta: FloatTensor<Self>,
        mag: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        if !B::FUSED {
            return prim(reference::dora_mix::<Self>(
                tensor(y),
                tensor(base),
                tensor(delta),
                tensor(mag),
            ));
        }
        let mag_trains = mag.node.clone_if_require_grad().is_some();
        let nodes = [
            y.node.clone(),
            base.node.clone(),
            delta.node.clone(),
            mag.node.clone(),
        ];
        match DoraMixNode.prepare::<C>(nodes).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let out = B::k_dora_mix(
                    y.primitive,
                    base.primitive.clone(),
                    delta.primitive.clone(),
                    mag.primitive.clone(),
                );
                let sum = mag_trains.then(|| {
                    prim(tensor::<B, 2>(base.primitive) + tensor::<B, 2>(delta.primitive))
                });
                prep.finish((sum, mag.primitive), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::k_dora_mix(
                y.primitive,
                base.primitive,
                delta.primitive,
                mag.primitive,
            )),
        }
    }

    fn op_linear(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: Option<FloatTensor<Self>>,
    ) -> FloatTensor<Self> {
        if !B::FUSED {
            return prim(reference::linear::<Self>(
                tensor(x),
                tensor(w),
                b.map(tensor),
            ));
        }
        let w_trains = w.node.clone_if_require_grad().is_some();
        let nodes = [
            x.node.clone(),
            w.node.clone(),
            b.as_ref()
                .map(|t| t.node.clone())
                .unwrap_or_else(|| x.node.clone()),
        ];
        let has_bias = b.is_some();
        match LinearNode.prepare::<C>(nodes).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let y = B::k_linear(
                    x.primitive.clone(),
                    w.primitive.clone(),
                    b.map(|t| t.primitive),
                );
                // A frozen weight's gradient is never computed, so its input is not kept.
                let keep = w_trains.then_some(x.primitive);
                prep.finish((keep, w.primitive, has_bias), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::k_linear(
                x.primitive,
                w.primitive,
                b.map(|t| t.primitive),
            )),
        }
    }

    fn op_rope(x: FloatTensor<Self>, s: &RopeShape) -> FloatTensor<Self> {
        if !B::FUSED {
            return prim(reference::rope::<Self>(tensor(x), s, false));
        }
        match RopeNode
            .prepare::<C>([x.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(s.clone(), B::k_rope(x.primitive, s, false)),
            OpsKind::UnTracked(prep) => prep.finish(B::k_rope(x.primitive, s, false)),
        }
    }

    fn op_cross_entropy(
        logits: FloatTensor<Self>,
        targets: Arc<Vec<i64>>,
        weights: Arc<Vec<f32>>,
    ) -> FloatTensor<Self> {
        if !B::FUSED {
            return prim(reference::cross_entropy::<Self>(tensor(logits), &targets, &weights).0);
        }
        match CrossEntropyNode
            .prepare::<C>([logits.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (loss, lse) = B::k_cross_entropy(logits.primitive.clone(), &targets, &weights);
                prep.finish((logits.primitive, lse, targets, weights), loss)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(B::k_cross_entropy(logits.primitive, &targets, &weights).0)
            }
        }
    }

    fn op_head_cross_entropy(
        hidden: FloatTensor<Self>,
        head: HeadWeight<Self>,
        targets: Arc<Vec<i64>>,
        weights: Arc<Vec<f32>>,
        rows: usize,
    ) -> FloatTensor<Self> {
        // The head is frozen: only the hidden states are a parent.
        let head = match head {
            HeadWeight::Dense(w) => HeadWeight::Dense(w.primitive),
            HeadWeight::Packed(w) => HeadWeight::Packed(w),
        };
        match HeadCrossEntropyNode
            .prepare::<C>([hidden.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let h = hidden.primitive;
                let (loss, lses) = head_loss::forward::<B>(&h, &head, &targets, &weights, rows);
                prep.finish((h, head, targets, weights, rows, lses), loss)
            }
            OpsKind::UnTracked(prep) => {
                let h = hidden.primitive;
                prep.finish(head_loss::forward::<B>(&h, &head, &targets, &weights, rows).0)
            }
        }
    }

    fn op_gelu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        if !B::FUSED {
            return prim(reference::gelu::<Self, 2>(tensor(x)));
        }
        match GeluNode
            .prepare::<C>([x.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let y = B::k_gelu(x.primitive.clone());
                prep.finish(x.primitive, y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::k_gelu(x.primitive)),
        }
    }

    fn op_silu_mul(g: FloatTensor<Self>, u: FloatTensor<Self>) -> FloatTensor<Self> {
        if !B::FUSED {
            return prim(reference::silu_mul::<Self>(tensor(g), tensor(u)));
        }
        match SiluMulNode
            .prepare::<C>([g.node.clone(), u.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let y = B::k_silu_mul(g.primitive.clone(), u.primitive.clone());
                prep.finish((g.primitive, u.primitive), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::k_silu_mul(g.primitive, u.primitive)),
        }
    }

    fn op_layer_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self> {
        if !B::FUSED {
            return prim(reference::layer_norm::<Self>(
                tensor(x),
                tensor(gamma),
                tensor(beta),
                eps,
            ));
        }
        match LayerNormNode
            .prepare::<C>([x.node.clone(), gamma.node.clone(), beta.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (y, stats) = B::k_layer_norm(
                    x.primitive.clone(),
                    gamma.primitive.clone(),
                    beta.primitive,
                    eps,
                );
                prep.finish((x.primitive, gamma.primitive, stats), y)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(B::k_layer_norm(x.primitive, gamma.primitive, beta.primitive, eps).0)
            }
        }
    }

    fn op_rms_norm(x: FloatTensor<Self>, w: FloatTensor<Self>, eps: f64) -> FloatTensor<Self> {
        if !B::FUSED {
            return prim(reference::rms_norm::<Self>(tensor(x), tensor(w), eps));
        }
        match RmsNormNode
            .prepare::<C>([x.node.clone(), w.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let y = B::k_rms_norm(x.primitive.clone(), w.primitive.clone(), eps);
                prep.finish((x.primitive, w.primitive, eps), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::k_rms_norm(x.primitive, w.primitive, eps)),
        }
    }

    fn op_dropout(x: FloatTensor<Self>, p: f64, key: u64) -> FloatTensor<Self> {
        if !B::FUSED {
            return prim(reference::dropout::<Self, 2>(tensor(x), p, key));
        }
        match DropoutNode
            .prepare::<C>([x.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let y = B::k_dropout(x.primitive, p, key);
                prep.finish((p, key), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::k_dropout(x.primitive, p, key)),
        }
    }

    fn op_attention(x: AttnInputs<Self>, s: &AttnShape) -> FloatTensor<Self> {
        if !B::FUSED {
            let (o, _) = reference::attention::<Self>(
                tensor(x.q),
                tensor(x.k),
                tensor(x.v),
                x.pk.map(tensor),
                x.pv.map(tensor),
                None,
                s,
            );
            return prim(o);
        }
        // Absent prefixes are untracked placeholders (their gradient is dropped).
        let none = || x.q.node.clone();
        let nodes = [
            x.q.node.clone(),
            x.k.node.clone(),
            x.v.node.clone(),
            x.pk.as_ref().map(|t| t.node.clone()).unwrap_or_else(none),
            x.pv.as_ref().map(|t| t.node.clone()).unwrap_or_else(none),
        ];
        let inner = |x: &AttnInputs<Self>| AttnInputs::<B> {
            q: x.q.primitive.clone(),
            k: x.k.primitive.clone(),
            v: x.v.primitive.clone(),
            pk: x.pk.as_ref().map(|t| t.primitive.clone()),
            pv: x.pv.as_ref().map(|t| t.primitive.clone()),
        };
        match AttentionNode.prepare::<C>(nodes).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (o, probs) = B::k_attention(inner(&x), s);
                let i = inner(&x);
                prep.finish((i.q, i.k, i.v, i.pk, i.pv, probs, s.clone()), o)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::k_attention(inner(&x), s).0),
        }
    }
}
