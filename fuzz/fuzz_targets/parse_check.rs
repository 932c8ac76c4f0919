//! Any text: parse it, and if it parses, check it against a real model config
//! (MiniLM or SmolLM2, chosen by the first byte), lower every block and build
//! its IR. Nothing may panic; errors must render.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peftc_compiler::estimate::Workload;
use peftc_compiler::train::{DType, OptimizerKind};
use peftc_compiler::{CheckOptions, check, compile_block};
use std::path::PathBuf;

fn configs() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/configs")
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let file = match peftc_grammar::parse(&text) {
        Ok(f) => f,
        Err(d) => {
            let _ = d.render("fuzz.peft", &text);
            return;
        }
    };
    let model = configs().join(if which % 2 == 0 {
        "minilm-l6"
    } else {
        "smollm2-135m"
    });
    let opts = CheckOptions {
        spec_dir: configs(),
        model_override: Some(model),
        lenient_data: true,
    };
    match check(&file, &opts) {
        Ok(c) => {
            let w = Workload {
                batch: 2,
                seq: 16,
                dtype: DType::F32,
                optimizer: OptimizerKind::Adamw,
            };
            for b in &c.blocks {
                if let Err(d) = compile_block(&c, b, None, w) {
                    let _ = d.render("fuzz.peft", &text);
                }
            }
        }
        Err(ds) => {
            let _ = peftc_grammar::render_all(&ds, "fuzz.peft", &text);
        }
    }
});
