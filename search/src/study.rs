//! A study: a spec's search, its journal folder, and the worker loop that
//! claims a configuration, checks it against the budget, trains it through an
//! [`Evaluator`] and records the result.

use crate::claim::Claim;
use crate::cost::{Cost, cost_of, fits};
use crate::instantiate::{Rebase, instantiate};
use crate::pruning::{make as make_pruner, should_prune};
use crate::record::key;
use crate::sampling::Observation;
use crate::space::{Point, Space, Value};
use crate::state::{NamedPoint, Outcome, StudyState, TrialRecord};
use crate::storage::model::{Op, TrialState};
use crate::storage::{Heartbeat, Storage, StorageUrl};
use peftc_compiler::{CheckOptions, check};
use peftc_grammar::ast::SpecFile;
use peftc_grammar::render_all;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use crate::error::SearchError;

/// Metrics a trial's training reports, by name (`accuracy`, `loss`, `perplexity`).
pub type Metrics = BTreeMap<String, f64>;

/// One configuration to train.
#[derive(Debug, Clone)]
pub struct TrialJob {
    pub number: u64,
    /// The trial's folder: `spec.peft` and the training run.
    pub dir: PathBuf,
    pub spec_path: PathBuf,
    pub steps: Option<u64>,
    pub eval_every: Option<u64>,
    /// `lora.r=8 prefix.len=0`
    pub describe: String,
}

pub enum TrialResult {
    Complete(Metrics),
    /// Stopped at `step` on the pruner's word.
    Pruned {
        step: u64,
    },
}

/// Trains trials; the binary implements it with the runtime, tests with a formula.
pub trait Evaluator {
    /// Trains and evaluates `job`. At every intermediate evaluation it calls
    /// `report(step, metrics)`, and stops (returning `Pruned`) when that
    /// returns `false`. `Err` is the reason the trial failed (NaN, out of memory).
    fn run(
        &mut self,
        job: &TrialJob,
        report: &mut dyn FnMut(u64, &Metrics) -> bool,
    ) -> Result<TrialResult, String>;

    /// Called after every finished trial with the study's state (the binary
    /// writes the leaderboard, Pareto front and `best.peft` here).
    fn finished(&mut self, _study: &Study, _state: &StudyState) -> Result<(), SearchError> {
        Ok(())
    }
}

pub use crate::settings::Settings;
use crate::settings::settings;

pub struct Study {
    pub dir: PathBuf,
    pub spec_path: PathBuf,
    pub source: String,
    pub file: SpecFile,
    pub spec_dir: PathBuf,
    pub space: Space,
    pub settings: Settings,
    /// The Optuna study's name (the search block's unless given).
    pub name: String,
    pub(crate) storage: Box<dyn Storage>,
    pub(crate) heartbeat: Heartbeat,
    pub(crate) spec_hash: String,
}

/// Where a study is kept; by default Optuna's journal file
/// `journal.jsonl` in the study folder, under the search block's name.
#[derive(Debug, Clone, Default)]
pub struct StorageOptions {
    pub url: Option<StorageUrl>,
    pub study_name: Option<String>,
    pub heartbeat: Heartbeat,
}

impl Study {
    /// Reads and checks the spec, and opens (or creates) the study folder,
    /// with the study in `dir/journal.jsonl`.
    pub fn open(spec_path: &Path, dir: &Path, trials: Option<u64>) -> Result<Study, SearchError> {
        Study::open_with(spec_path, dir, trials, &StorageOptions::default())
    }

