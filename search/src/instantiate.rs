//! A point of the space as a plain `.peft` file: the spec's own text with each
//! set or range replaced by the chosen value, statements whose method is absent
//! (size 0, `enabled=false`) commented out, `search` blocks removed, and
//! relative paths rewritten for the folder the file will live in.
//!
//! Editing the text rather than printing the syntax tree keeps the user's
//! comments and layout: `best.peft` reads like the spec it came from.

use crate::space::{Site, Space, Value};
use peftc_grammar::Span;
use peftc_grammar::ast::{Item, SpecFile, ValueKind};
use std::path::{Component, Path, PathBuf};

/// Where relative paths in the spec resolve from, and where the new file goes.
#[derive(Debug, Clone)]
pub struct Rebase {
    /// Folder of the original spec (absolute).
    pub from: PathBuf,
    /// Folder of the new file (absolute).
    pub to: PathBuf,
}

/// The concrete spec text of `point`. `train_keys` are set in the `train`
/// block (replacing what it says): the search's per-trial `max_steps`, so that
/// the file trains as the trial did.
pub fn instantiate(
    file: &SpecFile,
    source: &str,
    space: &Space,
    point: &[Value],
    rebase: Option<&Rebase>,
    train_keys: &[(&str, String)],
) -> String {
    let mut edits: Vec<(Span, String)> = Vec::new();
    let absent: Vec<Span> = space
        .dims
        .iter()
        .zip(point)
        .filter(|(d, v)| d.makes_absent(v))
        .filter_map(|(d, _)| match d.site {
            Site::Arg { statement_span, .. } => Some(trimmed(source, statement_span)),
            Site::Train { .. } => None,
        })
        .collect();
    for s in &absent {
        if !edits.iter().any(|(e, _)| e == s) {
            let text = source.get(s.start..s.end).unwrap_or("");
            let first = text.lines().next().unwrap_or("");
            edits.push((*s, format!("# absent at this point: {first}")));
        }
    }
    for (d, v) in space.dims.iter().zip(point) {
        let span = trimmed(
            source,
            match d.site {
                Site::Arg { value_span, .. } => value_span,
                Site::Train { value_span } => value_span,
            },
        );
        if absent
            .iter()
            .any(|a| a.start <= span.start && span.end <= a.end)
        {
            continue;
        }
        edits.push((span, d.render(v)));
    }
    for item in &file.items {
        match item {
            Item::Search(s) => edits.push((s.span, String::new())),
            Item::Model(m) => {
                if let Some(r) = rebase {
                    edits.push((m.path.span, quote(&rebased(&m.path.node, r))));
                }
            }
            Item::Train(t) => {
                let mut added = String::new();
                for (k, v) in train_keys {
                    match t.entries.iter().find(|e| e.key.node == *k) {
                        Some(e) => edits.push((trimmed(source, e.value.span), v.clone())),
                        None => added.push_str(&format!("    {k} = {v}  # set by the search\n")),
                    }
                }
                if !added.is_empty() {
                    let close = trimmed(source, t.span).end.saturating_sub(1);
                    edits.push((Span::new(close, close), added));
                }
                for e in &t.entries {
                    if e.key.node == "data"
                        && let (Some(r), ValueKind::Str(p)) = (rebase, &e.value.node)
                    {
                        edits.push((e.value.span, quote(&rebased(p, r))));
                    }
                }
            }
            Item::Peft(_) => {}
        }
    }
    apply(source, edits)
}

/// `s` without the whitespace and comments the parser counts into a rule's
/// span after its last token.
fn trimmed(source: &str, s: Span) -> Span {
    let text = source.get(s.start..s.end).unwrap_or("");
    let mut end = text.len();
    loop {
        let t = text[..end].trim_end();
        end = t.len();
        // A trailing `# comment` line belongs to what follows.
        match t.rfind('\n') {
            Some(nl) if t[nl + 1..].trim_start().starts_with('#') => end = nl,
            _ => break,
        }
    }
    Span::new(s.start, s.start + end)
}

fn apply(source: &str, mut edits: Vec<(Span, String)>) -> String {
    edits.sort_by_key(|(s, _)| std::cmp::Reverse(s.start));
    let mut out = source.to_string();
    let mut floor = usize::MAX;
    for (s, text) in edits {
        // Overlapping edits cannot arise from a parsed spec; skip rather than corrupt.
        if s.end > floor || s.end > out.len() {
            continue;
        }
        out.replace_range(s.start..s.end, &text);
        floor = s.start;
    }
    // Removing a search block leaves blank lines; keep at most one in a row.
    let mut tidy = String::with_capacity(out.len());
    let mut blank = 0;
    for line in out.lines() {
        blank = if line.trim().is_empty() { blank + 1 } else { 0 };
        if blank <= 1 {
            tidy.push_str(line.trim_end());
            tidy.push('\n');
        }
    }
    tidy
}

