//! The search space of a spec: one dimension per set (`{4, 8, 16}`) or range
//! (`4..=64 log`) written in the explored `peft` block or in the `train` block.
//!
//! A dimension remembers where its value was written, so that a point of the
//! space becomes a concrete spec by replacing that text (see [`crate::instantiate`]).

use optimizer::distribution::{
    CategoricalDistribution, Distribution, FloatDistribution, IntDistribution,
};
use optimizer::parameter::ParamValue;
use peftc_compiler::methods::{ArgType, method};
use peftc_grammar::Span;
use peftc_grammar::ast::{Item, SpecFile, ValueKind};
use serde::{Deserialize, Serialize};

/// A concrete value of one dimension.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    Int(i64),
    Float(f64),
    Bool(bool),
    /// A name or a string, rendered as the spec wrote it.
    Text(String),
}

impl Value {
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::Int(i) => Some(i as f64),
            Value::Float(f) => Some(f),
            _ => None,
        }
    }

    /// Whether this value makes a method absent: size 0 or `enabled=false`.
    fn is_absent(&self) -> bool {
        matches!(self, Value::Int(0) | Value::Bool(false))
    }
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Text(s) => f.write_str(s),
        }
    }
}

/// One element of a set, with the text the spec wrote for it.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    pub value: Value,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Domain {
    /// `{a, b, c}`: one of these.
    Choice(Vec<Choice>),
    /// An integer range, both ends included.
    Int {
        lo: i64,
        hi: i64,
        log: bool,
        step: Option<i64>,
    },
    Float {
        lo: f64,
        hi: f64,
        log: bool,
        step: Option<f64>,
    },
}

/// Where a dimension's value is written.
#[derive(Debug, Clone, PartialEq)]
pub enum Site {
    /// An argument of statement `statement` of the explored block.
    Arg {
        statement: usize,
        /// The whole statement, removed when the value makes the method absent.
        statement_span: Span,
        value_span: Span,
        /// 0 (sizes) or `false` (`enabled`) means "method absent".
        absent_when_zero: bool,
    },
    /// A key of the `train` block.
    Train { value_span: Span },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Dim {
    /// `lora.r`, `adapter#1.bottleneck`, `train.lr`.
    pub name: String,
    pub domain: Domain,
    pub site: Site,
}

impl Dim {
    /// The optimizer's view of the dimension.
    pub fn distribution(&self) -> Distribution {
        match &self.domain {
            Domain::Choice(c) => {
                Distribution::Categorical(CategoricalDistribution { n_choices: c.len() })
            }
            &Domain::Int { lo, hi, log, step } => Distribution::Int(IntDistribution {
                low: lo,
                high: hi,
                log_scale: log,
                step,
            }),
            &Domain::Float { lo, hi, log, step } => Distribution::Float(FloatDistribution {
                low: lo,
                high: hi,
                log_scale: log,
                step,
            }),
        }
    }

    /// The value a sampled parameter stands for (clamped into the domain).
    pub fn value_of(&self, p: &ParamValue) -> Value {
        match (&self.domain, p) {
            (Domain::Choice(c), ParamValue::Categorical(i)) => {
                c[(*i).min(c.len() - 1)].value.clone()
            }
            (&Domain::Int { lo, hi, .. }, ParamValue::Int(v)) => Value::Int((*v).clamp(lo, hi)),
            (&Domain::Int { lo, hi, .. }, ParamValue::Float(v)) => {
                Value::Int((v.round() as i64).clamp(lo, hi))
            }
            (&Domain::Float { lo, hi, .. }, ParamValue::Float(v)) => Value::Float(v.clamp(lo, hi)),
            (&Domain::Float { lo, hi, .. }, ParamValue::Int(v)) => {
                Value::Float((*v as f64).clamp(lo, hi))
            }
            (Domain::Choice(c), _) => c[0].value.clone(),
            (&Domain::Int { lo, .. }, _) => Value::Int(lo),
            (&Domain::Float { lo, .. }, _) => Value::Float(lo),
        }
    }

    /// The sampled-parameter form of a value; `None` if the value is not in the domain.
    pub fn param_of(&self, v: &Value) -> Option<ParamValue> {
        match (&self.domain, v) {
            (Domain::Choice(c), v) => c
                .iter()
                .position(|ch| &ch.value == v)
                .map(ParamValue::Categorical),
            (Domain::Int { .. }, Value::Int(i)) => Some(ParamValue::Int(*i)),
            (Domain::Float { .. }, v) => v.as_f64().map(ParamValue::Float),
            _ => None,
        }
    }

    /// The text that replaces the set or range for `v`.
    pub fn render(&self, v: &Value) -> String {
        if let Domain::Choice(c) = &self.domain
            && let Some(ch) = c.iter().find(|ch| &ch.value == v)
        {
            return ch.text.clone();
        }
        v.to_string()
    }

    /// Whether `v` removes the dimension's method from the configuration.
    pub fn makes_absent(&self, v: &Value) -> bool {
        matches!(
            self.site,
            Site::Arg {
                absent_when_zero: true,
                ..
            }
        ) && v.is_absent()
    }

