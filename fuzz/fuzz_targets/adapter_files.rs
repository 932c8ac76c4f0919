//! Any bytes as an adapter: an `adapter_config.json` checked against each
//! fixture plan, and an `adapter_model.safetensors` read, renamed from HF's
//! names and loaded into each plan's parameters. Nothing may panic; a bad
//! file is an error.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use peftc_runtime::adapter::hf;
use peftc_runtime::model::{ParamStore, param_specs};
use peftc_runtime::weights::{HostTensor, parse_safetensors_all_float};
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let dir = Path::new("fuzz-adapter");
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let plans = common::plans();
    let plan = &plans[which as usize % plans.len()];
    if which & 0x80 == 0 {
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(rest) {
            let _ = hf::config::check(plan, &v, dir).map_err(|e| e.to_string());
        }
        return;
    }
    let Ok(tensors) = parse_safetensors_all_float(rest, &dir.join("adapter_model.safetensors"))
    else {
        return;
    };
    let Ok(renamed) = hf::import_tensors(plan, tensors, dir) else {
        return;
    };
    let mut store = ParamStore::default();
    for s in param_specs(plan) {
        store
            .values
            .insert(s.name.clone(), HostTensor::zeros(s.shape));
    }
    let _ = store.load_from(renamed, dir).map_err(|e| e.to_string());
});
