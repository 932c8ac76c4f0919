//! A byte-level BPE tokenizer rebuilt from GGUF metadata
//! (`tokenizer.ggml.model = "gpt2"`): vocabulary, merges, special tokens, and
//! the pre-tokenizer llama.cpp uses for `tokenizer.ggml.pre` (for SmolLM,
//! digits are split one by one before the GPT-2 split; for Qwen2, Qwen's own
//! split regex, without the NFC of its `tokenizer.json`, as transformers and
//! llama.cpp build it from a GGUF).

use super::{ChatTemplate, TextTokenizer};
use crate::error::{Result, RuntimeError};
use peftc_compiler::model::gguf::{GgufValue, read_header};
use std::path::Path;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::tokenizer::SplitDelimiterBehavior;
use tokenizers::{AddedToken, PreTokenizerWrapper, Tokenizer};

/// Qwen2's pre-tokenizer split (`tokenizer.json` of every Qwen2 / Qwen2.5
/// model; llama.cpp's `LLAMA_VOCAB_PRE_TYPE_QWEN2`): contractions, letters
/// with one leading non-letter, single digits, punctuation runs, newlines.
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Token types in `tokenizer.ggml.token_type`.
const CONTROL: i64 = 3;
const USER_DEFINED: i64 = 4;

pub fn from_gguf(path: &Path) -> Result<TextTokenizer> {
    let h = read_header(path).map_err(|e| RuntimeError::format(path, e.what.clone()))?;
    let bad = |what: &str| RuntimeError::format(path, format!("tokenizer metadata: {what}"));
    let model = h
        .get("tokenizer.ggml.model")
        .and_then(GgufValue::as_str)
        .unwrap_or("");
    if model != "gpt2" {
        return Err(bad(&format!(
            "tokenizer.ggml.model is `{model}`; peftc reads byte-level BPE (`gpt2`) vocabularies"
        )));
    }
    let tokens: Vec<&str> = h
        .get("tokenizer.ggml.tokens")
        .and_then(GgufValue::as_array)
        .ok_or_else(|| bad("no tokenizer.ggml.tokens"))?
        .iter()
        .map(|v| v.as_str().unwrap_or(""))
        .collect();
    let merges: Vec<(String, String)> = h
        .get("tokenizer.ggml.merges")
        .and_then(GgufValue::as_array)
        .ok_or_else(|| bad("no tokenizer.ggml.merges"))?
        .iter()
        .filter_map(|v| v.as_str())
        .filter_map(|m| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
        })
        .collect();
    let types: Vec<i64> = h
        .get("tokenizer.ggml.token_type")
        .and_then(GgufValue::as_array)
        .map(|a| a.iter().map(|v| v.as_f64().unwrap_or(1.0) as i64).collect())
        .unwrap_or_default();
    let vocab: tokenizers::models::bpe::Vocab = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.to_string(), i as u32))
        .collect();
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| bad(&format!("cannot build BPE: {e}")))?;
    let mut tok = Tokenizer::new(bpe);
    let byte_level = ByteLevel::new(false, true, true);
    let pre = h
        .get("tokenizer.ggml.pre")
        .and_then(GgufValue::as_str)
        .unwrap_or("default");
    let pre_tokenizer: PreTokenizerWrapper = match pre {
        // llama.cpp's LLAMA_VOCAB_PRE_TYPE_SMOLLM: `\p{N}` first, then GPT-2's split.
        "smollm" => Sequence::new(vec![Digits::new(true).into(), byte_level.into()]).into(),
        // Qwen's split, then the byte mapping alone (no second GPT-2 split).
        "qwen2" => {
            let split = Split::new(
                SplitPattern::Regex(QWEN2_SPLIT.into()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .map_err(|e| bad(&format!("cannot build the Qwen2 split: {e}")))?;
            Sequence::new(vec![
                split.into(),
                ByteLevel::new(false, true, false).into(),
            ])
            .into()
        }
        _ => byte_level.into(),
    };
    tok.with_pre_tokenizer(Some(pre_tokenizer));
    tok.with_decoder(Some(ByteLevel::default()));
    let specials: Vec<AddedToken> = tokens
        .iter()
        .zip(types.iter().chain(std::iter::repeat(&1)))
        .filter(|(_, t)| **t == CONTROL || **t == USER_DEFINED)
        .map(|(s, t)| AddedToken::from(s.to_string(), *t == CONTROL))
        .collect();
    tok.add_special_tokens(&specials);
    let id = |k: &str| h.get(k).and_then(|v| v.as_u64()).map(|v| v as u32);
    let eos = id("tokenizer.ggml.eos_token_id");
    let pad = id("tokenizer.ggml.padding_token_id").or(eos).unwrap_or(0);
    let add_bos = h
        .get("tokenizer.ggml.add_bos_token")
        .is_some_and(|v| matches!(v, GgufValue::Bool(true)));
    let text = |id: Option<u32>| {
        id.and_then(|i| tokens.get(i as usize))
            .map(|t| t.to_string())
            .unwrap_or_default()
    };
    let chat = h
        .get("tokenizer.chat_template")
        .and_then(GgufValue::as_str)
        .map(|t| {
            ChatTemplate::new(
                t.to_string(),
                text(id("tokenizer.ggml.bos_token_id")),
                text(eos),
            )
        });
    Ok(TextTokenizer::from_parts(tok, pad, eos, add_bos, chat))
}
