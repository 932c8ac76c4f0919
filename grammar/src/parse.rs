//! From text to [`SpecFile`]: the pest parser, then a walk over its pairs that
//! builds the AST. Syntax errors become a [`Diagnostic`] with a caret.

use crate::ast::*;
use crate::diagnostic::Diagnostic;
use crate::span::{Span, Spanned};
use pest::Parser as _;
use pest::iterators::Pair;

#[derive(pest_derive::Parser)]
#[grammar = "../peft.pest"]
struct PeftParser;

/// Deepest nesting of sets (`{{{...}}}`) the parser accepts before it reports an
/// error instead of recursing further.
const MAX_NESTING: usize = 32;

/// Parses a whole `.peft` file.
pub fn parse(source: &str) -> Result<SpecFile, Diagnostic> {
    if let Some(d) = precheck(source) {
        return Err(d);
    }
    pest::set_error_detail(true);
    let mut pairs = PeftParser::parse(Rule::file, source).map_err(|e| syntax_error(e, source))?;
    let file = pairs
        .next()
        .ok_or_else(|| Diagnostic::error("empty parse result"))?;
    let mut items = Vec::new();
    for pair in file.into_inner() {
        match pair.as_rule() {
            Rule::model_decl => items.push(Item::Model(model_decl(pair)?)),
            Rule::peft_block => items.push(Item::Peft(peft_block(pair)?)),
            Rule::train_block => items.push(Item::Train(train_block(pair)?)),
            Rule::search_block => items.push(Item::Search(search_block(pair)?)),
            _ => {}
        }
    }
    Ok(SpecFile { items })
}

/// Finds, before pest does, two errors pest reports poorly: a string left open at
/// the end of its line, and absurdly deep nesting (never meaningful; it would only
/// test the parser's stack).
fn precheck(source: &str) -> Option<Diagnostic> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut in_comment = false;
    let mut escaped = false;
    let mut string_start = 0;
    for (i, c) in source.char_indices() {
        if in_comment {
            in_comment = c != '\n';
            continue;
        }
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                (false, '\n') => return Some(unterminated(string_start, i)),
                _ => {}
            }
            continue;
        }
        match c {
            '#' => in_comment = true,
            '"' => {
                in_string = true;
                string_start = i;
            }
            '{' | '[' | '(' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Some(
                        Diagnostic::error(format!("brackets nested more than {MAX_NESTING} deep"))
                            .at(Span::new(i, i + 1), "too deep"),
                    );
                }
            }
            '}' | ']' | ')' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    in_string.then(|| unterminated(string_start, source.len()))
}

fn unterminated(start: usize, end: usize) -> Diagnostic {
    Diagnostic::error("unterminated string")
        .at(
            Span::new(start, end.max(start + 1)),
            "this string has no closing `\"`",
        )
        .with_note("strings end on the line they start")
}

fn span(p: &Pair<Rule>) -> Span {
    p.as_span().into()
}

fn ident(p: Pair<Rule>) -> Ident {
    Spanned::new(p.as_str().to_string(), span(&p))
}

fn model_decl(p: Pair<Rule>) -> Result<ModelDecl, Diagnostic> {
    let sp = span(&p);
    let s = p
        .into_inner()
        .find(|q| q.as_rule() == Rule::string)
        .ok_or_else(|| Diagnostic::error("model needs a path").at(sp, ""))?;
    Ok(ModelDecl {
        path: string(s)?,
        span: sp,
    })
}

