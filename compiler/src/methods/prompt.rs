//! Prompt tuning (Lester et al. 2021): `len` trainable embeddings prepended
//! to the input embeddings.

use super::args::Args;
use super::method::{Capabilities, Lowering, SiteMethod, Wiring};
use super::spec::{
    ArgSpec, ArgType, Default, MethodSpec, ON, SIZE, TargetKind, choice, no_target_check, size,
};
use super::table::{MethodConfig, MethodKind};
use super::tensors::{Init, TensorDecl};
use crate::ir::Op;
use crate::model::Dims;
use crate::plan::Site;
use peftc_grammar::{Diagnostic, Span};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PromptInit {
    Random,
    /// Rows of the token embedding.
    Vocab,
    /// The embedding of a given text, repeated to the prompt length.
    Text,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptConfig {
    pub len: usize,
    pub init: PromptInit,
    pub text: Option<String>,
}

pub const SPEC: MethodSpec = MethodSpec {
    kind: MethodKind::Prompt,
    name: "prompt",
    placements: ON,
    target: TargetKind::Embedding,
    args: &[
        ArgSpec {
            name: "len",
            ty: SIZE,
            default: None,
            doc: "number of virtual tokens",
        },
        ArgSpec {
            name: "init",
            ty: ArgType::Choice(&["random", "vocab", "text"]),
            default: Some(Default::Name("random")),
            doc: "random normal, rows of the vocabulary, or the embedding of `text`",
        },
        ArgSpec {
            name: "text",
            ty: ArgType::Str,
            default: Some(Default::Unset),
            doc: "initial text for init=text",
        },
    ],
    gateable: false,
    doc: "soft prompt prepended to the input embeddings (Lester et al. 2021)",
    placement_note: "`prompt` modifies the module itself",
    exclusive: "soft prompt",
    single_target: true,
    scales_ffn_input: false,
    once_per_block: None,
    configure: |args, _| configure(args),
    check,
    check_targets: no_target_check,
};

fn configure(args: &Args) -> Option<MethodConfig> {
    Some(MethodConfig::Prompt(PromptConfig {
        len: size(args, "len")?,
        init: match choice(args, "init") {
            "vocab" => PromptInit::Vocab,
            "text" => PromptInit::Text,
            _ => PromptInit::Random,
        },
        text: args
            .fixed("text")
            .and_then(|v| v.as_str())
            .map(str::to_string),
    }))
}

fn check(args: &Args, call: Span) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    if args.fixed("init").and_then(|v| v.as_str()) == Some("text")
        && args.fixed("text").and_then(|v| v.as_str()).is_none()
    {
        out.push(
            Diagnostic::error("`init=text` needs the text to start from")
                .at(args.span("init").unwrap_or(call), "no `text`")
                .with_help("add `text=\"Classify the message:\"`"),
        );
    }
    out
}

impl SiteMethod for PromptConfig {
    fn name(&self) -> &'static str {
        "prompt"
    }

    fn tensors(&self, _: &Site, dims: &Dims) -> Vec<TensorDecl> {
        let init = match self.init {
            PromptInit::Random => Init::Normal(1.0),
            // Filled in by the runtime, which has the tokenizer's ids.
            PromptInit::Vocab | PromptInit::Text => Init::EmbeddingRows,
        };
        vec![TensorDecl::trainable(
            "prompt_embeddings",
            vec![self.len, dims.hidden],
            init,
        )]
    }

    fn lowering(&self, site: &Site, _: &Dims) -> Option<Lowering> {
        Some(Lowering {
            op: Op::PromptConcat {
                len: self.len,
                dim: site.out_dim,
            },
            wiring: Wiring::Output,
        })
    }

    fn capabilities(&self, _: &Site) -> Capabilities {
        Capabilities {
            merge: false,
            hf: true,
            routable: false,
        }
    }

    fn virtual_tokens(&self) -> usize {
        self.len
    }

    fn init_text(&self) -> Option<&str> {
        match self.init {
            PromptInit::Text => self.text.as_deref(),
            PromptInit::Random | PromptInit::Vocab => None,
        }
    }
}
