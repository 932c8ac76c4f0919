//! Every fused kernel against its reference composition: outputs and the
//! gradient of every input, on the Flex backend under autodiff.

mod common;
use burn::tensor::{Tensor, TensorData};
use common::close;
use peftc_compiler::methods::Activation;
use peftc_runtime::burn;
use peftc_runtime::kernels::{self, AdapterFn, AdapterParams, AttnShape, reference};
use peftc_runtime::{Cpu, CpuTrain};
use std::sync::Arc;

type B = CpuTrain;

/// A standard-normal `[rows, cols]` from the seed alone: burn's generator is
/// global, and the tests run in parallel.
fn rand(shape: [usize; 2], seed: u64) -> Tensor<B, 2> {
    let v = peftc_runtime::rng::normal(seed, shape[0] * shape[1]);
    Tensor::<Cpu, 2>::from_data(TensorData::new(v, shape), &Default::default())
        .pipe(Tensor::from_inner)
        .require_grad()
}

trait Pipe: Sized {
    fn pipe<R>(self, f: impl FnOnce(Self) -> R) -> R {
        f(self)
    }
}
impl<T> Pipe for T {}

fn host(t: Tensor<Cpu, 2>) -> Vec<f32> {
    t.into_data().into_vec::<f32>().expect("f32")
}

/// Loss `sum(y * r)` for a fixed random `r`, so every output element matters.
fn loss(y: Tensor<B, 2>, seed: u64) -> Tensor<B, 1> {
    let r = rand(y.dims(), seed).detach();
    (y * r).sum()
}

fn grad(
    t: &Tensor<B, 2>,
    g: &<B as burn::tensor::backend::AutodiffBackend>::Gradients,
) -> Vec<f32> {
    host(t.grad(g).expect("gradient"))
}

#[test]
fn gelu_matches_reference() {
    let x = rand([64, 96], 1).mul_scalar(3.0).detach().require_grad();
    let y1 = kernels::gelu(x.clone());
    let y2 = reference::gelu(x.clone());
    close(
        "gelu",
        &host(y1.clone().inner()),
        &host(y2.clone().inner()),
        1e-6,
    );
    let g1 = loss(y1, 7).backward();
    let g2 = loss(y2, 7).backward();
    close("dgelu", &grad(&x, &g1), &grad(&x, &g2), 1e-5);
}

#[test]
fn silu_mul_matches_reference() {
    let (g, u) = (rand([32, 80], 2), rand([32, 80], 3));
    let y1 = kernels::silu_mul(g.clone(), u.clone());
    let y2 = reference::silu_mul(g.clone(), u.clone());
    close(
        "silu_mul",
        &host(y1.clone().inner()),
        &host(y2.clone().inner()),
        1e-6,
    );
    let (a, b) = (loss(y1, 8).backward(), loss(y2, 8).backward());
    close("dg", &grad(&g, &a), &grad(&g, &b), 1e-5);
    close("du", &grad(&u, &a), &grad(&u, &b), 1e-5);
}

#[test]
fn layer_norm_matches_reference_with_trainable_affine() {
    let x = rand([48, 64], 4)
        .mul_scalar(5.0)
        .add_scalar(2.0)
        .detach()
        .require_grad();
    let (gamma, beta) = (rand([1, 64], 5), rand([1, 64], 6));
    let y1 = kernels::layer_norm(x.clone(), gamma.clone(), beta.clone(), 1e-12);
    let y2 = reference::layer_norm(x.clone(), gamma.clone(), beta.clone(), 1e-12);
    close(
        "layer_norm",
        &host(y1.clone().inner()),
        &host(y2.clone().inner()),
        1e-5,
    );
    let (a, b) = (loss(y1, 9).backward(), loss(y2, 9).backward());
    close("dx", &grad(&x, &a), &grad(&x, &b), 1e-4);
    close("dgamma", &grad(&gamma, &a), &grad(&gamma, &b), 1e-4);
    close("dbeta", &grad(&beta, &a), &grad(&beta, &b), 1e-5);
}

#[test]
fn rms_norm_matches_reference() {
    let (x, w) = (rand([40, 72], 10), rand([1, 72], 11));
    let y1 = kernels::rms_norm(x.clone(), w.clone(), 1e-5);
    let y2 = reference::rms_norm(x.clone(), w.clone(), 1e-5);
    close(
        "rms_norm",
        &host(y1.clone().inner()),
        &host(y2.clone().inner()),
        1e-5,
    );
    let (a, b) = (loss(y1, 12).backward(), loss(y2, 12).backward());
    close("dx", &grad(&x, &a), &grad(&x, &b), 1e-4);
    close("dw", &grad(&w, &a), &grad(&w, &b), 1e-4);
}