fn peft_block(p: Pair<Rule>) -> Result<PeftBlock, Diagnostic> {
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

fn train_block(p: Pair<Rule>) -> Result<TrainBlock, Diagnostic> {
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

fn search_block(p: Pair<Rule>) -> Result<SearchBlock, Diagnostic> {
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

/// Turns pest's error into one diagnostic: the position it got stuck at and what
/// it expected there, in the language's words rather than rule names.
fn syntax_error(e: pest::error::Error<Rule>, source: &str) -> Diagnostic {
    use pest::error::{ErrorVariant, InputLocation};
    let mut pos = match e.location {
        InputLocation::Pos(p) => p,
        InputLocation::Span((s, _)) => s,
    };
    let positives = match &e.variant {
        ErrorVariant::ParsingError { positives, .. } => positives.clone(),
        ErrorVariant::CustomError { .. } => Vec::new(),
    };
    let mut rules: Vec<Rule> = Vec::new();
    let mut literals: Vec<String> = Vec::new();
    match e.parse_attempts() {
        // The attempts know the furthest position any token was tried at, which is
        // where the user's text stopped making sense; pest's positives name rules
        // tried at its own (possibly earlier) position.
        Some(a) if a.max_position >= pos => {
            if a.max_position == pos {
                rules = positives;
            }
            pos = a.max_position;
            // ParsingToken is not re-exported; its Display is the literal text.
            literals = a.expected_tokens().iter().map(|t| t.to_string()).collect();
        }
        _ => rules = positives,
    }
    let mut expected: Vec<String> = Vec::new();
    let mut covered: Vec<&str> = Vec::new();
    for r in rules {
        if let Some((name, covers)) = rule_name(r) {
            push_unique(&mut expected, name.to_string());
            covered.extend_from_slice(covers);
        }
    }
    let named_by_rules = !expected.is_empty();
    for t in &literals {
        let t = t.trim();
        let is_word = !t.is_empty() && t.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        let wanted = PUNCTUATION.contains(&t) || (is_word && !named_by_rules);
        if wanted && !covered.contains(&t) {
            push_unique(&mut expected, format!("`{t}`"));
        }
    }

    let pos = pos.min(source.len());
    // The offending token: up to the next whitespace or delimiter.
    let rest = source.get(pos..).unwrap_or("");
    let tok_len = rest
        .char_indices()
        .find(|(i, c)| c.is_whitespace() || (*i > 0 && "(){}[],=.\"".contains(*c)))
        .map(|(i, _)| i)
        .unwrap_or(rest.len())
        .max(rest.chars().next().map_or(0, char::len_utf8));
    let found = rest.get(..tok_len).unwrap_or("").trim();
    let what = if found.is_empty() {
        "end of file".to_string()
    } else {
        format!("`{found}`")
    };
    if expected.iter().any(|x| x == "a selector") {
        expected.retain(|x| x != "a quoted string");
    }
    // A misspelt keyword: suggest the closest one the parser would have taken.
    let keywords: Vec<&str> = expected
        .iter()
        .flat_map(|x| x.split('`').skip(1).step_by(2))
        .filter(|w| w.chars().all(|c| c.is_ascii_alphabetic()))
        .collect();
    let suggestion = if found.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        crate::suggest::did_you_mean(found, keywords.iter().copied())
    } else {
        None
    };
    let message = match expected.split_last() {
        None => format!("syntax error: unexpected {what}"),
        Some((only, [])) => format!("syntax error: expected {only}, found {what}"),
        Some((last, rest)) => {
            format!(
                "syntax error: expected {} or {last}, found {what}",
                rest.join(", ")
            )
        }
    };
    if found.is_empty()
        && expected.iter().any(|x| x == "`}`")
        && let Some(open) = unclosed_brace(source)
    {
        return Diagnostic::error(
            "syntax error: unclosed `{`: expected `}` before the end of the file",
        )
        .at(Span::new(pos, pos + 1), "the file ends here")
        .with_secondary(Span::new(open, open + 1), "this `{` is never closed");
    }
    Diagnostic::error(message)
        .at(Span::new(pos, pos + found.len().max(1)), "unexpected here")
        .with_suggestion(suggestion)
}

/// Offset of the last `{` that no `}` closes (strings and comments skipped).
fn unclosed_brace(source: &str) -> Option<usize> {
    let mut stack = Vec::new();
    let mut in_string = false;
    let mut in_comment = false;
    let mut escaped = false;
    for (i, c) in source.char_indices() {
        if in_comment {
            in_comment = c != '\n';
        } else if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') | (false, '\n') => in_string = false,
                _ => {}
            }
        } else {
            match c {
                '#' => in_comment = true,
                '"' => in_string = true,
                '{' => stack.push(i),
                '}' => {
                    stack.pop();
                }
                _ => {}
            }
        }
    }
    stack.pop()
}

/// Literal tokens worth naming in "expected ..." when no rule already names them.
const PUNCTUATION: &[&str] = &["(", ")", "{", "}", "[", "]", ",", "=", "."];

