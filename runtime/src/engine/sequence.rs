//! One request being decoded: its cache, its sampler, its text so far.

use super::{EngineError, Event, Finished, Request, Sink};
use crate::generate::{FinishReason, GenerateOptions, TextStream, pick, sampling_rng};
use crate::kernels::PeftKernels;
use crate::model::KvCache;
use crate::rng::Rng;
use crate::tokenizer::TextTokenizer;

pub struct Sequence<B: PeftKernels> {
    /// The adapter slot it runs with.
    pub slot: usize,
    pub cache: KvCache<B>,
    /// The token the next step feeds.
    pub next: u32,
    prompt_tokens: usize,
    options: GenerateOptions,
    rng: Rng,
    stream: TextStream,
    sink: Sink,
}

/// What a sequence does after a step.
pub enum Next {
    /// Decode `next` in the following step.
    Continue,
    /// Finished; its events are sent.
    Done,
    /// Its client went away.
    Gone,
}

impl<B: PeftKernels> Sequence<B> {
    pub fn new(r: Request, slot: usize, cache: KvCache<B>) -> Sequence<B> {
        Sequence {
            slot,
            cache,
            next: 0,
            prompt_tokens: r.prompt.len(),
            rng: sampling_rng(r.options.seed),
            stream: TextStream::new(r.options.stop.clone()),
            options: r.options,
            sink: r.sink,
        }
    }

    /// Takes the logits after the last fed token: picks the next token (the
    /// same decisions, in the same order, as `generate::generate`).
    pub fn advance(&mut self, logits: &[f32], tok: &TextTokenizer, context: usize) -> Next {
        let n = self.stream.tokens().len();
        if n >= self.options.max_tokens || self.prompt_tokens + n >= context {
            return self.finish(FinishReason::Length);
        }
        let next = pick(logits, &self.options, &mut self.rng);
        if tok.eos_id == Some(next) {
            return self.finish(FinishReason::Stop);
        }
        let (piece, stopped) = match self.stream.push(tok, next) {
            Ok(x) => x,
            Err(e) => {
                self.fail(e.into());
                return Next::Gone;
            }
        };
        if !piece.is_empty() && !(self.sink)(Event::Text(piece)) {
            return Next::Gone;
        }
        if stopped {
            return self.finish(FinishReason::Stop);
        }
        self.next = next;
        Next::Continue
    }

    pub fn generated(&self) -> usize {
        self.stream.tokens().len()
    }

    /// Ends the sequence with an error event.
    pub fn fail(&mut self, e: EngineError) {
        (self.sink)(Event::Failed(e));
    }

    fn finish(&mut self, finish: FinishReason) -> Next {
        let rest = self.stream.finish();
        if !rest.is_empty() && !(self.sink)(Event::Text(rest)) {
            return Next::Gone;
        }
        let done = Event::Done(Finished {
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.stream.tokens().len(),
            finish,
        });
        if (self.sink)(done) {
            Next::Done
        } else {
            Next::Gone
        }
    }
}
