//! The engine's loop: commands, admission, one batched decoding step.

use super::adapters::{Adapters, Loaded};
use super::sequence::{Next, Sequence};
use super::{Command, EngineError, Event, Metrics, Request};
use crate::kernels::PeftKernels;
use crate::model::PeftModel;
use crate::model::routes::Routes;
use crate::tokenizer::TextTokenizer;
use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, TryRecvError};

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Adapters resident at once (the base not counted).
    pub max_adapters: usize,
    /// Tokens one step may process: the decoded rows plus the prompts
    /// prefilled before it (a longer prompt still runs, alone).
    pub max_batch_tokens: usize,
    /// Sequences decoded at once.
    pub max_sequences: usize,
}

impl Default for EngineConfig {
    fn default() -> EngineConfig {
        EngineConfig {
            max_adapters: 8,
            max_batch_tokens: 2048,
            max_sequences: 64,
        }
    }
}

pub struct Engine<B: PeftKernels> {
    model: PeftModel<B>,
    tok: Arc<TextTokenizer>,
    adapters: Adapters<B>,
    config: EngineConfig,
    metrics: Arc<Metrics>,
    context: usize,
    waiting: VecDeque<Request>,
    active: Vec<Sequence<B>>,
}

impl<B: PeftKernels> Engine<B> {
    pub fn new(
        model: PeftModel<B>,
        tok: Arc<TextTokenizer>,
        adapters: Adapters<B>,
        config: EngineConfig,
        metrics: Arc<Metrics>,
    ) -> Engine<B> {
        let context = crate::generate::context(&model.plan);
        Engine {
            model,
            tok,
            adapters,
            config,
            metrics,
            context,
            waiting: VecDeque::new(),
            active: Vec::new(),
        }
    }

    /// Serves `commands` until every sender is gone and the last sequence
    /// has finished.
    pub fn run(mut self, commands: Receiver<Command>) {
        let mut open = true;
        loop {
            if self.active.is_empty() && self.waiting.is_empty() {
                if !open {
                    return;
                }
                match commands.recv() {
                    Ok(c) => self.command(c),
                    Err(_) => return,
                }
            }
            while open {
                match commands.try_recv() {
                    Ok(c) => self.command(c),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => open = false,
                }
            }
            // On a worker of the pool: see `kernels::on_pool`.
            let engine = &mut self;
            crate::kernels::on_pool(move || {
                engine.guarded(|e| e.admit());
                engine.guarded(|e| e.step());
            });
            self.gauges();
        }
    }

    /// Runs `f`; a panic inside fails the running sequences instead of the server.
    fn guarded(&mut self, f: impl FnOnce(&mut Self)) {
        if catch_unwind(AssertUnwindSafe(|| f(self))).is_err() {
            let failed = std::mem::take(&mut self.active);
            for mut s in failed {
                s.fail(EngineError::Internal(
                    "the forward pass panicked; the request was dropped".into(),
                ));
                self.adapters.release(s.slot);
            }
        }
    }

    fn command(&mut self, c: Command) {
        match c {
            Command::Generate(r) => {
                self.waiting.push_back(r);
            }
            Command::Load { name, path, reply } => {
                reply(self.adapters.register(&name, &path));
            }
            Command::Unload { name, reply } => reply(self.adapters.unregister(&name)),
            Command::Models { reply } => reply(Ok(self.adapters.names())),
            Command::Classify {
                model,
                texts,
                reply,
            } => {
                let mut out = None;
                self.guarded(|e| out = Some(e.classify(&model, &texts)));
                reply(out.unwrap_or_else(|| {
                    Err(EngineError::Internal("classification panicked".into()))
                }));
            }
        }
        self.gauges();
    }

