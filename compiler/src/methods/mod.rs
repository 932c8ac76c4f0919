//! The PEFT methods peftc knows: what each is called, which arguments it takes
//! (with types, defaults and ranges), where it may be placed, and the typed
//! configuration a checked statement becomes.
//!
//! Everything about a method that the checker needs is data in [`METHODS`]; the
//! checker has no per-method code beyond [`MethodConfig::from_args`].

mod args;
mod config;
mod registry;

pub use args::{ArgValue, Args, Scalar, check_args, check_keyed};
pub use config::{
    Activation, AdapterConfig, BiasMode, LoraConfig, LoraInit, MethodConfig, PrefixConfig,
    PromptConfig, PromptInit,
};
pub use registry::{
    ArgSpec, ArgType, Default, METHODS, MethodKind, MethodSpec, TargetKind, method,
};
