//! MeZO: the projected gradient its two forward passes measure is the
//! directional derivative `z · ∇L` that backpropagation gives (a central
//! finite difference of the real model), and a step moves the parameters by
//! exactly `−lr · g · z` with `z` regenerated from the step's seed.

mod common;
use common::plan;
use peftc_compiler::train::OptimizerKind;
use peftc_runtime::CpuTrain;
use peftc_runtime::data::Batch;
use peftc_runtime::model::{Params, PeftModel};
use peftc_runtime::rng::key;
use peftc_runtime::session::Session;
use peftc_runtime::train::NonFinitePolicy;
use peftc_runtime::train::mezo::{direction, mezo_step, projected_gradient};

type B = CpuTrain;

#[test]
fn projected_gradient_is_the_directional_derivative() {
    let mut plan = plan(
        "bert",
        "lora(r=4, alpha=8) on layers[*].attn.{q, v}",
        "classify",
    );
    let cfg = plan.train.as_mut().expect("train block");
    cfg.optimizer = OptimizerKind::Mezo;
    cfg.eps = 1e-3;
    let cfg = cfg.clone();
    let session = Session::open(plan.clone()).expect("session");
    let mut store = session.init_params(7).expect("init");
    common::perturb_lora_b(&mut store, 3, 0.01);
    let texts = [
        "Free entry in a weekly competition to win tickets, text WIN now",
        "I'll be home late tonight, keep some dinner for me",
        "URGENT: your mobile number has won a cash prize, call to claim",
    ];
    let ids: Vec<Vec<u32>> = texts
        .iter()
        .map(|t| session.tokenizer.encode(t, 64).expect("tokens"))
        .collect();
    let rows: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
    let batch = Batch::pad(&rows, Some(&[1, 0, 2]), session.tokenizer.pad_id);
    let dev = Default::default();
    let model = PeftModel::<B>::load(&plan, session.weights, &dev).expect("model");
    let (step, first_micro) = (4, 9);
    let before = store.values.clone();
    let (g, _) = projected_gradient(
        &model,
        &mut store,
        &cfg,
        std::slice::from_ref(&batch),
        first_micro,
        step,
        &dev,
    )
    .expect("projected gradient");
    assert_eq!(store.values, before, "the measurement leaves θ as it was");
    // Backpropagation with the same dropout masks (keyed by the micro-batch).
    let params = Params::<B>::tracked(&store, &dev);
    let ctx = model.ctx(&batch, true, key(&[cfg.seed, 0xD50, first_micro as u64]));
    let out = model
        .forward_for_loss(&batch, &params, &ctx)
        .expect("forward");
    let loss = model.training_loss(&out, &batch, &params).expect("loss");
    let grads = params.grads(&loss.backward(), &store);
    let z = direction(&store, &cfg, step);
    assert_eq!(z.len(), grads.len());
    let zg: f64 = z
        .iter()
        .map(|(name, z)| {
            z.iter()
                .zip(&grads[name].data)
                .map(|(a, b)| (*a as f64) * (*b as f64))
                .sum::<f64>()
        })
        .sum();
    let err = (g as f64 - zg).abs();
    assert!(
        err <= 0.03 * zg.abs() + 2e-3,
        "MeZO's projected gradient {g} against z·∇L = {zg}"
    );
    assert!(zg.abs() > 1e-2, "a direction with a real slope ({zg})");

    // The step: θ' = θ − lr·g·z (no weight decay here).
    let lr = 1e-3;
    let s = mezo_step(
        &model,
        &mut store,
        &cfg,
        std::slice::from_ref(&batch),
        first_micro,
        step,
        lr,
        NonFinitePolicy::Stop,
        &dev,
    )
    .expect("step");
    assert!(s.loss.is_finite() && s.skipped.is_none());
    for (name, z) in &z {
        let (new, old) = (&store.values[name].data, &before[name].data);
        for ((n, o), z) in new.iter().zip(old).zip(z) {
            let want = o - (lr as f32) * g * z;
            assert!((n - want).abs() <= 1e-6 * (1.0 + want.abs()), "{name}");
        }
    }
}
