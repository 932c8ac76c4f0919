//! One fusion decision, made once: the fused kernels the compiler records in
//! the plan (the ones `peftc compile --emit ir` lists) are exactly the ones
//! that run, site by site. One test in this binary: the trace is global.

use peftc_compiler::ir::FusedOp;
use peftc_compiler::{CheckOptions, check, lower};
use peftc_runtime::Cpu;
use peftc_runtime::data::Batch;
use peftc_runtime::methods::trace;
use peftc_runtime::model::{Params, PeftModel};
use peftc_runtime::session::Session;
use std::collections::BTreeSet;
use std::path::PathBuf;

fn minilm() -> PathBuf {
    let cache = std::env::var_os("PEFTC_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/peftc")
        });
    let p = std::env::var_os("PEFTC_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache.join("assets"))
        .join("all-MiniLM-L6-v2");
    assert!(
        p.exists(),
        "missing {} — run scripts/fetch-assets",
        p.display()
    );
    p
}

#[test]
fn the_fused_kernels_that_run_are_the_plans() {
    let blocks = [
        "lora(r=4) on layers[*].attn.q\n dora(r=4) on layers[*].attn.v\n ia3() on layers[*].attn.k, layers[*].mlp.down\n adapter(bottleneck=8) after layers[*].mlp",
        "lora(r=4) on layers[*].attn.q gated\n dora(r=4) on layers[*].attn.v gated\n adapter(bottleneck=8, act=gelu) beside layers[*].attn gated\n prefix(len=2) on layers[0..2].attn gated",
        "lora(r=4) on layers[*].attn.q\n ia3() on layers[*].attn.q",
    ];
    for body in blocks {
        let spec = format!(
            "model \"{}\"\npeft b {{\n {body}\n}}\ntrain {{ adapter = b task = classify labels = 2 }}\n",
            minilm().display()
        );
        let file = peftc_grammar::parse(&spec).expect("parse");
        let checked = check(&file, &CheckOptions::default())
            .unwrap_or_else(|d| panic!("{}", peftc_grammar::render_all(&d, "spec", &spec)));
        let plan = lower(&checked, checked.block("b").expect("block"), None).expect("lower");
        let planned: BTreeSet<(String, FusedOp)> = plan
            .sites
            .iter()
            .filter_map(|s| Some((s.module.clone(), s.fusion?)))
            .collect();
        let session = Session::open(plan.clone()).expect("session");
        let store = session.init_params(0).expect("init");
        let model =
            PeftModel::<Cpu>::load(&plan, session.weights, &Default::default()).expect("load");
        let params = Params::<Cpu>::constant(&store, &Default::default());
        let ids: Vec<u32> = (100..116).collect();
        let batch = Batch::pad(&[&ids[..], &ids[..8]], Some(&[0, 1]), 0);
        trace::start();
        model
            .forward(&batch, &params, &model.ctx(&batch, false, 0))
            .expect("forward");
        let ran: BTreeSet<(String, FusedOp)> = trace::finish().into_iter().collect();
        assert_eq!(ran, planned, "for block:\n{body}");
        if body.contains("gated") {
            assert!(
                !planned
                    .iter()
                    .any(|(m, _)| m.contains("query") || m.contains("value")),
                "gated LoRA / DoRA sites are not fused"
            );
        }
    }
}
