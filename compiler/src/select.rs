//! Selector resolution: from `layers[0..2].attn.{q, v}` or a raw path glob to
//! the modules it names, with errors that point at the offending segment and
//! suggest the model's real names.

use crate::glob;
use crate::model::MODEL_ROLES;
use crate::model::{Family, LayerRole, Module, Role};
use peftc_grammar::ast::{LayerRange, RangeItem, RolePath, RoleSegment, Selector};
use peftc_grammar::suggest::did_you_mean;
use peftc_grammar::{Diagnostic, Span, Spanned};
use std::collections::BTreeSet;

/// The modules a selector can name: the base model's and the task head's.
pub struct Scope<'a> {
    pub family: Family,
    pub model_type: &'a str,
    pub layers: usize,
    pub modules: &'a [Module],
}

/// Indices into `scope.modules` named by `sel`, in model order.
pub fn resolve(sel: &Selector, scope: &Scope) -> Result<Vec<usize>, Diagnostic> {
    match sel {
        Selector::Role(path) => resolve_role_path(path, scope),
        Selector::Raw(pattern) => resolve_raw(pattern, scope),
    }
}

/// One alternative of a role path: a name per segment, with the segment's range.
struct Concrete<'p> {
    names: Vec<(&'p Spanned<String>, Option<&'p LayerRange>)>,
}

fn expand(path: &RolePath) -> Vec<Concrete<'_>> {
    let mut out = vec![Concrete { names: Vec::new() }];
    for seg in &path.segments {
        let choices: Vec<(&Spanned<String>, Option<&LayerRange>)> = match seg {
            RoleSegment::Name { name, range } => vec![(name, range.as_ref())],
            RoleSegment::Alternatives { names, .. } => names.iter().map(|n| (n, None)).collect(),
        };
        out = out
            .into_iter()
            .flat_map(|c| {
                choices.iter().map(move |ch| {
                    let mut names = c.names.clone();
                    names.push(*ch);
                    Concrete { names }
                })
            })
            .collect();
    }
    out
}

fn resolve_role_path(path: &RolePath, scope: &Scope) -> Result<Vec<usize>, Diagnostic> {
    let mut found = BTreeSet::new();
    for c in expand(path) {
        for role in concrete_roles(&c, scope)? {
            let before = found.len();
            found.extend(
                scope
                    .modules
                    .iter()
                    .enumerate()
                    .filter(|(_, m)| m.role == Some(role))
                    .map(|(i, _)| i),
            );
            if found.len() == before && !matches_any(scope, role) {
                return Err(missing_role(role, &c, scope));
            }
        }
    }
    Ok(found.into_iter().collect())
}

fn matches_any(scope: &Scope, role: Role) -> bool {
    scope.modules.iter().any(|m| m.role == Some(role))
}

/// The roles one alternative names (one per selected layer).
fn concrete_roles(c: &Concrete, scope: &Scope) -> Result<Vec<Role>, Diagnostic> {
    let (first, first_range) = c.names[0];
    for (n, r) in &c.names[1..] {
        if let Some(r) = r {
            return Err(
                Diagnostic::error(format!("`{}` takes no layer range", n.node))
                    .at(r.span, "only `layers[...]` takes a range"),
            );
        }
    }
    if let Some((_, role)) = MODEL_ROLES.iter().find(|(n, _)| *n == first.node) {
        if let Some(r) = first_range {
            return Err(
                Diagnostic::error(format!("`{}` takes no layer range", first.node))
                    .at(r.span, "only `layers[...]` takes a range"),
            );
        }
        if let Some((extra, _)) = c.names.get(1) {
            return Err(
                Diagnostic::error(format!("`{}` has no parts to select", first.node))
                    .at(extra.span, "unexpected")
                    .with_note("`embed`, `final_norm` and `head` name whole modules"),
            );
        }
        return Ok(vec![*role]);
    }
    let (layers, rest) = if first.node == "layers" {
        let layers = match first_range {
            Some(r) => resolve_range(r, scope.layers)?,
            None => (0..scope.layers).collect(),
        };
        (layers, &c.names[1..])
    } else if LayerRole::TOP.iter().any(|(n, _)| *n == first.node) {
        if let Some(r) = first_range {
            return Err(
                Diagnostic::error(format!("`{}` takes no layer range", first.node))
                    .at(r.span, "write `layers[...]` first")
                    .with_help(format!("write `layers[...].{}`", first.node)),
            );
        }
        ((0..scope.layers).collect(), &c.names[..])
    } else {
        let mut candidates: Vec<&str> = vec!["layers"];
        candidates.extend(MODEL_ROLES.iter().map(|(n, _)| *n));
        candidates.extend(LayerRole::TOP.iter().map(|(n, _)| *n));
        return Err(Diagnostic::error(format!("unknown role `{}`", first.node))
            .at(first.span, "not a role")
            .with_suggestion(did_you_mean(&first.node, candidates.iter().copied()))
            .with_note(format!(
                "roles: {}; or quote a module path such as \"{}\"",
                candidates.join(", "),
                example_path(scope.family)
            )));
    };
    let lr = layer_role(rest)?;
    Ok(layers.into_iter().map(|i| Role::InLayer(i, lr)).collect())
}

