//! Checking a method's `key=value` arguments against its [`ArgSpec`]s: names,
//! types, ranges, defaults, and search-space values (sets and ranges).

use super::spec::{ArgSpec, ArgType, Default, MethodSpec};
use peftc_grammar::ast::{Arg, RangeValue, ValueKind};
use peftc_grammar::suggest::did_you_mean;
use peftc_grammar::{Diagnostic, Span};
use serde::Serialize;

/// A concrete argument value.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Scalar {
    Int(i64),
    Float(f64),
    Bool(bool),
    /// A bare name (`relu`, `gaussian`) or a string.
    Str(String),
    /// An optional argument left out.
    Unset,
}

impl Scalar {
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Scalar::Int(i) => Some(i),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Scalar::Int(i) => Some(i as f64),
            Scalar::Float(f) => Some(f),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Scalar::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Scalar::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn render(&self) -> String {
        match self {
            Scalar::Int(i) => i.to_string(),
            Scalar::Float(f) => format!("{f}"),
            Scalar::Bool(b) => b.to_string(),
            Scalar::Str(s) => s.clone(),
            Scalar::Unset => "unset".into(),
        }
    }
}

/// An argument's value: fixed, or a search-space dimension.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ArgValue {
    Fixed {
        value: Scalar,
    },
    /// `{4, 8, 16}`
    Set {
        values: Vec<Scalar>,
    },
    /// `4..=64 log`
    Range {
        range: RangeValue,
    },
}

/// All arguments of one statement, defaults filled in, in the spec's order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Args {
    pub values: Vec<(&'static str, ArgValue)>,
    /// Where each argument was written (absent for defaults).
    #[serde(skip)]
    pub spans: Vec<Option<Span>>,
}

