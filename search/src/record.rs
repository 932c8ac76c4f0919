//! How a peftc study is written as an Optuna study, and read back.
//!
//! | peftc                         | Optuna                                              |
//! |-------------------------------|-----------------------------------------------------|
//! | search dimension `lora.r`     | parameter `lora.r` with its distribution            |
//! | trial (a configuration)       | trial; a retake after a worker died is a new trial  |
//! |                               | with system attrs `failed_trial`, `retry_history`   |
//! |                               | (Optuna's `RetryFailedTrialCallback`)               |
//! | objectives                    | study directions, `study:metric_names`, values     |
//! | intermediate metric           | intermediate values                                 |
//! | cost, spec text, worker       | trial user attrs `peftc:*`                          |
//! | metrics, seconds, reason      | trial user attrs `peftc:*`, set before it finishes  |
//! | infeasible draws              | study user attrs `peftc:infeasible:NNNNNN`          |
//! | spec hash, spec source        | study user attrs                                    |

use crate::cost::Cost;
use crate::space::{Dim, Domain, Space, Value};
use crate::state::NamedPoint;
use crate::storage::model::{Attrs, Distribution, Param};
use serde_json::{Value as Json, json};
use std::collections::BTreeMap;

/// Attribute keys.
pub mod key {
    pub const SPEC_HASH: &str = "peftc:spec_hash";
    pub const SEARCH_SPEC: &str = "peftc:search_spec";
    pub const INFEASIBLE: &str = "peftc:infeasible:";
    pub const SPEC: &str = "peftc:spec";
    pub const TRAINABLE: &str = "peftc:trainable_params";
    pub const TOTAL: &str = "peftc:total_params";
    pub const MEMORY: &str = "peftc:memory_bytes";
    pub const WORKER: &str = "peftc:worker";
    pub const METRICS: &str = "peftc:metrics";
    pub const SECONDS: &str = "peftc:seconds";
    pub const FAIL_REASON: &str = "peftc:fail_reason";
    /// On a failed trial: its worker died and the configuration continues
    /// in a later trial.
    pub const RETAKEN: &str = "peftc:retaken";
    /// Optuna's own (`Study.set_metric_names`).
    pub const METRIC_NAMES: &str = "study:metric_names";
    /// Optuna's `RetryFailedTrialCallback`.
    pub const FAILED_TRIAL: &str = "failed_trial";
    pub const RETRY_HISTORY: &str = "retry_history";
}

fn value_json(v: &Value) -> Json {
    serde_json::to_value(v).unwrap_or(Json::Null)
}

/// The dimension as Optuna's distribution.
pub fn distribution(d: &Dim) -> Distribution {
    match &d.domain {
        Domain::Choice(c) => Distribution::Categorical {
            choices: c.iter().map(|ch| value_json(&ch.value)).collect(),
        },
        &Domain::Int { lo, hi, log, step } => Distribution::Int {
            low: lo,
            high: hi,
            log,
            step: step.unwrap_or(1),
        },
        &Domain::Float { lo, hi, log, step } => Distribution::Float {
            low: lo,
            high: hi,
            log,
            step,
        },
    }
}

/// A point as Optuna parameters (internal values).
pub fn params(space: &Space, point: &NamedPoint) -> BTreeMap<String, Param> {
    space
        .dims
        .iter()
        .filter_map(|d| {
            let v = point.get(&d.name)?;
            let internal = match &d.domain {
                Domain::Choice(c) => c.iter().position(|ch| &ch.value == v)? as f64,
                Domain::Int { .. } | Domain::Float { .. } => v.as_f64()?,
            };
            Some((
                d.name.clone(),
                Param {
                    internal,
                    distribution: distribution(d),
                },
            ))
        })
        .collect()
}

