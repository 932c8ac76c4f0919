//! The walk over pest's pairs that builds the AST, every node with its span.

use super::Rule;
use crate::ast::*;
use crate::diagnostic::Diagnostic;
use crate::span::{Span, Spanned};
use pest::iterators::Pair;

fn span(p: &Pair<Rule>) -> Span {
    p.as_span().into()
}

fn ident(p: Pair<Rule>) -> Ident {
    Spanned::new(p.as_str().to_string(), span(&p))
}

pub(super) fn model_decl(p: Pair<Rule>) -> Result<ModelDecl, Diagnostic> {
    let sp = span(&p);
    let (mut path, mut quantize) = (None, None);
    for q in p.into_inner() {
        match q.as_rule() {
            Rule::string => path = Some(string(q)?),
            Rule::quant_name => quantize = Some(ident(q)),
            _ => {}
        }
    }
    Ok(ModelDecl {
        path: path.ok_or_else(|| Diagnostic::error("model needs a path").at(sp, ""))?,
        quantize,
        span: sp,
    })
}

pub(super) fn peft_block(p: Pair<Rule>) -> Result<PeftBlock, Diagnostic> {
    let sp = span(&p);
    let mut name = None;
    let mut statements = Vec::new();
    for q in p.into_inner() {
        match q.as_rule() {
            Rule::ident => name = Some(ident(q)),
            Rule::statement => statements.push(statement(q)?),
            _ => {}
        }
    }
    Ok(PeftBlock {
        name: name.ok_or_else(|| Diagnostic::error("peft block needs a name").at(sp, ""))?,
        statements,
        span: sp,
    })
}

fn statement(p: Pair<Rule>) -> Result<Statement, Diagnostic> {
    let sp = span(&p);
    let mut method = None;
    let mut args = Vec::new();
    let mut call_span = sp;
    let mut placement = None;
    let mut selectors = Vec::new();
    let mut modifiers = Vec::new();
    for q in p.into_inner() {
        match q.as_rule() {
            Rule::call => {
                call_span = span(&q);
                for r in q.into_inner() {
                    match r.as_rule() {
                        Rule::ident => method = Some(ident(r)),
                        Rule::arg => args.push(arg(r)?),
                        _ => {}
                    }
                }
            }
            Rule::placement => {
                let kw = match q.as_str() {
                    "on" => Placement::On,
                    "after" => Placement::After,
                    _ => Placement::Beside,
                };
                placement = Some(Spanned::new(kw, span(&q)));
            }
            Rule::selectors => {
                for r in q.into_inner() {
                    selectors.push(match r.as_rule() {
                        Rule::string => Selector::Raw(string(r)?),
                        _ => Selector::Role(role_path(r)?),
                    });
                }
            }
            Rule::modifier => {
                if let Some(id) = q.into_inner().next() {
                    modifiers.push(ident(id));
                }
            }
            _ => {}
        }
    }
    let missing = || Diagnostic::error("malformed statement").at(sp, "");
    Ok(Statement {
        method: method.ok_or_else(missing)?,
        args,
        call_span,
        placement: placement.ok_or_else(missing)?,
        selectors,
        modifiers,
        span: sp,
    })
}

fn arg(p: Pair<Rule>) -> Result<Arg, Diagnostic> {
    let sp = span(&p);
    let (key, value) = key_value(p)?;
    Ok(Arg {
        key,
        value,
        span: sp,
    })
}

fn entry(p: Pair<Rule>) -> Result<Entry, Diagnostic> {
    let sp = span(&p);
    let (key, value) = key_value(p)?;
    Ok(Entry {
        key,
        value,
        span: sp,
    })
}

fn key_value(p: Pair<Rule>) -> Result<(Ident, Value), Diagnostic> {
    let sp = span(&p);
    let mut it = p.into_inner();
    let bad = || Diagnostic::error("expected `key = value`").at(sp, "");
    let key = ident(it.next().ok_or_else(bad)?);
    let value = value(it.next().ok_or_else(bad)?)?;
    Ok((key, value))
}