impl Args {
    pub fn get(&self, name: &str) -> Option<&ArgValue> {
        self.values.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// The fixed value of `name`; `None` if it is a search dimension.
    pub fn fixed(&self, name: &str) -> Option<&Scalar> {
        match self.get(name)? {
            ArgValue::Fixed { value } => Some(value),
            _ => None,
        }
    }

    pub fn span(&self, name: &str) -> Option<Span> {
        let i = self.values.iter().position(|(n, _)| *n == name)?;
        self.spans.get(i).copied().flatten()
    }

    /// Whether any argument is a search-space dimension.
    pub fn is_space(&self) -> bool {
        self.values
            .iter()
            .any(|(_, v)| !matches!(v, ArgValue::Fixed { .. }))
    }

    /// The arguments with every search dimension replaced by `pick(name, dim)`.
    pub fn at_point(&self, mut pick: impl FnMut(&str, &ArgValue) -> Scalar) -> Args {
        Args {
            values: self
                .values
                .iter()
                .map(|(n, v)| {
                    let fixed = match v {
                        ArgValue::Fixed { value } => value.clone(),
                        other => pick(n, other),
                    };
                    (*n, ArgValue::Fixed { value: fixed })
                })
                .collect(),
            spans: self.spans.clone(),
        }
    }
}

/// Checks a method's `args` against its spec, reporting every problem.
/// Returns the checked arguments when there was none.
pub fn check_args(
    spec: &MethodSpec,
    args: &[Arg],
    call_span: Span,
) -> Result<Args, Vec<Diagnostic>> {
    check_keyed(spec.name, "argument", spec.args, args, call_span)
}

/// Checks `key = value` pairs against `specs`; `owner` and `noun` phrase the
/// errors ("`lora` has no argument `x`", "`train` has no key `x`").
pub fn check_keyed(
    owner: &str,
    noun: &str,
    specs: &'static [ArgSpec],
    args: &[Arg],
    call_span: Span,
) -> Result<Args, Vec<Diagnostic>> {
    let mut errors = Vec::new();
    let mut given: Vec<(&'static ArgSpec, &Arg)> = Vec::new();
    for a in args {
        let Some(s) = specs.iter().find(|s| s.name == a.key.node) else {
            let names: Vec<&str> = specs.iter().map(|s| s.name).collect();
            let mut d = Diagnostic::error(format!("`{owner}` has no {noun} `{}`", a.key.node))
                .at(a.key.span, format!("unknown {noun}"))
                .with_suggestion(did_you_mean(&a.key.node, names.iter().copied()));
            d = if names.is_empty() {
                d.with_note(format!("`{owner}` takes no {noun}s"))
            } else {
                d.with_note(format!("`{owner}` takes: {}", names.join(", ")))
            };
            errors.push(d);
            continue;
        };
        if let Some((_, first)) = given.iter().find(|(g, _)| g.name == s.name) {
            errors.push(
                Diagnostic::error(format!("{noun} `{}` given twice", s.name))
                    .at(a.key.span, "given again here")
                    .with_secondary(first.key.span, "first given here"),
            );
            continue;
        }
        given.push((s, a));
    }

    let mut values = Vec::with_capacity(specs.len());
    let mut spans = Vec::with_capacity(specs.len());
    for s in specs {
        match given.iter().find(|(g, _)| g.name == s.name) {
            Some((_, a)) => match check_value(owner, s, &a.value.node, a.value.span) {
                Ok(v) => {
                    values.push((s.name, v));
                    spans.push(Some(a.value.span));
                }
                Err(d) => errors.push(d),
            },
            None => match s.default {
                Some(d) => {
                    values.push((
                        s.name,
                        ArgValue::Fixed {
                            value: default_scalar(d),
                        },
                    ));
                    spans.push(None);
                }
                None => errors.push(
                    Diagnostic::error(format!("`{owner}` needs the {noun} `{}`", s.name))
                        .at(call_span, format!("`{}` missing", s.name))
                        .with_note(format!("`{}`: {}, {}", s.name, s.ty.describe(), s.doc)),
                ),
            },
        }
    }
    if errors.is_empty() {
        Ok(Args { values, spans })
    } else {
        Err(errors)
    }
}

fn default_scalar(d: Default) -> Scalar {
    match d {
        Default::Int(i) => Scalar::Int(i),
        Default::Float(f) => Scalar::Float(f),
        Default::Bool(b) => Scalar::Bool(b),
        Default::Name(n) => Scalar::Str(n.to_string()),
        Default::Unset => Scalar::Unset,
    }
}

fn check_value(
    method: &str,
    s: &ArgSpec,
    v: &ValueKind,
    span: Span,
) -> Result<ArgValue, Diagnostic> {
    match v {
        ValueKind::Set(items) => {
            if items.is_empty() {
                return Err(
                    Diagnostic::error(format!("search set for `{}` is empty", s.name))
                        .at(span, "needs at least one value"),
                );
            }
            let mut values = Vec::with_capacity(items.len());
            for it in items {
                if it.node.is_search_space() {
                    return Err(Diagnostic::error("search sets cannot nest")
                        .at(it.span, "a set or range inside a set"));
                }
                values.push(check_scalar(method, s, &it.node, it.span, true)?);
            }
            Ok(ArgValue::Set { values })
        }
        ValueKind::Range(r) => check_range(s, r, span).map(|range| ArgValue::Range { range }),
        other => Ok(ArgValue::Fixed {
            value: check_scalar(method, s, other, span, false)?,
        }),
    }
}

fn mismatch(s: &ArgSpec, v: &ValueKind, span: Span) -> Diagnostic {
    Diagnostic::error(format!(
        "`{}` must be {}, found {}",
        s.name,
        s.ty.describe(),
        v.kind_name()
    ))
    .at(span, "wrong type")
}

fn check_scalar(
    method: &str,
    s: &ArgSpec,
    v: &ValueKind,
    span: Span,
    in_set: bool,
) -> Result<Scalar, Diagnostic> {
    match (&s.ty, v) {
        (
            ArgType::Int {
                min,
                max,
                zero_absent,
            },
            ValueKind::Int(i),
        ) => {
            if *i == 0 && in_set && *zero_absent {
                return Ok(Scalar::Int(0));
            }
            if i < min || i > max {
                let mut d = Diagnostic::error(format!(
                    "`{}` must be {}, found {i}",
                    s.name,
                    s.ty.describe()
                ))
                .at(span, "out of range");
                if *i == 0 && *zero_absent {
                    d = d.with_note(format!(
                        "0 means \"no {method} here\" only inside a search set, e.g. `{}={{0, 8}}`",
                        s.name
                    ));
                }
                return Err(d);
            }
            Ok(Scalar::Int(*i))
        }
        (
            ArgType::Float {
                lo,
                hi,
                lo_open,
                hi_open,
            },
            ValueKind::Int(_) | ValueKind::Float(_),
        ) => {
            let f = v.as_f64().unwrap_or(f64::NAN);
            let below = if *lo_open { f <= *lo } else { f < *lo };
            let above = if *hi_open { f >= *hi } else { f > *hi };
            if below || above || !f.is_finite() {
                return Err(Diagnostic::error(format!(
                    "`{}` must be {}, found {}",
                    s.name,
                    s.ty.describe(),
                    fmt_num(f)
                ))
                .at(span, "out of range"));
            }
            Ok(Scalar::Float(f))
        }
        (ArgType::Bool, ValueKind::Bool(b)) => Ok(Scalar::Bool(*b)),
        (ArgType::Choice(choices), ValueKind::Ident(n) | ValueKind::Str(n)) => {
            if choices.contains(&n.as_str()) {
                Ok(Scalar::Str(n.clone()))
            } else {
                Err(Diagnostic::error(format!(
                    "`{}` must be {}, found `{n}`",
                    s.name,
                    s.ty.describe()
                ))
                .at(span, "not a valid choice")
                .with_suggestion(did_you_mean(n, choices.iter().copied())))
            }
        }
        (ArgType::Str, ValueKind::Str(t)) => Ok(Scalar::Str(t.clone())),
        (ArgType::Name, ValueKind::Ident(t)) => Ok(Scalar::Str(t.clone())),
        _ => Err(mismatch(s, v, span)),
    }
}

fn check_range(s: &ArgSpec, r: &RangeValue, span: Span) -> Result<RangeValue, Diagnostic> {
    let (min, max, int) = match s.ty {
        ArgType::Int { min, max, .. } => (min as f64, max as f64, true),
        ArgType::Float { lo, hi, .. } => (lo, hi, false),
        _ => {
            return Err(Diagnostic::error(format!(
                "`{}` is {}; a range only fits numbers",
                s.name,
                s.ty.describe()
            ))
            .at(span, "use a set `{...}` instead"));
        }
    };
    if int && !r.integer {
        return Err(Diagnostic::error(format!(
            "`{}` is an integer; its range must be of integers",
            s.name
        ))
        .at(span, "non-integer bound"));
    }
    let hi = if r.inclusive || !int {
        r.hi
    } else {
        r.hi - 1.0
    };
    if !(r.lo < hi || (r.inclusive && r.lo == r.hi)) {
        return Err(
            Diagnostic::error(format!("range for `{}` is empty", s.name)).at(span, "empty range"),
        );
    }
    if r.lo < min || hi > max {
        return Err(Diagnostic::error(format!(
            "range for `{}` leaves {}",
            s.name,
            s.ty.describe()
        ))
        .at(span, "out of range"));
    }
    if r.log && r.lo <= 0.0 {
        return Err(
            Diagnostic::error("a log range must start above 0").at(span, "starts at or below 0")
        );
    }
    if let Some(step) = r.step {
        if step <= 0.0 || (int && step.fract() != 0.0) {
            return Err(Diagnostic::error(
                "a range's step must be positive (and an integer for integers)",
            )
            .at(span, "bad step"));
        }
        if r.log {
            return Err(Diagnostic::error("a range cannot be both `log` and `step`").at(span, ""));
        }
    }
    Ok(*r)
}

fn fmt_num(f: f64) -> String {
    if f.fract() == 0.0 && f.abs() < 1e15 {
        format!("{}", f as i64)
    } else {
        format!("{f}")
    }
}
