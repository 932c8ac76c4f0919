//! Serving many adapters on one frozen base (S-LoRA / Punica style): a
//! continuous-batching engine that owns the model on one thread and takes
//! [`Command`]s from any number of request handlers.
//!
//! Each loop: take the commands that arrived, admit waiting requests (each
//! prompt prefilled into its own KV cache, its adapter made resident), then
//! one decoding step for every active sequence at once: one forward pass,
//! each row routed to its adapter (`model::routes`), sequences of any length
//! side by side (`model::decode`). Finished sequences leave, new ones join
//! between steps. Events go back through each request's [`Sink`]; a sink
//! that reports its client gone frees the sequence's slot.
//!
//! - [`adapters`]: which adapters exist, which are resident (LRU), and
//!   the parameters a step reads.
//! - [`sequence`]: one request being decoded.
//! - [`run`]: the loop.
//! - [`metrics`]: what `/metrics` reports.

pub mod adapters;
pub mod metrics;
mod run;
mod sequence;

pub use adapters::Adapters;
pub use metrics::Metrics;
pub use run::{Engine, EngineConfig};

use crate::generate::{FinishReason, GenerateOptions};
use std::path::PathBuf;

/// What the engine is asked to do.
pub enum Command {
    /// Generate a continuation of `prompt` with the model `model` names.
    Generate(Request),
    /// Class probabilities of each text (classification specs).
    Classify {
        model: String,
        texts: Vec<String>,
        reply: Reply<Vec<Vec<f32>>>,
    },
    /// Make an adapter folder servable under `name` (checked against the spec).
    Load {
        name: String,
        path: PathBuf,
        reply: Reply<()>,
    },
    /// Stop serving `name` (sequences already running finish first).
    Unload { name: String, reply: Reply<()> },
    /// The servable names: the base model's (when served) and the adapters'.
    Models { reply: Reply<Vec<String>> },
}

/// Where the answer to a one-shot command goes.
pub type Reply<T> = Box<dyn FnOnce(Result<T, EngineError>) + Send>;

/// Receives a generation's events; returns false once nobody listens (the
/// client went away), which ends the sequence.
pub type Sink = Box<dyn FnMut(Event) -> bool + Send>;

pub struct Request {
    /// An adapter's name, or the base model's.
    pub model: String,
    /// Token ids, already checked against the context.
    pub prompt: Vec<u32>,
    pub options: GenerateOptions,
    pub sink: Sink,
}

/// A generation's progress, in order: text pieces, then `Done` or `Failed`.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Text(String),
    Done(Finished),
    Failed(EngineError),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub finish: FinishReason,
}

/// Why the engine refused or failed a command.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EngineError {
    /// No adapter (or base) of that name.
    #[error("the model `{0}` does not exist")]
    UnknownModel(String),
    /// The request or the adapter is wrong (the message says where).
    #[error("{0}")]
    Invalid(String),
    /// peftc's own failure.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<crate::error::RuntimeError> for EngineError {
    fn from(e: crate::error::RuntimeError) -> EngineError {
        match e {
            crate::error::RuntimeError::Internal(m) => EngineError::Internal(m),
            e => EngineError::Invalid(e.to_string()),
        }
    }
}
