//! The PEFT methods peftc knows. **A method is one file here**: its
//! arguments, placements and targets as data ([`MethodSpec`]), its typed
//! configuration, the tensors it declares per site ([`TensorDecl`]), how it
//! enters the graph ([`Lowering`]) and what it can do ([`Capabilities`]).
//! `table.rs` lists the methods; every other layer dispatches through it.
//! The runtime's side of each method is one file in `runtime/src/methods/`.

mod adalora;
mod adapter;
mod args;
mod bitfit;
mod coda;
mod dylora;
mod full;
mod ia3;
mod ln;
mod loha;
mod lokr;
mod lora;
mod lst;
mod mask;
mod method;
mod prefix;
mod prompt;
mod ptuning;
mod spec;
mod ssf;
mod table;
mod tensors;
mod vera;

pub use adalora::AdaloraConfig;
pub use adapter::{
    Activation, AdapterConfig, Prune, PruneSelect, SNIP_BATCHES, mask_name as adapter_mask_name,
};
pub use args::{ArgValue, Args, Scalar, check_args, check_keyed};
pub use coda::{CodaConfig, name as coda_name};
pub use dylora::{DyloraConfig, cut as cut_dylora};
pub use full::Full;
pub use loha::LohaConfig;
pub use lokr::{LokrConfig, factorization};
pub use lora::{BiasMode, LOFTQ_A, LOFTQ_B, LoraConfig, LoraInit};
pub use lst::{
    EMBED_DOWN as LST_EMBED_DOWN, GATE_TEMPERATURE as LST_GATE_TEMPERATURE, LstConfig, SideDims,
    UP as LST_UP, name as lst_name,
};
pub use mask::{MaskBy, MaskConfig, MaskSelect, MaskStructure, index_name, values_name};
pub use method::{Capabilities, Loftq, Lowering, SiteMethod, Wiring, gate_tensors};
pub use prefix::PrefixConfig;
pub use prompt::{PromptConfig, PromptInit};
pub use ptuning::{LSTM_LAYERS, PromptEncoder, PtuningConfig};
pub use spec::{ArgSpec, ArgType, Default, MethodSpec, TargetKind};
pub use ssf::names as ssf_names;
pub use table::{METHODS, MethodConfig, MethodKind, method};
pub use tensors::{Init, TensorDecl, TensorKind, plan_inference_tensors, plan_tensors, site_name};
pub use vera::VeraConfig;
