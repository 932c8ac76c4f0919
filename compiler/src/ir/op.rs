//! Ops, symbolic dimensions and nodes.

use crate::methods::Activation;
use serde::Serialize;
use std::fmt;

/// A symbolic dimension: the batch, the sequence (plus `extra` virtual tokens
/// such as a soft prompt), or a constant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Dim {
    Batch,
    Seq { extra: usize },
    Const(usize),
}

impl Dim {
    pub const SEQ: Dim = Dim::Seq { extra: 0 };

    /// The value at batch `b`, sequence length `s` (wide: estimates multiply
    /// several of these, and report an overflow of 64 bits rather than wrap).
    pub fn eval(self, b: u64, s: u64) -> u128 {
        match self {
            Dim::Batch => b as u128,
            Dim::Seq { extra } => s as u128 + extra as u128,
            Dim::Const(n) => n as u128,
        }
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Batch => write!(f, "B"),
            Dim::Seq { extra: 0 } => write!(f, "S"),
            Dim::Seq { extra } => write!(f, "S+{extra}"),
            Dim::Const(n) => write!(f, "{n}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize)]
pub struct Shape(pub Vec<Dim>);

impl Shape {
    /// Elements at batch `b`, sequence length `s`; saturates instead of
    /// wrapping (the estimates then report an overflow).
    pub fn numel(&self, b: u64, s: u64) -> u128 {
        self.0
            .iter()
            .fold(1u128, |acc, d| acc.saturating_mul(d.eval(b, s)))
    }

    pub fn last(&self) -> Option<Dim> {
        self.0.last().copied()
    }

    /// This shape with the last dimension replaced.
    pub fn with_last(&self, d: Dim) -> Shape {
        let mut v = self.0.clone();
        if let Some(l) = v.last_mut() {
            *l = d;
        }
        Shape(v)
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{d}")?;
        }
        write!(f, "]")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Act {
    Gelu,
    Silu,
    Relu,
    Tanh,
}

impl From<Activation> for Act {
    fn from(a: Activation) -> Act {
        match a {
            Activation::Relu => Act::Relu,
            Activation::Gelu => Act::Gelu,
            Activation::Silu => Act::Silu,
            Activation::Tanh => Act::Tanh,
        }
    }
}

/// What a [`Op::Delta`] costs, as its method declares it: matrix-product
/// FLOPs of the forward pass per input row and per step (building a weight
/// from its factors), and elements saved for backward per row and per step
/// (and per row and position, for a method that attends).
/// Backward is costed at twice the forward (input and factor gradients).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct DeltaCost {
    pub row_flops: u64,
    pub step_flops: u64,
    pub row_saved: u64,
    pub step_saved: u64,
    /// Per row and per position of its sequence (attention inside the
    /// method: LST's side blocks): FLOPs, and elements saved (probabilities).
    pub seq_flops: u64,
    pub seq_saved: u64,
    /// Bytes a selection phase before training holds beside the base
    /// (FishMask's dense gradients, LT-SFT's dense warm-up); 0 for none.
    pub selection_bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LossKind {
    /// Cross-entropy over `classes` per sequence.
    Classify { classes: usize },
    /// Next-token cross-entropy over the vocabulary at every position.
    NextToken { vocab: usize },
}

/// What a node computes. Inputs are the node's incoming edges, ordered by slot.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// Token ids `[B, S]`.
    Tokens,
    /// Gather rows of a frozen table; input: ids. `positional`: indexed by
    /// position rather than by token (BERT's position / token-type tables).
    Embedding {
        rows: usize,
        dim: usize,
        positional: bool,
    },
    Add,
    Mul,
    LayerNorm {
        dim: usize,
    },
    RmsNorm {
        dim: usize,
    },
    Dropout {
        p: f64,
    },
    /// A base linear layer (weight frozen; its bias may train).
    Linear {
        in_f: usize,
        out_f: usize,
        bias: bool,
    },
    /// Rotary position embedding on `[B, S, heads*head_dim]`.
    Rope {
        heads: usize,
        head_dim: usize,
    },
    /// Scaled dot-product attention; inputs q, k, v (+ a prefix K/V pair).
    Attention {
        heads: usize,
        kv_heads: usize,
        head_dim: usize,
        causal: bool,
        dropout: f64,
    },
    Act(Act),
    /// The first position (BERT's [CLS]) `[B, S, H] -> [B, H]`.
    FirstToken,
    /// The last real position for classification by decoders `[B, S, H] -> [B, H]`.
    LastToken,
    Loss(LossKind),

    // ---- inserted by the PEFT pass
    /// LoRA's update `s * B(A(drop(x)))`; input x, output to be added.
    LoraDelta {
        in_f: usize,
        out_f: usize,
        r: usize,
        scale: f64,
        dropout: f64,
        gated: bool,
    },
    /// DoRA: inputs x and the base output; output the decomposed result.
    Dora {
        in_f: usize,
        out_f: usize,
        r: usize,
        scale: f64,
        dropout: f64,
        gated: bool,
    },
    /// (IA)³ elementwise scale by a learned vector.
    Ia3 {
        dim: usize,
    },
    /// SSF's per-channel `y ⊙ scale + shift`.
    ScaleShift {
        dim: usize,
    },
    /// Prepend `len` learned embeddings: `[B, S, H] -> [B, S+len, H]`.
    PromptConcat {
        len: usize,
        dim: usize,
    },
    /// Learned key/value prefixes for one attention layer: `[B, len, 2*kv]`.
    PrefixKv {
        len: usize,
        kv_dim: usize,
        gated: bool,
    },
    /// A method's own update beside a linear (VeRA, LoHa, LoKr, AdaLoRA):
    /// input x, output to be added; its cost as the method declares it.
    Delta {
        method: &'static str,
        in_f: usize,
        out_f: usize,
        cost: DeltaCost,
    },
    /// Bottleneck adapter; serial: input y, output y + s*up(act(down(y)));
    /// parallel: inputs x, y, output y + s*up(act(down(x))).
    Adapter {
        d_in: usize,
        bottleneck: usize,
        d_out: usize,
        act: Act,
        scale: f64,
        parallel: bool,
        gated: bool,
    },
}

impl Op {
    /// A short lower-case name (`linear`, `lora_delta`).
    pub fn name(&self) -> &'static str {
        match self {
            Op::Tokens => "tokens",
            Op::Embedding { .. } => "embedding",
            Op::Add => "add",
            Op::Mul => "mul",
            Op::LayerNorm { .. } => "layer_norm",
            Op::RmsNorm { .. } => "rms_norm",
            Op::Dropout { .. } => "dropout",
            Op::Linear { .. } => "linear",
            Op::Rope { .. } => "rope",
            Op::Attention { .. } => "attention",
            Op::Act(Act::Gelu) => "gelu",
            Op::Act(Act::Silu) => "silu",
            Op::Act(Act::Relu) => "relu",
            Op::Act(Act::Tanh) => "tanh",
            Op::FirstToken => "first_token",
            Op::LastToken => "last_token",
            Op::Loss(_) => "cross_entropy",
            Op::LoraDelta { .. } => "lora_delta",
            Op::Dora { .. } => "dora",
            Op::Ia3 { .. } => "ia3_scale",
            Op::ScaleShift { .. } => "scale_shift",
            Op::PromptConcat { .. } => "prompt_concat",
            Op::PrefixKv { .. } => "prefix_kv",
            Op::Adapter { .. } => "adapter",
            Op::Delta { method, .. } => method,
        }
    }

    /// Whether a UniPELT gate scales this op's contribution (no fused kernel
    /// takes the gate).
    pub fn gated(&self) -> bool {
        match self {
            Op::LoraDelta { gated, .. }
            | Op::Dora { gated, .. }
            | Op::PrefixKv { gated, .. }
            | Op::Adapter { gated, .. } => *gated,
            Op::Tokens
            | Op::Embedding { .. }
            | Op::Add
            | Op::Mul
            | Op::LayerNorm { .. }
            | Op::RmsNorm { .. }
            | Op::Dropout { .. }
            | Op::Linear { .. }
            | Op::Rope { .. }
            | Op::Attention { .. }
            | Op::Act(_)
            | Op::FirstToken
            | Op::LastToken
            | Op::Loss(_)
            | Op::Ia3 { .. }
            | Op::ScaleShift { .. }
            | Op::PromptConcat { .. }
            | Op::Delta { .. } => false,
        }
    }

    /// Whether this op was inserted by a PEFT method.
    pub fn is_peft(&self) -> bool {
        matches!(
            self,
            Op::LoraDelta { .. }
                | Op::Dora { .. }
                | Op::Ia3 { .. }
                | Op::ScaleShift { .. }
                | Op::PromptConcat { .. }
                | Op::PrefixKv { .. }
                | Op::Adapter { .. }
                | Op::Delta { .. }
        )
    }
}

/// One op in the graph.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Node {
    pub op: Op,
    /// The module it belongs to (checkpoint path), or a description.
    pub label: String,
    pub layer: Option<usize>,
    /// Output shape, filled in by shape inference.
    pub shape: Shape,
    pub frozen_params: u64,
    pub trainable_params: u64,
    /// Whether the gradient of the loss w.r.t. this node's output is needed.
    pub requires_grad: bool,
    /// Index of the plan site that inserted it.
    pub site: Option<usize>,
}

impl Node {
    pub fn new(op: Op, label: impl Into<String>, layer: Option<usize>) -> Node {
        Node {
            op,
            label: label.into(),
            layer,
            shape: Shape::default(),
            frozen_params: 0,
            trainable_params: 0,
            requires_grad: false,
            site: None,
        }
    }

    pub fn with_params(mut self, frozen: u64, trainable: u64) -> Node {
        self.frozen_params = frozen;
        self.trainable_params = trainable;
        self
    }
}
