//! The `.peft` language: grammar (`peft.pest`), syntax tree with spans, and
//! diagnostics that render with file:line:col and a caret.
//!
//! This crate knows nothing about models; it only checks form. The compiler
//! gives the tree its meaning.

// Diagnostics are the error type everywhere; they are built on cold paths
// and carry spans, labels and notes by value, so their size is no concern.
#![allow(clippy::result_large_err)]

pub mod ast;
pub mod diagnostic;
mod parse;
pub mod span;
pub mod suggest;

pub use diagnostic::{Diagnostic, Label, Severity, render_all};
pub use parse::parse;
pub use span::{LineCol, LineIndex, Span, Spanned};