#[test]
fn dropout_matches_reference_and_drops_the_right_share() {
    let x = rand([128, 64], 13);
    let y1 = kernels::dropout(x.clone(), 0.25, 99);
    let y2 = reference::dropout(x.clone(), 0.25, 99);
    let v = host(y1.clone().inner());
    close("dropout", &v, &host(y2.clone().inner()), 1e-6);
    let zeros = v.iter().filter(|&&z| z == 0.0).count() as f64 / v.len() as f64;
    assert!((zeros - 0.25).abs() < 0.02, "dropped {zeros}");
    let (a, b) = (loss(y1, 14).backward(), loss(y2, 14).backward());
    close("ddropout", &grad(&x, &a), &grad(&x, &b), 1e-6);
}

fn attention_case(causal: bool, prefix: usize, dropout: f32, heads: usize, kv_heads: usize) {
    let (rows, seq, hd) = (3, 7, 8);
    let mut mask = vec![1u8; rows * seq];
    mask[seq - 2..seq].fill(0); // row 0: two padding tokens
    mask[2 * seq - 1] = 0; // row 1: one
    let s = AttnShape {
        rows,
        seq,
        heads,
        kv_heads,
        head_dim: hd,
        prefix,
        causal,
        key_mask: Arc::new(mask),
        dropout,
        dropout_key: 1234,
    };
    let n = rows * seq;
    let q = rand([n, heads * hd], 20);
    let k = rand([n, kv_heads * hd], 21);
    let v = rand([n, kv_heads * hd], 22);
    let pre = (prefix > 0).then(|| {
        (
            rand([prefix, kv_heads * hd], 23),
            rand([prefix, kv_heads * hd], 24),
        )
    });
    let y1 = kernels::attention(q.clone(), k.clone(), v.clone(), pre.clone(), &s);
    let (y2, _) = reference::attention(
        q.clone(),
        k.clone(),
        v.clone(),
        pre.clone().map(|p| p.0),
        pre.clone().map(|p| p.1),
        None,
        &s,
    );
    close(
        "attention",
        &host(y1.clone().inner()),
        &host(y2.clone().inner()),
        1e-5,
    );
    let (a, b) = (loss(y1, 25).backward(), loss(y2, 25).backward());
    close("dq", &grad(&q, &a), &grad(&q, &b), 1e-4);
    close("dk", &grad(&k, &a), &grad(&k, &b), 1e-4);
    close("dv", &grad(&v, &a), &grad(&v, &b), 1e-4);
    if let Some((pk, pv)) = &pre {
        close("dpk", &grad(pk, &a), &grad(pk, &b), 1e-4);
        close("dpv", &grad(pv, &a), &grad(pv, &b), 1e-4);
    }
}

#[test]
fn attention_bidirectional_with_padding() {
    attention_case(false, 0, 0.0, 4, 4);
}

#[test]
fn attention_causal_grouped_query() {
    attention_case(true, 0, 0.0, 6, 2);
}

#[test]
fn attention_with_prefix_and_gqa() {
    attention_case(true, 3, 0.0, 4, 2);
}

#[test]
fn attention_with_dropout() {
    attention_case(false, 2, 0.2, 4, 4);
}

