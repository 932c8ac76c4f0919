//! Optuna's data model as both of its storages hold it: a study with its
//! directions and attributes; trials with a state, parameters (internal value
//! and distribution), objective values, intermediate values and attributes.
//!
//! A transaction loads one study into a [`Snapshot`]; every write goes to the
//! backend and through [`Snapshot::apply`], so the transaction keeps reading
//! what it wrote.

use serde_json::{Value as Json, json};
use std::collections::BTreeMap;

/// User or system attributes: key → any JSON value.
pub type Attrs = BTreeMap<String, Json>;

/// `optuna.trial.TrialState`, with its journal codes and its RDB names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrialState {
    Running,
    Complete,
    Pruned,
    Fail,
    Waiting,
}

impl TrialState {
    pub const ALL: [TrialState; 5] = [
        TrialState::Running,
        TrialState::Complete,
        TrialState::Pruned,
        TrialState::Fail,
        TrialState::Waiting,
    ];

    pub fn code(self) -> u64 {
        match self {
            TrialState::Running => 0,
            TrialState::Complete => 1,
            TrialState::Pruned => 2,
            TrialState::Fail => 3,
            TrialState::Waiting => 4,
        }
    }

    pub fn from_code(code: u64) -> Option<TrialState> {
        TrialState::ALL.into_iter().find(|s| s.code() == code)
    }

    /// The member of the RDB schema's `trialstate` enum.
    pub fn sql(self) -> &'static str {
        match self {
            TrialState::Running => "RUNNING",
            TrialState::Complete => "COMPLETE",
            TrialState::Pruned => "PRUNED",
            TrialState::Fail => "FAIL",
            TrialState::Waiting => "WAITING",
        }
    }

    pub fn from_sql(name: &str) -> Option<TrialState> {
        TrialState::ALL.into_iter().find(|s| s.sql() == name)
    }

    pub fn is_finished(self) -> bool {
        match self {
            TrialState::Complete | TrialState::Pruned | TrialState::Fail => true,
            TrialState::Running | TrialState::Waiting => false,
        }
    }
}

/// `optuna.study.StudyDirection` (peftc never writes `NOT_SET`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Minimize,
    Maximize,
}

impl Direction {
    pub fn code(self) -> u64 {
        match self {
            Direction::Minimize => 1,
            Direction::Maximize => 2,
        }
    }

    pub fn from_code(code: u64) -> Option<Direction> {
        match code {
            1 => Some(Direction::Minimize),
            2 => Some(Direction::Maximize),
            _ => None,
        }
    }

    pub fn sql(self) -> &'static str {
        match self {
            Direction::Minimize => "MINIMIZE",
            Direction::Maximize => "MAXIMIZE",
        }
    }

    pub fn from_sql(name: &str) -> Option<Direction> {
        match name {
            "MINIMIZE" => Some(Direction::Minimize),
            "MAXIMIZE" => Some(Direction::Maximize),
            _ => None,
        }
    }
}

/// A parameter's distribution, as `optuna.distributions.distribution_to_json`
/// writes it. Parameters are stored in their internal form: the value for
/// numbers, the index of the choice for categoricals.
#[derive(Debug, Clone, PartialEq)]
pub enum Distribution {
    Float {
        low: f64,
        high: f64,
        log: bool,
        step: Option<f64>,
    },
    Int {
        low: i64,
        high: i64,
        log: bool,
        step: i64,
    },
    Categorical {
        choices: Vec<Json>,
    },
}

impl Distribution {
    /// `{"name": "IntDistribution", "attributes": {...}}` as a string, the
    /// form both storages keep.
    pub fn to_json_string(&self) -> String {
        let v = match self {
            Distribution::Float {
                low,
                high,
                log,
                step,
            } => json!({"name": "FloatDistribution",
                        "attributes": {"step": step, "low": low, "high": high, "log": log}}),
            Distribution::Int {
                low,
                high,
                log,
                step,
            } => json!({"name": "IntDistribution",
                        "attributes": {"log": log, "step": step, "low": low, "high": high}}),
            Distribution::Categorical { choices } => {
                json!({"name": "CategoricalDistribution", "attributes": {"choices": choices}})
            }
        };
        v.to_string()
    }

    pub fn from_json_str(text: &str) -> Result<Distribution, String> {
        let v: Json = serde_json::from_str(text).map_err(|e| format!("{e}"))?;
        let a = &v["attributes"];
        let num = |k: &str| {
            a[k].as_f64()
                .ok_or_else(|| format!("no number `{k}` in {text}"))
        };
        let int = |k: &str| {
            a[k].as_i64()
                .ok_or_else(|| format!("no integer `{k}` in {text}"))
        };
        let log = a["log"].as_bool().unwrap_or(false);
        match v["name"].as_str() {
            Some("FloatDistribution") => Ok(Distribution::Float {
                low: num("low")?,
                high: num("high")?,
                log,
                step: a["step"].as_f64(),
            }),
            Some("IntDistribution") => Ok(Distribution::Int {
                low: int("low")?,
                high: int("high")?,
                log,
                step: a["step"].as_i64().unwrap_or(1),
            }),
            Some("CategoricalDistribution") => Ok(Distribution::Categorical {
                choices: a["choices"]
                    .as_array()
                    .cloned()
                    .ok_or_else(|| format!("no `choices` in {text}"))?,
            }),
            other => Err(format!(
                "distribution {other:?} is not one peftc reads (Float, Int, Categorical)"
            )),
        }
    }
}

