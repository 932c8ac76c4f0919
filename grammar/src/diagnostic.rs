//! Errors about a spec, rendered the way rustc and naga render theirs:
//!
//! ```text
//! error: unknown method `lorra`
//!  --> spec.peft:5:5
//!   |
//! 5 |     lorra(r=8) on layers[*].attn.q
//!   |     ^^^^^ not a method peftc knows
//!   |
//!   = help: did you mean `lora`?
//! ```

use crate::span::{LineIndex, Span};
use std::fmt::Write as _;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

impl Severity {
    fn word(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

/// A span of the spec and what to say under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    pub span: Span,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    /// One line: what is wrong.
    pub message: String,
    /// Where it is wrong (underlined with `^`). `None` for errors with no place
    /// in the spec, such as a `--model` path given on the command line.
    pub primary: Option<Label>,
    /// Related places (underlined with `-`).
    pub secondary: Vec<Label>,
    /// `= note: ...` lines.
    pub notes: Vec<String>,
    /// `= help: ...` line, typically "did you mean ...".
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn error(message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            message: message.into(),
            primary: None,
            secondary: Vec::new(),
            notes: Vec::new(),
            help: None,
        }
    }

    pub fn warning(message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(message)
        }
    }

    pub fn at(mut self, span: Span, label: impl Into<String>) -> Self {
        self.primary = Some(Label {
            span,
            message: label.into(),
        });
        self
    }

    pub fn with_secondary(mut self, span: Span, label: impl Into<String>) -> Self {
        self.secondary.push(Label {
            span,
            message: label.into(),
        });
        self
    }

    pub fn with_note(mut self, note: impl Into<String>) -> Self {
        self.notes.push(note.into());
        self
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// Adds "did you mean `x`?" when a suggestion exists.
    pub fn with_suggestion(self, suggestion: Option<&str>) -> Self {
        match suggestion {
            Some(s) => self.with_help(format!("did you mean `{s}`?")),
            None => self,
        }
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// Renders with the file name, line:col, the source lines and carets.
    pub fn render(&self, path: &str, source: &str) -> String {
        let index = LineIndex::new(source);
        let mut out = String::new();
        let _ = writeln!(out, "{}: {}", self.severity.word(), self.message);

        let mut labels: Vec<(&Label, bool)> = Vec::new();
        if let Some(p) = &self.primary {
            labels.push((p, true));
        }
        labels.extend(self.secondary.iter().map(|l| (l, false)));

        let lines: Vec<usize> = labels
            .iter()
            .map(|(l, _)| index.line_of(l.span.start.min(source.len())))
            .collect();
        let width = lines
            .iter()
            .map(|l| (l + 1).to_string().len())
            .max()
            .unwrap_or(1);
        let pad = " ".repeat(width);

        match &self.primary {
            Some(p) => {
                let lc = index.line_col(source, p.span.start);
                let _ = writeln!(out, "{pad}--> {path}:{}:{}", lc.line, lc.col);
            }
            None => {
                let _ = writeln!(out, "{pad}--> {path}");
            }
        }

        if !labels.is_empty() {
            let _ = writeln!(out, "{pad} |");
            // Source order, so the picture reads top to bottom.
            let mut order: Vec<usize> = (0..labels.len()).collect();
            order.sort_by_key(|&i| (lines[i], labels[i].0.span.start));
            for i in order {
                let (label, primary) = labels[i];
                let line = lines[i];
                let text = index.line_text(source, line);
                let line_start = index.line_start(line);
                let start = label.span.start.min(source.len());
                let end = label.span.end.min(line_start + text.len()).max(start);
                let col = source[line_start..start].chars().count();
                let len = source[start..end].chars().count().max(1);
                let mark = if primary { "^" } else { "-" };
                let _ = writeln!(out, "{:>width$} | {}", line + 1, expand_tabs(text));
                let mut under = format!("{pad} | {}{}", " ".repeat(col), mark.repeat(len));
                if !label.message.is_empty() {
                    under.push(' ');
                    under.push_str(&label.message);
                }
                let _ = writeln!(out, "{}", under.trim_end());
            }
        }
        if !self.notes.is_empty() || self.help.is_some() {
            let _ = writeln!(out, "{pad} |");
        }
        for n in &self.notes {
            let _ = writeln!(out, "{pad} = note: {n}");
        }
        if let Some(h) = &self.help {
            let _ = writeln!(out, "{pad} = help: {h}");
        }
        out
    }
}

/// Tabs would shift the carets; show them as one space each (carets count chars).
fn expand_tabs(s: &str) -> String {
    s.replace('\t', " ")
}

/// Renders several diagnostics separated by blank lines.
pub fn render_all(diags: &[Diagnostic], path: &str, source: &str) -> String {
    diags
        .iter()
        .map(|d| d.render(path, source))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_caret_under_the_span() {
        let src = "peft a {\n    lorra(r=8) on attn.q\n}\n";
        let start = src.find("lorra").unwrap();
        let d = Diagnostic::error("unknown method `lorra`")
            .at(Span::new(start, start + 5), "not a method peftc knows")
            .with_suggestion(Some("lora"));
        let text = d.render("x.peft", src);
        let expected = "\
error: unknown method `lorra`
 --> x.peft:2:5
  |
2 |     lorra(r=8) on attn.q
  |     ^^^^^ not a method peftc knows
  |
  = help: did you mean `lora`?
";
        assert_eq!(text, expected);
    }

    #[test]
    fn renders_without_a_span() {
        let d = Diagnostic::error("cannot read `/nope/config.json`");
        assert_eq!(
            d.render("x.peft", ""),
            "error: cannot read `/nope/config.json`\n --> x.peft\n"
        );
    }

    #[test]
    fn secondary_labels_are_dashed_and_in_source_order() {
        let src = "peft a {}\npeft a {}\n";
        let d = Diagnostic::error("duplicate block `a`")
            .at(Span::new(15, 16), "defined again here")
            .with_secondary(Span::new(5, 6), "first defined here");
        let text = d.render("x.peft", src);
        assert!(text.contains("1 | peft a {}\n  |      - first defined here\n"));
        assert!(text.contains("2 | peft a {}\n  |      ^ defined again here\n"));
    }
}