fn example_path(family: Family) -> &'static str {
    match family {
        Family::Bert => "encoder.layer.*.attention.self.query",
        Family::Llama => "model.layers.*.self_attn.q_proj",
    }
}

/// The in-layer role named by the segments after `layers[...]`.
fn layer_role(rest: &[(&Spanned<String>, Option<&LayerRange>)]) -> Result<LayerRole, Diagnostic> {
    let Some((top, _)) = rest.first() else {
        return Ok(LayerRole::Layer);
    };
    let Some(&(_, top_role)) = LayerRole::TOP.iter().find(|(n, _)| *n == top.node) else {
        // A projection written without its block (`layers[*].q`): point at the fix.
        let hint = LayerRole::TOP.iter().find_map(|(bn, br)| {
            br.children()
                .iter()
                .find(|(cn, _)| *cn == top.node)
                .map(|_| format!("{bn}.{}", top.node))
        });
        let names: Vec<&str> = LayerRole::TOP.iter().map(|(n, _)| *n).collect();
        let d = Diagnostic::error(format!("a layer has no part `{}`", top.node))
            .at(top.span, "not a part of a layer")
            .with_note(format!("a layer's parts: {}", names.join(", ")));
        return Err(match hint {
            Some(h) => d.with_help(format!("did you mean `{h}`?")),
            None => d.with_suggestion(did_you_mean(&top.node, names.iter().copied())),
        });
    };
    let Some((child, _)) = rest.get(1) else {
        return Ok(top_role);
    };
    let children = top_role.children();
    let Some(&(_, role)) = children.iter().find(|(n, _)| *n == child.node) else {
        let names: Vec<&str> = children.iter().map(|(n, _)| *n).collect();
        let d = Diagnostic::error(format!("`{}` has no part `{}`", top.node, child.node))
            .at(child.span, "unknown part");
        return Err(if names.is_empty() {
            d.with_note(format!("`{}` has no parts to select", top.node))
        } else {
            d.with_suggestion(did_you_mean(&child.node, names.iter().copied()))
                .with_note(format!("parts of `{}`: {}", top.node, names.join(", ")))
        });
    };
    if let Some((extra, _)) = rest.get(2) {
        return Err(
            Diagnostic::error(format!("`{}.{}` has no parts", top.node, child.node))
                .at(extra.span, "unexpected"),
        );
    }
    Ok(role)
}

fn missing_role(role: Role, c: &Concrete, scope: &Scope) -> Diagnostic {
    let span = c.names.last().map(|(n, _)| n.span).unwrap_or_default();
    let present: BTreeSet<String> = scope
        .modules
        .iter()
        .filter_map(|m| match m.role {
            Some(Role::InLayer(0, lr)) if lr != LayerRole::Layer => Some(lr.spelling().to_string()),
            Some(Role::InLayer(..)) | None => None,
            Some(r) => Some(r.spelling()),
        })
        .collect();
    let wanted = match role {
        Role::InLayer(_, lr) => lr.spelling().to_string(),
        other => other.spelling(),
    };
    let mut d = Diagnostic::error(format!("{} models have no `{wanted}`", scope.model_type))
        .at(span, "no such module in this model")
        .with_note(format!(
            "roles this model has: {}",
            present.iter().cloned().collect::<Vec<_>>().join(", ")
        ));
    if role == Role::Head {
        d = d.with_note("`head` exists for the classify and causal_lm tasks");
    }
    // `wanted` is a real role this architecture lacks, not a typo: no "did you mean".
    d
}

/// Resolves `[...]` against a model of `n` layers.
pub fn resolve_range(r: &LayerRange, n: usize) -> Result<Vec<usize>, Diagnostic> {
    let n_i = n as i64;
    let mut out = BTreeSet::new();
    let norm = |i: i64, span: Span, allow_end: bool| -> Result<i64, Diagnostic> {
        let v = if i < 0 { n_i + i } else { i };
        let max = if allow_end { n_i } else { n_i - 1 };
        if v < 0 || v > max {
            Err(Diagnostic::error(format!(
                "layer {i} is out of range: the model has {n} layers (0..{n})"
            ))
            .at(span, "out of range"))
        } else {
            Ok(v)
        }
    };
    for item in &r.items {
        match item.node {
            RangeItem::All => out.extend(0..n),
            RangeItem::Index(i) => {
                out.insert(norm(i, item.span, false)? as usize);
            }
            RangeItem::Span { start, end } => {
                let s = norm(start.unwrap_or(0), item.span, true)?;
                let e = norm(end.unwrap_or(n_i), item.span, true)?;
                if s >= e {
                    return Err(Diagnostic::error(format!(
                        "layer range `{}` selects no layers",
                        fmt_span(start, end)
                    ))
                    .at(item.span, "empty range")
                    .with_note("ranges exclude their end: `0..6` is layers 0 to 5"));
                }
                out.extend(s as usize..e as usize);
            }
        }
    }
    Ok(out.into_iter().collect())
}

