//! What a method declares about itself as data: its arguments (types,
//! defaults, ranges), where it may sit, and the functions that turn checked
//! arguments into its typed configuration. Each method's file fills one
//! [`MethodSpec`]; `table.rs` lists them.

use super::args::Args;
use super::table::{MethodConfig, MethodKind};
use crate::model::Module;
use peftc_grammar::ast::Placement;
use peftc_grammar::{Diagnostic, Span};

/// What kind of module a method can be attached to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    /// A linear projection.
    Linear,
    /// The token embedding.
    Embedding,
    /// An attention block.
    Attention,
    /// Any block with an input and an output: a linear, attention, MLP or layer.
    Block,
    /// Any module holding bias terms (directly or below it).
    Biased,
    /// A LayerNorm or RMSNorm.
    Norm,
    /// Any module holding weights (a linear, a norm, or a block of them).
    Weighted,
    /// A whole transformer layer.
    Layer,
}

impl TargetKind {
    pub fn describe(self) -> &'static str {
        match self {
            TargetKind::Linear => "a linear layer (e.g. `attn.q`, `mlp.down`)",
            TargetKind::Embedding => "the token embedding (`embed`)",
            TargetKind::Attention => "an attention block (`attn`)",
            TargetKind::Block => "a block (`attn`, `mlp`, a layer, or a linear layer)",
            TargetKind::Biased => "modules with bias terms",
            TargetKind::Norm => "a norm (`attn_norm`, `mlp_norm`, `final_norm`)",
            TargetKind::Weighted => {
                "a module with weights (a linear layer, a norm, `attn`, `mlp`, a layer)"
            }
            TargetKind::Layer => "a transformer layer (`layers[*]`)",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ArgType {
    /// An integer in `min..=max`. `zero_absent`: in a search set, 0 means "method absent".
    Int {
        min: i64,
        max: i64,
        zero_absent: bool,
    },
    /// A number in the range; `lo_open`/`hi_open` exclude the ends.
    Float {
        lo: f64,
        hi: f64,
        lo_open: bool,
        hi_open: bool,
    },
    Bool,
    /// One of these names.
    Choice(&'static [&'static str]),
    Str,
    /// A bare name referring to something else in the spec (a block).
    Name,
}

impl ArgType {
    pub fn describe(&self) -> String {
        match self {
            ArgType::Int { min, max, .. } if *max == i64::MAX => format!("an integer >= {min}"),
            ArgType::Int { min, max, .. } => format!("an integer in {min}..={max}"),
            ArgType::Float {
                lo,
                hi,
                lo_open,
                hi_open,
            } => {
                let l = if *lo_open { "(" } else { "[" };
                let h = if *hi_open { ")" } else { "]" };
                if hi.is_infinite() {
                    format!("a number {} {lo}", if *lo_open { ">" } else { ">=" })
                } else {
                    format!("a number in {l}{lo}, {hi}{h}")
                }
            }
            ArgType::Bool => "true or false".into(),
            ArgType::Choice(c) => format!("one of {}", c.join(", ")),
            ArgType::Str => "a string".into(),
            ArgType::Name => "a name".into(),
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct ArgSpec {
    pub name: &'static str,
    pub ty: ArgType,
    /// `None`: the argument is required.
    pub default: Option<Default>,
    pub doc: &'static str,
}

/// A default value, typed like [`ArgType`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Default {
    Int(i64),
    Float(f64),
    Bool(bool),
    Name(&'static str),
    /// No value (an optional string).
    Unset,
}

/// The switch of a method that has no size argument: `ia3(enabled={true, false})`
/// lets a search leave it out, as size 0 does for the others.
pub const ENABLED: ArgSpec = ArgSpec {
    name: "enabled",
    ty: ArgType::Bool,
    default: Some(Default::Bool(true)),
    doc: "false: the method is absent (a search choice)",
};

/// A size argument: at least 1, and 0 inside a search set for "absent here".
pub const SIZE: ArgType = ArgType::Int {
    min: 1,
    max: 1 << 20,
    zero_absent: true,
};
/// A probability in [0, 1).
pub const PROB: ArgType = ArgType::Float {
    lo: 0.0,
    hi: 1.0,
    lo_open: false,
    hi_open: true,
};
/// A number above 0.
pub const POSITIVE: ArgType = ArgType::Float {
    lo: 0.0,
    hi: f64::INFINITY,
    lo_open: true,
    hi_open: true,
};

pub const ON: &[Placement] = &[Placement::On];
pub const SERIAL_OR_PARALLEL: &[Placement] = &[Placement::After, Placement::Beside];

/// Everything the checker and the lowering know about a method, as data.
#[derive(Clone, Copy)]
pub struct MethodSpec {
    pub kind: MethodKind,
    pub name: &'static str,
    pub placements: &'static [Placement],
    pub target: TargetKind,
    pub args: &'static [ArgSpec],
    /// Whether `gated` (UniPELT gating) applies.
    pub gateable: bool,
    pub doc: &'static str,
    /// Why the method goes where `placements` say (a wrong placement's note).
    pub placement_note: &'static str,
    /// Methods with the same word cannot share a module within one block
    /// (two reparameterizations of one weight); it names the second one in
    /// the error ("gets a second low-rank update").
    pub exclusive: &'static str,
    /// At most one target module (a soft prompt on the embedding).
    pub single_target: bool,
    /// On a feed-forward down projection the method works on the layer's
    /// input, not its output ((IA)³; HF PEFT's `feedforward_modules`).
    pub scales_ffn_input: bool,
    /// At most one statement of the method per block, and why (VeRA's
    /// layers share its projections, AdaLoRA's their rank budget).
    pub once_per_block: Option<&'static str>,
    /// The typed configuration from fixed, checked arguments; `None` when the
    /// method is absent at this point (size 0 or `enabled=false`).
    pub configure: fn(&Args, Placement) -> Option<MethodConfig>,
    /// Checks across arguments that the table cannot express (`init=text`
    /// needs `text`); `call` is the statement's `method(...)` span.
    pub check: fn(&Args, call: Span) -> Vec<Diagnostic>,
    /// Checks of the arguments against the modules the statement selects (a
    /// row mask whose density selects no row of some layer).
    pub check_targets: fn(&Args, &[&Module], call: Span) -> Vec<Diagnostic>,
}

impl std::fmt::Debug for MethodSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MethodSpec")
            .field("name", &self.name)
            .finish()
    }
}

impl MethodSpec {
    pub fn arg(&self, name: &str) -> Option<&ArgSpec> {
        self.args.iter().find(|a| a.name == name)
    }
}

/// For methods with no cross-argument rule.
pub fn no_check(_: &Args, _: Span) -> Vec<Diagnostic> {
    Vec::new()
}

/// For methods whose arguments fit every module they may target.
pub fn no_target_check(_: &Args, _: &[&Module], _: Span) -> Vec<Diagnostic> {
    Vec::new()
}

/// A size argument's fixed value, `None` when 0 (absent) or missing.
pub fn size(args: &Args, name: &str) -> Option<usize> {
    args.fixed(name)
        .and_then(|v| v.as_i64())
        .and_then(|v| usize::try_from(v).ok())
        .filter(|&v| v > 0)
}

/// A fixed float argument (checked, so present).
pub fn float(args: &Args, name: &str) -> f64 {
    args.fixed(name).and_then(|v| v.as_f64()).unwrap_or(0.0)
}

/// A fixed boolean argument.
pub fn flag(args: &Args, name: &str) -> bool {
    args.fixed(name).and_then(|v| v.as_bool()).unwrap_or(false)
}

/// A fixed choice or string argument.
pub fn choice<'a>(args: &'a Args, name: &str) -> &'a str {
    args.fixed(name).and_then(|v| v.as_str()).unwrap_or("")
}

/// `false` when `enabled=false` at this point.
pub fn enabled(args: &Args) -> bool {
    args.fixed("enabled").and_then(|v| v.as_bool()) != Some(false)
}