    /// A few representative values: every choice, or up to `n` points of a
    /// range (log-spaced for `log` ranges). Used by the grid sampler and to
    /// enumerate small spaces.
    pub fn grid(&self, n: usize) -> Vec<Value> {
        let n = n.max(2);
        match &self.domain {
            Domain::Choice(c) => c.iter().map(|ch| ch.value.clone()).collect(),
            &Domain::Int { lo, hi, log, step } => {
                let step = step.unwrap_or(1).max(1);
                let count = ((hi - lo) / step + 1) as usize;
                if count <= n {
                    return (0..count)
                        .map(|k| Value::Int(lo + k as i64 * step))
                        .collect();
                }
                let mut out: Vec<i64> = spaced(lo as f64, hi as f64, log, n)
                    .into_iter()
                    .map(|x| (lo + ((x.round() as i64 - lo) / step) * step).clamp(lo, hi))
                    .collect();
                out.dedup();
                out.into_iter().map(Value::Int).collect()
            }
            &Domain::Float { lo, hi, log, .. } => spaced(lo, hi, log, n)
                .into_iter()
                .map(Value::Float)
                .collect(),
        }
    }

    /// The value that makes the configuration smallest: the least size, or the
    /// first choice for non-numeric sets.
    pub fn smallest(&self) -> Value {
        match &self.domain {
            Domain::Choice(c) => c
                .iter()
                .map(|ch| &ch.value)
                .min_by(|a, b| match (a, b) {
                    (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
                    _ => match (a.as_f64(), b.as_f64()) {
                        (Some(x), Some(y)) => x.total_cmp(&y),
                        _ => std::cmp::Ordering::Equal,
                    },
                })
                .cloned()
                .unwrap_or(Value::Int(0)),
            &Domain::Int { lo, .. } => Value::Int(lo),
            &Domain::Float { lo, .. } => Value::Float(lo),
        }
    }
}

fn spaced(lo: f64, hi: f64, log: bool, n: usize) -> Vec<f64> {
    (0..n)
        .map(|k| {
            let t = k as f64 / (n - 1) as f64;
            if log && lo > 0.0 {
                (lo.ln() + t * (hi.ln() - lo.ln())).exp()
            } else {
                lo + t * (hi - lo)
            }
        })
        .collect()
}

/// A point of the space: one value per dimension, in the space's order.
pub type Point = Vec<Value>;

#[derive(Debug, Clone, PartialEq)]
pub struct Space {
    /// The explored `peft` block.
    pub block: String,
    pub dims: Vec<Dim>,
}

impl Space {
    /// The dimensions of block `block` and of the `train` block of a parsed
    /// (and already checked) spec.
    pub fn from_spec(file: &SpecFile, source: &str, block: &str) -> Space {
        let mut dims = Vec::new();
        for item in &file.items {
            match item {
                Item::Peft(b) if b.name.node == block => {
                    for (si, st) in b.statements.iter().enumerate() {
                        let same: Vec<usize> = b
                            .statements
                            .iter()
                            .enumerate()
                            .filter(|(_, o)| o.method.node == st.method.node)
                            .map(|(i, _)| i)
                            .collect();
                        let prefix = if same.len() > 1 {
                            let k = same.iter().position(|&i| i == si).unwrap_or(0);
                            format!("{}#{k}", st.method.node)
                        } else {
                            st.method.node.clone()
                        };
                        let spec = method(&st.method.node);
                        for a in &st.args {
                            let Some(domain) = domain_of(&a.value.node, source) else {
                                continue;
                            };
                            let ty = spec.and_then(|m| m.arg(&a.key.node)).map(|s| s.ty);
                            let absent_when_zero = match ty {
                                Some(ArgType::Int { zero_absent, .. }) => zero_absent,
                                Some(ArgType::Bool) => a.key.node == "enabled",
                                _ => false,
                            };
                            dims.push(Dim {
                                name: format!("{prefix}.{}", a.key.node),
                                domain: retype(domain, ty),
                                site: Site::Arg {
                                    statement: si,
                                    statement_span: st.span,
                                    value_span: a.value.span,
                                    absent_when_zero,
                                },
                            });
                        }
                    }
                }
                Item::Train(t) => {
                    for e in &t.entries {
                        if let Some(domain) = domain_of(&e.value.node, source) {
                            dims.push(Dim {
                                name: format!("train.{}", e.key.node),
                                domain,
                                site: Site::Train {
                                    value_span: e.value.span,
                                },
                            });
                        }
                    }
                }
                _ => {}
            }
        }
        Space {
            block: block.to_string(),
            dims,
        }
    }

    pub fn names(&self) -> Vec<&str> {
        self.dims.iter().map(|d| d.name.as_str()).collect()
    }

    /// Number of points when every range is cut to `n` grid values.
    pub fn grid_size(&self, n: usize) -> u128 {
        self.dims.iter().map(|d| d.grid(n).len() as u128).product()
    }

