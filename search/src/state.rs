//! The study as the journal's events add up: one record per trial number.

use crate::cost::Cost;
use crate::journal::{Event, NamedPoint, Outcome};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq)]
pub struct TrialRecord {
    pub number: u64,
    pub point: NamedPoint,
    pub cost: Cost,
    /// The worker of the latest claim.
    pub worker: String,
    /// How many times a worker took it (more than once: earlier ones died).
    pub claims: u32,
    /// Intermediate values by step (a rerun after a crash overwrites them).
    pub reports: BTreeMap<u64, f64>,
    pub outcome: Option<Outcome>,
}

impl TrialRecord {
    pub fn metric(&self, name: &str) -> Option<f64> {
        match &self.outcome {
            Some(Outcome::Complete { metrics, .. }) => metrics.get(name).copied(),
            _ => None,
        }
    }

    pub fn state_name(&self) -> &'static str {
        match &self.outcome {
            None => "running",
            Some(Outcome::Complete { .. }) => "complete",
            Some(Outcome::Pruned { .. }) => "pruned",
            Some(Outcome::Failed { .. }) => "failed",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct StudyState {
    pub spec_hash: Option<String>,
    pub trials: BTreeMap<u64, TrialRecord>,
    pub infeasible: Vec<(NamedPoint, Option<Cost>, String)>,
}

impl StudyState {
    pub fn from_events(events: &[Event]) -> StudyState {
        let mut s = StudyState::default();
        for e in events {
            match e {
                Event::Study { spec_hash, .. } => {
                    s.spec_hash.get_or_insert_with(|| spec_hash.clone());
                }
                Event::Claim {
                    trial,
                    worker,
                    point,
                    cost,
                    ..
                } => {
                    let r = s.trials.entry(*trial).or_insert_with(|| TrialRecord {
                        number: *trial,
                        point: point.clone(),
                        cost: *cost,
                        worker: worker.clone(),
                        claims: 0,
                        reports: BTreeMap::new(),
                        outcome: None,
                    });
                    // A finished trial is never reopened.
                    if r.outcome.is_none() {
                        r.worker = worker.clone();
                        r.claims += 1;
                    }
                }
                Event::Report { trial, step, value } => {
                    if let Some(r) = s.trials.get_mut(trial)
                        && r.outcome.is_none()
                    {
                        r.reports.insert(*step, *value);
                    }
                }
                Event::Finish { trial, outcome, .. } => {
                    if let Some(r) = s.trials.get_mut(trial) {
                        r.outcome.get_or_insert_with(|| outcome.clone());
                    }
                }
                Event::Infeasible {
                    point,
                    cost,
                    reason,
                } => s.infeasible.push((point.clone(), *cost, reason.clone())),
            }
        }
        s
    }

    pub fn next_number(&self) -> u64 {
        self.trials.keys().next_back().map_or(0, |n| n + 1)
    }

    pub fn finished(&self) -> impl Iterator<Item = &TrialRecord> {
        self.trials.values().filter(|t| t.outcome.is_some())
    }

    pub fn running(&self) -> impl Iterator<Item = &TrialRecord> {
        self.trials.values().filter(|t| t.outcome.is_none())
    }

    /// Whether `point` was already claimed (trained or being trained).
    pub fn has_point(&self, point: &NamedPoint) -> bool {
        self.trials.values().any(|t| &t.point == point)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::space::Value;

    fn claim(trial: u64, worker: &str, r: i64) -> Event {
        Event::Claim {
            trial,
            worker: worker.into(),
            point: [("lora.r".to_string(), Value::Int(r))].into(),
            cost: Cost {
                trainable: 1,
                total: 10,
                memory: 0,
            },
            time: 0.0,
        }
    }

    fn finish(trial: u64, acc: f64) -> Event {
        Event::Finish {
            trial,
            worker: "w".into(),
            outcome: Outcome::Complete {
                metrics: [("accuracy".to_string(), acc)].into(),
                seconds: 1.0,
            },
            time: 0.0,
        }
    }

    #[test]
    fn a_reclaimed_trial_keeps_its_number_and_first_result_wins() {
        let events = vec![
            claim(0, "a", 4),
            claim(1, "b", 8),
            Event::Report {
                trial: 1,
                step: 10,
                value: 0.5,
            },
            // worker b died; a retakes trial 1
            claim(1, "a", 8),
            finish(0, 0.9),
            finish(1, 0.95),
            finish(1, 0.1),
        ];
        let s = StudyState::from_events(&events);
        assert_eq!(s.trials.len(), 2);
        assert_eq!(s.trials[&1].worker, "a");
        assert_eq!(s.trials[&1].claims, 2);
        assert_eq!(s.trials[&1].metric("accuracy"), Some(0.95));
        assert_eq!(s.next_number(), 2);
        assert_eq!(s.running().count(), 0);
    }
}
