//! The adapters a server knows, the ones resident in memory, and the
//! parameters a forward pass reads.
//!
//! Every adapter is a [`ParamStore`] of the spec's plan (peftc run and adapter
//! folders, Hugging Face PEFT folders: `adapter::load_into` checks each
//! against the plan). Up to `max_resident` are held at once; a request for
//! another loads it from disk, evicting the least recently used adapter that
//! no running sequence uses (S-LoRA's adapter cache). When the plan is plain
//! LoRA the base model is served too, as a pinned slot whose `lora_B` factors
//! are zero, and all resident adapters share one routed parameter set, so a
//! batch mixing them is one forward pass; other plans run one pass per adapter.

use super::EngineError;
use crate::kernels::PeftKernels;
use crate::model::{ParamStore, Params};
use peftc_compiler::plan::Plan;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

struct Slot {
    name: String,
    store: ParamStore,
    last_used: u64,
    /// Sequences running with it.
    active: usize,
    /// The base model: never evicted.
    pinned: bool,
}

/// The parameters of a forward pass over the resident slots.
pub enum Loaded<B: PeftKernels> {
    /// One set for all, adapter `k`'s tensors named `name@k`; `route[slot]`
    /// is slot `slot`'s `k`.
    Routed {
        params: Params<B>,
        route: Vec<Option<usize>>,
        routes: usize,
    },
    /// One set per slot.
    PerSlot(Vec<Option<Params<B>>>),
}

pub struct Adapters<B: PeftKernels> {
    plan: Plan,
    /// A fresh store of the plan: what every adapter is loaded into.
    template: ParamStore,
    routable: bool,
    base: Option<String>,
    known: BTreeMap<String, PathBuf>,
    slots: Vec<Option<Slot>>,
    max_resident: usize,
    clock: u64,
    device: B::Device,
    loaded: Option<Loaded<B>>,
    /// Adapters read from disk / evicted so far.
    pub loads: u64,
    pub evictions: u64,
}

impl<B: PeftKernels> Adapters<B> {
    /// `template`: the plan's initial parameters; `base`: the name the base
    /// model is served under (plain-LoRA plans only).
    pub fn new(
        plan: &Plan,
        template: ParamStore,
        base: &str,
        max_resident: usize,
        device: &B::Device,
    ) -> Adapters<B> {
        let routable = crate::model::routes::routable(plan).is_ok();
        let mut slots = Vec::new();
        if routable {
            let mut store = template.clone();
            for (name, t) in store.values.iter_mut() {
                if name.ends_with("lora_B.weight") {
                    t.data.iter_mut().for_each(|x| *x = 0.0);
                }
            }
            slots.push(Some(Slot {
                name: base.to_string(),
                store,
                last_used: 0,
                active: 0,
                pinned: true,
            }));
        }
        Adapters {
            plan: plan.clone(),
            template,
            routable,
            base: routable.then(|| base.to_string()),
            known: BTreeMap::new(),
            slots,
            max_resident: max_resident.max(1),
            clock: 0,
            device: device.clone(),
            loaded: None,
            loads: 0,
            evictions: 0,
        }
    }

    /// Whether every resident adapter shares one forward pass.
    pub fn routable(&self) -> bool {
        self.routable
    }

    /// The servable names: the base (if served), then the adapters.
    pub fn names(&self) -> Vec<String> {
        self.base
            .iter()
            .cloned()
            .chain(self.known.keys().cloned())
            .collect()
    }

    /// Checks the folder at `path` against the plan and serves it as `name`.
    pub fn register(&mut self, name: &str, path: &Path) -> Result<(), EngineError> {
        if name.is_empty() {
            return Err(EngineError::Invalid("an adapter needs a name".into()));
        }
        if self.base.as_deref() == Some(name) || self.known.contains_key(name) {
            return Err(EngineError::Invalid(format!(
                "the name `{name}` is already served; unload it first"
            )));
        }
        let store = self.read(path)?;
        self.known.insert(name.to_string(), path.to_path_buf());
        if self.resident_adapters() < self.max_resident {
            self.insert(name, store);
        }
        Ok(())
    }

