//! Fused operations: each a backend-extension op with a hand-written backward,
//! beside a reference built from plain burn ops (burn's custom-kernel pattern).
//!
//! - [`PeftKernels`]: the extension trait. Its `k_*` methods are kernels
//!   (forward with saved state, backward); the defaults are the reference
//!   compositions. `FUSED` says whether a backend overrides them.
//! - `cpu/`: fast kernels for burn's Flex backend (rayon, in-place strided
//!   reads, no per-head copies, no stored dropout masks).
//! - `cube/`: CubeCL `#[cube]` kernels for burn's CubeBackend (wgpu, CUDA).
//! - `autodiff.rs`: the ops on `Autodiff<B>`: a graph node whose backward
//!   calls `B`'s backward kernel when `B::FUSED`, else burn differentiates the
//!   reference composition.
//! - `bottleneck.rs`: the bottleneck adapter op's types and its backward
//!   composed of a backend's linear and activation kernels.
//! - `reference.rs`: the compositions, which the tests hold the kernels to.
//!
//! The model calls the functions at the bottom of this file.

mod autodiff;
mod blas_cpu;
mod bottleneck;
mod cpu;
mod cube;
pub mod head_loss;
pub mod reference;
pub mod sparse;

pub use blas_cpu::use_the_cpus_kernels;
pub use bottleneck::{AdapterFn, AdapterGrads, AdapterNeed, AdapterParams};
pub use cube::Unsupported;
pub use head_loss::HeadWeight;
pub use sparse::SparseIndex;

pub use cpu::attention::AttnShape;

/// The kernels OpenBLAS chose for this CPU (`SkylakeX`, `Haswell`,
/// `Prescott`, ...); `None` when built without OpenBLAS.
pub fn blas_core() -> Option<String> {
    cpu::blas::core_name()
}
pub use cpu::rope::RopeShape;

/// Runs `f` on one of rayon's workers (the calling thread waits). A model
/// step is a chain of serial operations around a few hundred parallel
/// kernels; called from a thread outside the pool, each kernel hands its
/// work to the pool and puts the caller to sleep until it is done, and the
/// wake-up, plus the idle workers' spinning against the caller for the
/// cores, cost about as much as a small kernel. On a worker the caller
/// takes its share of each kernel and goes on at once.
pub fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    rayon::scope(|_| f())
}

use std::sync::Arc;

use crate::weights::PackedMatrix;
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Tensor, TensorPrimitive};
use peftc_compiler::methods::Activation;

pub(crate) fn tensor<B: Backend, const D: usize>(p: FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(p))
}

pub(crate) fn prim<B: Backend, const D: usize>(t: Tensor<B, D>) -> FloatTensor<B> {
    t.into_primitive().tensor()
}

/// Attention inputs: queries, keys, values `[rows*seq, ...]` and optional
/// learned prefix keys / values `[prefix, kv_heads*head_dim]`.
pub struct AttnInputs<B: Backend> {
    pub q: FloatTensor<B>,
    pub k: FloatTensor<B>,
    pub v: FloatTensor<B>,
    pub pk: Option<FloatTensor<B>>,
    pub pv: Option<FloatTensor<B>>,
}

pub trait PeftKernels: Backend {
    /// Whether the `k_*` kernels are this backend's own (fast) code.
    const FUSED: bool = false;
    /// Whether multi-adapter LoRA batches go through [`Self::k_sgmv`] (one
    /// kernel for all adapters) rather than one product per adapter segment.
    const SGMV: bool = false;
    /// Whether [`Self::k_packed_linear`] multiplies GGUF blocks itself; where
    /// it does not, the loader expands packed weights into dense tensors once.
    const PACKED: bool = false;