#[test]
fn reference_attention_backward_matches_autodiff() {
    // The hand-written reference backward (used by backends without kernels)
    // against burn's own differentiation of the reference forward.
    let (rows, seq, heads, kv, hd, prefix) = (2, 5, 4, 2, 8, 2);
    let s = AttnShape {
        rows,
        seq,
        heads,
        kv_heads: kv,
        head_dim: hd,
        prefix,
        causal: true,
        key_mask: Arc::new(vec![1; rows * seq]),
        dropout: 0.1,
        dropout_key: 5,
    };
    let n = rows * seq;
    let (q, k, v) = (
        rand([n, heads * hd], 30),
        rand([n, kv * hd], 31),
        rand([n, kv * hd], 32),
    );
    let (pk, pv) = (rand([prefix, kv * hd], 33), rand([prefix, kv * hd], 34));
    let (y, probs) = reference::attention(
        q.clone(),
        k.clone(),
        v.clone(),
        Some(pk.clone()),
        Some(pv.clone()),
        None,
        &s,
    );
    let r = rand([n, heads * hd], 35).detach();
    let g = (y * r.clone()).sum().backward();
    let (dq, dk, dv, dpk, dpv) = reference::attention_backward(
        q.clone().inner(),
        k.clone().inner(),
        v.clone().inner(),
        Some(pk.clone().inner()),
        Some(pv.clone().inner()),
        probs.inner(),
        r.inner(),
        &s,
    );
    close("dq", &host(dq), &grad(&q, &g), 1e-4);
    close("dk", &host(dk), &grad(&k, &g), 1e-4);
    close("dv", &host(dv), &grad(&v, &g), 1e-4);
    close("dpk", &host(dpk.expect("dpk")), &grad(&pk, &g), 1e-4);
    close("dpv", &host(dpv.expect("dpv")), &grad(&pv, &g), 1e-4);
    let _ = TensorData::new(vec![0f32], [1]);
}

#[test]
fn rope_matches_reference_and_inverts() {
    let s = kernels::RopeShape {
        seq: 6,
        heads: 3,
        head_dim: 8,
        theta: 1e5,
        offset: 2,
    };
    let x = rand([12, 24], 40);
    let y1 = kernels::rope(x.clone(), &s);
    let y2 = reference::rope(x.clone(), &s, false);
    close(
        "rope",
        &host(y1.clone().inner()),
        &host(y2.clone().inner()),
        1e-6,
    );
    let back = reference::rope(y1.clone().detach(), &s, true);
    close(
        "rope inverse",
        &host(back.inner()),
        &host(x.clone().inner()),
        1e-5,
    );
    let (a, b) = (loss(y1, 41).backward(), loss(y2, 41).backward());
    close("drope", &grad(&x, &a), &grad(&x, &b), 1e-5);
}

#[test]
fn cross_entropy_matches_reference_with_ignored_rows() {
    let logits = rand([9, 50], 50).mul_scalar(4.0).detach().require_grad();
    let targets: Vec<i64> = vec![3, 0, 49, 7, 7, 12, 0, 1, 2];
    let weights: Vec<f32> = vec![1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0];
    let l1 = kernels::cross_entropy(logits.clone(), targets.clone(), weights.clone());
    let (l2, _) = reference::cross_entropy(logits.clone(), &Arc::new(targets), &Arc::new(weights));
    let (v1, v2) = (
        l1.clone()
            .inner()
            .into_data()
            .into_vec::<f32>()
            .expect("f32"),
        l2.clone()
            .inner()
            .into_data()
            .into_vec::<f32>()
            .expect("f32"),
    );
    close("loss", &v1, &v2, 1e-6);
    let (a, b) = (l1.backward(), l2.backward());
    close("dlogits", &grad(&logits, &a), &grad(&logits, &b), 1e-5);
}

#[test]
fn linear_matches_reference_for_frozen_and_trained_weights() {
    let x = rand([37, 24], 60);
    let w = rand([16, 24], 61);
    let b = rand([1, 16], 62);
    // Trained weight and bias (a classifier head).
    let y1 = kernels::linear(x.clone(), w.clone(), Some(b.clone()));
    let y2 = reference::linear(x.clone(), w.clone(), Some(b.clone()));
    close(
        "linear",
        &host(y1.clone().inner()),
        &host(y2.clone().inner()),
        1e-5,
    );
    let (a, c) = (loss(y1, 63).backward(), loss(y2, 63).backward());
    close("dx", &grad(&x, &a), &grad(&x, &c), 1e-5);
    close("dw", &grad(&w, &a), &grad(&w, &c), 1e-5);
    close("db", &grad(&b, &a), &grad(&b, &c), 1e-5);
    // Frozen weight, no bias: only the input's gradient exists.
    let wf = w.clone().detach();
    let y = kernels::linear(x.clone(), wf.clone(), None);
    let g = loss(y, 64).backward();
    let r = reference::linear(x.clone(), wf, None);
    close(
        "dx frozen",
        &grad(&x, &g),
        &grad(&x, &loss(r, 64).backward()),
        1e-5,
    );
}

