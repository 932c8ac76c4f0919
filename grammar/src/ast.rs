//! The syntax tree of a `.peft` file. Every node keeps the span of its text so that
//! the compiler's errors can point at it.

use crate::span::{Span, Spanned};
use serde::{Deserialize, Serialize};

pub type Ident = Spanned<String>;

/// A whole `.peft` file, items in source order.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SpecFile {
    pub items: Vec<Item>,
}

#[derive(Debug, Clone, Serialize)]
pub enum Item {
    Model(ModelDecl),
    Peft(PeftBlock),
    Train(TrainBlock),
    Search(SearchBlock),
}

impl Item {
    pub fn span(&self) -> Span {
        match self {
            Item::Model(m) => m.span,
            Item::Peft(p) => p.span,
            Item::Train(t) => t.span,
            Item::Search(s) => s.span,
        }
    }
}

/// `model "path"`, optionally `quantize NAME` (`nf4`, `int8`).
#[derive(Debug, Clone, Serialize)]
pub struct ModelDecl {
    pub path: Spanned<String>,
    pub quantize: Option<Ident>,
    pub span: Span,
}

/// `peft NAME { statement* }`
#[derive(Debug, Clone, Serialize)]
pub struct PeftBlock {
    pub name: Ident,
    pub statements: Vec<Statement>,
    pub span: Span,
}

/// `method(key=value, ...) PLACEMENT SELECTOR, ... [modifier ...]`
#[derive(Debug, Clone, Serialize)]
pub struct Statement {
    pub method: Ident,
    pub args: Vec<Arg>,
    /// Span of `method(...)`, the parenthesised argument list included.
    pub call_span: Span,
    pub placement: Spanned<Placement>,
    pub selectors: Vec<Selector>,
    pub modifiers: Vec<Ident>,
    pub span: Span,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Placement {
    /// Wrap or reparameterize the module itself.
    On,
    /// Serial: applied to the module's output.
    After,
    /// Parallel: computed from the module's input, added to its output.
    Beside,
}

impl Placement {
    pub fn keyword(self) -> &'static str {
        match self {
            Placement::On => "on",
            Placement::After => "after",
            Placement::Beside => "beside",
        }
    }
}

/// `key = value` inside a method call.
#[derive(Debug, Clone, Serialize)]
pub struct Arg {
    pub key: Ident,
    pub value: Value,
    pub span: Span,
}

/// Where a method goes: a role path (`layers[*].attn.{q, v}`) or a quoted raw
/// module path glob in the checkpoint's own names.
#[derive(Debug, Clone, Serialize)]
pub enum Selector {
    Role(RolePath),
    Raw(Spanned<String>),
}

impl Selector {
    pub fn span(&self) -> Span {
        match self {
            Selector::Role(r) => r.span,
            Selector::Raw(s) => s.span,
        }
    }
}

/// `seg.seg.seg` where each segment is a name, a name with a layer range, or `{a, b}`.
#[derive(Debug, Clone, Serialize)]
pub struct RolePath {
    pub segments: Vec<RoleSegment>,
    pub span: Span,
}

#[derive(Debug, Clone, Serialize)]
pub enum RoleSegment {
    Name {
        name: Ident,
        range: Option<LayerRange>,
    },
    Alternatives {
        names: Vec<Ident>,
        span: Span,
    },
}

impl RoleSegment {
    pub fn span(&self) -> Span {
        match self {
            RoleSegment::Name { name, range } => match range {
                Some(r) => name.span.join(r.span),
                None => name.span,
            },
            RoleSegment::Alternatives { span, .. } => *span,
        }
    }
}

/// The part between `[` and `]` of `layers[...]`.
#[derive(Debug, Clone, Serialize)]
pub struct LayerRange {
    pub items: Vec<Spanned<RangeItem>>,
    pub span: Span,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum RangeItem {
    /// `*`
    All,
    /// `3`, or `-1` for the last layer.
    Index(i64),
    /// `0..6` (end exclusive), `-2..` (the last two), `..3`.
    Span {
        start: Option<i64>,
        end: Option<i64>,
    },
}

/// `train { key = value ... }`
#[derive(Debug, Clone, Serialize)]
pub struct TrainBlock {
    pub entries: Vec<Entry>,
    pub span: Span,
    /// Span of the `train` keyword alone.
    pub keyword_span: Span,
}

#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    pub key: Ident,
    pub value: Value,
    pub span: Span,
}

/// `search NAME { ... }`
#[derive(Debug, Clone, Serialize)]
pub struct SearchBlock {
    pub name: Ident,
    pub items: Vec<SearchItem>,
    pub span: Span,
}

