//! Generation's KV cache against the full forward pass it replaces: on the
//! real SmolLM2, with methods that touch attention's past (a prefix, a soft
//! prompt) and ones that do not (LoRA, (IA)³, an adapter), the logits after
//! prefilling a prompt and then feeding one token at a time equal the last
//! position's logits of recomputing the whole sequence; and a batch of
//! sequences of different lengths, each with its own adapter, decoded
//! together (the serving engine's step) equals each decoded alone.

mod common;

use common::{close, plan};
use peftc_runtime::Cpu;
use peftc_runtime::data::Batch;
use peftc_runtime::model::routes::Routes;
use peftc_runtime::model::{ParamStore, Params, PeftModel};
use peftc_runtime::session::Session;
use std::sync::Arc;

#[test]
fn cached_steps_equal_the_full_forward_pass() {
    for statements in [
        "lora(r=4, alpha=8) on layers[*].attn.{q, v}",
        "prefix(len=3) on layers[*].attn\n    lora(r=4) on layers[*].mlp.up",
        "prompt(len=5) on embed\n    ia3() on layers[*].attn.{k, v}",
        "adapter(bottleneck=8) after layers[*].mlp",
    ] {
        let plan = plan("llama", statements, "causal_lm");
        let session = Session::open(plan.clone()).expect("session");
        let mut store = session.init_params(7).expect("init");
        perturb(&mut store, 0);
        let dev = Default::default();
        let model = PeftModel::<Cpu>::load(&plan, session.weights, &dev).expect("model");
        let p = Params::<Cpu>::constant(&store, &dev);
        let ids = session
            .tokenizer
            .encode_plain("The BBC reported on Tuesday that the")
            .expect("tokens");
        let more = [2_000u32, 17, 905, 44];
        let mut cache = model.new_cache();
        let mut cached = vec![model.step(&ids, &mut cache, &p).expect("prefill")];
        for &t in &more {
            cached.push(model.step(&[t], &mut cache, &p).expect("step"));
        }
        for (i, step) in cached.iter().enumerate() {
            let seq: Vec<u32> = ids.iter().chain(&more[..i]).copied().collect();
            let batch = Batch::pad(&[&seq], None, 0);
            let ctx = model.ctx(&batch, false, 0);
            let out = model.forward(&batch, &p, &ctx).expect("forward");
            let all = peftc_runtime::train::host(out.logits());
            let v = step.len();
            let last = &all[all.len() - v..];
            close(&format!("{statements}: step {i}"), step, last, 2e-5);
        }
    }
}

/// Nonzero everywhere (LoRA's B starts at zero), so every method acts;
/// `k` makes adapters differ.
fn perturb(store: &mut ParamStore, k: usize) {
    for (name, t) in store.values.iter_mut() {
        if !store.frozen.contains(name) {
            for (i, x) in t.data.iter_mut().enumerate() {
                *x += 0.02 * ((((i + 31 * k) * 7919) % 23) as f32 / 11.0 - 1.0);
            }
        }
    }
}

#[test]
fn a_batch_of_sequences_decodes_as_each_alone() {
    let prompts = [
        "The BBC reported on Tuesday that the",
        "Gardening tips:",
        "In 1998 the central bank of England raised",
    ];
    let more = [2_000u32, 17, 905];
    // Plain LoRA: three adapters in one routed parameter set, the rows out
    // of adapter order; other methods: one parameter set for the batch.
    let cases: [(&str, &[usize]); 3] = [
        ("lora(r=4, alpha=8) on layers[*].attn.{q, v}", &[2, 0, 1]),
        (
            "prefix(len=3) on layers[*].attn\n    lora(r=4) on layers[*].mlp.up",
            &[0, 0, 0],
        ),
        (
            "prompt(len=5) on embed\n    ia3() on layers[*].attn.{k, v}",
            &[0, 0, 0],
        ),
    ];
    for (statements, adapter_of) in cases {
        let plan = plan("llama", statements, "causal_lm");
        let session = Session::open(plan.clone()).expect("session");
        let adapters = adapter_of.iter().max().map_or(1, |m| m + 1);
        let stores: Vec<ParamStore> = (0..adapters)
            .map(|k| {
                let mut s = session.init_params(7).expect("init");
                perturb(&mut s, k);
                s
            })
            .collect();
        let dev = Default::default();
        let model = PeftModel::<Cpu>::load(&plan, session.weights, &dev).expect("model");
        let ids: Vec<Vec<u32>> = prompts
            .iter()
            .map(|p| session.tokenizer.encode_plain(p).expect("tokens"))
            .collect();
        // Each sequence alone, with its adapter's own parameters.
        let alone: Vec<Vec<Vec<f32>>> = ids
            .iter()
            .zip(adapter_of)
            .map(|(ids, &k)| {
                let p = Params::<Cpu>::constant(&stores[k], &dev);
                let mut cache = model.new_cache();
                let mut out = vec![model.step(ids, &mut cache, &p).expect("prefill")];
                for &t in &more {
                    out.push(model.step(&[t], &mut cache, &p).expect("step"));
                }
                out
            })
            .collect();
        // Together: prefilled one by one, then decoded as one batch.
        let routed = adapters > 1;
        let refs: Vec<&ParamStore> = stores.iter().collect();
        let p = if routed {
            Params::<Cpu>::routed(&refs, &dev)
        } else {
            Params::<Cpu>::constant(&stores[0], &dev)
        };
        let mut caches: Vec<_> = ids.iter().map(|_| model.new_cache()).collect();
        let mut together: Vec<Vec<Vec<f32>>> = Vec::new();
        for ((ids, cache), &k) in ids.iter().zip(caches.iter_mut()).zip(adapter_of) {
            let r = routed.then(|| Arc::new(Routes::new(&[k], adapters, ids.len(), &dev)));
            together.push(vec![model.step_routed(ids, cache, &p, r).expect("prefill")]);
        }
        for &t in &more {
            let r = routed.then(|| Arc::new(Routes::new(adapter_of, adapters, 1, &dev)));
            let mut refs: Vec<_> = caches.iter_mut().collect();
            let rows = model
                .decode(&vec![t; prompts.len()], &mut refs, &p, r)
                .expect("decode");
            for (seq, row) in together.iter_mut().zip(rows) {
                seq.push(row);
            }
        }
        for (i, (a, b)) in alone.iter().zip(&together).enumerate() {
            for (step, (x, y)) in a.iter().zip(b).enumerate() {
                close(
                    &format!("{statements}: sequence {i}, step {step}"),
                    y,
                    x,
                    1e-4,
                );
            }
        }
    }
}
