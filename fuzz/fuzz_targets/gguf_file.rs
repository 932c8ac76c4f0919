//! Any bytes as a GGUF file: the header (metadata, tensor directory) the
//! compiler reads for `peftc check`, then every tensor read as the runtime
//! loads weights (packed, and expanded to f32), with the head counts the header gives. Nothing may
//! panic or allocate past what the bytes can hold; a bad file is an error
//! naming the tensor.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz.gguf");
    let Ok(h) = peftc_compiler::model::gguf::parse_header(data, "fuzz.gguf") else {
        return;
    };
    let count = |key: &str, default: usize| {
        h.get(key)
            .and_then(|v| v.as_u64())
            .map_or(default, |n| n.clamp(1, 1 << 12) as usize)
    };
    let heads = count("llama.attention.head_count", 9);
    let kv = count("llama.attention.head_count_kv", heads);
    use peftc_runtime::weights::{GgufForm, decode_gguf};
    for form in [GgufForm::Packed, GgufForm::F32] {
        let _ = decode_gguf(data, path, heads, kv, form, &|_| {}).map_err(|e| e.to_string());
    }
});
