//! The table of methods and their arguments.

use peftc_grammar::ast::Placement;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MethodKind {
    Lora,
    Dora,
    Ia3,
    Prompt,
    Prefix,
    Adapter,
    Bitfit,
}

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
}

impl TargetKind {
    pub fn describe(self) -> &'static str {
        match self {
            TargetKind::Linear => "a linear layer (e.g. `attn.q`, `mlp.down`)",
            TargetKind::Embedding => "the token embedding (`embed`)",
            TargetKind::Attention => "an attention block (`attn`)",
            TargetKind::Block => "a block (`attn`, `mlp`, a layer, or a linear layer)",
            TargetKind::Biased => "modules with bias terms",
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
const ENABLED: ArgSpec = ArgSpec {
    name: "enabled",
    ty: ArgType::Bool,
    default: Some(Default::Bool(true)),
    doc: "false: the method is absent (a search choice)",
};

#[derive(Debug, Clone, Copy)]
pub struct MethodSpec {
    pub kind: MethodKind,
    pub name: &'static str,
    pub placements: &'static [Placement],
    pub target: TargetKind,
    pub args: &'static [ArgSpec],
    /// Whether `gated` (UniPELT gating) applies.
    pub gateable: bool,
    pub doc: &'static str,
}

impl MethodSpec {
    pub fn arg(&self, name: &str) -> Option<&ArgSpec> {
        self.args.iter().find(|a| a.name == name)
    }
}

const INT_POS: ArgType = ArgType::Int {
    min: 1,
    max: 1 << 20,
    zero_absent: true,
};
const PROB: ArgType = ArgType::Float {
    lo: 0.0,
    hi: 1.0,
    lo_open: false,
    hi_open: true,
};
const POSITIVE: ArgType = ArgType::Float {
    lo: 0.0,
    hi: f64::INFINITY,
    lo_open: true,
    hi_open: true,
};

const LORA_ARGS: &[ArgSpec] = &[
    ArgSpec {
        name: "r",
        ty: INT_POS,
        default: Some(Default::Int(8)),
        doc: "rank of the update",
    },
    ArgSpec {
        name: "alpha",
        ty: POSITIVE,
        default: Some(Default::Float(8.0)),
        doc: "scale numerator: the update is scaled by alpha/r (alpha/sqrt(r) with rslora); HF PEFT's default 8",
    },
    ArgSpec {
        name: "dropout",
        ty: PROB,
        default: Some(Default::Float(0.0)),
        doc: "dropout on the LoRA input",
    },
    ArgSpec {
        name: "rslora",
        ty: ArgType::Bool,
        default: Some(Default::Bool(false)),
        doc: "rank-stabilized scaling alpha/sqrt(r)",
    },
    ArgSpec {
        name: "init",
        ty: ArgType::Choice(&["default", "gaussian"]),
        default: Some(Default::Name("default")),
        doc: "A init: kaiming-uniform (default) or gaussian(1/r); B starts at zero",
    },
    ArgSpec {
        name: "bias",
        ty: ArgType::Choice(&["none", "lora_only", "all"]),
        default: Some(Default::Name("none")),
        doc: "which biases train: none, those of the targeted layers, or all",
    },
];

const LORA_ARGS_WITH_DORA: &[ArgSpec] = &[
    LORA_ARGS[0],
    LORA_ARGS[1],
    LORA_ARGS[2],
    LORA_ARGS[3],
    LORA_ARGS[4],
    LORA_ARGS[5],
    ArgSpec {
        name: "dora",
        ty: ArgType::Bool,
        default: Some(Default::Bool(false)),
        doc: "weight-decomposed LoRA",
    },
];

const ON: &[Placement] = &[Placement::On];
const SERIAL_OR_PARALLEL: &[Placement] = &[Placement::After, Placement::Beside];

/// Every method the checker knows.
pub const METHODS: &[MethodSpec] = &[
    MethodSpec {
        kind: MethodKind::Lora,
        name: "lora",
        placements: ON,
        target: TargetKind::Linear,
        args: LORA_ARGS_WITH_DORA,
        gateable: true,
        doc: "low-rank update W + s*B*A (Hu et al. 2021)",
    },
    MethodSpec {
        kind: MethodKind::Dora,
        name: "dora",
        placements: ON,
        target: TargetKind::Linear,
        args: LORA_ARGS,
        gateable: true,
        doc: "weight-decomposed LoRA: m * (W + s*B*A) / ||W + s*B*A|| (Liu et al. 2024)",
    },
    MethodSpec {
        kind: MethodKind::Ia3,
        name: "ia3",
        placements: ON,
        target: TargetKind::Linear,
        args: &[ENABLED],
        gateable: false,
        doc: "learned vector scaling a projection's output (its input on mlp.down) (Liu et al. 2022)",
    },
    MethodSpec {
        kind: MethodKind::Prompt,
        name: "prompt",
        placements: ON,
        target: TargetKind::Embedding,
        args: &[
            ArgSpec {
                name: "len",
                ty: INT_POS,
                default: None,
                doc: "number of virtual tokens",
            },
            ArgSpec {
                name: "init",
                ty: ArgType::Choice(&["random", "vocab", "text"]),
                default: Some(Default::Name("random")),
                doc: "random normal, rows of the vocabulary, or the embedding of `text`",
            },
            ArgSpec {
                name: "text",
                ty: ArgType::Str,
                default: Some(Default::Unset),
                doc: "initial text for init=text",
            },
        ],
        gateable: false,
        doc: "soft prompt prepended to the input embeddings (Lester et al. 2021)",
    },
    MethodSpec {
        kind: MethodKind::Prefix,
        name: "prefix",
        placements: ON,
        target: TargetKind::Attention,
        args: &[
            ArgSpec {
                name: "len",
                ty: INT_POS,
                default: None,
                doc: "number of prefix positions",
            },
            ArgSpec {
                name: "projection",
                ty: ArgType::Int {
                    min: 0,
                    max: 1 << 20,
                    zero_absent: false,
                },
                default: Some(Default::Int(0)),
                doc: "hidden size of the reparameterization MLP (0: none)",
            },
        ],
        gateable: true,
        doc: "trainable key/value prefixes in every attention layer (Li & Liang 2021)",
    },
    MethodSpec {
        kind: MethodKind::Adapter,
        name: "adapter",
        placements: SERIAL_OR_PARALLEL,
        target: TargetKind::Block,
        args: &[
            ArgSpec {
                name: "bottleneck",
                ty: INT_POS,
                default: None,
                doc: "bottleneck width",
            },
            ArgSpec {
                name: "act",
                ty: ArgType::Choice(&["relu", "gelu", "silu", "tanh"]),
                default: Some(Default::Name("relu")),
                doc: "activation between down and up projections",
            },
            ArgSpec {
                name: "scale",
                ty: POSITIVE,
                default: Some(Default::Float(1.0)),
                doc: "scale of the adapter's output",
            },
        ],
        gateable: true,
        doc: "bottleneck adapter, serial (Houlsby 2019) with `after` or parallel (He et al. 2022) with `beside`",
    },
    MethodSpec {
        kind: MethodKind::Bitfit,
        name: "bitfit",
        placements: ON,
        target: TargetKind::Biased,
        args: &[ENABLED],
        gateable: false,
        doc: "train the bias terms of the selected modules (Ben Zaken et al. 2022)",
    },
];

/// The method called `name`.
pub fn method(name: &str) -> Option<&'static MethodSpec> {
    METHODS.iter().find(|m| m.name == name)
}
