//! The chunked LM head + cross-entropy: its loss and hidden-state gradient
//! equal the whole-logits composition (`cross_entropy(hidden @ Wᵀ)`) at any
//! chunk size, and SmolLM2 trained through it (its tied head packed in Q8_0,
//! or expanded to f32) gets the loss and gradients it gets with the logits
//! built whole.

mod common;
use burn::tensor::{Tensor, TensorData};
use common::{close, plan};
use peftc_compiler::train::BaseForm;
use peftc_runtime::burn;
use peftc_runtime::data::Batch;
use peftc_runtime::kernels::{self, HeadWeight, head_loss, reference};
use peftc_runtime::model::{Params, PeftModel, Scores};
use peftc_runtime::session::Session;
use peftc_runtime::{Cpu, CpuTrain};
use std::sync::Arc;

type B = CpuTrain;

fn rand(shape: [usize; 2], seed: u64, scale: f32) -> Tensor<B, 2> {
    let v: Vec<f32> = peftc_runtime::rng::normal(seed, shape[0] * shape[1])
        .iter()
        .map(|x| x * scale)
        .collect();
    Tensor::<B, 2>::from_data(TensorData::new(v, shape), &Default::default())
}

fn host<const D: usize>(t: Tensor<Cpu, D>) -> Vec<f32> {
    t.into_data().into_vec::<f32>().expect("f32")
}

#[test]
fn chunked_head_loss_equals_the_whole_logits() {
    let (n, h, vocab) = (37, 64, 300);
    let w = rand([vocab, h], 7, 0.3).detach();
    let targets: Vec<i64> = (0..n).map(|i| (i * 53 % vocab) as i64).collect();
    // Ignored rows, a whole ignored run among them (chunks of 1 to 5 rows
    // that count nothing), as padding and prompts give.
    let weights: Vec<f32> = (0..n)
        .map(|i| {
            if i % 7 == 3 || (20..26).contains(&i) {
                0.0
            } else {
                1.0
            }
        })
        .collect();
    let hidden = rand([n, h], 3, 1.0).require_grad();
    let want = reference::cross_entropy(
        reference::linear(hidden.clone(), w.clone(), None),
        &Arc::new(targets.clone()),
        &Arc::new(weights.clone()),
    )
    .0;
    let want_dh = host(hidden.grad(&want.backward()).expect("dh"));
    let want = host(want.inner());
    for rows in [1, 5, 36, 37, 100] {
        let head = HeadWeight::dense(w.clone());
        let got = kernels::head_cross_entropy(
            hidden.clone(),
            head,
            targets.clone(),
            weights.clone(),
            rows,
        );
        let got_dh = host(hidden.grad(&got.backward()).expect("dh"));
        let got = host(got.inner());
        close(&format!("loss, {rows} rows a chunk"), &got, &want, 1e-6);
        close(
            &format!("dhidden, {rows} rows a chunk"),
            &got_dh,
            &want_dh,
            1e-5,
        );
    }
    // Nothing counted: a zero loss and a zero gradient, as the whole form gives.
    let zero = kernels::head_cross_entropy(
        hidden.clone(),
        HeadWeight::dense(w.clone()),
        targets,
        vec![0.0; n],
        8,
    );
    let dh = host(hidden.grad(&zero.backward()).expect("dh"));
    assert_eq!(host(zero.inner()), vec![0.0]);
    assert!(dh.iter().all(|&g| g == 0.0));
    assert!(head_loss::chunk_rows(vocab) >= n);
}

/// SmolLM2 with LoRA: the loss and every gradient through the chunked head
/// (two chunks of its 49,152-token vocabulary) equal those through the
/// whole logits, on its packed Q8_0 embedding and on the f32 expansion.
#[test]
fn smollm2_trains_through_the_chunked_head() {
    let text = "The frozen head of a causal language model multiplies every hidden state by \
        the whole vocabulary, which makes the logits the largest tensor of a training step. \
        Taking the loss a chunk of rows at a time keeps one chunk of them at once, and the \
        backward pass computes each chunk again from the hidden states it kept.";
    for base in [BaseForm::Packed, BaseForm::F32] {
        let mut plan = plan("llama", "lora(r=4) on layers[*].attn.{q, v}", "causal_lm");
        plan.train.as_mut().expect("train block").base = base;
        let session = Session::open(plan.clone()).expect("session");
        let mut store = session.init_params(5).expect("init");
        common::perturb_lora_b(&mut store, 13, 0.02);
        let ids = session
            .tokenizer
            .encode_plain(&format!("{text} {text}"))
            .expect("tokens");
        let chunk = head_loss::chunk_rows(plan.model.dims.vocab);
        let dev = Default::default();
        let model = PeftModel::<B>::load(&plan, session.weights, &dev).expect("model");
        let batch = Batch::pad(&[&ids, &ids[..ids.len() - 9]], None, 0);
        assert!(
            batch.rows * batch.seq > chunk,
            "{} positions make more than one chunk of {chunk}",
            batch.rows * batch.seq
        );
        let ctx = model.ctx(&batch, false, 0);
        let run = |deferred: bool| {
            let params = Params::<B>::tracked(&store, &dev);
            let out = if deferred {
                model.forward_for_loss(&batch, &params, &ctx)
            } else {
                model.forward(&batch, &params, &ctx)
            }
            .expect("forward");
            assert_eq!(matches!(out.scores, Scores::Deferred { .. }), deferred);
            let loss = model.training_loss(&out, &batch, &params).expect("loss");
            let value = host(loss.clone().inner());
            (value, params.grads(&loss.backward(), &store))
        };
        let (l_chunked, g_chunked) = run(true);
        let (l_whole, g_whole) = run(false);
        let what = format!("{base:?}");
        close(&format!("{what}: loss"), &l_chunked, &l_whole, 1e-6);
        assert_eq!(g_chunked.len(), g_whole.len());
        for (name, g) in &g_chunked {
            close(
                &format!("{what}: {name}"),
                &g.data,
                &g_whole[name].data,
                1e-5,
            );
        }
    }
}
