//! Checking one `method(args) PLACEMENT SELECTORS [modifiers]` statement.

use super::targets;
use crate::methods::{Args, METHODS, MethodKind, check_args, method};
use crate::model::{ModelDesc, Module};
use crate::select::{Scope, resolve};
use peftc_grammar::ast::{Placement, Statement};
use peftc_grammar::suggest::did_you_mean;
use peftc_grammar::{Diagnostic, Span};

/// Modifiers a statement may end with.
pub const MODIFIERS: &[&str] = &["gated"];

/// A statement whose method, arguments, placement and targets are all valid.
#[derive(Debug, Clone)]
pub struct CheckedStatement {
    pub kind: MethodKind,
    pub args: Args,
    pub placement: Placement,
    /// Indices into the checked spec's modules, in model order.
    pub targets: Vec<usize>,
    pub gated: bool,
    pub span: Span,
    /// Span of each selector, and the targets it contributed.
    pub selector_spans: Vec<(Span, Vec<usize>)>,
}

pub fn check_statement(
    st: &Statement,
    model: Option<&ModelDesc>,
    modules: &[Module],
) -> Result<CheckedStatement, Vec<Diagnostic>> {
    let mut errors = Vec::new();
    let Some(spec) = method(&st.method.node) else {
        let names: Vec<&str> = METHODS.iter().map(|m| m.name).collect();
        return Err(vec![
            Diagnostic::error(format!("unknown method `{}`", st.method.node))
                .at(st.method.span, "not a method peftc knows")
                .with_suggestion(did_you_mean(&st.method.node, names.iter().copied()))
                .with_note(format!("methods: {}", names.join(", "))),
        ]);
    };
    let args = match check_args(spec, &st.args, st.call_span) {
        Ok(a) => Some(a),
        Err(mut es) => {
            errors.append(&mut es);
            None
        }
    };
    if let Some(a) = &args {
        errors.extend((spec.check)(a, st.call_span));
    }
    if !spec.placements.contains(&st.placement.node) {
        let allowed: Vec<&str> = spec.placements.iter().map(|p| p.keyword()).collect();
        let why = spec.placement_note;
        errors.push(
            Diagnostic::error(format!(
                "`{}` cannot be placed `{}`",
                spec.name,
                st.placement.node.keyword()
            ))
            .at(st.placement.span, "wrong placement")
            .with_note(why)
            .with_help(format!("write `{}`", allowed.join("` or `"))),
        );
    }
    let mut gated = false;
    for m in &st.modifiers {
        if !MODIFIERS.contains(&m.node.as_str()) {
            errors.push(
                Diagnostic::error(format!("unknown modifier `{}`", m.node))
                    .at(m.span, "not a modifier")
                    .with_suggestion(did_you_mean(&m.node, MODIFIERS.iter().copied()))
                    .with_note("statements may end with `gated`"),
            );
        } else if !spec.gateable {
            errors.push(
                Diagnostic::error(format!("`{}` cannot be gated", spec.name))
                    .at(m.span, "not gateable")
                    .with_note("gating (UniPELT) applies to lora, dora, prefix and adapter"),
            );
        } else {
            gated = true;
        }
    }

    let mut targets: Vec<usize> = Vec::new();
    let mut selector_spans = Vec::new();
    if let Some(model) = model {
        let scope = Scope {
            family: model.family,
            model_type: &model.model_type,
            layers: model.dims.layers,
            modules,
        };
        for sel in &st.selectors {
            match resolve(sel, &scope) {
                Ok(found) => {
                    if let Some(bad) = found
                        .iter()
                        .map(|&i| &modules[i])
                        .find(|m| !targets::accepts(spec.target, m, modules))
                    {
                        let what = if spec.target == crate::methods::TargetKind::Biased {
                            format!(
                                "`{}` finds no bias terms in {}",
                                spec.name,
                                targets::describe(bad)
                            )
                        } else {
                            format!("`{}` cannot go on {}", spec.name, targets::describe(bad))
                        };
                        let mut d = Diagnostic::error(what)
                            .at(sel.span(), "wrong kind of module")
                            .with_note(format!(
                                "`{}` goes on {}",
                                spec.name,
                                spec.target.describe()
                            ));
                        if let Some(h) = targets::hint(spec.target, bad, model.family) {
                            d = d.with_help(h);
                        }
                        errors.push(d);
                        continue;
                    }
                    for &i in &found {
                        if !targets.contains(&i) {
                            targets.push(i);
                        }
                    }
                    selector_spans.push((sel.span(), found));
                }
                Err(d) => errors.push(d),
            }
        }
        targets.sort_unstable();
        if errors.is_empty()
            && let Some(a) = &args
        {
            let selected: Vec<&Module> = targets.iter().map(|&i| &modules[i]).collect();
            errors.extend((spec.check_targets)(a, &selected, st.call_span));
            let config = (spec.configure)(a, st.placement.node);
            let loftq = config.as_ref().is_some_and(|c| c.site().loftq().is_some());
            if loftq && model.quantize.is_none() {
                errors.push(crate::plan::loftq_needs_quantize(st.call_span));
            }
            errors.extend(
                config
                    .as_ref()
                    .and_then(|c| crate::plan::misfit(c, &model.dims, st.call_span)),
            );
        }
        if spec.single_target && targets.len() > 1 {
            errors.push(
                Diagnostic::error(format!(
                    "`{}` goes on one module; this statement selects {}",
                    spec.name,
                    targets.len()
                ))
                .at(st.span, ""),
            );
        }
    }
    match (errors.is_empty(), args) {
        (true, Some(args)) => Ok(CheckedStatement {
            kind: spec.kind,
            args,
            placement: st.placement.node,
            targets,
            gated,
            span: st.span,
            selector_spans,
        }),
        _ => Err(errors),
    }
}

