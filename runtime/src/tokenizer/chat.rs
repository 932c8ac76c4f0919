//! Chat templates: the Jinja template a model ships (GGUF
//! `tokenizer.chat_template`, or `chat_template` in a Hugging Face
//! `tokenizer_config.json`) rendered as transformers' `apply_chat_template`
//! renders it (minijinja, with Python's string methods).

use crate::error::{Result, RuntimeError};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

#[derive(Debug, Clone)]
pub struct ChatTemplate {
    source: String,
    bos_token: String,
    eos_token: String,
}

impl ChatTemplate {
    pub fn new(source: String, bos_token: String, eos_token: String) -> ChatTemplate {
        ChatTemplate {
            source,
            bos_token,
            eos_token,
        }
    }

    /// The prompt text of `messages`, ending with the assistant's turn
    /// opened (`add_generation_prompt=True`).
    pub fn render(&self, messages: &[Message]) -> Result<String> {
        let mut env = minijinja::Environment::new();
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> std::result::Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    msg,
                ))
            },
        );
        let bad = |e: minijinja::Error| RuntimeError::Invalid(format!("chat template: {e}"));
        env.add_template("chat", &self.source).map_err(bad)?;
        let t = env.get_template("chat").map_err(bad)?;
        t.render(minijinja::context! {
            messages => messages,
            add_generation_prompt => true,
            bos_token => &self.bos_token,
            eos_token => &self.eos_token,
        })
        .map_err(bad)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_chatml_with_a_default_system_turn() {
        let t = ChatTemplate::new(
            "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nDefault<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] | trim + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}".into(),
            String::new(),
            "<|im_end|>".into(),
        );
        let m = |role: &str, content: &str| Message {
            role: role.into(),
            content: content.into(),
        };
        let out = t.render(&[m("user", "Hi ")]).expect("renders");
        assert_eq!(
            out,
            "<|im_start|>system\nDefault<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
        let bad = ChatTemplate::new("{% if %}".into(), String::new(), String::new());
        assert!(bad.render(&[]).is_err());
    }
}