fn fmt_span(start: Option<i64>, end: Option<i64>) -> String {
    format!(
        "{}..{}",
        start.map(|s| s.to_string()).unwrap_or_default(),
        end.map(|s| s.to_string()).unwrap_or_default()
    )
}

fn resolve_raw(pattern: &Spanned<String>, scope: &Scope) -> Result<Vec<usize>, Diagnostic> {
    let stripped = strip_prefix(scope.family, &pattern.node);
    let expanded = glob::expand_braces(stripped).map_err(|e| {
        Diagnostic::error(format!("bad module path pattern: {e}")).at(pattern.span, "")
    })?;
    let mut found = BTreeSet::new();
    for p in &expanded {
        let hits: Vec<usize> = scope
            .modules
            .iter()
            .enumerate()
            .filter(|(_, m)| !m.synthetic && glob::matches(p, &m.path))
            .map(|(i, _)| i)
            .collect();
        if hits.is_empty() {
            let what = if expanded.len() > 1 {
                format!("`{p}` (from \"{}\") matches no module", pattern.node)
            } else {
                format!("\"{}\" matches no module", pattern.node)
            };
            let mut d = Diagnostic::error(what).at(pattern.span, "matches nothing in this model");
            d = match suggest_raw(p, scope) {
                RawHint::Replace(s) => d.with_help(format!("did you mean \"{s}\"?")),
                RawHint::Choices(pos, names) => d.with_note(format!(
                    "module names at segment {}: {}",
                    pos + 1,
                    names.join(", ")
                )),
                RawHint::None => d.with_note(format!(
                    "module paths look like \"{}\"",
                    example_path(scope.family)
                )),
            };
            return Err(d);
        }
        found.extend(hits);
    }
    Ok(found.into_iter().collect())
}

fn strip_prefix(family: Family, p: &str) -> &str {
    let p = p.strip_prefix("base_model.model.").unwrap_or(p);
    match family {
        Family::Bert => p.strip_prefix("bert.").unwrap_or(p),
        Family::Llama => p,
    }
}

enum RawHint {
    Replace(String),
    Choices(usize, Vec<String>),
    None,
}

/// Finds the first segment of `pattern` where no module continues to match
/// and proposes the closest real name there, repeating for later segments; the
/// corrected pattern is offered only if it matches something. Otherwise lists
/// the names that exist at the first wrong segment.
fn suggest_raw(pattern: &str, scope: &Scope) -> RawHint {
    if pattern.contains("**") {
        return RawHint::None;
    }
    let paths: Vec<Vec<&str>> = scope
        .modules
        .iter()
        .filter(|m| !m.synthetic)
        .map(|m| m.path.split('.').collect())
        .collect();
    let mut segs: Vec<String> = pattern.split('.').map(str::to_string).collect();
    let mut first_choices: Option<RawHint> = None;
    for _ in 0..segs.len() {
        let Some((k, names)) = first_mismatch(&segs, &paths) else {
            break;
        };
        match did_you_mean(&segs[k], names.iter().copied()) {
            Some(best) => segs[k] = best.to_string(),
            None => {
                first_choices.get_or_insert_with(|| choices(k, &names));
                break;
            }
        }
        first_choices.get_or_insert_with(|| choices(k, &names));
    }
    let fixed = segs.join(".");
    if fixed != pattern && paths.iter().any(|p| glob::matches(&fixed, &p.join("."))) {
        return RawHint::Replace(fixed);
    }
    first_choices.unwrap_or(RawHint::None)
}

/// The first segment where no path continues to match, with the names that
/// exist there under the matching prefix.
fn first_mismatch<'a>(
    segs: &[String],
    paths: &'a [Vec<&'a str>],
) -> Option<(usize, std::collections::BTreeSet<&'a str>)> {
    for k in 0..segs.len() {
        let under: Vec<&Vec<&str>> = paths
            .iter()
            .filter(|p| p.len() > k && (0..k).all(|i| glob::match_segment(&segs[i], p[i])))
            .collect();
        if under.iter().any(|p| glob::match_segment(&segs[k], p[k])) {
            continue;
        }
        return Some((k, under.iter().map(|p| p[k]).collect()));
    }
    None
}

fn choices(k: usize, names: &std::collections::BTreeSet<&str>) -> RawHint {
    let mut list: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    if list.is_empty() {
        return RawHint::None;
    }
    // Numeric segments (layer indices) say little; show the range instead.
    if list.iter().all(|s| s.parse::<usize>().is_ok()) {
        return RawHint::Choices(k, vec![format!("0..{}", list.len())]);
    }
    list.truncate(10);
    RawHint::Choices(k, list)
}
