//! The `search` block's settings with defaults filled in, and the checks that
//! need the task (which metrics it measures).

use crate::error::SearchError;
use crate::pruning::PrunerKind;
use crate::sampling::SamplerKind;
use crate::storage::model::Direction;
use peftc_compiler::search_spec::{Budget, Objective, SearchSpec};
use peftc_compiler::task::TaskKind;

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

    /// The objectives as the Optuna study's directions.
    pub fn directions(&self) -> Vec<Direction> {
        self.objectives
            .iter()
            .map(|o| {
                if o.maximize {
                    Direction::Maximize
                } else {
                    Direction::Minimize
                }
            })
            .collect()
    }
}

pub(crate) fn settings(
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