    fn k_gelu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        prim(reference::gelu::<Self, 2>(tensor(x)))
    }
    fn k_gelu_backward(x: FloatTensor<Self>, dy: FloatTensor<Self>) -> FloatTensor<Self> {
        prim(reference::gelu_backward::<Self>(tensor(x), tensor(dy)))
    }
    fn k_silu_mul(g: FloatTensor<Self>, u: FloatTensor<Self>) -> FloatTensor<Self> {
        prim(reference::silu_mul::<Self>(tensor(g), tensor(u)))
    }
    fn k_silu_mul_backward(
        g: FloatTensor<Self>,
        u: FloatTensor<Self>,
        dy: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (dg, du) = reference::silu_mul_backward::<Self>(tensor(g), tensor(u), tensor(dy));
        (prim(dg), prim(du))
    }
    /// LayerNorm and its per-row statistics `[n, 2]` (mean, rstd).
    fn k_layer_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        eps: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (y, s) =
            reference::layer_norm_with_stats::<Self>(tensor(x), tensor(gamma), tensor(beta), eps);
        (prim(y), prim(s))
    }
    /// `(dx, dgamma, dbeta)`.
    fn k_layer_norm_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        stats: FloatTensor<Self>,
        dy: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let (a, b, c) = reference::layer_norm_backward::<Self>(
            tensor(x),
            tensor(gamma),
            tensor(stats),
            tensor(dy),
        );
        (prim(a), prim(b), prim(c))
    }
    fn k_rms_norm(x: FloatTensor<Self>, w: FloatTensor<Self>, eps: f64) -> FloatTensor<Self> {
        prim(reference::rms_norm::<Self>(tensor(x), tensor(w), eps))
    }
    /// `(dx, dw)`.
    fn k_rms_norm_backward(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        eps: f64,
        dy: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (a, b) = reference::rms_norm_backward::<Self>(tensor(x), tensor(w), eps, tensor(dy));
        (prim(a), prim(b))
    }
    /// Dropout with the mask of `key` (the same call is its own backward).
    fn k_dropout(x: FloatTensor<Self>, p: f64, key: u64) -> FloatTensor<Self> {
        prim(reference::dropout::<Self, 2>(tensor(x), p, key))
    }
    /// Output `[rows*seq, heads*head_dim]` and probabilities `[rows, heads, seq, keys]`.
    fn k_attention(x: AttnInputs<Self>, s: &AttnShape) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (o, p) = reference::attention::<Self>(
            tensor(x.q),
            tensor(x.k),
            tensor(x.v),
            x.pk.map(tensor),
            x.pv.map(tensor),
            None,
            s,
        );
        (prim(o), prim(p))
    }
    /// `(dq, dk, dv, dpk, dpv)`; the prefix gradients are `None` without a prefix.
    #[allow(clippy::type_complexity)]
    fn k_attention_backward(
        x: AttnInputs<Self>,
        probs: FloatTensor<Self>,
        dout: FloatTensor<Self>,
        s: &AttnShape,
    ) -> (
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
        Option<FloatTensor<Self>>,
        Option<FloatTensor<Self>>,
    ) {
        let g = reference::attention_backward::<Self>(
            tensor(x.q),
            tensor(x.k),
            tensor(x.v),
            x.pk.map(tensor),
            x.pv.map(tensor),
            tensor(probs),
            tensor(dout),
            s,
        );
        (
            prim(g.0),
            prim(g.1),
            prim(g.2),
            g.3.map(prim),
            g.4.map(prim),
        )
    }

    /// Rotary embedding of `[rows*seq, heads*head_dim]` (`inverse`: rotates back).
    fn k_rope(x: FloatTensor<Self>, s: &RopeShape, inverse: bool) -> FloatTensor<Self> {
        prim(reference::rope::<Self>(tensor(x), s, inverse))
    }
    /// Mean weighted cross-entropy `[1]` of logits `[n, c]`, and each row's
    /// log-sum-exp `[n, 1]`.
    fn k_cross_entropy(
        logits: FloatTensor<Self>,
        targets: &Arc<Vec<i64>>,
        weights: &Arc<Vec<f32>>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (l, lse) = reference::cross_entropy::<Self>(tensor(logits), targets, weights);
        (prim(l), prim(lse))
    }
    fn k_cross_entropy_backward(
        logits: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        targets: &Arc<Vec<i64>>,
        weights: &Arc<Vec<f32>>,
        dloss: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        prim(reference::cross_entropy_backward::<Self>(
            tensor(logits),
            tensor(lse),
            targets,
            weights,
            tensor(dloss),
        ))
    }

    /// `x @ w.T + b` for `x: [n, in]`, `w: [out, in]`, `b: [1, out]`.
    fn k_linear(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: Option<FloatTensor<Self>>,
    ) -> FloatTensor<Self> {
        prim(reference::linear::<Self>(
            tensor(x),
            tensor(w),
            b.map(tensor),
        ))
    }
    /// Gradients of [`Self::k_linear`] that are asked for: `(dx, dw, db)`.
    #[allow(clippy::type_complexity)]
    fn k_linear_backward(
        x: Option<FloatTensor<Self>>,
        w: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        need: [bool; 3],
    ) -> (
        Option<FloatTensor<Self>>,
        Option<FloatTensor<Self>>,
        Option<FloatTensor<Self>>,
    ) {
        let (a, b, c) =
            reference::linear_backward::<Self>(x.map(tensor), tensor(w), tensor(dy), need);
        (a.map(prim), b.map(prim), c.map(prim))
    }

    /// `x @ w.T + b` for a frozen packed `w: [out, in]` (`x: [n, in]`,
    /// `b: [1, out]`).
    fn k_packed_linear(
        x: FloatTensor<Self>,
        w: &PackedMatrix,
        b: Option<FloatTensor<Self>>,
    ) -> FloatTensor<Self> {
        prim(reference::packed_linear::<Self>(
            tensor(x),
            w,
            b.map(tensor),
        ))
    }
    /// `dy @ w`, `[n, in]`: the input gradient of [`Self::k_packed_linear`].
    fn k_packed_linear_dx(w: &PackedMatrix, dy: FloatTensor<Self>) -> FloatTensor<Self> {
        prim(reference::packed_linear_dx::<Self>(w, tensor(dy)))
    }

    /// `x * l`, `l: [1, d]` broadcast over rows ((IA)³).
    fn k_scale_cols(x: FloatTensor<Self>, l: FloatTensor<Self>) -> FloatTensor<Self> {
        prim(tensor::<Self, 2>(x) * tensor::<Self, 2>(l))
    }
    /// `sum over rows of a * b`, `[1, d]`.
    fn k_col_dot(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self> {
        prim((tensor::<Self, 2>(a) * tensor::<Self, 2>(b)).sum_dim(0))
    }
    /// DoRA's output `y + base * (mag - 1) + delta * mag`, `mag: [1, d]`.
    fn k_dora_mix(
        y: FloatTensor<Self>,
        base: FloatTensor<Self>,
        delta: FloatTensor<Self>,
        mag: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        prim(reference::dora_mix::<Self>(
            tensor(y),
            tensor(base),
            tensor(delta),
            tensor(mag),
        ))
    }

    /// LoRA's expand-and-add `y + scale * u @ b.T` (`u: [n, r]`, `b: [out, r]`):
    /// the `[n, out]` delta is never a separate tensor.
    fn k_lora_expand(
        y: FloatTensor<Self>,
        u: FloatTensor<Self>,
        b: FloatTensor<Self>,
        scale: f64,
    ) -> FloatTensor<Self> {
        prim(reference::lora_expand::<Self>(
            tensor(y),
            tensor(u),
            tensor(b),
            scale,
        ))
    }
    /// `(du, db)` of [`Self::k_lora_expand`], each only when asked for.
    #[allow(clippy::type_complexity)]
    fn k_lora_expand_backward(
        u: Option<FloatTensor<Self>>,
        b: Option<FloatTensor<Self>>,
        dy: FloatTensor<Self>,
        scale: f64,
    ) -> (Option<FloatTensor<Self>>, Option<FloatTensor<Self>>) {
        let (du, db) = reference::lora_expand_backward::<Self>(
            u.map(tensor),
            b.map(tensor),
            tensor(dy),
            scale,
        );
        (du.map(prim), db.map(prim))
    }
    /// Batched multi-adapter LoRA (inference): row `i` of `y` gets
    /// `scales[ids[i]] * (x_i A_kᵀ) B_kᵀ` with the adapters stacked as in
    /// [`reference::sgmv`].
    fn k_sgmv(
        y: FloatTensor<Self>,
        x: FloatTensor<Self>,
        ids: &[u32],
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        scales: &[f32],
    ) -> FloatTensor<Self> {
        prim(reference::sgmv::<Self>(
            tensor(y),
            tensor(x),
            ids,
            tensor(a),
            tensor(b),
            scales,
        ))
    }

    /// A bottleneck adapter's activation `act(z)`.
    fn k_act(act: Activation, z: FloatTensor<Self>) -> FloatTensor<Self> {
        prim(reference::activation::<Self>(act, tensor(z)))
    }
    /// `dh ⊙ act'(z)`.
    fn k_act_backward(
        act: Activation,
        z: FloatTensor<Self>,
        dh: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        prim(reference::activation_backward::<Self>(
            act,
            tensor(z),
            tensor(dh),
        ))
    }
    /// A bottleneck adapter added onto `res`:
    /// `res + scale · (act(x W_downᵀ + b_down) W_upᵀ + b_up)`, and the
    /// pre-activation `z: [n, r]` its backward needs (see `bottleneck.rs`).
    fn k_adapter(
        res: FloatTensor<Self>,
        x: FloatTensor<Self>,
        w: AdapterParams<FloatTensor<Self>>,
        f: AdapterFn,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (out, z) = reference::adapter::<Self>(tensor(res), tensor(x), w.map(tensor), f);
        (prim(out), prim(z))
    }
    /// The gradients of [`Self::k_adapter`] that `need` asks for (`x` is
    /// given when its weight gradient is asked for); by default composed of
    /// this backend's linear and activation kernels.
    fn k_adapter_backward(
        x: Option<FloatTensor<Self>>,
        z: FloatTensor<Self>,
        w: AdapterParams<FloatTensor<Self>>,
        dy: FloatTensor<Self>,
        f: AdapterFn,
        need: AdapterNeed,
    ) -> AdapterGrads<FloatTensor<Self>> {
        bottleneck::backward_by_kernels::<Self>(x, z, w, dy, f, need)
    }

    /// A mask's sparse delta `y + x·ΔWᵀ` (`values: [1, k]` at `idx`; see
    /// `sparse.rs`).
    fn k_sparse_delta(
        y: FloatTensor<Self>,
        x: FloatTensor<Self>,
        values: FloatTensor<Self>,
        idx: &SparseIndex,
    ) -> FloatTensor<Self> {
        prim(sparse::reference::<Self>(
            tensor(y),
            tensor(x),
            tensor(values),
            idx,
        ))
    }
    /// `(dx, dvalues)` of [`Self::k_sparse_delta`]: `dx` when `values` is
    /// given, `dvalues` when `x` is.
    #[allow(clippy::type_complexity)]
    fn k_sparse_delta_backward(
        x: Option<FloatTensor<Self>>,
        values: Option<FloatTensor<Self>>,
        idx: &SparseIndex,
        dy: FloatTensor<Self>,
        in_f: usize,
    ) -> (Option<FloatTensor<Self>>, Option<FloatTensor<Self>>) {
        let (dx, dv) = sparse::reference_backward::<Self>(
            x.map(tensor),
            values.map(tensor),
            idx,
            tensor(dy),
            in_f,
        );
        (dx.map(prim), dv.map(prim))
    }

    // ---- the ops the model calls; `Autodiff<B>` overrides these with graph nodes.

    fn op_sparse_delta(
        y: FloatTensor<Self>,
        x: FloatTensor<Self>,
        values: FloatTensor<Self>,
        idx: Arc<SparseIndex>,
    ) -> FloatTensor<Self> {
        Self::k_sparse_delta(y, x, values, &idx)
    }

    fn op_adapter(
        res: FloatTensor<Self>,
        x: FloatTensor<Self>,
        w: AdapterParams<FloatTensor<Self>>,
        f: AdapterFn,
    ) -> FloatTensor<Self> {
        Self::k_adapter(res, x, w, f).0
    }

    fn op_lora_expand(
        y: FloatTensor<Self>,
        u: FloatTensor<Self>,
        b: FloatTensor<Self>,
        scale: f64,
    ) -> FloatTensor<Self> {
        Self::k_lora_expand(y, u, b, scale)
    }

    fn op_gelu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::k_gelu(x)
    }
    fn op_silu_mul(g: FloatTensor<Self>, u: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::k_silu_mul(g, u)
    }
    fn op_layer_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self> {
        Self::k_layer_norm(x, gamma, beta, eps).0
    }
    fn op_rms_norm(x: FloatTensor<Self>, w: FloatTensor<Self>, eps: f64) -> FloatTensor<Self> {
        Self::k_rms_norm(x, w, eps)
    }
    fn op_dropout(x: FloatTensor<Self>, p: f64, key: u64) -> FloatTensor<Self> {
        Self::k_dropout(x, p, key)
    }
    fn op_attention(x: AttnInputs<Self>, s: &AttnShape) -> FloatTensor<Self> {
        Self::k_attention(x, s).0
    }
    fn op_linear(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: Option<FloatTensor<Self>>,
    ) -> FloatTensor<Self> {
        Self::k_linear(x, w, b)
    }
    fn op_packed_linear(
        x: FloatTensor<Self>,
        w: Arc<PackedMatrix>,
        b: Option<FloatTensor<Self>>,
    ) -> FloatTensor<Self> {
        Self::k_packed_linear(x, &w, b)
    }
    fn op_scale_cols(x: FloatTensor<Self>, l: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::k_scale_cols(x, l)
    }
    fn op_dora_mix(
        y: FloatTensor<Self>,
        base: FloatTensor<Self>,
        delta: FloatTensor<Self>,
        mag: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        Self::k_dora_mix(y, base, delta, mag)
    }
    fn op_rope(x: FloatTensor<Self>, s: &RopeShape) -> FloatTensor<Self> {
        Self::k_rope(x, s, false)
    }
    fn op_cross_entropy(
        logits: FloatTensor<Self>,
        targets: Arc<Vec<i64>>,
        weights: Arc<Vec<f32>>,
    ) -> FloatTensor<Self> {
        Self::k_cross_entropy(logits, &targets, &weights).0
    }
    /// Mean cross-entropy `[1]` of `hidden @ Wᵀ` for a frozen head `W`,
    /// `rows` rows of logits at a time ([`head_loss`]).
    fn op_head_cross_entropy(
        hidden: FloatTensor<Self>,
        head: HeadWeight<Self>,
        targets: Arc<Vec<i64>>,
        weights: Arc<Vec<f32>>,
        rows: usize,
    ) -> FloatTensor<Self> {
        head_loss::forward::<Self>(&hidden, &head, &targets, &weights, rows).0
    }
}

