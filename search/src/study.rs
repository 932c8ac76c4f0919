//! A study: a spec's search, its journal folder, and the worker loop that
//! claims a configuration, checks it against the budget, trains it through an
//! [`Evaluator`] and records the result.

use crate::cost::{Cost, cost_of, fits};
use crate::instantiate::{Rebase, instantiate};
use crate::journal::{
    Event, Journal, JournalError, Locked, NamedPoint, Outcome, WorkerLock, now, worker_alive,
};
use crate::pruning::{PrunerKind, make as make_pruner, should_prune};
use crate::sampling::{Observation, SamplerKind, propose};
use crate::space::{Point, Space, Value};
use crate::state::{StudyState, TrialRecord};
use peftc_compiler::search_spec::{Budget, Objective, SearchSpec};
use peftc_compiler::task::TaskKind;
use peftc_compiler::{CheckOptions, check};
use peftc_grammar::ast::SpecFile;
use peftc_grammar::render_all;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// Rendered diagnostics of the spec.
    #[error("{0}")]
    Spec(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Journal(#[from] JournalError),
}

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
}

/// The search block's settings, defaults filled in.
#[derive(Debug, Clone)]
pub struct Settings {
    pub name: String,
    pub trials: u64,
    pub sampler: SamplerKind,
    pub pruner: PrunerKind,
    pub seed: u64,
    pub steps: Option<u64>,
    pub eval_every: Option<u64>,
    pub workers: u64,
    pub budgets: Vec<Budget>,
    pub objectives: Vec<Objective>,
}

impl Settings {
    /// The metric trials report and the pruner compares: the first objective
    /// that training measures.
    pub fn trained_metric(&self) -> &Objective {
        self.objectives
            .iter()
            .find(|o| !matches!(o.metric.as_str(), "params" | "memory"))
            .unwrap_or(&self.objectives[0])
    }
}

/// Draws tried per trial before the sampler is deemed unable to find a new
/// feasible point.
const MAX_DRAWS: u64 = 200;

/// Workers that may die on one trial before it is failed.
const MAX_CLAIMS: u32 = 3;

/// Draws from the study's sampler before falling back to random ones.
const MODEL_DRAWS: u64 = 20;

pub struct Study {
    pub dir: PathBuf,
    pub spec_path: PathBuf,
    pub source: String,
    pub file: SpecFile,
    pub spec_dir: PathBuf,
    pub space: Space,
    pub settings: Settings,
    journal: Journal,
    spec_hash: String,
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