fn quote(p: &str) -> String {
    format!("\"{}\"", p.replace('\\', "\\\\").replace('"', "\\\""))
}

/// `p` (relative to `r.from`, or absolute) as seen from `r.to`.
fn rebased(p: &str, r: &Rebase) -> String {
    let path = Path::new(p);
    if path.is_absolute() {
        return p.to_string();
    }
    relative(&normalize(&r.from.join(path)), &normalize(&r.to))
        .display()
        .to_string()
}

fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// The path of `target` relative to folder `base` (both absolute, normalized).
pub fn relative(target: &Path, base: &Path) -> PathBuf {
    let t: Vec<Component> = target.components().collect();
    let b: Vec<Component> = base.components().collect();
    let common = t.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut out = PathBuf::new();
    for _ in common..b.len() {
        out.push("..");
    }
    for c in &t[common..] {
        out.push(c);
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &str = "model \"../models/m\"\n\npeft a {\n    lora(r={0, 8}, alpha={8, 16}) on layers[*].attn.q  # q only\n    prefix(len=5..=20) on layers[*].attn\n}\n\ntrain {\n    adapter = a\n    data = \"../data/x.csv\"\n    lr = {1e-4, 5e-4}\n}\n\nsearch s {\n    space = a\n    maximize accuracy\n}\n";

    fn point(r: i64, alpha: i64, len: i64, lr: f64) -> Vec<Value> {
        vec![
            Value::Int(r),
            Value::Int(alpha),
            Value::Int(len),
            Value::Float(lr),
        ]
    }

    #[test]
    fn a_point_becomes_a_plain_spec() {
        let file = peftc_grammar::parse(SPEC).expect("parses");
        let space = Space::from_spec(&file, SPEC, "a");
        let text = instantiate(
            &file,
            SPEC,
            &space,
            &point(8, 16, 12, 5e-4),
            None,
            &[("max_steps", "40".into())],
        );
        assert!(
            text.contains("lora(r=8, alpha=16) on layers[*].attn.q  # q only"),
            "{text}"
        );
        assert!(text.contains("prefix(len=12) on layers[*].attn"), "{text}");
        assert!(text.contains("lr = 5e-4"), "{text}");
        assert!(
            text.contains("    lr = 5e-4\n    max_steps = 40  # set by the search\n}"),
            "{text}"
        );
        assert!(!text.contains("search s"), "{text}");
        let reparsed = peftc_grammar::parse(&text).expect("the output parses");
        assert!(Space::from_spec(&reparsed, &text, "a").dims.is_empty());
    }

    #[test]
    fn absent_methods_are_commented_out_and_paths_rebased() {
        let file = peftc_grammar::parse(SPEC).expect("parses");
        let space = Space::from_spec(&file, SPEC, "a");
        let rebase = Rebase {
            from: PathBuf::from("/w/specs"),
            to: PathBuf::from("/w/studies/s1"),
        };
        let text = instantiate(
            &file,
            SPEC,
            &space,
            &point(0, 8, 5, 1e-4),
            Some(&rebase),
            &[],
        );
        assert!(
            text.contains(
                "# absent at this point: lora(r={0, 8}, alpha={8, 16}) on layers[*].attn.q"
            ),
            "{text}"
        );
        assert!(text.contains("model \"../../models/m\""), "{text}");
        assert!(text.contains("data = \"../../data/x.csv\""), "{text}");
        peftc_grammar::parse(&text).expect("the output parses");
    }

    #[test]
    fn every_method_absent_leaves_a_block_of_comments() {
        let src = "model \"m\"\npeft a {\n  lora(r={0, 8}) on layers[*].attn.q\n  # between\n  prefix(len={0, 5}) on layers[*].attn\n}\n";
        let file = peftc_grammar::parse(src).expect("parses");
        let space = Space::from_spec(&file, src, "a");
        let text = instantiate(
            &file,
            src,
            &space,
            &[Value::Int(0), Value::Int(0)],
            None,
            &[],
        );
        assert_eq!(
            text,
            "model \"m\"\npeft a {\n  # absent at this point: lora(r={0, 8}) on layers[*].attn.q\n  # between\n  # absent at this point: prefix(len={0, 5}) on layers[*].attn\n}\n"
        );
    }

    #[test]
    fn relative_paths() {
        assert_eq!(
            relative(Path::new("/a/b/c"), Path::new("/a/d")),
            PathBuf::from("../b/c")
        );
        assert_eq!(
            relative(Path::new("/a"), Path::new("/a")),
            PathBuf::from(".")
        );
    }
}