pub fn gelu<B: PeftKernels>(x: Tensor<B, 2>) -> Tensor<B, 2> {
    tensor(B::op_gelu(prim(x)))
}

/// `silu(g) * u` (SwiGLU).
pub fn silu_mul<B: PeftKernels>(g: Tensor<B, 2>, u: Tensor<B, 2>) -> Tensor<B, 2> {
    tensor(B::op_silu_mul(prim(g), prim(u)))
}

/// LayerNorm over the last dimension; `gamma`, `beta`: `[1, d]`.
pub fn layer_norm<B: PeftKernels>(
    x: Tensor<B, 2>,
    gamma: Tensor<B, 2>,
    beta: Tensor<B, 2>,
    eps: f64,
) -> Tensor<B, 2> {
    tensor(B::op_layer_norm(prim(x), prim(gamma), prim(beta), eps))
}

/// RMSNorm; `w`: `[1, d]`.
pub fn rms_norm<B: PeftKernels>(x: Tensor<B, 2>, w: Tensor<B, 2>, eps: f64) -> Tensor<B, 2> {
    tensor(B::op_rms_norm(prim(x), prim(w), eps))
}

pub fn dropout<B: PeftKernels>(x: Tensor<B, 2>, p: f64, key: u64) -> Tensor<B, 2> {
    tensor(B::op_dropout(prim(x), p, key))
}