    fn read(&self, g: &Locked) -> Result<(StudyState, usize), SearchError> {
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
            crate::report::write_all(self, &state)?;
        }
        Ok(())
    }

    /// Under the lock: retake a crashed worker's trial, or sample, check and
    /// claim a new one. `None` when the study has all its trials.
    fn claim(
        &self,
        me: &str,
        log: &mut dyn FnMut(&str),
    ) -> Result<Option<(TrialRecord, bool)>, SearchError> {
        let g = self.journal.lock()?;
        let (state, skipped) = self.read(&g)?;
        if skipped > 0 {
            log(&format!(
                "journal: skipped {skipped} torn line(s) of a killed worker"
            ));
        }
        match &state.spec_hash {
            None => self.journal.append(
                &g,
                &Event::Study {
                    spec_hash: self.spec_hash.clone(),
                    dims: self.space.names().into_iter().map(String::from).collect(),
                    time: now(),
                },
            )?,
            Some(h) if *h != self.spec_hash => {
                return Err(SearchError::Invalid(format!(
                    "`{}` holds a study of a different spec; use another --study folder (to run more trials of the same spec, pass --trials N)",
                    self.dir.display()
                )));
            }
            Some(_) => {}
        }
        let orphans: Vec<&TrialRecord> = state
            .running()
            .filter(|t| t.worker != me && !worker_alive(&self.dir, &t.worker))
            .collect();
        // A configuration that killed its worker every time (out of memory, an
        // abort) is failed rather than retaken forever.
        for t in orphans.iter().filter(|t| t.claims >= MAX_CLAIMS) {
            self.journal.append(
                &g,
                &Event::Finish {
                    trial: t.number,
                    worker: me.to_string(),
                    outcome: Outcome::Failed {
                        reason: format!(
                            "its worker process died {} times (out of memory?)",
                            t.claims
                        ),
                    },
                    time: now(),
                },
            )?;
        }
        if let Some(orphan) = orphans.into_iter().find(|t| t.claims < MAX_CLAIMS) {
            let mut t = orphan.clone();
            t.worker = me.to_string();
            t.claims += 1;
            self.journal.append(
                &g,
                &Event::Claim {
                    trial: t.number,
                    worker: me.to_string(),
                    point: t.point.clone(),
                    cost: t.cost,
                    time: now(),
                },
            )?;
            return Ok(Some((t, true)));
        }
        if state.trials.len() as u64 >= self.settings.trials {
            return Ok(None);
        }
        let number = state.next_number();
        let mut history = self.history(&state);
        // Infeasible points, including those found by this claim's draws.
        let infeasible: std::cell::RefCell<Vec<NamedPoint>> =
            std::cell::RefCell::new(state.infeasible.iter().map(|(p, _, _)| p.clone()).collect());
        let seen = |p: &Point| {
            let n = self.named(p);
            state.has_point(&n) || infeasible.borrow().contains(&n)
        };
        for attempt in 0..MAX_DRAWS {
            // A model-based sampler that keeps proposing seen points has
            // converged; random draws find what is left.
            let kind = if attempt < MODEL_DRAWS {
                self.settings.sampler
            } else {
                SamplerKind::Random
            };
            let Some(point) = propose(
                &self.space,
                kind,
                self.settings.seed,
                number,
                attempt,
                &history,
                &seen,
            ) else {
                log("every point of the grid has been tried");
                return Ok(None);
            };
            let named = self.named(&point);
            if state.has_point(&named) {
                continue;
            }
            let already_infeasible = infeasible.borrow().contains(&named);
            let cost = match self.cost(&point) {
                Ok(c) => match fits(&c, &self.settings.budgets) {
                    Ok(()) => c,
                    Err(reason) => {
                        if !already_infeasible {
                            infeasible.borrow_mut().push(named.clone());
                            self.journal.append(
                                &g,
                                &Event::Infeasible {
                                    point: named,
                                    cost: Some(c),
                                    reason,
                                },
                            )?;
                        }
                        history.push(Observation {
                            point,
                            values: Vec::new(),
                        });
                        continue;
                    }
                },
                Err(reason) => {
                    if !already_infeasible {
                        infeasible.borrow_mut().push(named.clone());
                        self.journal.append(
                            &g,
                            &Event::Infeasible {
                                point: named,
                                cost: None,
                                reason,
                            },
                        )?;
                    }
                    history.push(Observation {
                        point,
                        values: Vec::new(),
                    });
                    continue;
                }
            };
            self.journal.append(
                &g,
                &Event::Claim {
                    trial: number,
                    worker: me.to_string(),
                    point: named.clone(),
                    cost,
                    time: now(),
                },
            )?;
            let record = TrialRecord {
                number,
                point: named,
                cost,
                worker: me.to_string(),
                claims: 1,
                reports: BTreeMap::new(),
                outcome: None,
            };
            return Ok(Some((record, false)));
        }
        log(&format!(
            "no new configuration within the budget after {MAX_DRAWS} draws; stopping"
        ));
        Ok(None)
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

    fn history(&self, state: &StudyState) -> Vec<Observation> {
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

fn settings(
    search: &SearchSpec,
    task: TaskKind,
    trials: Option<u64>,
) -> Result<Settings, SearchError> {
    let int = |k: &str| search.key_int(k).and_then(|v| u64::try_from(v).ok());
    let sampler = SamplerKind::from_name(search.key_str("sampler").unwrap_or("tpe"))
        .unwrap_or(SamplerKind::Tpe);
    let pruner = PrunerKind::from_name(search.key_str("pruner").unwrap_or("none"))
        .unwrap_or(PrunerKind::None);
    let mut objectives = search.objectives.clone();
    if objectives.is_empty() {
        objectives.push(match task {
            TaskKind::Classify => Objective {
                metric: "accuracy".into(),
                maximize: true,
            },
            _ => Objective {
                metric: "perplexity".into(),
                maximize: false,
            },
        });
    }
    for o in &objectives {
        let ok = match o.metric.as_str() {
            "accuracy" => task == TaskKind::Classify,
            "perplexity" => task != TaskKind::Classify,
            _ => true,
        };
        if !ok {
            return Err(SearchError::Invalid(format!(
                "search `{}` optimizes {}, which a {} task does not measure",
                search.name,
                o.metric,
                task.name()
            )));
        }
    }
    if !objectives
        .iter()
        .any(|o| !matches!(o.metric.as_str(), "params" | "memory"))
    {
        return Err(SearchError::Invalid(format!(
            "search `{}` has no objective that training measures; add `maximize accuracy` or `minimize loss`",
            search.name
        )));
    }
    if sampler == SamplerKind::Gp && objectives.len() > 1 {
        return Err(SearchError::Invalid(format!(
            "search `{}`: the gp sampler takes one objective; use tpe or nsga2 for {}",
            search.name,
            objectives.len()
        )));
    }
    let steps = int("steps");
    let eval_every = int("eval_every").or_else(|| {
        (pruner != PrunerKind::None)
            .then(|| steps.map(|s| (s / 4).max(1)))
            .flatten()
    });
    if pruner != PrunerKind::None && eval_every.is_none() {
        return Err(SearchError::Invalid(format!(
            "search `{}` prunes trials but says neither `steps` nor `eval_every`; the pruner needs intermediate reports",
            search.name
        )));
    }
    Ok(Settings {
        name: search.name.clone(),
        trials: trials.or_else(|| int("trials")).unwrap_or(20).max(1),
        sampler,
        pruner,
        seed: int("seed").unwrap_or(0),
        steps,
        eval_every,
        workers: int("workers").unwrap_or(1).max(1),
        budgets: search.budgets.clone(),
        objectives,
    })
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
