//! P-tuning (Liu et al. 2021; HF PEFT's `P_TUNING`): `len` virtual tokens
//! prepended like a soft prompt, but computed by a trained encoder from an
//! embedding table: an MLP (`Linear(D, H)`, ReLU, `Linear(H, H)`, ReLU,
//! `Linear(H, D)`) or a two-layer bidirectional LSTM and a two-layer MLP
//! head. HF saves only the encoder's output; that inference form is a
//! declared alternative ([`SiteMethod::inference_tensors`]).

use super::args::Args;
use super::method::{Capabilities, Lowering, SiteMethod, Wiring};
use super::spec::{
    ArgSpec, ArgType, Default, MethodSpec, ON, SIZE, TargetKind, choice, no_check, no_target_check,
    size,
};
use super::table::{MethodConfig, MethodKind};
use super::tensors::{Init, TensorDecl};
use crate::ir::Op;
use crate::model::Dims;
use crate::plan::Site;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PromptEncoder {
    Mlp,
    Lstm,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PtuningConfig {
    pub len: usize,
    pub encoder: PromptEncoder,
    pub hidden: usize,
}

/// LSTM layers of the encoder (HF's `encoder_num_layers` default).
pub const LSTM_LAYERS: usize = 2;

pub const SPEC: MethodSpec = MethodSpec {
    kind: MethodKind::Ptuning,
    name: "ptuning",
    placements: ON,
    target: TargetKind::Embedding,
    args: &[
        ArgSpec {
            name: "len",
            ty: SIZE,
            default: Some(Default::Int(20)),
            doc: "number of virtual tokens",
        },
        ArgSpec {
            name: "encoder",
            ty: ArgType::Choice(&["mlp", "lstm"]),
            default: Some(Default::Name("mlp")),
            doc: "the prompt encoder: a 3-layer MLP, or a bidirectional LSTM and an MLP head",
        },
        ArgSpec {
            name: "hidden",
            ty: SIZE,
            default: Some(Default::Int(128)),
            doc: "hidden width of the encoder (HF's encoder_hidden_size)",
        },
    ],
    gateable: false,
    doc: "virtual tokens computed by a trained prompt encoder (P-tuning, Liu et al. 2021)",
    placement_note: "`ptuning` prepends to the embedding's output",
    exclusive: "soft prompt",
    single_target: true,
    scales_ffn_input: false,
    once_per_block: None,
    configure: |args, _| configure(args),
    check: no_check,
    check_targets: no_target_check,
};

fn configure(args: &Args) -> Option<MethodConfig> {
    Some(MethodConfig::Ptuning(PtuningConfig {
        len: size(args, "len")?,
        encoder: match choice(args, "encoder") {
            "lstm" => PromptEncoder::Lstm,
            _ => PromptEncoder::Mlp,
        },
        hidden: size(args, "hidden")?,
    }))
}

/// `name: [out, in]` and its bias, as `nn.Linear(in, out)` starts them.
fn linear(out: &mut Vec<TensorDecl>, name: &str, inp: usize, outp: usize) {
    let b = Init::Uniform(1.0 / (inp as f32).sqrt());
    out.push(TensorDecl::trainable(
        format!("{name}.weight"),
        vec![outp, inp],
        b.clone(),
    ));
    out.push(TensorDecl::trainable(format!("{name}.bias"), vec![outp], b));
}

impl SiteMethod for PtuningConfig {
    fn name(&self) -> &'static str {
        "ptuning"
    }

    /// Names after HF's modules (`prompt_encoder.mlp_head.0.weight`,
    /// `prompt_encoder.lstm_head.weight_ih_l0_reverse`), PyTorch's inits.
    fn tensors(&self, _: &Site, dims: &Dims) -> Vec<TensorDecl> {
        let (t, d, h) = (self.len, dims.hidden, self.hidden);
        let mut out = vec![TensorDecl::trainable(
            "prompt_encoder.embedding.weight",
            vec![t, d],
            Init::Normal(1.0),
        )];
        match self.encoder {
            PromptEncoder::Mlp => {
                linear(&mut out, "prompt_encoder.mlp_head.0", d, h);
                linear(&mut out, "prompt_encoder.mlp_head.2", h, h);
                linear(&mut out, "prompt_encoder.mlp_head.4", h, d);
            }
            PromptEncoder::Lstm => {
                let u = Init::Uniform(1.0 / (h as f32).sqrt());
                for layer in 0..LSTM_LAYERS {
                    let input = if layer == 0 { d } else { 2 * h };
                    for dir in ["", "_reverse"] {
                        let n = |w: &str| format!("prompt_encoder.lstm_head.{w}_l{layer}{dir}");
                        out.push(TensorDecl::trainable(
                            n("weight_ih"),
                            vec![4 * h, input],
                            u.clone(),
                        ));
                        out.push(TensorDecl::trainable(
                            n("weight_hh"),
                            vec![4 * h, h],
                            u.clone(),
                        ));
                        out.push(TensorDecl::trainable(n("bias_ih"), vec![4 * h], u.clone()));
                        out.push(TensorDecl::trainable(n("bias_hh"), vec![4 * h], u.clone()));
                    }
                }
                linear(&mut out, "prompt_encoder.mlp_head.0", 2 * h, 2 * h);
                linear(&mut out, "prompt_encoder.mlp_head.2", 2 * h, d);
            }
        }
        out
    }

    /// The encoder's output alone, as HF PEFT saves it: `prompt_embeddings
    /// [len, hidden]` (inference only).
    fn inference_tensors(&self, _: &Site, dims: &Dims) -> Option<Vec<TensorDecl>> {
        Some(vec![TensorDecl::trainable(
            "prompt_embeddings",
            vec![self.len, dims.hidden],
            Init::Zeros,
        )])
    }

    fn lowering(&self, site: &Site, _: &Dims) -> Option<Lowering> {
        Some(Lowering {
            op: Op::PromptConcat {
                len: self.len,
                dim: site.out_dim,
            },
            wiring: Wiring::Output,
        })
    }

    fn capabilities(&self, _: &Site) -> Capabilities {
        Capabilities {
            merge: false,
            hf: true,
            routable: false,
        }
    }

    fn virtual_tokens(&self) -> usize {
        self.len
    }
}
