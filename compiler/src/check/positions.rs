//! The position table's limit: a model with learned absolute positions
//! (BERT) has no embedding for position `max_position_embeddings` or beyond,
//! so `seq_len` plus the longest soft prompt must fit it. RoPE models have no
//! table; going past their trained context is only warned about.

use crate::methods::{ArgValue, MethodKind, Scalar};
use crate::model::ModelDesc;
use peftc_grammar::{Diagnostic, Span};

use super::{CheckedBlock, CheckedTrain};

/// The largest integer `v` can take (a fixed value, a set's largest, a
/// range's upper end).
pub(super) fn largest(v: &ArgValue) -> Option<i64> {
    match v {
        ArgValue::Fixed { value } => value.as_i64(),
        ArgValue::Set { values } => values.iter().filter_map(Scalar::as_i64).max(),
        ArgValue::Range { range } => Some(if range.inclusive {
            range.hi as i64
        } else {
            range.hi as i64 - 1
        }),
    }
}

/// Checks every block's soft prompts, with the train block's `seq_len`,
/// against the model's position table.
pub(super) fn check(
    model: &ModelDesc,
    train: Option<&CheckedTrain>,
    blocks: &[CheckedBlock],
    errors: &mut Vec<Diagnostic>,
    warnings: &mut Vec<Diagnostic>,
) {
    let table = model.dims.max_positions as i64;
    let absolute = model.dims.rope_theta == 0.0;
    let (seq, seq_span) = match train {
        Some(t) => (
            t.args.get("seq_len").and_then(largest).unwrap_or(128),
            t.args.span("seq_len"),
        ),
        None => (0, None),
    };
    let describe = |what: &str| {
        format!(
            "{what} exceeds the model's {table} positions (`max_position_embeddings` of {})",
            model.model_type
        )
    };
    let report = |d: Diagnostic, errors: &mut Vec<Diagnostic>, warnings: &mut Vec<Diagnostic>| {
        if absolute {
            errors.push(d);
        } else {
            warnings.push(Diagnostic {
                severity: peftc_grammar::Severity::Warning,
                ..d
            });
        }
    };
    let tail = if absolute {
        "a model with learned positions has no embedding past its table"
    } else {
        "the model was not trained on longer contexts"
    };
    if seq > table {
        let d = Diagnostic::error(describe(&format!("`seq_len = {seq}`")))
            .with_note(tail)
            .with_help(format!("use `seq_len = {table}` or less"));
        let d = match seq_span {
            Some(s) => d.at(s, "too long for this model"),
            None => d,
        };
        report(d, errors, warnings);
        return;
    }
    for b in blocks {
        for st in b.statements.iter().filter(|s| s.kind == MethodKind::Prompt) {
            let Some(len) = st.args.get("len").and_then(largest) else {
                continue;
            };
            let total = seq.max(1) + len;
            if total > table {
                let span: Span = st.args.span("len").unwrap_or(st.span);
                let d = Diagnostic::error(describe(&format!(
                    "a soft prompt of {len} tokens before sequences of {} tokens ({total} in all)",
                    seq.max(1)
                )))
                .at(span, "too long for this model's position table")
                .with_note(tail)
                .with_help(format!(
                    "keep `len` + `seq_len` within {table}: `len={}` or less at this `seq_len`",
                    (table - seq.max(1)).max(0)
                ));
                report(d, errors, warnings);
            }
        }
    }
}
