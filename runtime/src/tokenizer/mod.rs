//! Text to token ids: a Hugging Face `tokenizer.json` (BERT's WordPiece), or a
//! byte-level BPE rebuilt from a GGUF file's metadata.

pub mod chat;
mod gguf_bpe;

pub use chat::{ChatTemplate, Message};

use crate::error::{Result, RuntimeError};
use peftc_compiler::model::{ModelDesc, ModelSource};
use std::path::Path;
use tokenizers::Tokenizer;

/// A tokenizer and the special tokens peftc needs.
pub struct TextTokenizer {
    inner: Tokenizer,
    /// Id used to pad batches (masked out everywhere).
    pub pad_id: u32,
    /// Id appended between documents of an LM corpus.
    pub eos_id: Option<u32>,
    /// Whether encodings get the model's special tokens ([CLS] ... [SEP]).
    pub add_special: bool,
    /// The model's chat template, if it ships one.
    pub chat: Option<ChatTemplate>,
}

impl TextTokenizer {
    /// The tokenizer belonging to `model`: `tokenizer.json` beside its
    /// config.json, or the vocabulary in its GGUF file.
    pub fn for_model(model: &ModelDesc) -> Result<TextTokenizer> {
        let (dir, gguf) = match &model.source {
            ModelSource::Gguf(p) => (
                p.parent().unwrap_or(Path::new(".")).to_path_buf(),
                Some(p.clone()),
            ),
            ModelSource::ConfigJson(p) => {
                (p.parent().unwrap_or(Path::new(".")).to_path_buf(), None)
            }
        };
        let json = dir.join("tokenizer.json");
        if gguf.is_none() && json.is_file() {
            return Self::from_json(&json);
        }
        let gguf = match gguf {
            Some(g) => g,
            None => find_gguf(&dir).ok_or_else(|| {
                RuntimeError::read(
                    &json,
                    "no tokenizer.json, and no .gguf file to read a vocabulary from",
                )
            })?,
        };
        gguf_bpe::from_gguf(&gguf)
    }

    pub fn from_json(path: &Path) -> Result<TextTokenizer> {
        let mut inner = Tokenizer::from_file(path)
            .map_err(|e| RuntimeError::format(path, format!("not a tokenizer: {e}")))?;
        // Some tokenizer.json files (MiniLM's) pad and truncate to a fixed
        // length; peftc pads batches itself and truncates to the spec's seq_len.
        inner.with_padding(None);
        inner
            .with_truncation(None)
            .map_err(|e| RuntimeError::format(path, format!("cannot disable truncation: {e}")))?;
        let id = |t: &str| inner.token_to_id(t);
        let pad_id = id("[PAD]").or_else(|| id("<pad>")).unwrap_or(0);
        let eos_id = id("[SEP]").or_else(|| id("</s>"));
        let chat = chat_from_config(&path.with_file_name("tokenizer_config.json"));
        Ok(TextTokenizer {
            inner,
            pad_id,
            eos_id,
            add_special: true,
            chat,
        })
    }

    pub(crate) fn from_parts(
        inner: Tokenizer,
        pad_id: u32,
        eos_id: Option<u32>,
        add_special: bool,
        chat: Option<ChatTemplate>,
    ) -> TextTokenizer {
        TextTokenizer {
            inner,
            pad_id,
            eos_id,
            add_special,
            chat,
        }
    }

    /// The text of token `id` (special tokens included).
    pub fn token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Token ids of `text`, with special tokens where the model uses them,
    /// cut to at most `max_len` (keeping the closing special token).
    pub fn encode(&self, text: &str, max_len: usize) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, self.add_special)
            .map_err(|e| RuntimeError::Tokenizer(e.to_string()))?;
        let mut ids = enc.get_ids().to_vec();
        if ids.len() > max_len {
            let last = ids.last().copied();
            ids.truncate(max_len);
            // Keep a closing special token such as [SEP].
            if self.add_special
                && let (Some(l), Some(slot)) = (last, ids.last_mut())
                && enc.get_special_tokens_mask().last() == Some(&1)
            {
                *slot = l;
            }
        }
        Ok(ids)
    }

    /// Token ids without special tokens (for LM corpora).
    pub fn encode_plain(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| RuntimeError::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, true)
            .map_err(|e| RuntimeError::Tokenizer(e.to_string()))
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}

fn find_gguf(dir: &Path) -> Option<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
        })
}

/// A Hugging Face `tokenizer_config.json`'s `chat_template`, if any.
fn chat_from_config(path: &Path) -> Option<ChatTemplate> {
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    let token = |k: &str| match &v[k] {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Object(o) => o
            .get("content")
            .and_then(|c| c.as_str())
            .unwrap_or("")
            .to_string(),
        _ => String::new(),
    };
    let source = v["chat_template"].as_str()?.to_string();
    Some(ChatTemplate::new(
        source,
        token("bos_token"),
        token("eos_token"),
    ))
}