/// A parameter as stored: internal value and distribution.
#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    pub internal: f64,
    pub distribution: Distribution,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StudyRow {
    /// The storage's id (the journal counts from 0, PostgreSQL from 1).
    pub id: u64,
    pub name: String,
    pub directions: Vec<Direction>,
    pub user_attrs: Attrs,
    pub system_attrs: Attrs,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TrialRow {
    /// The storage's id, unique across studies.
    pub id: u64,
    /// Its position in the study, from 0.
    pub number: u64,
    pub state: TrialState,
    pub params: BTreeMap<String, Param>,
    pub values: Option<Vec<f64>>,
    pub intermediate: BTreeMap<i64, f64>,
    pub user_attrs: Attrs,
    pub system_attrs: Attrs,
}

/// A trial to create, in state RUNNING.
#[derive(Debug, Clone, Default)]
pub struct NewTrial {
    pub params: BTreeMap<String, Param>,
    pub user_attrs: Attrs,
    pub system_attrs: Attrs,
}

/// A write to an existing study or trial (trials by storage id).
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    StudyUserAttr {
        key: String,
        value: Json,
    },
    StudySystemAttr {
        key: String,
        value: Json,
    },
    TrialUserAttr {
        trial: u64,
        key: String,
        value: Json,
    },
    Intermediate {
        trial: u64,
        step: i64,
        value: f64,
    },
    /// A finished state and its values (`None` for a failed trial).
    Finish {
        trial: u64,
        state: TrialState,
        values: Option<Vec<f64>>,
    },
}

/// One study as a transaction sees it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// `None` until the study is created.
    pub study: Option<StudyRow>,
    /// Its trials, by number.
    pub trials: Vec<TrialRow>,
}

impl Snapshot {
    pub fn trial(&self, id: u64) -> Option<&TrialRow> {
        self.trials.iter().find(|t| t.id == id)
    }

    /// Applies a write with Optuna's rules: a finished trial never changes.
    /// Returns whether it changed anything.
    pub fn apply(&mut self, op: &Op) -> bool {
        fn open_trial(trials: &mut [TrialRow], id: u64) -> Option<&mut TrialRow> {
            trials
                .iter_mut()
                .find(|t| t.id == id)
                .filter(|t| !t.state.is_finished())
        }
        match op {
            Op::StudyUserAttr { key, value } => match self.study.as_mut() {
                Some(s) => {
                    s.user_attrs.insert(key.clone(), value.clone());
                    true
                }
                None => false,
            },
            Op::StudySystemAttr { key, value } => match self.study.as_mut() {
                Some(s) => {
                    s.system_attrs.insert(key.clone(), value.clone());
                    true
                }
                None => false,
            },
            Op::TrialUserAttr { trial, key, value } => match open_trial(&mut self.trials, *trial) {
                Some(t) => {
                    t.user_attrs.insert(key.clone(), value.clone());
                    true
                }
                None => false,
            },
            Op::Intermediate { trial, step, value } => match open_trial(&mut self.trials, *trial) {
                Some(t) => {
                    t.intermediate.insert(*step, *value);
                    true
                }
                None => false,
            },
            Op::Finish {
                trial,
                state,
                values,
            } => match open_trial(&mut self.trials, *trial) {
                Some(t) => {
                    t.state = *state;
                    if values.is_some() {
                        t.values = values.clone();
                    }
                    true
                }
                None => false,
            },
        }
    }

    /// Adds a created trial (the backend chose its id).
    pub fn push_trial(&mut self, id: u64, t: NewTrial) -> &TrialRow {
        let number = self.trials.len() as u64;
        self.trials.push(TrialRow {
            id,
            number,
            state: TrialState::Running,
            params: t.params,
            values: None,
            intermediate: BTreeMap::new(),
            user_attrs: t.user_attrs,
            system_attrs: t.system_attrs,
        });
        &self.trials[self.trials.len() - 1]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distributions_round_trip_through_optunas_json() {
        for d in [
            Distribution::Float {
                low: 1e-5,
                high: 0.1,
                log: true,
                step: None,
            },
            Distribution::Int {
                low: 4,
                high: 64,
                log: false,
                step: 4,
            },
            Distribution::Categorical {
                choices: vec![json!(0), json!("relu"), json!(true), json!(0.5)],
            },
        ] {
            assert_eq!(Distribution::from_json_str(&d.to_json_string()), Ok(d));
        }
        // As Optuna writes it.
        let optuna = r#"{"name": "IntDistribution", "attributes": {"log": true, "step": 1, "low": 1, "high": 16}}"#;
        assert_eq!(
            Distribution::from_json_str(optuna),
            Ok(Distribution::Int {
                low: 1,
                high: 16,
                log: true,
                step: 1
            })
        );
    }

    #[test]
    fn a_finished_trial_is_never_updated() {
        let mut s = Snapshot::default();
        s.push_trial(7, NewTrial::default());
        let finish = |state| Op::Finish {
            trial: 7,
            state,
            values: Some(vec![1.0]),
        };
        assert!(s.apply(&finish(TrialState::Complete)));
        assert!(!s.apply(&finish(TrialState::Fail)));
        assert!(!s.apply(&Op::Intermediate {
            trial: 7,
            step: 1,
            value: 0.5
        }));
        assert_eq!(s.trials[0].state, TrialState::Complete);
        assert!(s.trials[0].intermediate.is_empty());
    }
}