fn push_unique(v: &mut Vec<String>, s: String) {
    if !v.contains(&s) {
        v.push(s);
    }
}

/// The user-facing name of a grammar rule in "expected ..." messages, and the
/// literal tokens that name already implies. `None` hides rules whose tokens
/// say it better.
fn rule_name(r: Rule) -> Option<(&'static str, &'static [&'static str])> {
    const SEL: &[&str] = &["\"", "{"];
    const VAL: &[&str] = &["\"", "-", "{"];
    Some(match r {
        Rule::EOI => ("end of file", &[]),
        Rule::item
        | Rule::model_decl
        | Rule::kw_model
        | Rule::peft_block
        | Rule::kw_peft
        | Rule::train_block
        | Rule::kw_train
        | Rule::search_block
        | Rule::kw_search => ("`model`, `peft`, `train` or `search`", &[]),
        Rule::statement | Rule::call => ("a statement `method(...) on SELECTOR`", &[]),
        Rule::placement => ("`on`, `after` or `beside`", &[]),
        Rule::selectors
        | Rule::selector
        | Rule::role_path
        | Rule::role_name
        | Rule::role_seg
        | Rule::role_alt => ("a selector", SEL),
        Rule::modifier => ("a modifier such as `gated`", &[]),
        Rule::arg => ("an argument `name = value`", &[]),
        Rule::entry => ("`name = value`", &["="]),
        Rule::budget | Rule::kw_budget => ("`budget`", &[]),
        Rule::objective | Rule::direction => ("`maximize` or `minimize`", &[]),
        Rule::constraint => ("a constraint such as `params <= 1%`", &[]),
        Rule::cmp_op => ("a comparison (`<=`, `<`, `>=`, `>`)", &[]),
        Rule::value
        | Rule::number
        | Rule::quantity
        | Rule::set
        | Rule::range_value
        | Rule::boolean => ("a value", VAL),
        Rule::string | Rule::str_body => ("a quoted string", SEL),
        Rule::ident => ("a name", &[]),
        Rule::layer_range
        | Rule::range_all
        | Rule::range_item
        | Rule::range_span
        | Rule::range_index
        | Rule::int => (
            "a layer range (`*`, `3`, `0..6`, `-2..`)",
            &["*", "-", ".."],
        ),
        Rule::range_opt | Rule::kw_log | Rule::kw_step => ("`log` or `step`", &[]),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
# comments start with '#'
model "models/all-MiniLM-L6-v2"

peft qv_lora {
    lora(r=8, alpha=16, dropout=0.05) on layers[*].attn.{q, v}
}

peft unipelt {
    lora(r=8, alpha=16)             on    layers[*].attn.{q, v}   gated
    prefix(len=10)                  on    layers[*].attn          gated
    adapter(bottleneck=48, act=relu) after layers[*].mlp          gated
}

peft raw_paths {
    ia3() on "encoder.layer.*.attention.self.{key,value}", "encoder.layer.*.output.dense"
}

train {
    adapter = qv_lora
    task    = classify
    data    = "data/sms.tsv"
    epochs  = 1
    batch   = 16
    seq_len = 64
    lr      = 5e-4
    seed    = 0
}
"#;

    #[test]
    fn parses_the_design_example() {
        let f = parse(EXAMPLE).expect("parses");
        assert_eq!(
            f.model().map(|m| m.path.node.as_str()),
            Some("models/all-MiniLM-L6-v2")
        );
        let blocks: Vec<_> = f.peft_blocks().collect();
        assert_eq!(blocks.len(), 3);
        let uni = blocks[1];
        assert_eq!(uni.name.node, "unipelt");
        assert_eq!(uni.statements.len(), 3);
        assert_eq!(uni.statements[2].placement.node, Placement::After);
        assert_eq!(uni.statements[2].modifiers[0].node, "gated");
        let raw = &blocks[2].statements[0];
        assert_eq!(raw.selectors.len(), 2);
        assert!(
            matches!(&raw.selectors[0], Selector::Raw(s) if s.node == "encoder.layer.*.attention.self.{key,value}")
        );
        let train = f.train_blocks().next().expect("train block");
        assert_eq!(
            train.get("lr").map(|e| &e.value.node),
            Some(&ValueKind::Float(5e-4))
        );
        assert_eq!(
            train.get("task").map(|e| &e.value.node),
            Some(&ValueKind::Ident("classify".into()))
        );
    }

    #[test]
    fn role_paths_keep_ranges_and_alternatives() {
        let f = parse("peft a { lora(r=8) on layers[0..2, 5, -2..].attn.{q, v} }").expect("parses");
        let st = &f.peft_blocks().next().expect("block").statements[0];
        let Selector::Role(path) = &st.selectors[0] else {
            panic!("role expected")
        };
        assert_eq!(path.segments.len(), 3);
        let RoleSegment::Name {
            name,
            range: Some(r),
        } = &path.segments[0]
        else {
            panic!()
        };
        assert_eq!(name.node, "layers");
        let items: Vec<RangeItem> = r.items.iter().map(|i| i.node).collect();
        assert_eq!(
            items,
            vec![
                RangeItem::Span {
                    start: Some(0),
                    end: Some(2)
                },
                RangeItem::Index(5),
                RangeItem::Span {
                    start: Some(-2),
                    end: None
                },
            ]
        );
        let RoleSegment::Alternatives { names, .. } = &path.segments[2] else {
            panic!()
        };
        assert_eq!(
            names.iter().map(|n| n.node.as_str()).collect::<Vec<_>>(),
            ["q", "v"]
        );
    }

    #[test]
    fn search_values_and_blocks() {
        let src = r#"
peft space {
    lora(r={0, 4, 8}, alpha=16) on attn.{q, v}
    adapter(bottleneck=8..=128 log) after layers[*].mlp
}
search s {
    space = space
    budget params <= 0.5%, memory <= 2GiB
    maximize accuracy
    minimize params
    trials = 40
    sampler = tpe
}"#;
        let f = parse(src).expect("parses");
        let st = &f.peft_blocks().next().expect("block").statements;
        assert!(matches!(&st[0].args[0].value.node, ValueKind::Set(v) if v.len() == 3));
        assert_eq!(
            st[1].args[0].value.node,
            ValueKind::Range(RangeValue {
                lo: 8.0,
                hi: 128.0,
                integer: true,
                inclusive: true,
                log: true,
                step: None
            })
        );
        let s = f.search_blocks().next().expect("search");
        assert_eq!(s.items.len(), 6);
        let SearchItem::Budget(cs) = &s.items[1] else {
            panic!()
        };
        assert_eq!(
            cs[1].value.node,
            ValueKind::Quantity {
                amount: 2.0,
                unit: Unit::GiB
            }
        );
    }

    #[test]
    fn syntax_errors_point_at_the_token() {
        let src = "peft a {\n    lora(r=8) in attn.q\n}\n";
        let d = parse(src).expect_err("fails");
        let text = d.render("a.peft", src);
        assert!(
            text.starts_with("error: syntax error: expected `on`, `after` or `beside`, found `in`"),
            "{text}"
        );
        assert!(text.contains("a.peft:2:15"), "{text}");
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let src = format!(
            "peft a {{ lora(r={}1{}) on attn.q }}",
            "{".repeat(5000),
            "}".repeat(5000)
        );
        assert!(parse(&src).is_err());
    }
}

#[cfg(test)]
mod explore {
    #[test]
    #[ignore]
    fn print_errors() {
        for src in [
            "peft a {\n    lora(r=8) in attn.q\n}\n",
            "peft a { lora(r=8 on attn.q }",
            "peft a { lora(r=8) on }",
            "peft a { lora(r=8) on attn.q",
            "peft { }",
            "modle \"x\"",
            "model x",
            "peft a { lora(r=) on attn.q }",
            "peft a { lora(r=8) on layers[].attn }",
            "peft a { lora(r=8) on layers[*.attn }",
            "train { batch 16 }",
            "search s { budget params 5 }",
            "peft a { lora(r=8) on \"abc }",
            "peft a { lora(r=8) on attn.q, }",
            "peft a { lora r=8 on attn.q }",
        ] {
            match super::parse(src) {
                Ok(_) => println!("OK: {src}"),
                Err(d) => println!("{}", d.render("x.peft", src)),
            }
        }
    }
}