#[derive(Debug, Clone, Serialize)]
pub enum SearchItem {
    /// `key = value`
    Entry(Entry),
    /// `budget params <= 0.5%, memory <= 2GiB`
    Budget(Vec<Constraint>),
    /// `maximize accuracy` / `minimize params`
    Objective {
        direction: Spanned<Direction>,
        metric: Ident,
        span: Span,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct Constraint {
    pub metric: Ident,
    pub op: Spanned<CmpOp>,
    pub value: Value,
    pub span: Span,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum CmpOp {
    Le,
    Lt,
    Ge,
    Gt,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Maximize,
    Minimize,
}

pub type Value = Spanned<ValueKind>;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum ValueKind {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
    Ident(String),
    /// A number with a unit: `2GiB`, `0.5%`, `7M`.
    Quantity {
        amount: f64,
        unit: Unit,
    },
    /// A search set `{4, 8, 16}`.
    Set(Vec<Value>),
    /// A search range `4..=64 log`.
    Range(RangeValue),
}

impl ValueKind {
    /// A short name of the value's kind, for "expected X, found Y" messages.
    pub fn kind_name(&self) -> &'static str {
        match self {
            ValueKind::Int(_) => "an integer",
            ValueKind::Float(_) => "a number",
            ValueKind::Bool(_) => "a boolean",
            ValueKind::Str(_) => "a string",
            ValueKind::Ident(_) => "a name",
            ValueKind::Quantity { .. } => "a quantity with a unit",
            ValueKind::Set(_) => "a search set",
            ValueKind::Range(_) => "a search range",
        }
    }

    /// Whether this is a search-space value (a set or a range).
    pub fn is_search_space(&self) -> bool {
        matches!(self, ValueKind::Set(_) | ValueKind::Range(_))
    }

    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            ValueKind::Int(i) => Some(i as f64),
            ValueKind::Float(f) => Some(f),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RangeValue {
    pub lo: f64,
    pub hi: f64,
    /// Both ends were written as integers.
    pub integer: bool,
    /// `..=` rather than `..`
    pub inclusive: bool,
    pub log: bool,
    pub step: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Unit {
    Percent,
    /// Thousands (of parameters).
    K,
    /// Millions (of parameters).
    M,
    Bytes,
    KB,
    MB,
    GB,
    TB,
    KiB,
    MiB,
    GiB,
    TiB,
}

impl Unit {
    pub fn from_text(s: &str) -> Option<Unit> {
        Some(match s {
            "%" => Unit::Percent,
            "K" => Unit::K,
            "M" => Unit::M,
            "B" => Unit::Bytes,
            "KB" => Unit::KB,
            "MB" => Unit::MB,
            "GB" => Unit::GB,
            "TB" => Unit::TB,
            "KiB" => Unit::KiB,
            "MiB" => Unit::MiB,
            "GiB" => Unit::GiB,
            "TiB" => Unit::TiB,
            _ => return None,
        })
    }

    /// Bytes per unit, for byte units.
    pub fn bytes(self) -> Option<f64> {
        Some(match self {
            Unit::Bytes => 1.0,
            Unit::KB => 1e3,
            Unit::MB => 1e6,
            Unit::GB => 1e9,
            Unit::TB => 1e12,
            Unit::KiB => 1024.0,
            Unit::MiB => 1024.0 * 1024.0,
            Unit::GiB => 1024.0 * 1024.0 * 1024.0,
            Unit::TiB => 1024.0 * 1024.0 * 1024.0 * 1024.0,
            _ => return None,
        })
    }

    /// Multiplier for count units (parameters).
    pub fn count(self) -> Option<f64> {
        Some(match self {
            Unit::K => 1e3,
            Unit::M => 1e6,
            _ => return None,
        })
    }
}

impl SpecFile {
    pub fn model(&self) -> Option<&ModelDecl> {
        self.items.iter().find_map(|i| match i {
            Item::Model(m) => Some(m),
            _ => None,
        })
    }

    pub fn peft_blocks(&self) -> impl Iterator<Item = &PeftBlock> {
        self.items.iter().filter_map(|i| match i {
            Item::Peft(p) => Some(p),
            _ => None,
        })
    }

    pub fn train_blocks(&self) -> impl Iterator<Item = &TrainBlock> {
        self.items.iter().filter_map(|i| match i {
            Item::Train(t) => Some(t),
            _ => None,
        })
    }

    pub fn search_blocks(&self) -> impl Iterator<Item = &SearchBlock> {
        self.items.iter().filter_map(|i| match i {
            Item::Search(s) => Some(s),
            _ => None,
        })
    }
}

impl TrainBlock {
    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.key.node == key)
    }
}