fn role_path(p: Pair<Rule>) -> Result<RolePath, Diagnostic> {
    let sp = span(&p);
    let mut segments = Vec::new();
    for q in p.into_inner() {
        match q.as_rule() {
            Rule::role_name => {
                let mut it = q.into_inner();
                let name = it
                    .next()
                    .map(ident)
                    .ok_or_else(|| Diagnostic::error("expected a role name").at(sp, ""))?;
                let range = it.next().map(layer_range).transpose()?;
                segments.push(RoleSegment::Name { name, range });
            }
            Rule::role_alt => {
                let asp = span(&q);
                segments.push(RoleSegment::Alternatives {
                    names: q.into_inner().map(ident).collect(),
                    span: asp,
                });
            }
            _ => {}
        }
    }
    Ok(RolePath { segments, span: sp })
}

fn layer_range(p: Pair<Rule>) -> Result<LayerRange, Diagnostic> {
    let sp = span(&p);
    let mut items = Vec::new();
    for q in p.into_inner() {
        let isp = span(&q);
        let item = match q.as_rule() {
            Rule::range_all => RangeItem::All,
            Rule::range_index => {
                let i = q.into_inner().next().map(|x| int(&x)).transpose()?;
                RangeItem::Index(i.unwrap_or(0))
            }
            _ => {
                // range_span: int? ".." int?  — tell the two ints apart by position.
                let dots = q.as_str().find("..").unwrap_or(0) + isp.start;
                let mut start = None;
                let mut end = None;
                for x in q.into_inner() {
                    let v = int(&x)?;
                    if x.as_span().start() < dots {
                        start = Some(v);
                    } else {
                        end = Some(v);
                    }
                }
                RangeItem::Span { start, end }
            }
        };
        items.push(Spanned::new(item, isp));
    }
    Ok(LayerRange { items, span: sp })
}

pub(super) fn train_block(p: Pair<Rule>) -> Result<TrainBlock, Diagnostic> {
    let sp = span(&p);
    let mut entries = Vec::new();
    let mut keyword_span = sp;
    for q in p.into_inner() {
        match q.as_rule() {
            Rule::kw_train => keyword_span = span(&q),
            Rule::entry => entries.push(entry(q)?),
            _ => {}
        }
    }
    Ok(TrainBlock {
        entries,
        span: sp,
        keyword_span,
    })
}

pub(super) fn search_block(p: Pair<Rule>) -> Result<SearchBlock, Diagnostic> {
    let sp = span(&p);
    let mut name = None;
    let mut items = Vec::new();
    for q in p.into_inner() {
        match q.as_rule() {
            Rule::ident => name = Some(ident(q)),
            Rule::entry => items.push(SearchItem::Entry(entry(q)?)),
            Rule::budget => {
                let mut cs = Vec::new();
                for c in q.into_inner().filter(|c| c.as_rule() == Rule::constraint) {
                    cs.push(constraint(c)?);
                }
                items.push(SearchItem::Budget(cs));
            }
            Rule::objective => {
                let osp = span(&q);
                let mut it = q.into_inner();
                let bad = || Diagnostic::error("malformed objective").at(osp, "");
                let d = it.next().ok_or_else(bad)?;
                let direction = Spanned::new(
                    if d.as_str() == "maximize" {
                        Direction::Maximize
                    } else {
                        Direction::Minimize
                    },
                    span(&d),
                );
                let metric = ident(it.next().ok_or_else(bad)?);
                items.push(SearchItem::Objective {
                    direction,
                    metric,
                    span: osp,
                });
            }
            _ => {}
        }
    }
    Ok(SearchBlock {
        name: name.ok_or_else(|| Diagnostic::error("search block needs a name").at(sp, ""))?,
        items,
        span: sp,
    })
}

fn constraint(p: Pair<Rule>) -> Result<Constraint, Diagnostic> {
    let sp = span(&p);
    let mut it = p.into_inner();
    let bad = || Diagnostic::error("malformed budget constraint").at(sp, "");
    let metric = ident(it.next().ok_or_else(bad)?);
    let opp = it.next().ok_or_else(bad)?;
    let op = Spanned::new(
        match opp.as_str() {
            "<=" => CmpOp::Le,
            "<" => CmpOp::Lt,
            ">=" => CmpOp::Ge,
            _ => CmpOp::Gt,
        },
        span(&opp),
    );
    let value = value(it.next().ok_or_else(bad)?)?;
    Ok(Constraint {
        metric,
        op,
        value,
        span: sp,
    })
}

