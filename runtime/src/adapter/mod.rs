//! Adapters on disk: peftc's own format and Hugging Face PEFT's.

pub mod hf;
pub mod hf_names;
pub mod native;
