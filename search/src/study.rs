//! A study: a spec's search, its journal folder, and the worker loop that
//! claims a configuration, checks it against the budget, trains it through an
//! [`Evaluator`] and records the result.

use crate::cost::{Cost, cost_of, fits};
use crate::instantiate::{Rebase, instantiate};
use crate::journal::{Event, Journal, Locked, NamedPoint, Outcome, WorkerLock, now};
use crate::pruning::{make as make_pruner, should_prune};
use crate::sampling::Observation;
use crate::space::{Point, Space, Value};
use crate::state::{StudyState, TrialRecord};
use peftc_compiler::{CheckOptions, check};
use peftc_grammar::ast::SpecFile;
use peftc_grammar::render_all;
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
    pub(crate) journal: Journal,
    pub(crate) spec_hash: String,
}

impl Study {
    /// Reads and checks the spec, and opens (or creates) the study folder.
    pub fn open(spec_path: &Path, dir: &Path, trials: Option<u64>) -> Result<Study, SearchError> {
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
        Ok(Study {
            dir: absolute(dir),
            spec_path: spec_path.to_path_buf(),
            source,
            file,
            spec_dir,
            space,
            settings,
            journal: Journal::new(dir),
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

    /// The study's state, read under its lock.
    pub fn state(&self) -> Result<StudyState, SearchError> {
        let g = self.journal.lock()?;
        Ok(self.read(&g)?.0)
    }

    pub(crate) fn read(&self, g: &Locked) -> Result<(StudyState, usize), SearchError> {
        let (events, skipped) = self.journal.read(g)?;
        Ok((StudyState::from_events(&events), skipped))
    }

    /// Claims, trains and records trials until the study has `trials` of them.
    /// Several processes may run this on one folder at once.
    pub fn run_worker(
        &self,
        eval: &mut dyn Evaluator,
        log: &mut dyn FnMut(&str),
    ) -> Result<(), SearchError> {
        let me = WorkerLock::acquire(&self.dir)?;
        let pruner = make_pruner(
            self.settings.pruner,
            self.settings.trained_metric().maximize,
            self.settings.steps.unwrap_or(1),
            self.settings.eval_every.unwrap_or(1),
        );
        let metric = self.settings.trained_metric().metric.clone();
        while let Some((record, retry)) = self.claim(&me.id, log)? {
            let Some(point) = self.unnamed(&record.point) else {
                return Err(SearchError::Invalid(format!(
                    "the journal's trial {} does not match the spec's dimensions",
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
            let mut journal_error = None;
            let mut report = |step: u64, m: &Metrics| -> bool {
                let Some(&value) = m.get(&metric) else {
                    return true;
                };
                let r = (|| -> Result<bool, SearchError> {
                    let g = self.journal.lock()?;
                    self.journal.append(
                        &g,
                        &Event::Report {
                            trial: job.number,
                            step,
                            value,
                        },
                    )?;
                    let (state, _) = self.read(&g)?;
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
                    journal_error = Some(e);
                    false
                })
            };
            let result = eval.run(&job, &mut report);
            if let Some(e) = journal_error {
                return Err(e);
            }
            let seconds = t0.elapsed().as_secs_f64();
            let outcome = match result {
                Ok(TrialResult::Complete(metrics)) => {
                    if let Some((k, _)) = metrics.iter().find(|(_, v)| !v.is_finite()) {
                        Outcome::Failed {
                            reason: format!("{k} is not finite (training diverged)"),
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
            let g = self.journal.lock()?;
            self.journal.append(
                &g,
                &Event::Finish {
                    trial: job.number,
                    worker: me.id.clone(),
                    outcome,
                    time: now(),
                },
            )?;
            let (state, _) = self.read(&g)?;
            eval.finished(self, &state)?;
        }
        Ok(())
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
