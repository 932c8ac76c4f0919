//! The one table of methods. Adding a method: a file in this folder (its
//! [`MethodSpec`] and its [`SiteMethod`]), a variant in [`MethodKind`] and
//! [`MethodConfig`], and a row in each match below; the compiler then names
//! every other place that must learn about it (all matches over methods are
//! exhaustive).

use super::adalora::{self, AdaloraConfig};
use super::adapter::{self, AdapterConfig};
use super::bitfit::{self, Bitfit};
use super::coda::{self, CodaConfig};
use super::dylora::{self, DyloraConfig};
use super::full::{self, Full};
use super::ia3::{self, Ia3};
use super::ln::{self, Ln};
use super::loha::{self, LohaConfig};
use super::lokr::{self, LokrConfig};
use super::lora::{self, LoraConfig};
use super::lst::{self, LstConfig};
use super::mask::{self, MaskConfig};
use super::method::SiteMethod;
use super::prefix::{self, PrefixConfig};
use super::prompt::{self, PromptConfig};
use super::ptuning::{self, PtuningConfig};
use super::spec::MethodSpec;
use super::ssf::{self, Ssf};
use super::vera::{self, VeraConfig};
use crate::model::Module;
use serde::{Deserialize, Serialize};

/// A method's name in the language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MethodKind {
    Lora,
    Dora,
    Ia3,
    Prompt,
    Prefix,
    Adapter,
    Bitfit,
    Vera,
    Loha,
    Lokr,
    Ln,
    Ptuning,
    Adalora,
    Mask,
    Ssf,
    Full,
    Dylora,
    Coda,
    Lst,
}

/// Every method the language knows, in the order `peftc` lists them.
pub const METHODS: &[&MethodSpec] = &[
    &lora::LORA,
    &lora::DORA,
    &ia3::SPEC,
    &prompt::SPEC,
    &prefix::SPEC,
    &adapter::SPEC,
    &bitfit::SPEC,
    &vera::SPEC,
    &loha::SPEC,
    &lokr::SPEC,
    &ln::SPEC,
    &ptuning::SPEC,
    &adalora::SPEC,
    &mask::SPEC,
    &ssf::SPEC,
    &full::SPEC,
    &dylora::SPEC,
    &coda::SPEC,
    &lst::SPEC,
];

impl MethodKind {
    pub fn spec(self) -> &'static MethodSpec {
        match self {
            MethodKind::Lora => &lora::LORA,
            MethodKind::Dora => &lora::DORA,
            MethodKind::Ia3 => &ia3::SPEC,
            MethodKind::Prompt => &prompt::SPEC,
            MethodKind::Prefix => &prefix::SPEC,
            MethodKind::Adapter => &adapter::SPEC,
            MethodKind::Bitfit => &bitfit::SPEC,
            MethodKind::Vera => &vera::SPEC,
            MethodKind::Loha => &loha::SPEC,
            MethodKind::Lokr => &lokr::SPEC,
            MethodKind::Ln => &ln::SPEC,
            MethodKind::Ptuning => &ptuning::SPEC,
            MethodKind::Adalora => &adalora::SPEC,
            MethodKind::Mask => &mask::SPEC,
            MethodKind::Ssf => &ssf::SPEC,
            MethodKind::Full => &full::SPEC,
            MethodKind::Dylora => &dylora::SPEC,
            MethodKind::Coda => &coda::SPEC,
            MethodKind::Lst => &lst::SPEC,
        }
    }
}

/// The method called `name`.
pub fn method(name: &str) -> Option<&'static MethodSpec> {
    METHODS.iter().copied().find(|m| m.name == name)
}

/// A method with concrete arguments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum MethodConfig {
    /// LoRA, and DoRA (`dora: true`).
    Lora(LoraConfig),
    Ia3,
    Prompt(PromptConfig),
    Prefix(PrefixConfig),
    Adapter(AdapterConfig),
    Bitfit,
    Vera(VeraConfig),
    Loha(LohaConfig),
    Lokr(LokrConfig),
    /// LN tuning.
    Ln,
    Ptuning(PtuningConfig),
    Adalora(AdaloraConfig),
    /// A sparse mask over a linear layer's weight.
    Mask(MaskConfig),
    /// SSF's scale and shift after a module.
    Ssf,
    /// Full fine-tuning of chosen modules.
    Full,
    Dylora(DyloraConfig),
    /// A conditional adapter beside a layer.
    Coda(CodaConfig),
    /// A ladder side network beside the layers.
    Lst(LstConfig),
}