    /// Prefills waiting prompts while the step's token budget and the
    /// sequence limit allow, each with its adapter made resident.
    fn admit(&mut self) {
        let mut budget = self
            .config
            .max_batch_tokens
            .saturating_sub(self.active.len());
        let mut i = 0;
        while i < self.waiting.len() && self.active.len() < self.config.max_sequences {
            let need = self.waiting[i].prompt.len();
            let alone = self.active.is_empty() && budget == self.config.max_batch_tokens;
            if need > budget && !alone {
                break;
            }
            let slot = match self.adapters.acquire(&self.waiting[i].model) {
                Ok(Some(slot)) => slot,
                // Its adapter waits for a slot; others may go first.
                Ok(None) => {
                    i += 1;
                    continue;
                }
                Err(e) => {
                    if let Some(mut r) = self.waiting.remove(i) {
                        (r.sink)(Event::Failed(e));
                    }
                    continue;
                }
            };
            let Some(r) = self.waiting.remove(i) else {
                break;
            };
            budget = budget.saturating_sub(need);
            self.prefill(r, slot);
        }
        self.metrics
            .adapter_loads
            .inner()
            .store(self.adapters.loads, std::sync::atomic::Ordering::Relaxed);
        self.metrics.adapter_evictions.inner().store(
            self.adapters.evictions,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    fn prefill(&mut self, mut r: Request, slot: usize) {
        let mut cache = self.model.new_cache();
        let n = r.prompt.len();
        let logits = match self.adapters.loaded() {
            Loaded::Routed {
                params,
                route,
                routes,
            } => {
                let k = route_of(route, slot);
                let routes = Arc::new(Routes::new(&[k], *routes, n, &self.model.device));
                self.model
                    .step_routed(&r.prompt, &mut cache, params, Some(routes))
            }
            Loaded::PerSlot(all) => {
                slot_params(all, slot).and_then(|p| self.model.step(&r.prompt, &mut cache, p))
            }
        };
        self.metrics.prompt_tokens.inc_by(n as u64);
        let logits = match logits {
            Ok(l) => l,
            Err(e) => {
                (r.sink)(Event::Failed(e.into()));
                self.adapters.release(slot);
                return;
            }
        };
        let mut s = Sequence::new(r, slot, cache);
        match s.advance(&logits, &self.tok, self.context) {
            Next::Continue => {
                self.metrics.generated_tokens.inc();
                self.active.push(s);
            }
            Next::Done | Next::Gone => {
                self.metrics.generated_tokens.inc_by(s.generated() as u64);
                self.adapters.release(slot);
            }
        }
    }

    /// One decoding step of every active sequence.
    fn step(&mut self) {
        if self.active.is_empty() {
            return;
        }
        // Rows grouped by adapter: contiguous segments for the routed products.
        self.active.sort_by_key(|s| s.slot);
        let n = self.active.len();
        self.metrics.decode_steps.inc();
        self.metrics.batch_size.observe(n as f64);
        let ids: Vec<u32> = self.active.iter().map(|s| s.next).collect();
        let mut logits: Vec<Result<Vec<f32>, EngineError>> = Vec::with_capacity(n);
        match self.adapters.loaded() {
            Loaded::Routed {
                params,
                route,
                routes,
            } => {
                let of: Vec<usize> = self
                    .active
                    .iter()
                    .map(|s| route_of(route, s.slot))
                    .collect();
                let r = Arc::new(Routes::new(&of, *routes, 1, &self.model.device));
                let mut caches: Vec<_> = self.active.iter_mut().map(|s| &mut s.cache).collect();
                match self.model.decode(&ids, &mut caches, params, Some(r)) {
                    Ok(rows) => logits.extend(rows.into_iter().map(Ok)),
                    Err(e) => {
                        let e = EngineError::from(e);
                        logits.extend((0..n).map(|_| Err(e.clone())));
                    }
                }
            }
            Loaded::PerSlot(all) => {
                let mut lo = 0;
                while lo < n {
                    let slot = self.active[lo].slot;
                    let hi = lo + self.active[lo..].partition_point(|s| s.slot == slot);
                    let mut caches: Vec<_> = self.active[lo..hi]
                        .iter_mut()
                        .map(|s| &mut s.cache)
                        .collect();
                    let out = slot_params(all, slot)
                        .and_then(|p| self.model.decode(&ids[lo..hi], &mut caches, p, None));
                    match out {
                        Ok(rows) => logits.extend(rows.into_iter().map(Ok)),
                        Err(e) => {
                            let e = EngineError::from(e);
                            logits.extend((lo..hi).map(|_| Err(e.clone())));
                        }
                    }
                    lo = hi;
                }
            }
        }
        let active = std::mem::take(&mut self.active);
        for (mut s, l) in active.into_iter().zip(logits) {
            let next = match l {
                Ok(l) => s.advance(&l, &self.tok, self.context),
                Err(e) => {
                    s.fail(e);
                    Next::Gone
                }
            };
            match next {
                Next::Continue => {
                    self.metrics.generated_tokens.inc();
                    self.active.push(s);
                }
                Next::Done | Next::Gone => self.adapters.release(s.slot),
            }
        }
    }

    fn classify(&mut self, model: &str, texts: &[String]) -> Result<Vec<Vec<f32>>, EngineError> {
        let Some(slot) = self.adapters.acquire(model)? else {
            return Err(EngineError::Invalid(
                "every adapter slot is busy; retry when a request finishes".into(),
            ));
        };
        let max_len = self.model.plan.text_positions();
        let out = match self.adapters.loaded() {
            Loaded::Routed {
                params,
                route,
                routes,
            } => {
                let k = route_of(route, slot);
                crate::infer::infer_routed(
                    &self.model,
                    params,
                    &self.tok,
                    texts,
                    max_len,
                    &vec![k; texts.len()],
                    *routes,
                )
            }
            Loaded::PerSlot(all) => slot_params(all, slot)
                .and_then(|p| crate::infer::infer(&self.model, p, &self.tok, texts, max_len)),
        };
        self.adapters.release(slot);
        Ok(out?.into_iter().map(|row| softmax(&row)).collect())
    }

    fn gauges(&self) {
        let (resident, bytes) = self.adapters.resident();
        self.metrics.queue_depth.set(self.waiting.len() as i64);
        self.metrics.active.set(self.active.len() as i64);
        self.metrics.adapters_resident.set(resident as i64);
        self.metrics.adapter_bytes.set(bytes as i64);
    }
}

/// The routed index of a resident slot.
fn route_of(route: &[Option<usize>], slot: usize) -> usize {
    route.get(slot).copied().flatten().unwrap_or(0)
}

/// The parameters of a resident slot.
fn slot_params<B: PeftKernels>(
    all: &[Option<crate::model::Params<B>>],
    slot: usize,
) -> crate::Result<&crate::model::Params<B>> {
    all.get(slot)
        .and_then(Option::as_ref)
        .ok_or_else(|| crate::RuntimeError::Internal("a sequence's adapter is not resident".into()))
}

fn softmax(row: &[f32]) -> Vec<f32> {
    let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f64> = row.iter().map(|&x| ((x - m) as f64).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|&x| (x / s) as f32).collect()
}