/// The point of a trial's parameters; `None` unless every dimension is there.
pub fn point(space: &Space, params: &BTreeMap<String, Param>) -> Option<NamedPoint> {
    space
        .dims
        .iter()
        .map(|d| {
            let p = params.get(&d.name)?;
            let v = match &d.domain {
                Domain::Choice(c) => c.get(p.internal as usize)?.value.clone(),
                Domain::Int { .. } => Value::Int(p.internal.round() as i64),
                Domain::Float { .. } => Value::Float(p.internal),
            };
            Some((d.name.clone(), v))
        })
        .collect()
}

pub fn cost_attrs(c: &Cost) -> Attrs {
    [
        (key::TRAINABLE.to_string(), json!(c.trainable)),
        (key::TOTAL.to_string(), json!(c.total)),
        (key::MEMORY.to_string(), json!(c.memory)),
    ]
    .into()
}

pub fn cost(attrs: &Attrs) -> Option<Cost> {
    let n = |k: &str| attrs.get(k).and_then(Json::as_u64);
    Some(Cost {
        trainable: n(key::TRAINABLE)?,
        total: n(key::TOTAL)?,
        memory: n(key::MEMORY)?,
    })
}

/// An infeasible draw as a study user attribute's value.
pub fn infeasible_json(point: &NamedPoint, cost: Option<&Cost>, reason: &str) -> Json {
    json!({"point": point, "cost": cost, "reason": reason})
}

pub fn infeasible(v: &Json) -> Option<(NamedPoint, Option<Cost>, String)> {
    let point: NamedPoint = serde_json::from_value(v.get("point")?.clone()).ok()?;
    let cost: Option<Cost> = serde_json::from_value(v.get("cost")?.clone()).ok()?;
    Some((point, cost, v.get("reason")?.as_str()?.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::space::{Choice, Site};
    use peftc_grammar::Span;

    fn dim(name: &str, domain: Domain) -> Dim {
        Dim {
            name: name.into(),
            domain,
            site: Site::Train {
                value_span: Span::default(),
            },
        }
    }

    #[test]
    fn a_point_round_trips_through_optuna_parameters() {
        let space = Space {
            block: "a".into(),
            dims: vec![
                dim(
                    "lora.r",
                    Domain::Choice(
                        [0, 4, 8]
                            .map(|r| Choice {
                                value: Value::Int(r),
                                text: r.to_string(),
                            })
                            .to_vec(),
                    ),
                ),
                dim(
                    "adapter.act",
                    Domain::Choice(vec![
                        Choice {
                            value: Value::Text("relu".into()),
                            text: "relu".into(),
                        },
                        Choice {
                            value: Value::Text("gelu".into()),
                            text: "gelu".into(),
                        },
                    ]),
                ),
                dim(
                    "adapter.bottleneck",
                    Domain::Int {
                        lo: 8,
                        hi: 64,
                        log: true,
                        step: None,
                    },
                ),
                dim(
                    "train.lr",
                    Domain::Float {
                        lo: 1e-5,
                        hi: 1e-2,
                        log: true,
                        step: None,
                    },
                ),
            ],
        };
        let p: NamedPoint = [
            ("lora.r".to_string(), Value::Int(8)),
            ("adapter.act".to_string(), Value::Text("gelu".into())),
            ("adapter.bottleneck".to_string(), Value::Int(23)),
            ("train.lr".to_string(), Value::Float(3e-4)),
        ]
        .into();
        let params = params(&space, &p);
        assert_eq!(
            params["lora.r"].internal, 2.0,
            "a choice is stored as its index"
        );
        assert_eq!(params["adapter.act"].internal, 1.0);
        assert_eq!(
            params["lora.r"].distribution.to_json_string(),
            r#"{"attributes":{"choices":[0,4,8]},"name":"CategoricalDistribution"}"#
        );
        assert_eq!(point(&space, &params), Some(p));
        let mut partial = params.clone();
        partial.remove("train.lr");
        assert_eq!(point(&space, &partial), None);
    }
}