pub fn attention<B: PeftKernels>(
    q: Tensor<B, 2>,
    k: Tensor<B, 2>,
    v: Tensor<B, 2>,
    prefix: Option<(Tensor<B, 2>, Tensor<B, 2>)>,
    s: &AttnShape,
) -> Tensor<B, 2> {
    let (pk, pv) = match prefix {
        Some((a, b)) => (Some(prim(a)), Some(prim(b))),
        None => (None, None),
    };
    tensor(B::op_attention(
        AttnInputs {
            q: prim(q),
            k: prim(k),
            v: prim(v),
            pk,
            pv,
        },
        s,
    ))
}

/// Rotary position embedding of tokens at arbitrary positions (`positions[i]`
/// for row `i`): the reference composition, differentiated by autodiff.
pub fn rope_at<B: PeftKernels>(
    x: Tensor<B, 2>,
    positions: &[usize],
    heads: usize,
    head_dim: usize,
    theta: f64,
) -> Tensor<B, 2> {
    reference::rope_at(x, positions, heads, head_dim, theta)
}

/// Rotary position embedding (LLaMA's half-split form).
pub fn rope<B: PeftKernels>(x: Tensor<B, 2>, s: &RopeShape) -> Tensor<B, 2> {
    tensor(B::op_rope(prim(x), s))
}