fn value(p: Pair<Rule>) -> Result<Value, Diagnostic> {
    let sp = span(&p);
    let inner = p
        .into_inner()
        .next()
        .ok_or_else(|| Diagnostic::error("expected a value").at(sp, ""))?;
    let kind = match inner.as_rule() {
        Rule::number => number(&inner)?,
        Rule::boolean => ValueKind::Bool(inner.as_str() == "true"),
        Rule::string => ValueKind::Str(string(inner)?.node),
        Rule::ident => ValueKind::Ident(inner.as_str().to_string()),
        Rule::quantity => {
            let mut it = inner.into_inner();
            let n = it.next().map(|x| number(&x)).transpose()?;
            let u = it.next().and_then(|x| Unit::from_text(x.as_str()));
            match (n.and_then(|n| n.as_f64()), u) {
                (Some(amount), Some(unit)) => ValueKind::Quantity { amount, unit },
                _ => return Err(Diagnostic::error("malformed quantity").at(sp, "")),
            }
        }
        Rule::set => {
            let mut items = Vec::new();
            for q in inner.into_inner() {
                items.push(value(q)?);
            }
            ValueKind::Set(items)
        }
        Rule::range_value => ValueKind::Range(range_value(inner)?),
        _ => return Err(Diagnostic::error("expected a value").at(sp, "")),
    };
    Ok(Spanned::new(kind, sp))
}

fn range_value(p: Pair<Rule>) -> Result<RangeValue, Diagnostic> {
    let sp = span(&p);
    let mut nums = Vec::new();
    let mut inclusive = false;
    let mut log = false;
    let mut step = None;
    for q in p.into_inner() {
        match q.as_rule() {
            Rule::number => nums.push(number(&q)?),
            Rule::range_op => inclusive = q.as_str() == "..=",
            Rule::range_opt => {
                let mut it = q.into_inner();
                match it.next() {
                    Some(k) if k.as_rule() == Rule::kw_log => log = true,
                    Some(_) => step = it.next().map(|n| number(&n)).transpose()?,
                    None => {}
                }
            }
            _ => {}
        }
    }
    let bad = || Diagnostic::error("malformed range").at(sp, "");
    let lo = nums.first().ok_or_else(bad)?;
    let hi = nums.get(1).ok_or_else(bad)?;
    Ok(RangeValue {
        lo: lo.as_f64().ok_or_else(bad)?,
        hi: hi.as_f64().ok_or_else(bad)?,
        integer: matches!(lo, ValueKind::Int(_)) && matches!(hi, ValueKind::Int(_)),
        inclusive,
        log,
        step: step.and_then(|s| s.as_f64()),
    })
}

fn number(p: &Pair<Rule>) -> Result<ValueKind, Diagnostic> {
    let text = p.as_str();
    let is_float = text.contains(['.', 'e', 'E']);
    if !is_float {
        return text.parse::<i64>().map(ValueKind::Int).map_err(|_| {
            Diagnostic::error(format!("integer `{text}` does not fit in 64 bits"))
                .at(span(p), "too large")
        });
    }
    match text.parse::<f64>() {
        Ok(f) if f.is_finite() => Ok(ValueKind::Float(f)),
        _ => Err(
            Diagnostic::error(format!("number `{text}` is out of range"))
                .at(span(p), "not a finite number"),
        ),
    }
}

fn int(p: &Pair<Rule>) -> Result<i64, Diagnostic> {
    let text = p.as_str();
    text.parse::<i64>().map_err(|_| {
        Diagnostic::error(format!("integer `{text}` does not fit in 64 bits"))
            .at(span(p), "too large")
    })
}

fn string(p: Pair<Rule>) -> Result<Spanned<String>, Diagnostic> {
    let sp = span(&p);
    let body = p.into_inner().next().map(|b| b.as_str()).unwrap_or("");
    let mut out = String::with_capacity(body.len());
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('\\') => out.push('\\'),
            Some('"') => out.push('"'),
            Some(other) => {
                return Err(
                    Diagnostic::error(format!("unknown escape `\\{other}` in string"))
                        .at(sp, "only \\n, \\t, \\\\ and \\\" are escapes"),
                );
            }
            None => out.push('\\'),
        }
    }
    Ok(Spanned::new(out, sp))
}
