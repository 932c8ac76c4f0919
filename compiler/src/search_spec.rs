//! The `search` block: which peft block is the space, the budget every
//! configuration must fit before it is trained, objectives, trial count,
//! sampler and pruner.

use crate::methods::{ArgSpec, ArgType, Args, Default};
use peftc_grammar::ast::{CmpOp, Direction, SearchBlock, SearchItem, Unit, ValueKind};
use peftc_grammar::suggest::did_you_mean;
use peftc_grammar::{Diagnostic, Span};
use serde::{Deserialize, Serialize};

pub const SAMPLERS: &[&str] = &["tpe", "random", "grid", "gp", "nsga2"];
pub const PRUNERS: &[&str] = &["none", "successive_halving", "hyperband", "median"];
pub const METRICS: &[&str] = &["accuracy", "loss", "perplexity", "params", "memory"];

/// Keys of a `search` block besides `budget` and objectives.
pub const SEARCH_KEYS: &[ArgSpec] = &[
    ArgSpec {
        name: "space",
        ty: ArgType::Name,
        default: Some(Default::Unset),
        doc: "the peft block whose sets and ranges span the space",
    },
    ArgSpec {
        name: "trials",
        ty: ArgType::Int {
            min: 1,
            max: 1_000_000,
            zero_absent: false,
        },
        default: Some(Default::Int(20)),
        doc: "configurations to try",
    },
    ArgSpec {
        name: "sampler",
        ty: ArgType::Choice(SAMPLERS),
        default: Some(Default::Name("tpe")),
        doc: "how the next configuration is chosen",
    },
    ArgSpec {
        name: "pruner",
        ty: ArgType::Choice(PRUNERS),
        default: Some(Default::Name("none")),
        doc: "how weak trials are stopped early",
    },
    ArgSpec {
        name: "seed",
        ty: ArgType::Int {
            min: 0,
            max: i64::MAX,
            zero_absent: false,
        },
        default: Some(Default::Int(0)),
        doc: "sampler seed",
    },
    ArgSpec {
        name: "steps",
        ty: ArgType::Int {
            min: 1,
            max: i64::MAX,
            zero_absent: false,
        },
        default: Some(Default::Unset),
        doc: "training steps per trial",
    },
    ArgSpec {
        name: "eval_every",
        ty: ArgType::Int {
            min: 1,
            max: i64::MAX,
            zero_absent: false,
        },
        default: Some(Default::Unset),
        doc: "steps between intermediate reports",
    },
    ArgSpec {
        name: "workers",
        ty: ArgType::Int {
            min: 1,
            max: 1024,
            zero_absent: false,
        },
        default: Some(Default::Int(1)),
        doc: "trials run at once",
    },
];

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "value")]
pub enum Limit {
    /// A fraction of the model's total parameters (`0.5%` is 0.005).
    Fraction(f64),
    Count(u64),
    Bytes(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BudgetMetric {
    Params,
    Memory,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Budget {
    pub metric: BudgetMetric,
    pub limit: Limit,
    /// `<` rather than `<=`.
    pub strict: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Objective {
    pub metric: String,
    pub maximize: bool,
}

/// A checked `search` block.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SearchSpec {
    pub name: String,
    #[serde(skip)]
    pub span: Span,
    pub budgets: Vec<Budget>,
    pub objectives: Vec<Objective>,
    pub keys: Args,
}

impl SearchSpec {
    pub fn key_str(&self, k: &str) -> Option<&str> {
        self.keys.fixed(k).and_then(|v| v.as_str())
    }

    pub fn key_int(&self, k: &str) -> Option<i64> {
        self.keys.fixed(k).and_then(|v| v.as_i64())
    }
}

/// Checks a `search` block's keys, budget and objectives (not the `space`
/// reference, which the spec checker resolves).
pub fn check_search(block: &SearchBlock) -> Result<SearchSpec, Vec<Diagnostic>> {
    let mut errors = Vec::new();
    let mut entries = Vec::new();
    let mut budgets = Vec::new();
    let mut objectives: Vec<(Objective, Span)> = Vec::new();
    for item in &block.items {
        match item {
            SearchItem::Entry(e) => entries.push(peftc_grammar::ast::Arg {
                key: e.key.clone(),
                value: e.value.clone(),
                span: e.span,
            }),
            SearchItem::Budget(cs) => {
                for c in cs {
                    match budget(c) {
                        Ok(b) => budgets.push(b),
                        Err(d) => errors.push(d),
                    }
                }
            }
            SearchItem::Objective {
                direction,
                metric,
                span,
            } => {
                if !METRICS.contains(&metric.node.as_str()) {
                    errors.push(
                        Diagnostic::error(format!("unknown metric `{}`", metric.node))
                            .at(metric.span, "not a metric")
                            .with_suggestion(did_you_mean(&metric.node, METRICS.iter().copied()))
                            .with_note(format!("metrics: {}", METRICS.join(", "))),
                    );
                    continue;
                }
                let maximize = direction.node == Direction::Maximize;
                let natural_max = metric.node == "accuracy";
                if maximize != natural_max {
                    let word = if maximize { "maximize" } else { "minimize" };
                    errors.push(
                        Diagnostic::error(format!(
                            "`{word} {}` optimizes the wrong way",
                            metric.node
                        ))
                        .at(direction.span, "inverted objective")
                        .with_help(format!(
                            "write `{} {}`",
                            if natural_max { "maximize" } else { "minimize" },
                            metric.node
                        )),
                    );
                    continue;
                }
                if let Some((_, first)) = objectives.iter().find(|(o, _)| o.metric == metric.node) {
                    errors.push(
                        Diagnostic::error(format!("objective `{}` given twice", metric.node))
                            .at(*span, "again here")
                            .with_secondary(*first, "first here"),
                    );
                    continue;
                }
                objectives.push((
                    Objective {
                        metric: metric.node.clone(),
                        maximize,
                    },
                    *span,
                ));
            }
        }
    }
    let keys = match crate::methods::check_keyed("search", "key", SEARCH_KEYS, &entries, block.span)
    {
        Ok(k) => Some(k),
        Err(mut es) => {
            errors.append(&mut es);
            None
        }
    };
    if let Some(k) = &keys
        && k.is_space()
    {
        errors.push(
            Diagnostic::error("search settings cannot themselves be search sets")
                .at(block.span, ""),
        );
    }
    match (errors.is_empty(), keys) {
        (true, Some(keys)) => Ok(SearchSpec {
            name: block.name.node.clone(),
            span: block.span,
            budgets,
            objectives: objectives.into_iter().map(|(o, _)| o).collect(),
            keys,
        }),
        _ => Err(errors),
    }
}

fn budget(c: &peftc_grammar::ast::Constraint) -> Result<Budget, Diagnostic> {
    let metric = match c.metric.node.as_str() {
        "params" => BudgetMetric::Params,
        "memory" => BudgetMetric::Memory,
        other => {
            return Err(
                Diagnostic::error(format!("no budget can be set on `{other}`"))
                    .at(c.metric.span, "not a budget")
                    .with_suggestion(did_you_mean(other, ["params", "memory"]))
                    .with_note("budgets: params (count or % of the model), memory (bytes)"),
            );
        }
    };
    let strict = match c.op.node {
        CmpOp::Le => false,
        CmpOp::Lt => true,
        CmpOp::Ge | CmpOp::Gt => {
            return Err(
                Diagnostic::error("a budget is an upper bound").at(c.op.span, "use `<=` or `<`")
            );
        }
    };
    let bad = |what: &str| {
        Diagnostic::error(format!("a {} budget must be {what}", c.metric.node)).at(c.value.span, "")
    };
    let limit = match (metric, &c.value.node) {
        (
            BudgetMetric::Params,
            ValueKind::Quantity {
                amount,
                unit: Unit::Percent,
            },
        ) if *amount > 0.0 && *amount <= 100.0 => Limit::Fraction(amount / 100.0),
        (BudgetMetric::Params, ValueKind::Quantity { amount, unit })
            if unit.count().is_some() && *amount > 0.0 =>
        {
            Limit::Count((amount * unit.count().unwrap_or(1.0)).round() as u64)
        }
        (BudgetMetric::Params, ValueKind::Int(n)) if *n > 0 => Limit::Count(*n as u64),
        (BudgetMetric::Params, _) => {
            return Err(bad("a percentage in (0, 100] or a count (`500K`, `2M`)"));
        }
        (BudgetMetric::Memory, ValueKind::Quantity { amount, unit })
            if unit.bytes().is_some() && *amount > 0.0 =>
        {
            Limit::Bytes((amount * unit.bytes().unwrap_or(1.0)).round() as u64)
        }
        (BudgetMetric::Memory, ValueKind::Int(n)) if *n > 0 => Limit::Bytes(*n as u64),
        (BudgetMetric::Memory, _) => return Err(bad("a size such as `2GiB` or `512MB`")),
    };
    Ok(Budget {
        metric,
        limit,
        strict,
    })
}
