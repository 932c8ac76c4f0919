//! The study as peftc reads it out of the Optuna study: one record per
//! configuration (a trial and its retakes), the infeasible draws, the spec.

use crate::cost::Cost;
use crate::record::{self, key};
use crate::space::{Space, Value};
use crate::storage::model::{Snapshot, TrialRow, TrialState};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use std::collections::BTreeMap;

/// A point as the study stores it: dimension name → value.
pub type NamedPoint = BTreeMap<String, Value>;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Outcome {
    Complete {
        metrics: BTreeMap<String, f64>,
        seconds: f64,
    },
    Pruned {
        step: u64,
        value: f64,
        seconds: f64,
    },
    Failed {
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct TrialRecord {
    /// The Optuna number of its first trial; its folder is `trials/<number>`.
    pub number: u64,
    pub point: NamedPoint,
    pub cost: Cost,
    /// The worker of the latest attempt.
    pub worker: String,
    /// How many times a worker took it (more than once: earlier ones died).
    pub claims: u32,
    /// The Optuna numbers of its attempts, first to latest.
    pub attempts: Vec<u64>,
    /// The storage id of the latest attempt.
    pub trial_id: u64,
    /// Intermediate values of the latest attempt, by step.
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

fn text(attrs: &BTreeMap<String, Json>, k: &str) -> Option<String> {
    attrs.get(k).and_then(Json::as_str).map(String::from)
}

/// What a finished attempt says about its configuration; `None` for a
/// running one and for one whose worker died (retaken).
fn outcome(t: &TrialRow, metric_names: &[String]) -> Option<Outcome> {
    let seconds = t
        .user_attrs
        .get(key::SECONDS)
        .and_then(Json::as_f64)
        .unwrap_or(f64::NAN);
    match t.state {
        TrialState::Running | TrialState::Waiting => None,
        TrialState::Complete => {
            let metrics = match t.user_attrs.get(key::METRICS) {
                Some(m) => serde_json::from_value(m.clone()).unwrap_or_default(),
                // Finished by another tool: the values, by metric name.
                None => metric_names
                    .iter()
                    .cloned()
                    .zip(t.values.clone().unwrap_or_default())
                    .collect(),
            };
            Some(Outcome::Complete { metrics, seconds })
        }
        TrialState::Pruned => {
            let (step, value) = t
                .intermediate
                .iter()
                .next_back()
                .map_or((0, f64::NAN), |(s, v)| (*s as u64, *v));
            Some(Outcome::Pruned {
                step,
                value,
                seconds,
            })
        }
        TrialState::Fail => {
            if t.user_attrs.get(key::RETAKEN) == Some(&Json::Bool(true)) {
                None
            } else {
                Some(Outcome::Failed {
                    reason: text(&t.user_attrs, key::FAIL_REASON)
                        .unwrap_or_else(|| "failed (no reason recorded)".into()),
                })
            }
        }
    }
}

impl StudyState {
    /// Reads the peftc study out of `snap`. Trials whose parameters are not
    /// a point of `space` (another tool's) are left out.
    pub fn from_snapshot(snap: &Snapshot, space: &Space) -> StudyState {
        let mut s = StudyState::default();
        let Some(study) = &snap.study else {
            return s;
        };
        s.spec_hash = text(&study.user_attrs, key::SPEC_HASH);
        let metric_names: Vec<String> = study
            .system_attrs
            .get(key::METRIC_NAMES)
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default();
        s.infeasible = study
            .user_attrs
            .iter()
            .filter(|(k, _)| k.starts_with(key::INFEASIBLE))
            .filter_map(|(_, v)| record::infeasible(v))
            .collect();
        for t in &snap.trials {
            let Some(point) = record::point(space, &t.params) else {
                continue;
            };
            let first = t
                .system_attrs
                .get(key::FAILED_TRIAL)
                .and_then(Json::as_u64)
                .unwrap_or(t.number);
            let r = s.trials.entry(first).or_insert_with(|| TrialRecord {
                number: first,
                point,
                cost: record::cost(&t.user_attrs).unwrap_or(Cost {
                    trainable: 0,
                    total: 0,
                    memory: 0,
                }),
                worker: String::new(),
                claims: 0,
                attempts: Vec::new(),
                trial_id: t.id,
                reports: BTreeMap::new(),
                outcome: None,
            });
            // A finished configuration is never reopened.
            if r.outcome.is_some() {
                continue;
            }
            r.claims += 1;
            r.attempts.push(t.number);
            r.trial_id = t.id;
            r.worker = text(&t.user_attrs, key::WORKER).unwrap_or_default();
            r.reports = t
                .intermediate
                .iter()
                .filter(|(s, _)| **s >= 0)
                .map(|(s, v)| (*s as u64, *v))
                .collect();
            r.outcome = outcome(t, &metric_names);
        }
        s
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
    use crate::space::{Choice, Dim, Domain, Site};
    use crate::storage::model::{Attrs, NewTrial, StudyRow};
    use serde_json::json;

    fn space() -> Space {
        Space {
            block: "a".into(),
            dims: vec![Dim {
                name: "lora.r".into(),
                domain: Domain::Choice(
                    [4, 8]
                        .map(|r| Choice {
                            value: Value::Int(r),
                            text: r.to_string(),
                        })
                        .to_vec(),
                ),
                site: Site::Train {
                    value_span: Default::default(),
                },
            }],
        }
    }

    fn attempt(snap: &mut Snapshot, id: u64, r: i64, first: Option<u64>, worker: &str) {
        let point: NamedPoint = [("lora.r".to_string(), Value::Int(r))].into();
        let mut system_attrs = Attrs::new();
        if let Some(f) = first {
            system_attrs.insert(key::FAILED_TRIAL.into(), json!(f));
        }
        snap.push_trial(
            id,
            NewTrial {
                params: record::params(&space(), &point),
                user_attrs: [(key::WORKER.to_string(), json!(worker))].into(),
                system_attrs,
            },
        );
    }

    fn finish(snap: &mut Snapshot, id: u64, state: TrialState, retaken: bool) {
        use crate::storage::model::Op;
        if retaken {
            snap.apply(&Op::TrialUserAttr {
                trial: id,
                key: key::RETAKEN.into(),
                value: json!(true),
            });
        }
        snap.apply(&Op::TrialUserAttr {
            trial: id,
            key: key::METRICS.into(),
            value: json!({"accuracy": 0.9}),
        });
        snap.apply(&Op::Finish {
            trial: id,
            state,
            values: Some(vec![0.9]),
        });
    }

    #[test]
    fn a_retaken_trial_is_one_configuration_and_a_finished_one_stays_finished() {
        let mut snap = Snapshot {
            study: Some(StudyRow {
                id: 0,
                name: "s".into(),
                directions: Vec::new(),
                user_attrs: Attrs::new(),
                system_attrs: Attrs::new(),
            }),
            trials: Vec::new(),
        };
        attempt(&mut snap, 10, 4, None, "a");
        attempt(&mut snap, 11, 8, None, "b");
        finish(&mut snap, 10, TrialState::Complete, false);
        // b died; its trial is failed and retaken by a as trial number 2.
        finish(&mut snap, 11, TrialState::Fail, true);
        let s = StudyState::from_snapshot(&snap, &space());
        assert_eq!(s.running().count(), 1, "a retaken configuration is open");
        attempt(&mut snap, 12, 8, Some(1), "a");
        let s = StudyState::from_snapshot(&snap, &space());
        assert_eq!(s.trials.len(), 2);
        assert_eq!(s.trials[&1].attempts, [1, 2]);
        assert_eq!(
            (s.trials[&1].worker.as_str(), s.trials[&1].trial_id),
            ("a", 12)
        );
        finish(&mut snap, 12, TrialState::Complete, false);
        let s = StudyState::from_snapshot(&snap, &space());
        assert_eq!(s.trials[&1].metric("accuracy"), Some(0.9));
        assert_eq!(s.running().count(), 0);
    }
}