#[test]
fn scale_cols_matches_reference() {
    let (x, l) = (rand([33, 20], 70), rand([1, 20], 71));
    let y1 = kernels::scale_cols(x.clone(), l.clone());
    let y2 = reference::scale_cols(x.clone(), l.clone());
    close(
        "scale",
        &host(y1.clone().inner()),
        &host(y2.clone().inner()),
        1e-6,
    );
    let (a, b) = (loss(y1, 72).backward(), loss(y2, 72).backward());
    close("dx", &grad(&x, &a), &grad(&x, &b), 1e-6);
    close("dl", &grad(&l, &a), &grad(&l, &b), 1e-5);
}

#[test]
fn dora_mix_matches_reference() {
    let (y, base, delta, mag) = (
        rand([70, 12], 80),
        rand([70, 12], 81),
        rand([70, 12], 82),
        rand([1, 12], 83),
    );
    let o1 = kernels::dora_mix(y.clone(), base.clone(), delta.clone(), mag.clone());
    let o2 = reference::dora_mix(y.clone(), base.clone(), delta.clone(), mag.clone());
    close(
        "mix",
        &host(o1.clone().inner()),
        &host(o2.clone().inner()),
        1e-6,
    );
    let (a, b) = (loss(o1, 84).backward(), loss(o2, 84).backward());
    for (name, t) in [
        ("dy", &y),
        ("dbase", &base),
        ("ddelta", &delta),
        ("dmag", &mag),
    ] {
        close(name, &grad(t, &a), &grad(t, &b), 1e-5);
    }
}

const ACTIVATIONS: [Activation; 4] = [
    Activation::Relu,
    Activation::Gelu,
    Activation::Silu,
    Activation::Tanh,
];

/// A bottleneck adapter's weights: `[r, d]`, `[1, r]`, `[o, r]`, `[1, o]`.
fn adapter_params(d: usize, r: usize, o: usize, seed: u64) -> AdapterParams<Tensor<B, 2>> {
    AdapterParams {
        down: rand([r, d], seed),
        down_bias: rand([1, r], seed + 1),
        up: rand([o, r], seed + 2),
        up_bias: rand([1, o], seed + 3),
    }
}

fn adapter_grads(
    x: &Tensor<B, 2>,
    w: &AdapterParams<Tensor<B, 2>>,
    g: &<B as burn::tensor::backend::AutodiffBackend>::Gradients,
) -> Vec<(&'static str, Vec<f32>)> {
    vec![
        ("dx", grad(x, g)),
        ("d down", grad(&w.down, g)),
        ("d down_bias", grad(&w.down_bias, g)),
        ("d up", grad(&w.up, g)),
        ("d up_bias", grad(&w.up_bias, g)),
    ]
}

/// The fused bottleneck adapter, parallel form (`res` and `x` distinct) and
/// serial form (`res` is `x`), against the reference differentiated by burn.
#[test]
fn adapter_matches_reference_for_every_activation() {
    for (i, act) in ACTIVATIONS.into_iter().enumerate() {
        let f = AdapterFn { act, scale: 0.7 };
        let seed = 100 + 10 * i as u64;
        let (x, res) = (rand([45, 24], seed), rand([45, 20], seed + 1));
        let w = adapter_params(24, 6, 20, seed + 2);
        let y1 = kernels::adapter(res.clone(), x.clone(), w.clone(), f);
        let (y2, _) = reference::adapter(res.clone(), x.clone(), w.clone(), f);
        let what = format!("{act:?} parallel");
        close(
            &what,
            &host(y1.clone().inner()),
            &host(y2.clone().inner()),
            1e-5,
        );
        let (a, b) = (loss(y1, seed + 7).backward(), loss(y2, seed + 7).backward());
        close(
            &format!("{what} dres"),
            &grad(&res, &a),
            &grad(&res, &b),
            1e-6,
        );
        for ((name, g1), (_, g2)) in adapter_grads(&x, &w, &a)
            .into_iter()
            .zip(adapter_grads(&x, &w, &b))
        {
            close(&format!("{what} {name}"), &g1, &g2, 1e-5);
        }

        // One graph differentiated before the next is built: burn loses a
        // reused leaf's gradient in the second of two graphs that are both
        // alive when the first backward runs (plain burn ops too).
        let w = adapter_params(24, 6, 24, seed + 8);
        let y2 = reference::adapter(x.clone(), x.clone(), w.clone(), f).0;
        let b = loss(y2.clone(), seed + 9).backward();
        let y1 = kernels::adapter(x.clone(), x.clone(), w.clone(), f);
        let what = format!("{act:?} serial");
        close(
            &what,
            &host(y1.clone().inner()),
            &host(y2.clone().inner()),
            1e-5,
        );
        let a = loss(y1, seed + 9).backward();
        for ((name, g1), (_, g2)) in adapter_grads(&x, &w, &a)
            .into_iter()
            .zip(adapter_grads(&x, &w, &b))
        {
            close(&format!("{what} {name}"), &g1, &g2, 1e-5);
        }
    }
}