    /// [`Study::open`] with the study in the storage `opts` names.
    pub fn open_with(
        spec_path: &Path,
        dir: &Path,
        trials: Option<u64>,
        kept: &StorageOptions,
    ) -> Result<Study, SearchError> {
        let name = spec_path.display().to_string();
        let source = std::fs::read_to_string(spec_path)
            .map_err(|e| SearchError::Invalid(format!("cannot read `{name}`: {e}")))?;
        let file = peftc_grammar::parse(&source)
            .map_err(|d| SearchError::Spec(render_all(&[d], &name, &source)))?;
        let spec_dir = absolute(spec_path.parent().unwrap_or(Path::new(".")));
        let opts = CheckOptions {
            spec_dir: spec_dir.clone(),
            model_override: None,
            lenient_data: false,
        };
        let checked =
            check(&file, &opts).map_err(|d| SearchError::Spec(render_all(&d, &name, &source)))?;
        let Some((search, block)) = checked.searches.first() else {
            return Err(SearchError::Invalid(format!(
                "`{name}` has no `search` block; add one, e.g. `search s {{ space = BLOCK  maximize accuracy }}`"
            )));
        };
        let space = Space::from_spec(&file, &source, block);
        if space.dims.is_empty() {
            return Err(SearchError::Invalid(format!(
                "search `{}` explores block `{block}`, which has no set (`{{4, 8}}`) or range (`4..=64`) to search",
                search.name
            )));
        }
        let settings = settings(search, checked.task.kind, trials)?;
        std::fs::create_dir_all(dir)
            .map_err(|e| SearchError::Invalid(format!("cannot create `{}`: {e}", dir.display())))?;
        let spec_hash = format!("{:016x}", crate::rng::mix(&fnv(source.as_bytes())));
        let name = kept
            .study_name
            .clone()
            .unwrap_or_else(|| settings.name.clone());
        let url = kept
            .url
            .clone()
            .unwrap_or_else(|| StorageUrl::Journal(dir.join("journal.jsonl")));
        let storage = url.open(&name, kept.heartbeat)?;
        Ok(Study {
            dir: absolute(dir),
            spec_path: spec_path.to_path_buf(),
            source,
            file,
            spec_dir,
            space,
            settings,
            name,
            storage,
            heartbeat: kept.heartbeat,
            spec_hash,
        })
    }

    /// The concrete spec of `point`, with paths for a file in `folder` (or the
    /// original spec's paths when `None`).
    pub fn spec_text(&self, point: &[Value], folder: Option<&Path>) -> String {
        let rebase = folder.map(|f| Rebase {
            from: self.spec_dir.clone(),
            to: absolute(f),
        });
        let steps: Vec<(&str, String)> = self
            .settings
            .steps
            .map(|s| ("max_steps", s.to_string()))
            .into_iter()
            .collect();
        instantiate(
            &self.file,
            &self.source,
            &self.space,
            point,
            rebase.as_ref(),
            &steps,
        )
    }

    pub fn cost(&self, point: &[Value]) -> Result<Cost, String> {
        cost_of(&self.spec_text(point, None), &self.spec_dir)
    }

    pub fn named(&self, p: &[Value]) -> NamedPoint {
        self.space
            .dims
            .iter()
            .zip(p)
            .map(|(d, v)| (d.name.clone(), v.clone()))
            .collect()
    }

    pub fn unnamed(&self, p: &NamedPoint) -> Option<Point> {
        self.space
            .dims
            .iter()
            .map(|d| p.get(&d.name).cloned())
            .collect()
    }

    /// Before any training: is some configuration within the budget? Small
    /// spaces are enumerated; larger ones are judged by their smallest point.
    /// Returns how many of the enumerated points fit (`None`: not enumerated).
    pub fn preflight(&self) -> Result<Option<usize>, SearchError> {
        let size = self.space.grid_size(crate::sampling::GRID_POINTS);
        let points: Vec<Point> = if size <= 64 {
            (0..size)
                .map(|i| self.space.grid_point(crate::sampling::GRID_POINTS, i))
                .collect()
        } else {
            vec![self.space.smallest()]
        };
        let mut smallest: Option<(Point, Cost)> = None;
        let mut feasible = 0;
        let mut rejected = None;
        for p in &points {
            match self.cost(p) {
                Ok(c) => {
                    if fits(&c, &self.settings.budgets).is_ok() {
                        feasible += 1;
                    }
                    if smallest
                        .as_ref()
                        .is_none_or(|(_, s)| c.trainable < s.trainable)
                    {
                        smallest = Some((p.clone(), c));
                    }
                }
                Err(e) => rejected = Some((p.clone(), e)),
            }
        }
        if feasible > 0 {
            return Ok((size <= 64).then_some(feasible));
        }
        match (smallest, rejected) {
            (Some((p, c)), _) => Err(SearchError::Invalid(format!(
                "no configuration of search `{}` fits its budget; the smallest, {}, needs {}: {}",
                self.settings.name,
                self.space.describe(&p),
                c.describe(),
                fits(&c, &self.settings.budgets).err().unwrap_or_default()
            ))),
            (None, Some((p, e))) => Err(SearchError::Invalid(format!(
                "the configuration {} does not check:\n{e}",
                self.space.describe(&p)
            ))),
            (None, None) => Err(SearchError::Invalid("the search space is empty".into())),
        }
    }

    /// The study's state, read in one transaction.
    pub fn state(&self) -> Result<StudyState, SearchError> {
        let tx = self.storage.begin()?;
        Ok(StudyState::from_snapshot(tx.snapshot(), &self.space))
    }

