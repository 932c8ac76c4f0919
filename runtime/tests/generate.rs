//! Generation's KV cache against the full forward pass it replaces: on the
//! real SmolLM2, with methods that touch attention's past (a prefix, a soft
//! prompt) and ones that do not (LoRA, (IA)³, an adapter), the logits after
//! prefilling a prompt and then feeding one token at a time equal the last
//! position's logits of recomputing the whole sequence.

mod common;

use common::{close, plan};
use peftc_runtime::Cpu;
use peftc_runtime::data::Batch;
use peftc_runtime::model::{Params, PeftModel};
use peftc_runtime::session::Session;

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
        // Nonzero everywhere (LoRA's B starts at zero), so every method acts.
        for (name, t) in store.values.iter_mut() {
            if !store.frozen.contains(name) {
                for (i, x) in t.data.iter_mut().enumerate() {
                    *x += 0.02 * (((i * 7919) % 23) as f32 / 11.0 - 1.0);
                }
            }
        }
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
            let all = peftc_runtime::train::host(out.logits);
            let v = step.len();
            let last = &all[all.len() - v..];
            close(&format!("{statements}: step {i}"), step, last, 2e-5);
        }
    }
}
