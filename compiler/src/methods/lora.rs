//! LoRA (Hu et al. 2021) and DoRA (Liu et al. 2024) on linear layers:
//! `W + s·B·A`, `s = alpha/r` (or `alpha/√r` with rsLoRA); DoRA rescales each
//! output row to a trained magnitude. One configuration, two names.

use super::args::Args;
use super::method::{Capabilities, Loftq, Lowering, SiteMethod, Wiring, gate_tensors};
use super::spec::{
    ArgSpec, ArgType, Default, MethodSpec, ON, POSITIVE, PROB, SIZE, TargetKind, choice, flag,
    float, no_target_check, size,
};
use super::table::{MethodConfig, MethodKind};
use super::tensors::{Init, TensorDecl, site_name};
use crate::ir::Op;
use crate::model::{Dims, Module, Role};
use crate::plan::Site;
use peftc_grammar::{Diagnostic, Span};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoraInit {
    /// A ~ kaiming-uniform(a = sqrt(5)), B = 0 (HF PEFT's `init_lora_weights=True`).
    Default,
    /// A ~ N(0, 1/r), B = 0.
    Gaussian,
    /// LoftQ (Li et al. 2023) on a base quantized at load: `iters` rounds of
    /// quantizing `W - B·A` and taking the rank-r SVD of `W - Q` (B = U√S,
    /// A = √S·Vᵀ, as HF PEFT's `loftq_init`); the base becomes the last Q.
    Loftq { iters: usize },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BiasMode {
    None,
    /// Biases of the LoRA-targeted layers train.
    LoraOnly,
    /// Every bias of the model trains.
    All,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    pub r: usize,
    pub alpha: f64,
    pub dropout: f64,
    pub rslora: bool,
    pub init: LoraInit,
    pub bias: BiasMode,
    /// Weight-decomposed (DoRA): adds a trainable magnitude per output feature.
    pub dora: bool,
}

impl LoraConfig {
    /// The factor on `B A x`: alpha / r, or alpha / sqrt(r) with rsLoRA.
    pub fn scale(&self) -> f64 {
        if self.rslora {
            self.alpha / (self.r as f64).sqrt()
        } else {
            self.alpha / self.r as f64
        }
    }

    /// The biases this configuration trains, among a statement's `targets`
    /// and all the model's modules.
    pub fn biases(&self, targets: &[&Module], all: &[Module]) -> Vec<String> {
        match self.bias {
            BiasMode::None => Vec::new(),
            BiasMode::LoraOnly => targets
                .iter()
                .filter(|m| m.kind.bias_len().is_some())
                .map(|m| m.path.clone())
                .collect(),
            BiasMode::All => all
                .iter()
                .filter(|m| m.kind.bias_len().is_some() && m.role != Some(Role::Head))
                .map(|m| m.path.clone())
                .collect(),
        }
    }
}

const ARGS: &[ArgSpec] = &[
    ArgSpec {
        name: "r",
        ty: SIZE,
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
        ty: ArgType::Choice(&["default", "gaussian", "loftq"]),
        default: Some(Default::Name("default")),
        doc: "A init: kaiming-uniform (default) or gaussian(1/r), B starts at zero; loftq: A, B from the SVD of the quantization error of a `quantize`d base",
    },
    ArgSpec {
        name: "loftq_iter",
        ty: ArgType::Int {
            min: 1,
            max: 64,
            zero_absent: false,
        },
        default: Some(Default::Int(1)),
        doc: "init=loftq: alternations of quantization and SVD",
    },
    ArgSpec {
        name: "bias",
        ty: ArgType::Choice(&["none", "lora_only", "all"]),
        default: Some(Default::Name("none")),
        doc: "which biases train: none, those of the targeted layers, or all",
    },
];

const ARGS_WITH_DORA: &[ArgSpec] = &[
    ARGS[0],
    ARGS[1],
    ARGS[2],
    ARGS[3],
    ARGS[4],
    ARGS[5],
    ARGS[6],
    ArgSpec {
        name: "dora",
        ty: ArgType::Bool,
        default: Some(Default::Bool(false)),
        doc: "weight-decomposed LoRA",
    },
];

pub const LORA: MethodSpec = MethodSpec {
    kind: MethodKind::Lora,
    name: "lora",
    placements: ON,
    target: TargetKind::Linear,
    args: ARGS_WITH_DORA,
    gateable: true,
    doc: "low-rank update W + s*B*A (Hu et al. 2021)",
    placement_note: "`lora` reparameterizes the module itself",
    exclusive: "low-rank update (lora/dora)",
    single_target: false,
    scales_ffn_input: false,
    once_per_block: None,
    configure: |args, _| configure(args, false),
    check: |args, call| check_loftq(args, flag(args, "dora"), call),
    check_targets: no_target_check,
};

pub const DORA: MethodSpec = MethodSpec {
    kind: MethodKind::Dora,
    name: "dora",
    args: ARGS,
    doc: "weight-decomposed LoRA: m * (W + s*B*A) / ||W + s*B*A|| (Liu et al. 2024)",
    placement_note: "`dora` reparameterizes the module itself",
    configure: |args, _| configure(args, true),
    check: |args, call| check_loftq(args, true, call),
    ..LORA
};

/// LoftQ's factors initialize a plain LoRA: DoRA's magnitude would be taken
/// from a base the initialization has not yet replaced.
fn check_loftq(args: &Args, dora: bool, call: Span) -> Vec<Diagnostic> {
    if dora && choice(args, "init") == "loftq" {
        vec![
            Diagnostic::error("`init=loftq` initializes LoRA, not DoRA")
                .at(call, "DoRA with init=loftq")
                .with_help("use `lora(..., init=loftq)`, or DoRA with `init=default`"),
        ]
    } else {
        Vec::new()
    }
}

fn configure(args: &Args, dora: bool) -> Option<MethodConfig> {
    Some(MethodConfig::Lora(LoraConfig {
        r: size(args, "r")?,
        alpha: float(args, "alpha"),
        dropout: float(args, "dropout"),
        rslora: flag(args, "rslora"),
        init: match choice(args, "init") {
            "gaussian" => LoraInit::Gaussian,
            "loftq" => LoraInit::Loftq {
                iters: size(args, "loftq_iter")?,
            },
            _ => LoraInit::Default,
        },
        bias: match choice(args, "bias") {
            "all" => BiasMode::All,
            "lora_only" => BiasMode::LoraOnly,
            _ => BiasMode::None,
        },
        dora: dora || flag(args, "dora"),
    }))
}

/// Where the runtime's LoftQ pass leaves a site's factors, beside the base
/// weights (`{module}.loftq_A` `[r, in]`, `{module}.loftq_B` `[out, r]`).
pub const LOFTQ_A: &str = "loftq_A";
pub const LOFTQ_B: &str = "loftq_B";

impl SiteMethod for LoraConfig {
    fn name(&self) -> &'static str {
        if self.dora { "dora" } else { "lora" }
    }

    fn loftq(&self) -> Option<Loftq> {
        match self.init {
            LoraInit::Loftq { iters } => Some(Loftq { r: self.r, iters }),
            LoraInit::Default | LoraInit::Gaussian => None,
        }
    }

    fn tensors(&self, site: &Site, _: &Dims) -> Vec<TensorDecl> {
        let (i, o, m) = (site.in_dim, site.out_dim, &site.module);
        let (a_init, b_init) = match self.init {
            LoraInit::Default => (Init::Uniform(1.0 / (i as f32).sqrt()), Init::Zeros),
            LoraInit::Gaussian => (Init::Normal(1.0 / self.r as f32), Init::Zeros),
            // The runtime's LoftQ pass puts the factors beside the base weights.
            LoraInit::Loftq { .. } => (
                Init::FromBase(site_name(m, LOFTQ_A)),
                Init::FromBase(site_name(m, LOFTQ_B)),
            ),
        };
        let mut out = vec![
            TensorDecl::trainable(site_name(m, "lora_A.weight"), vec![self.r, i], a_init),
            TensorDecl::trainable(site_name(m, "lora_B.weight"), vec![o, self.r], b_init),
        ];
        if self.dora {
            out.push(TensorDecl::trainable(
                site_name(m, "lora_magnitude_vector"),
                vec![o],
                Init::RowNorms(site_name(m, "weight")),
            ));
        }
        out.extend(gate_tensors(site, "lora", i));
        out
    }

    fn lowering(&self, site: &Site, _: &Dims) -> Option<Lowering> {
        let (in_f, out_f) = (site.in_dim, site.out_dim);
        let (r, scale, dropout, gated) = (self.r, self.scale(), self.dropout, site.gated);
        Some(if self.dora {
            Lowering {
                op: Op::Dora {
                    in_f,
                    out_f,
                    r,
                    scale,
                    dropout,
                    gated,
                },
                wiring: Wiring::InputAndOutput,
            }
        } else {
            Lowering {
                op: Op::LoraDelta {
                    in_f,
                    out_f,
                    r,
                    scale,
                    dropout,
                    gated,
                },
                wiring: Wiring::DeltaSum,
            }
        })
    }

    fn capabilities(&self, site: &Site) -> Capabilities {
        Capabilities {
            merge: !site.gated,
            hf: !site.gated,
            routable: !site.gated && !self.dora,
        }
    }
}
