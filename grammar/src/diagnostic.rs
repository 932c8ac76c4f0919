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

use crate::span::{LineIndex, Span, ceil_to_char_boundary, clamp_to_char_boundary};
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
        let _ = writeln!(
            out,
            "{}: {}",
            self.severity.word(),
            printable(&self.message)
        );

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
                // A span may end inside a multi-byte character (a one-byte
                // span at a parse error): widen it to whole characters.
                let start = clamp_to_char_boundary(source, label.span.start).max(line_start);
                let end = ceil_to_char_boundary(source, label.span.end)
                    .min(line_start + text.len())
                    .max(start);
                let col = source[line_start..start].chars().count();
                let len = source[start..end].chars().count().max(1);
                let (shown, col, len) = window(text, col, len);
                let mark = if primary { "^" } else { "-" };
                let _ = writeln!(out, "{:>width$} | {shown}", line + 1);
                let mut under = format!("{pad} | {}{}", " ".repeat(col), mark.repeat(len));
                if !label.message.is_empty() {
                    under.push(' ');
                    under.push_str(&printable(&label.message));
                }
                let _ = writeln!(out, "{}", under.trim_end());
            }
        }
        if !self.notes.is_empty() || self.help.is_some() {
            let _ = writeln!(out, "{pad} |");
        }
        for n in &self.notes {
            let _ = writeln!(out, "{pad} = note: {}", printable(n));
        }
        if let Some(h) = &self.help {
            let _ = writeln!(out, "{pad} = help: {}", printable(h));
        }
        out
    }
}

/// Characters of a source line shown around a span; longer lines are cut
/// to a window with `…` at the cut ends.
const WINDOW: usize = 120;
/// Characters of context kept before the span in a cut line.
const LEAD: usize = 40;
/// Longest message shown; a message quoting a huge token is cut.
const MAX_MESSAGE: usize = 300;

/// One character as shown: a tab as a space, other control characters (a
/// NUL, an escape) as their Unicode control pictures (`␀`, `␛`), so every
/// character takes one column and the carets stay aligned.
fn shown_char(c: char) -> char {
    match c {
        '\t' => ' ',
        '\u{7f}' => '\u{2421}',
        c if (c as u32) < 0x20 => char::from_u32(0x2400 + c as u32).unwrap_or('?'),
        c => c,
    }
}

/// `text` with control characters made visible and cut to [`MAX_MESSAGE`].
fn printable(text: &str) -> String {
    let mut out: String = text.chars().take(MAX_MESSAGE).map(shown_char).collect();
    if text.chars().nth(MAX_MESSAGE).is_some() {
        out.push('…');
    }
    out
}

/// The part of `line` to show for a span at char column `col` of `len`
/// chars, and the span's column and length within what is shown.
fn window(line: &str, col: usize, len: usize) -> (String, usize, usize) {
    let chars: Vec<char> = line.chars().map(shown_char).collect();
    if chars.len() <= WINDOW {
        return (chars.into_iter().collect(), col, len);
    }
    let start = col.saturating_sub(LEAD).min(chars.len());
    let end = (start + WINDOW).min(chars.len());
    let mut shown = String::new();
    let mut new_col = col - start;
    if start > 0 {
        shown.push('…');
        new_col += 1;
    }
    shown.extend(&chars[start..end]);
    if end < chars.len() {
        shown.push('…');
    }
    let new_len = len.min(end.saturating_sub(col)).max(1);
    (shown, new_col, new_len)
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
    fn long_lines_are_cut_around_the_span_and_controls_shown() {
        let mut src = String::from("peft a {\n    ");
        src.push_str(&"x".repeat(5000));
        src.push_str(" lorra(r=8)");
        src.push_str(&"y".repeat(5000));
        src.push_str("\n}\n");
        let start = src.find("lorra").unwrap();
        let d = Diagnostic::error(format!("unknown method `{}`", "z".repeat(10_000)))
            .at(Span::new(start, start + 5), "here");
        let text = d.render("x.peft", &src);
        assert!(text.len() < 1200, "{} bytes", text.len());
        let lines: Vec<&str> = text.lines().collect();
        let code = lines.iter().find(|l| l.contains("lorra")).unwrap();
        let caret = lines.iter().find(|l| l.contains("^^^^^")).unwrap();
        let column = |l: &str, pat: &str| l.find(pat).map(|b| l[..b].chars().count());
        assert_eq!(column(code, "lorra"), column(caret, "^^^^^"), "{text}");
        assert!(code.contains('…'));

        let src = "peft a {\n    lo\0ra(r=8) on attn.q\n}\n";
        let start = src.find("lo").unwrap();
        let d = Diagnostic::error("unknown method `lo\0ra`").at(Span::new(start, start + 5), "");
        let text = d.render("x.peft", src);
        assert!(!text.contains('\0'));
        assert!(text.contains("lo\u{2400}ra"), "{text}");
        assert!(text.contains("    ^^^^^"), "{text}");
    }

    /// Found by `fuzz/fuzz_targets/parse_check.rs`: a one-byte span inside
    /// a two-byte character (U+0085) sliced the source mid-character.
    #[test]
    fn spans_inside_a_character_are_widened() {
        let src = "\u{85}";
        let d = Diagnostic::error("unexpected").at(Span::new(0, 1), "here");
        let text = d.render("x.peft", src);
        assert!(text.contains("^ here"), "{text}");
        let d = Diagnostic::error("unexpected").at(Span::new(1, 2), "");
        let _ = d.render("x.peft", src);
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