/// Mean of `weights[r] * -log softmax(logits[r])[targets[r]]` over the
/// weights' sum (ignored rows have weight 0).
pub fn cross_entropy<B: PeftKernels>(
    logits: Tensor<B, 2>,
    targets: Vec<i64>,
    weights: Vec<f32>,
) -> Tensor<B, 1> {
    tensor(B::op_cross_entropy(
        prim(logits),
        Arc::new(targets),
        Arc::new(weights),
    ))
}

/// [`cross_entropy`] of `hidden @ Wᵀ` for a frozen head `W: [vocab, h]`
/// without building the logits whole: `rows` rows of them at a time, the
/// backward recomputing each chunk. Gradients reach `hidden` only.
pub fn head_cross_entropy<B: PeftKernels>(
    hidden: Tensor<B, 2>,
    head: HeadWeight<B>,
    targets: Vec<i64>,
    weights: Vec<f32>,
    rows: usize,
) -> Tensor<B, 1> {
    tensor(B::op_head_cross_entropy(
        prim(hidden),
        head,
        Arc::new(targets),
        Arc::new(weights),
        rows,
    ))
}

/// `x @ w.T + b`: `x: [n, in]`, `w: [out, in]` (PyTorch layout), `b: [1, out]`.
pub fn linear<B: PeftKernels>(
    x: Tensor<B, 2>,
    w: Tensor<B, 2>,
    b: Option<Tensor<B, 2>>,
) -> Tensor<B, 2> {
    tensor(B::op_linear(prim(x), prim(w), b.map(prim)))
}

