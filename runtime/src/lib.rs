//! The peftc runtime: executes compiled plans on burn.
//!
//! - [`weights`]: base checkpoints (safetensors, GGUF) on the host.
//! - [`tokenizer`]: HF `tokenizer.json` and GGUF vocabularies.
//! - [`data`]: data sets, splits, batches.
//! - [`model`]: the plan's model on a burn backend, and its parameters.

pub mod atomic;
pub mod data;
pub mod devices;
pub mod engine;
pub mod error;
pub mod faults;
pub mod generate;
pub mod model;
pub mod rng;
pub mod tokenizer;
pub mod torch_rng;
pub mod weights;

pub use burn;
pub use error::{Result, RuntimeError};

/// The CPU backend: burn's Flex (pure Rust, rayon + SIMD, `gemm` matmuls).
pub type Cpu = burn::backend::Flex;
/// The CPU backend with autodiff, for training.
pub type CpuTrain = burn::backend::Autodiff<Cpu>;
pub mod adapter;
pub mod infer;
pub mod kernels;
pub mod merge;
pub mod methods;
pub mod session;
pub mod train;
