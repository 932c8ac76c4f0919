//! Syntax errors in the language's words: what pest expected at the place
//! it stopped, re-phrased from rule names, with special cases found before
//! pest runs (a string left open, absurd nesting) or after (an unclosed
//! brace).

use super::{MAX_NESTING, Rule};
use crate::diagnostic::Diagnostic;
use crate::span::Span;

/// Finds, before pest does, two errors pest reports poorly: a string left open at
/// the end of its line, and absurdly deep nesting (never meaningful; it would only
/// test the parser's stack).
pub(super) fn precheck(source: &str) -> Option<Diagnostic> {
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

/// Turns pest's error into one diagnostic: the position it got stuck at and what
/// it expected there, in the language's words rather than rule names.
pub(super) fn syntax_error(e: pest::error::Error<Rule>, source: &str) -> Diagnostic {
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
        // `quantize` with no name: the attempts wander into the keyword
        // lookahead of `quant_name`; pest's own position is the right one.
        _ if positives.contains(&Rule::quant_name) => rules = positives,
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
        Rule::kw_quantize => ("`quantize`", &[]),
        Rule::quant_name => ("a quantization (`nf4`, `int8`)", &[]),
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