/// `x @ w.T + b` for a frozen packed `w: [out, in]`; only `x` and `b` take gradients.
pub fn packed_linear<B: PeftKernels>(
    x: Tensor<B, 2>,
    w: &Arc<PackedMatrix>,
    b: Option<Tensor<B, 2>>,
) -> Tensor<B, 2> {
    tensor(B::op_packed_linear(prim(x), w.clone(), b.map(prim)))
}

/// `x * l` with `l: [1, d]` broadcast over the rows of `x: [n, d]`.
pub fn scale_cols<B: PeftKernels>(x: Tensor<B, 2>, l: Tensor<B, 2>) -> Tensor<B, 2> {
    tensor(B::op_scale_cols(prim(x), prim(l)))
}

/// DoRA's output: `y + base * (mag - 1) + delta * mag` (`mag: [1, d]`).
pub fn dora_mix<B: PeftKernels>(
    y: Tensor<B, 2>,
    base: Tensor<B, 2>,
    delta: Tensor<B, 2>,
    mag: Tensor<B, 2>,
) -> Tensor<B, 2> {
    tensor(B::op_dora_mix(prim(y), prim(base), prim(delta), prim(mag)))
}

/// `y + scale * u @ b.T` for LoRA's `u = drop(x) A.T: [n, r]` and `b: [out, r]`.
pub fn lora_expand<B: PeftKernels>(
    y: Tensor<B, 2>,
    u: Tensor<B, 2>,
    b: Tensor<B, 2>,
    scale: f64,
) -> Tensor<B, 2> {
    tensor(B::op_lora_expand(prim(y), prim(u), prim(b), scale))
}

/// A bottleneck adapter added onto `res`:
/// `res + f.scale · (act(x W_downᵀ + b_down) W_upᵀ + b_up)` in one op
/// (`x: [n, d]`, `res: [n, out]`; weights as in [`AdapterParams`]).
pub fn adapter<B: PeftKernels>(
    res: Tensor<B, 2>,
    x: Tensor<B, 2>,
    w: AdapterParams<Tensor<B, 2>>,
    f: AdapterFn,
) -> Tensor<B, 2> {
    tensor(B::op_adapter(prim(res), prim(x), w.map(prim), f))
}

/// Batched multi-adapter LoRA: `y` plus each row's own adapter's delta
/// (`ids[row]` indexes the stacked `a: [K*r, in]`, `b: [K*out, r]`, `scales: [K]`).
pub fn sgmv<B: PeftKernels>(
    y: Tensor<B, 2>,
    x: Tensor<B, 2>,
    ids: &[u32],
    a: Tensor<B, 2>,
    b: Tensor<B, 2>,
    scales: &[f32],
) -> Tensor<B, 2> {
    tensor(B::k_sgmv(prim(y), prim(x), ids, prim(a), prim(b), scales))
}

/// `y + x·ΔWᵀ` for a mask's sparse `ΔW` (`values: [1, k]` at the positions
/// `idx`), never forming `ΔW`.
pub fn sparse_delta<B: PeftKernels>(
    y: Tensor<B, 2>,
    x: Tensor<B, 2>,
    values: Tensor<B, 2>,
    idx: Arc<SparseIndex>,
) -> Tensor<B, 2> {
    tensor(B::op_sparse_delta(prim(y), prim(x), prim(values), idx))
}