    /// Point number `index` of the grid (mixed radix, first dimension slowest).
    pub fn grid_point(&self, n: usize, mut index: u128) -> Point {
        let grids: Vec<Vec<Value>> = self.dims.iter().map(|d| d.grid(n)).collect();
        let mut out = vec![Value::Int(0); grids.len()];
        for (k, g) in grids.iter().enumerate().rev() {
            let len = g.len().max(1) as u128;
            out[k] = g[(index % len) as usize].clone();
            index /= len;
        }
        out
    }

    pub fn smallest(&self) -> Point {
        self.dims.iter().map(Dim::smallest).collect()
    }

    /// `name=value` pairs, for tables and messages.
    pub fn describe(&self, p: &[Value]) -> String {
        self.dims
            .iter()
            .zip(p)
            .map(|(d, v)| format!("{}={v}", d.name))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// A set or range as a domain (other values are not dimensions).
fn domain_of(v: &ValueKind, source: &str) -> Option<Domain> {
    match v {
        ValueKind::Set(items) => Some(Domain::Choice(
            items
                .iter()
                .map(|it| Choice {
                    value: match &it.node {
                        ValueKind::Int(i) => Value::Int(*i),
                        ValueKind::Float(f) => Value::Float(*f),
                        ValueKind::Bool(b) => Value::Bool(*b),
                        ValueKind::Str(s) | ValueKind::Ident(s) => Value::Text(s.clone()),
                        _ => Value::Text(source_text(source, it.span)),
                    },
                    text: source_text(source, it.span),
                })
                .collect(),
        )),
        ValueKind::Range(r) if r.integer => {
            let (lo, mut hi) = (r.lo as i64, r.hi as i64);
            if !r.inclusive {
                hi -= 1;
            }
            Some(Domain::Int {
                lo,
                hi: hi.max(lo),
                log: r.log,
                step: r.step.map(|s| s as i64),
            })
        }
        ValueKind::Range(r) => Some(Domain::Float {
            lo: r.lo,
            hi: r.hi,
            log: r.log,
            step: r.step,
        }),
        _ => None,
    }
}

/// A float range written with integer ends for a float argument (`alpha=8..=32`)
/// stays integer-valued only if the argument is an integer.
fn retype(d: Domain, ty: Option<ArgType>) -> Domain {
    match (d, ty) {
        (Domain::Int { lo, hi, log, step }, Some(ArgType::Float { .. })) => Domain::Float {
            lo: lo as f64,
            hi: hi as f64,
            log,
            step: step.map(|s| s as f64),
        },
        (d, _) => d,
    }
}

fn source_text(source: &str, s: Span) -> String {
    source.get(s.start..s.end).unwrap_or("").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn space(src: &str) -> Space {
        let file = peftc_grammar::parse(src).expect("parses");
        Space::from_spec(&file, src, "a")
    }

    #[test]
    fn sets_and_ranges_become_named_dimensions() {
        let s = space(
            "model \"m\"\npeft a {\n lora(r={0, 4, 8}, alpha=16) on layers[*].attn.q\n \
             adapter(bottleneck=8..=64 log) after layers[0..3].mlp\n \
             adapter(bottleneck={0, 16}) after layers[3..6].mlp\n ia3(enabled={true, false}) on layers[*].mlp.up\n}\n\
             train { lr = 1e-4..=1e-3 log }\n",
        );
        assert_eq!(
            s.names(),
            [
                "lora.r",
                "adapter#0.bottleneck",
                "adapter#1.bottleneck",
                "ia3.enabled",
                "train.lr"
            ]
        );
        assert!(s.dims[0].makes_absent(&Value::Int(0)));
        assert!(s.dims[3].makes_absent(&Value::Bool(false)));
        assert!(!s.dims[4].makes_absent(&Value::Float(0.0)));
        assert_eq!(
            s.dims[1].domain,
            Domain::Int {
                lo: 8,
                hi: 64,
                log: true,
                step: None
            }
        );
        // 8..=64 log on 4 points: 8, 16, 32, 64.
        assert_eq!(s.dims[1].grid(4), [8, 16, 32, 64].map(Value::Int).to_vec());
        assert_eq!(s.smallest()[0], Value::Int(0));
        assert_eq!(s.grid_size(4), 3 * 4 * 2 * 2 * 4);
        let last = s.grid_point(4, s.grid_size(4) - 1);
        assert_eq!(last[0], Value::Int(8));
        assert_eq!(last[3], Value::Bool(false));
    }

    #[test]
    fn values_round_trip_through_the_optimizer() {
        let s = space("model \"m\"\npeft a {\n prefix(len={5, 10}) on layers[*].attn\n}\n");
        let d = &s.dims[0];
        let p = d.param_of(&Value::Int(10)).expect("in the domain");
        assert_eq!(p, ParamValue::Categorical(1));
        assert_eq!(d.value_of(&p), Value::Int(10));
        assert_eq!(d.param_of(&Value::Int(7)), None);
    }
}
