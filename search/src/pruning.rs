//! Stopping weak trials early (multi-fidelity), through the `optimizer`
//! crate's pruners. A trial's intermediate values are the first objective's
//! metric on the held-out split, reported every `eval_every` steps.

use crate::state::StudyState;
use optimizer::pruner::{
    HyperbandPruner, MedianPruner, NopPruner, Pruner, SuccessiveHalvingPruner,
};
use optimizer::sampler::CompletedTrial;
use optimizer::{Direction, TrialState};
use std::collections::{BTreeMap, HashMap};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrunerKind {
    None,
    SuccessiveHalving,
    Hyperband,
    Median,
}

impl PrunerKind {
    pub fn from_name(s: &str) -> Option<PrunerKind> {
        Some(match s {
            "none" => PrunerKind::None,
            "successive_halving" => PrunerKind::SuccessiveHalving,
            "hyperband" => PrunerKind::Hyperband,
            "median" => PrunerKind::Median,
            _ => return None,
        })
    }
}

/// Rungs at `eval_every · η^k` steps.
const REDUCTION_FACTOR: u64 = 2;

pub fn make(kind: PrunerKind, maximize: bool, steps: u64, eval_every: u64) -> Box<dyn Pruner> {
    let d = if maximize {
        Direction::Maximize
    } else {
        Direction::Minimize
    };
    let min = eval_every.max(1);
    let max = steps.max(min);
    match kind {
        PrunerKind::None => Box::new(NopPruner),
        PrunerKind::SuccessiveHalving => Box::new(
            SuccessiveHalvingPruner::new()
                .min_resource(min)
                .max_resource(max)
                .reduction_factor(REDUCTION_FACTOR)
                .direction(d),
        ),
        PrunerKind::Hyperband => Box::new(
            HyperbandPruner::new()
                .min_resource(min)
                .max_resource(max)
                .reduction_factor(REDUCTION_FACTOR)
                .direction(d),
        ),
        PrunerKind::Median => Box::new(MedianPruner::new(d).n_min_trials(3)),
    }
}

/// Whether trial `number`, having reported `reports`, should stop, judged
/// against every other trial of the study that reported values.
pub fn should_prune(
    pruner: &dyn Pruner,
    number: u64,
    reports: &BTreeMap<u64, f64>,
    state: &StudyState,
    metric: &str,
) -> bool {
    let Some((&step, _)) = reports.iter().next_back() else {
        return false;
    };
    let history: Vec<CompletedTrial> = state
        .trials
        .values()
        .filter(|t| t.number != number && !t.reports.is_empty())
        .filter_map(|t| {
            let (state, value) = match &t.outcome {
                Some(crate::state::Outcome::Complete { metrics, .. }) => {
                    (TrialState::Complete, *metrics.get(metric)?)
                }
                Some(crate::state::Outcome::Pruned { value, .. }) => (TrialState::Pruned, *value),
                _ => return None,
            };
            let mut c = CompletedTrial::with_intermediate_values(
                t.number,
                HashMap::new(),
                HashMap::new(),
                HashMap::new(),
                value,
                t.reports.iter().map(|(&s, &v)| (s, v)).collect(),
                HashMap::new(),
            );
            c.state = state;
            Some(c)
        })
        .collect();
    let values: Vec<(u64, f64)> = reports.iter().map(|(&s, &v)| (s, v)).collect();
    pruner.should_prune(number, step, &values, &history)
}