    /// `journal:PATH` or the database URL (without its password).
    pub fn storage(&self) -> String {
        self.storage.describe()
    }

    /// Claims, trains and records trials until the study has `trials` of them.
    /// Several processes, on one host or many, may run this on one study.
    pub fn run_worker(
        &self,
        eval: &mut dyn Evaluator,
        log: &mut dyn FnMut(&str),
    ) -> Result<(), SearchError> {
        let me = self.storage.join()?;
        let pruner = make_pruner(
            self.settings.pruner,
            self.settings.trained_metric().maximize,
            self.settings.steps.unwrap_or(1),
            self.settings.eval_every.unwrap_or(1),
        );
        let metric = self.settings.trained_metric().metric.clone();
        let mut waiting = None;
        loop {
            let (record, retry) = match self.claim(&me, log)? {
                Claim::Trial(t, retry) => (t, retry),
                Claim::Done => break,
                Claim::Wait(n) => {
                    if waiting != Some(n) {
                        log(&format!(
                            "waiting for {n} trial(s) other workers run (retaken if a worker dies)"
                        ));
                        waiting = Some(n);
                    }
                    std::thread::sleep(self.poll_interval());
                    continue;
                }
            };
            waiting = None;
            me.running(Some(record.trial_id));
            let Some(point) = self.unnamed(&record.point) else {
                return Err(SearchError::Invalid(format!(
                    "the study's trial {} does not match the spec's dimensions",
                    record.number
                )));
            };
            let trial_dir = self.dir.join("trials").join(record.number.to_string());
            std::fs::create_dir_all(&trial_dir).map_err(|e| {
                SearchError::Invalid(format!("cannot create `{}`: {e}", trial_dir.display()))
            })?;
            let spec_path = trial_dir.join("spec.peft");
            crate::files::write_atomic(
                &spec_path,
                self.spec_text(&point, Some(&trial_dir)).as_bytes(),
            )?;
            let job = TrialJob {
                number: record.number,
                dir: trial_dir,
                spec_path,
                steps: self.settings.steps,
                eval_every: self.settings.eval_every,
                describe: self.space.describe(&point),
            };
            log(&format!(
                "trial {}{}: {} ({})",
                job.number,
                if retry {
                    " (resumed after a crash)"
                } else {
                    ""
                },
                job.describe,
                record.cost.describe()
            ));
            let t0 = std::time::Instant::now();
            let mut storage_error = None;
            let mut report = |step: u64, m: &Metrics| -> bool {
                let Some(&value) = m.get(&metric) else {
                    return true;
                };
                if !value.is_finite() {
                    return true;
                }
                let r = (|| -> Result<bool, SearchError> {
                    let mut tx = self.storage.begin()?;
                    tx.write(Op::Intermediate {
                        trial: record.trial_id,
                        step: step as i64,
                        value,
                    })?;
                    let state = StudyState::from_snapshot(tx.snapshot(), &self.space);
                    tx.commit()?;
                    let reports = state
                        .trials
                        .get(&job.number)
                        .map(|t| t.reports.clone())
                        .unwrap_or_default();
                    Ok(!should_prune(
                        pruner.as_ref(),
                        job.number,
                        &reports,
                        &state,
                        &metric,
                    ))
                })();
                r.unwrap_or_else(|e| {
                    storage_error = Some(e);
                    false
                })
            };
            let result = eval.run(&job, &mut report);
            if let Some(e) = storage_error {
                return Err(e);
            }
            let seconds = t0.elapsed().as_secs_f64();
            let outcome = match result {
                Ok(TrialResult::Complete(metrics)) => {
                    if let Some((k, _)) = metrics.iter().find(|(_, v)| !v.is_finite()) {
                        Outcome::Failed {
                            reason: format!("{k} is not finite (training diverged)"),
                        }
                    } else if let Some(o) = self.settings.objectives.iter().find(|o| {
                        !matches!(o.metric.as_str(), "params" | "memory")
                            && !metrics.contains_key(&o.metric)
                    }) {
                        Outcome::Failed {
                            reason: format!("training reported no `{}`", o.metric),
                        }
                    } else {
                        Outcome::Complete { metrics, seconds }
                    }
                }
                Ok(TrialResult::Pruned { step }) => {
                    let state = self.state()?;
                    let value = state
                        .trials
                        .get(&job.number)
                        .and_then(|t| t.reports.values().next_back().copied())
                        .unwrap_or(f64::NAN);
                    Outcome::Pruned {
                        step,
                        value,
                        seconds,
                    }
                }
                Err(reason) => Outcome::Failed { reason },
            };
            log(&format!(
                "trial {} {}",
                job.number,
                match &outcome {
                    Outcome::Complete { metrics, seconds } => format!(
                        "complete in {seconds:.0}s: {}",
                        metrics
                            .iter()
                            .map(|(k, v)| format!("{k} {v:.4}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    Outcome::Pruned { step, value, .. } =>
                        format!("pruned at step {step} ({metric} {value:.4})"),
                    Outcome::Failed { reason } => format!("failed: {reason}"),
                }
            ));
            let mut tx = self.storage.begin()?;
            let open = tx
                .snapshot()
                .trial(record.trial_id)
                .is_some_and(|t| t.state == TrialState::Running);
            if open {
                for op in self.finish_ops(&record, &outcome) {
                    tx.write(op)?;
                }
            } else {
                log(&format!(
                    "trial {}: another worker took it over while this one ran (a lapsed heartbeat?); this result is dropped",
                    job.number
                ));
            }
            let state = StudyState::from_snapshot(tx.snapshot(), &self.space);
            tx.commit()?;
            me.running(None);
            eval.finished(self, &state)?;
        }
        Ok(())
    }

    /// How often a waiting worker looks for a dead worker's trial.
    fn poll_interval(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64((self.heartbeat.grace_s / 4.0).clamp(0.02, 1.0))
    }

    /// The writes that finish trial `t` with `outcome`: peftc's facts as
    /// user attributes first (a finished trial takes no more), then the
    /// state and the objective values.
    fn finish_ops(&self, t: &TrialRecord, outcome: &Outcome) -> Vec<Op> {
        let attr = |k: &str, v| Op::TrialUserAttr {
            trial: t.trial_id,
            key: k.into(),
            value: v,
        };
        let mut ops = Vec::new();
        let (state, values) = match outcome {
            Outcome::Complete { metrics, seconds } => {
                ops.push(attr(key::METRICS, json!(metrics)));
                ops.push(attr(key::SECONDS, json!(seconds)));
                let values = self
                    .settings
                    .objectives
                    .iter()
                    .map(|o| match o.metric.as_str() {
                        "params" => t.cost.trainable as f64,
                        "memory" => t.cost.memory as f64,
                        m => metrics.get(m).copied().unwrap_or(f64::NAN),
                    })
                    .collect();
                (TrialState::Complete, Some(values))
            }
            Outcome::Pruned { value, seconds, .. } => {
                ops.push(attr(key::SECONDS, json!(seconds)));
                // Optuna gives a pruned single-objective trial its last value.
                let values = (self.settings.objectives.len() == 1 && value.is_finite())
                    .then(|| vec![*value]);
                (TrialState::Pruned, values)
            }
            Outcome::Failed { reason } => {
                ops.push(attr(key::FAIL_REASON, json!(reason)));
                (TrialState::Fail, None)
            }
        };
        ops.push(Op::Finish {
            trial: t.trial_id,
            state,
            values,
        });
        ops
    }

    /// Objective values of a finished trial, minimization form, in objective order.
    pub fn objective_values(&self, t: &TrialRecord) -> Option<Vec<f64>> {
        self.settings
            .objectives
            .iter()
            .map(|o| {
                let v = match o.metric.as_str() {
                    "params" => Some(t.cost.trainable as f64),
                    "memory" => Some(t.cost.memory as f64),
                    m => match &t.outcome {
                        Some(Outcome::Complete { metrics, .. }) => metrics.get(m).copied(),
                        Some(Outcome::Pruned { value, .. })
                            if m == self.settings.trained_metric().metric =>
                        {
                            Some(*value)
                        }
                        _ => None,
                    },
                }?;
                Some(if o.maximize { -v } else { v })
            })
            .collect()
    }

    pub(crate) fn history(&self, state: &StudyState) -> Vec<Observation> {
        let mut h: Vec<Observation> = state
            .trials
            .values()
            .filter_map(|t| {
                Some(Observation {
                    point: self.unnamed(&t.point)?,
                    values: self.objective_values(t)?,
                })
            })
            .collect();
        h.extend(state.infeasible.iter().filter_map(|(p, _, _)| {
            Some(Observation {
                point: self.unnamed(p)?,
                values: Vec::new(),
            })
        }));
        h
    }
}

fn fnv(bytes: &[u8]) -> [u64; 1] {
    [bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })]
}

pub fn absolute(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| {
        std::env::current_dir()
            .map(|d| d.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    })
}