impl MethodConfig {
    /// What the method knows about its sites.
    pub fn site(&self) -> &dyn SiteMethod {
        match self {
            MethodConfig::Lora(c) => c,
            MethodConfig::Ia3 => &Ia3,
            MethodConfig::Prompt(c) => c,
            MethodConfig::Prefix(c) => c,
            MethodConfig::Adapter(c) => c,
            MethodConfig::Bitfit => &Bitfit,
            MethodConfig::Vera(c) => c,
            MethodConfig::Loha(c) => c,
            MethodConfig::Lokr(c) => c,
            MethodConfig::Ln => &Ln,
            MethodConfig::Ptuning(c) => c,
            MethodConfig::Adalora(c) => c,
            MethodConfig::Mask(c) => c,
            MethodConfig::Ssf => &Ssf,
            MethodConfig::Full => &Full,
            MethodConfig::Dylora(c) => c,
            MethodConfig::Coda(c) => c,
            MethodConfig::Lst(c) => c,
        }
    }

    /// Short name: `lora`, `dora`, `ia3`, ...
    pub fn name(&self) -> &'static str {
        self.site().name()
    }

    /// Whether the method sits on its targets (BitFit only marks biases).
    pub fn places_sites(&self) -> bool {
        match self {
            MethodConfig::Lora(_)
            | MethodConfig::Ia3
            | MethodConfig::Prompt(_)
            | MethodConfig::Prefix(_)
            | MethodConfig::Adapter(_)
            | MethodConfig::Vera(_)
            | MethodConfig::Loha(_)
            | MethodConfig::Lokr(_)
            | MethodConfig::Ln
            | MethodConfig::Ptuning(_)
            | MethodConfig::Adalora(_)
            | MethodConfig::Mask(_)
            | MethodConfig::Ssf
            | MethodConfig::Full
            | MethodConfig::Dylora(_)
            | MethodConfig::Coda(_)
            | MethodConfig::Lst(_) => true,
            MethodConfig::Bitfit => false,
        }
    }

    /// The modules a statement's sites sit on: its targets, or for `full`
    /// the linear layers and norms under them.
    pub fn site_modules<'a>(&self, targets: &[&'a Module], all: &'a [Module]) -> Vec<&'a Module> {
        match self {
            MethodConfig::Full => Full::leaves(targets, all),
            MethodConfig::Lora(_)
            | MethodConfig::Ia3
            | MethodConfig::Prompt(_)
            | MethodConfig::Prefix(_)
            | MethodConfig::Adapter(_)
            | MethodConfig::Bitfit
            | MethodConfig::Vera(_)
            | MethodConfig::Loha(_)
            | MethodConfig::Lokr(_)
            | MethodConfig::Ln
            | MethodConfig::Ptuning(_)
            | MethodConfig::Adalora(_)
            | MethodConfig::Mask(_)
            | MethodConfig::Ssf
            | MethodConfig::Dylora(_)
            | MethodConfig::Coda(_)
            | MethodConfig::Lst(_) => targets.to_vec(),
        }
    }

    /// The existing biases a statement of this method makes trainable.
    pub fn biases(&self, targets: &[&Module], all: &[Module]) -> Vec<String> {
        match self {
            MethodConfig::Lora(c) => c.biases(targets, all),
            MethodConfig::Bitfit => Bitfit::biases(targets, all),
            MethodConfig::Ia3
            | MethodConfig::Prompt(_)
            | MethodConfig::Prefix(_)
            | MethodConfig::Adapter(_)
            | MethodConfig::Vera(_)
            | MethodConfig::Loha(_)
            | MethodConfig::Lokr(_)
            | MethodConfig::Ln
            | MethodConfig::Ptuning(_)
            | MethodConfig::Adalora(_)
            | MethodConfig::Mask(_)
            | MethodConfig::Ssf
            | MethodConfig::Full
            | MethodConfig::Dylora(_)
            | MethodConfig::Coda(_)
            | MethodConfig::Lst(_) => Vec::new(),
        }
    }
}
