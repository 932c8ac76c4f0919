//! Roles: names for the parts of a transformer that mean the same on every
//! architecture (`attn.q` is BERT's `attention.self.query` and LLaMA's
//! `self_attn.q_proj`).

use serde::{Deserialize, Serialize};

/// A part of one transformer layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LayerRole {
    /// The whole layer.
    Layer,
    Attn,
    AttnQ,
    AttnK,
    AttnV,
    AttnO,
    Mlp,
    MlpGate,
    MlpUp,
    MlpDown,
    AttnNorm,
    MlpNorm,
}

impl LayerRole {
    /// The role path as a user writes it (`attn.q`), or `layers` for the layer itself.
    pub fn spelling(self) -> &'static str {
        match self {
            LayerRole::Layer => "layers",
            LayerRole::Attn => "attn",
            LayerRole::AttnQ => "attn.q",
            LayerRole::AttnK => "attn.k",
            LayerRole::AttnV => "attn.v",
            LayerRole::AttnO => "attn.o",
            LayerRole::Mlp => "mlp",
            LayerRole::MlpGate => "mlp.gate",
            LayerRole::MlpUp => "mlp.up",
            LayerRole::MlpDown => "mlp.down",
            LayerRole::AttnNorm => "attn_norm",
            LayerRole::MlpNorm => "mlp_norm",
        }
    }

    /// Roles that sit directly under `layers[...]`.
    pub const TOP: &'static [(&'static str, LayerRole)] = &[
        ("attn", LayerRole::Attn),
        ("mlp", LayerRole::Mlp),
        ("attn_norm", LayerRole::AttnNorm),
        ("mlp_norm", LayerRole::MlpNorm),
    ];

    /// Roles under `attn.` / `mlp.`.
    pub fn children(self) -> &'static [(&'static str, LayerRole)] {
        match self {
            LayerRole::Attn => &[
                ("q", LayerRole::AttnQ),
                ("k", LayerRole::AttnK),
                ("v", LayerRole::AttnV),
                ("o", LayerRole::AttnO),
            ],
            LayerRole::Mlp => &[
                ("gate", LayerRole::MlpGate),
                ("up", LayerRole::MlpUp),
                ("down", LayerRole::MlpDown),
            ],
            _ => &[],
        }
    }

    /// Whether the module playing this role is a linear projection.
    pub fn is_projection(self) -> bool {
        matches!(
            self,
            LayerRole::AttnQ
                | LayerRole::AttnK
                | LayerRole::AttnV
                | LayerRole::AttnO
                | LayerRole::MlpGate
                | LayerRole::MlpUp
                | LayerRole::MlpDown
        )
    }
}

/// Where a module sits in the architecture-independent picture of a transformer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "role", content = "layer", rename_all = "snake_case")]
pub enum Role {
    /// The token embedding.
    Embed,
    /// A part of layer `n`.
    InLayer(usize, LayerRole),
    FinalNorm,
    /// The task head: the LM head, or a classifier.
    Head,
}

impl Role {
    pub fn layer(self) -> Option<usize> {
        match self {
            Role::InLayer(i, _) => Some(i),
            _ => None,
        }
    }

    pub fn layer_role(self) -> Option<LayerRole> {
        match self {
            Role::InLayer(_, r) => Some(r),
            _ => None,
        }
    }

    /// `layers[3].attn.q`, `embed`, ...
    pub fn spelling(self) -> String {
        match self {
            Role::Embed => "embed".into(),
            Role::FinalNorm => "final_norm".into(),
            Role::Head => "head".into(),
            Role::InLayer(i, LayerRole::Layer) => format!("layers[{i}]"),
            Role::InLayer(i, r) => format!("layers[{i}].{}", r.spelling()),
        }
    }
}

/// Roles that stand alone at the top of a role path.
pub const MODEL_ROLES: &[(&str, Role)] = &[
    ("embed", Role::Embed),
    ("final_norm", Role::FinalNorm),
    ("head", Role::Head),
];