/// Methods that cannot share a module within one block: two reparameterizations
/// of one weight, two prompts, an adapter twice at the same place.
fn exclusive_group(s: &CheckedStatement) -> (&'static str, Placement) {
    (s.kind.spec().exclusive, s.placement)
}

/// Errors for methods of one block that collide on a module.
pub fn check_conflicts(statements: &[CheckedStatement], modules: &[Module]) -> Vec<Diagnostic> {
    let mut errors = Vec::new();
    for (j, b) in statements.iter().enumerate() {
        let spec = b.kind.spec();
        if let Some(why) = spec.once_per_block
            && let Some(a) = statements[..j].iter().find(|a| a.kind == b.kind)
        {
            errors.push(
                Diagnostic::error(format!(
                    "`{}` is written twice in one block; {why}",
                    spec.name
                ))
                .at(b.span, "a second statement")
                .with_secondary(a.span, "the first")
                .with_help(format!(
                    "select every target in one statement, e.g. `{}() on attn.{{q, v}}, mlp.up`",
                    spec.name
                )),
            );
            continue;
        }
        for a in &statements[..j] {
            if exclusive_group(a) != exclusive_group(b) {
                continue;
            }
            if let Some(&shared) = b.targets.iter().find(|t| a.targets.contains(t)) {
                let m = &modules[shared];
                let span = b
                    .selector_spans
                    .iter()
                    .find(|(_, f)| f.contains(&shared))
                    .map(|(s, _)| *s)
                    .unwrap_or(b.span);
                let name = m
                    .role
                    .map(|r| r.spelling())
                    .unwrap_or_else(|| m.path.clone());
                errors.push(
                    Diagnostic::error(format!(
                        "`{name}` gets a second {}",
                        b.kind.spec().exclusive
                    ))
                    .at(span, "selected again here")
                    .with_secondary(a.span, "already placed here")
                    .with_note(format!("module `{}`", m.path)),
                );
                break;
            }
        }
    }
    errors.extend(token_routing_conflicts(statements));
    errors
}

/// Methods that add positions or attention keys of their own (soft prompts,
/// prefixes): a layer that routes a subset of its tokens cannot carry them.
fn adds_positions(kind: MethodKind) -> bool {
    match kind {
        MethodKind::Prompt | MethodKind::Prefix | MethodKind::Ptuning => true,
        MethodKind::Lora
        | MethodKind::Dora
        | MethodKind::Ia3
        | MethodKind::Adapter
        | MethodKind::Bitfit
        | MethodKind::Vera
        | MethodKind::Loha
        | MethodKind::Lokr
        | MethodKind::Ln
        | MethodKind::Adalora
        | MethodKind::Mask
        | MethodKind::Ssf
        | MethodKind::Full
        | MethodKind::Dylora
        | MethodKind::Coda
        | MethodKind::Lst => false,
    }
}

/// CoDA runs its layers on the routed tokens only: no soft prompt or prefix
/// in the same block.
fn token_routing_conflicts(statements: &[CheckedStatement]) -> Vec<Diagnostic> {
    let Some(coda) = statements.iter().find(|s| s.kind == MethodKind::Coda) else {
        return Vec::new();
    };
    statements
        .iter()
        .filter(|s| adds_positions(s.kind))
        .map(|s| {
            Diagnostic::error(format!(
                "`{}` cannot share a block with `coda`",
                s.kind.spec().name
            ))
            .at(s.span, "adds positions every layer attends to")
            .with_secondary(coda.span, "runs layers on the routed tokens only")
            .with_help("train the soft prompt or prefix in a block of its own")
        })
        .collect()
}