    /// Stops serving `name`; its memory goes once no sequence uses it.
    pub fn unregister(&mut self, name: &str) -> Result<(), EngineError> {
        if self.known.remove(name).is_none() {
            return Err(if self.base.as_deref() == Some(name) {
                EngineError::Invalid(format!("`{name}` is the base model; it cannot be unloaded"))
            } else {
                EngineError::UnknownModel(name.to_string())
            });
        }
        if let Some(i) = self.slot_of(name)
            && self.slots[i].as_ref().is_some_and(|s| s.active == 0)
        {
            self.remove(i);
        }
        Ok(())
    }

    /// A slot holding `name` for a new sequence, loading it if needed;
    /// `None` when every slot is busy (the request waits).
    pub fn acquire(&mut self, name: &str) -> Result<Option<usize>, EngineError> {
        self.clock += 1;
        let i = match self.slot_of(name) {
            Some(i) => i,
            None => {
                let Some(path) = self.known.get(name).cloned() else {
                    return Err(EngineError::UnknownModel(name.to_string()));
                };
                if self.resident_adapters() >= self.max_resident {
                    let lru = (0..self.slots.len())
                        .filter(|&i| {
                            self.slots[i]
                                .as_ref()
                                .is_some_and(|s| s.active == 0 && !s.pinned)
                        })
                        .min_by_key(|&i| self.slots[i].as_ref().map_or(0, |s| s.last_used));
                    let Some(lru) = lru else {
                        return Ok(None);
                    };
                    self.remove(lru);
                    self.evictions += 1;
                }
                let store = self.read(&path)?;
                self.insert(name, store)
            }
        };
        if let Some(s) = self.slots[i].as_mut() {
            s.active += 1;
            s.last_used = self.clock;
        }
        Ok(Some(i))
    }

    /// A sequence of slot `i` finished.
    pub fn release(&mut self, i: usize) {
        let Some(s) = self.slots.get_mut(i).and_then(Option::as_mut) else {
            return;
        };
        s.active = s.active.saturating_sub(1);
        let gone = s.active == 0 && !s.pinned && !self.known.contains_key(&s.name);
        if gone {
            self.remove(i);
        }
    }

    /// The parameters of the resident slots (rebuilt after a change).
    pub fn loaded(&mut self) -> &Loaded<B> {
        let device = &self.device;
        let slots = &self.slots;
        let routable = self.routable;
        self.loaded.get_or_insert_with(|| {
            if routable {
                let mut route = vec![None; slots.len()];
                let mut stores = Vec::new();
                for (i, s) in slots.iter().enumerate() {
                    if let Some(s) = s {
                        route[i] = Some(stores.len());
                        stores.push(&s.store);
                    }
                }
                Loaded::Routed {
                    params: Params::routed(&stores, device),
                    routes: stores.len(),
                    route,
                }
            } else {
                Loaded::PerSlot(
                    slots
                        .iter()
                        .map(|s| s.as_ref().map(|s| Params::constant(&s.store, device)))
                        .collect(),
                )
            }
        })
    }

    /// Resident adapters (the base not counted) and their tensors' bytes.
    pub fn resident(&self) -> (usize, usize) {
        let bytes = self
            .slots
            .iter()
            .flatten()
            .map(|s| {
                s.store
                    .values
                    .values()
                    .map(|t| t.data.len() * 4)
                    .sum::<usize>()
            })
            .sum();
        (self.resident_adapters(), bytes)
    }

    fn resident_adapters(&self) -> usize {
        self.slots.iter().flatten().filter(|s| !s.pinned).count()
    }

    fn slot_of(&self, name: &str) -> Option<usize> {
        self.slots
            .iter()
            .position(|s| s.as_ref().is_some_and(|s| s.name == name))
    }

    fn read(&mut self, path: &Path) -> Result<ParamStore, EngineError> {
        let mut store = self.template.clone();
        crate::adapter::load_into(&self.plan, &mut store, path)?;
        self.loads += 1;
        Ok(store)
    }

    fn insert(&mut self, name: &str, store: ParamStore) -> usize {
        let slot = Slot {
            name: name.to_string(),
            store,
            last_used: self.clock,
            active: 0,
            pinned: false,
        };
        self.loaded = None;
        match self.slots.iter().position(Option::is_none) {
            Some(i) => {
                self.slots[i] = Some(slot);
                i
            }
            None => {
                self.slots.push(Some(slot));
                self.slots.len() - 1
            }
        }
    }

    fn remove(&mut self, i: usize) {
        self.slots[i] = None;
        self.loaded = None;
    }
}