/// Only the input's gradient (frozen adapter weights, e.g. an adapter that
/// was loaded, not trained): the backward asks for no weight gradient.
#[test]
fn adapter_with_frozen_weights_gives_the_input_gradient() {
    let f = AdapterFn {
        act: Activation::Gelu,
        scale: 2.0,
    };
    let x = rand([30, 16], 150);
    let w = adapter_params(16, 4, 16, 151).map(|t| t.detach());
    let y1 = kernels::adapter(x.clone(), x.clone(), w.clone(), f);
    let (y2, _) = reference::adapter(x.clone(), x.clone(), w.clone(), f);
    let (a, b) = (loss(y1, 155).backward(), loss(y2, 155).backward());
    close("dx", &grad(&x, &a), &grad(&x, &b), 1e-5);
}

/// The written-out chain rule of `reference::adapter_backward` (what the
/// kernels' backward is derived from) against burn's autodiff of the forward.
#[test]
fn reference_adapter_backward_matches_autodiff() {
    for (i, act) in ACTIVATIONS.into_iter().enumerate() {
        let f = AdapterFn { act, scale: 1.5 };
        let seed = 160 + 10 * i as u64;
        let (x, res) = (rand([21, 12], seed), rand([21, 10], seed + 1));
        let w = adapter_params(12, 5, 10, seed + 2);
        let (y, z) = reference::adapter(res, x.clone(), w.clone(), f);
        let dy = rand([21, 10], seed + 7).detach();
        let g = (y * dy.clone()).sum().backward();
        let by_hand = reference::adapter_backward(
            x.clone().inner(),
            z.inner(),
            w.clone().map(|t| t.inner()),
            dy.inner(),
            f,
            [true; 5],
        );
        let hand = [
            by_hand.x,
            by_hand.params.down,
            by_hand.params.down_bias,
            by_hand.params.up,
            by_hand.params.up_bias,
        ];
        for ((name, auto), hand) in adapter_grads(&x, &w, &g).into_iter().zip(hand) {
            let hand = host(hand.expect("asked for"));
            close(&format!("{act:?} {name}"), &hand, &auto, 1e-5);
        }
    }
}

/// The mask's sparse delta against its reference and against the dense
/// closed form `y + x·ΔWᵀ` (ΔW written out), with repeated rows and columns
/// among the positions and tokens past a chunk boundary.
#[test]
fn sparse_delta_matches_reference_and_dense_form() {
    use kernels::SparseIndex;
    let (n, i, o) = (37, 11, 9);
    let idx = SparseIndex {
        rows: vec![0, 0, 2, 3, 3, 3, 8],
        cols: vec![1, 10, 0, 2, 5, 9, 4],
    };
    let k = idx.len();
    let (y, x, v) = (rand([n, o], 90), rand([n, i], 91), rand([1, k], 92));
    let idx = Arc::new(idx);
    let y1 = kernels::sparse_delta(y.clone(), x.clone(), v.clone(), idx.clone());
    let y2 = kernels::sparse::reference(y.clone(), x.clone(), v.clone(), &idx);
    let mut dense = vec![0f32; o * i];
    let vs = host(v.clone().inner());
    for e in 0..k {
        dense[idx.rows[e] as usize * i + idx.cols[e] as usize] += vs[e];
    }
    let dw = Tensor::<Cpu, 2>::from_data(TensorData::new(dense, [o, i]), &Default::default());
    let y3 = y.clone().inner() + x.clone().inner().matmul(dw.transpose());
    close(
        "vs reference",
        &host(y1.clone().inner()),
        &host(y2.clone().inner()),
        1e-6,
    );
    close("vs dense", &host(y1.clone().inner()), &host(y3), 1e-5);
    let (a, b) = (loss(y1, 93).backward(), loss(y2, 93).backward());
    for (name, t) in [("dy", &y), ("dx", &x), ("dvalues", &v)] {
        close(name, &grad(t, &a), &grad(t, &b), 1e-5);
    }
}
