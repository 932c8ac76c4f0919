//! P-tuning at run time: the virtual tokens computed by the prompt encoder
//! each forward pass (MLP, or bidirectional LSTM and MLP head, as PyTorch
//! computes them), or read as they are from an inference-form adapter (HF
//! saves only the encoder's output); HF PEFT's `P_TUNING` form.

use super::hf::HfForm;
use crate::adapter::hf::config::{prompt_learning_fields, shown, virtual_tokens};
use crate::error::{Result, RuntimeError};
use crate::kernels::PeftKernels;
use crate::model::Params;
use crate::model::ops::linear_pt;
use crate::weights::HostTensor;
use burn::tensor::{Tensor, activation};
use peftc_compiler::methods::{LSTM_LAYERS, MethodConfig, PromptEncoder, PtuningConfig};
use peftc_compiler::plan::Plan;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// The `[len, hidden]` virtual token embeddings.
pub fn embeddings<B: PeftKernels>(c: &PtuningConfig, p: &Params<B>) -> Result<Tensor<B, 2>> {
    if p.has("prompt_embeddings") {
        return p.get("prompt_embeddings"); // the inference form
    }
    let n = |s: &str| format!("prompt_encoder.{s}");
    let lin = |x: Tensor<B, 2>, m: &str| -> Result<Tensor<B, 2>> {
        Ok(linear_pt(
            x,
            p.get(&n(&format!("{m}.weight")))?,
            Some(p.get(&n(&format!("{m}.bias")))?),
        ))
    };
    let x = p.get(&n("embedding.weight"))?;
    match c.encoder {
        PromptEncoder::Mlp => {
            let h = activation::relu(lin(x, "mlp_head.0")?);
            let h = activation::relu(lin(h, "mlp_head.2")?);
            lin(h, "mlp_head.4")
        }
        PromptEncoder::Lstm => {
            let mut h = x;
            for layer in 0..LSTM_LAYERS {
                let fwd = lstm(h.clone(), p, layer, "", false)?;
                let bwd = lstm(h, p, layer, "_reverse", true)?;
                h = Tensor::cat(vec![fwd, bwd], 1);
            }
            let h = activation::relu(lin(h, "mlp_head.0")?);
            lin(h, "mlp_head.2")
        }
    }
}

/// One direction of one `nn.LSTM` layer over the sequence `x: [T, in]`,
/// from zero states: gates `i, f, g, o` of `x W_ihᵀ + b_ih + h W_hhᵀ +
/// b_hh`, `c = σ(f)c + σ(i)tanh(g)`, `h = σ(o)tanh(c)`; `[T, H]`.
fn lstm<B: PeftKernels>(
    x: Tensor<B, 2>,
    p: &Params<B>,
    layer: usize,
    dir: &str,
    reverse: bool,
) -> Result<Tensor<B, 2>> {
    let n = |w: &str| format!("prompt_encoder.lstm_head.{w}_l{layer}{dir}");
    let (w_ih, w_hh) = (p.get(&n("weight_ih"))?, p.get(&n("weight_hh"))?);
    let bias = p.get(&n("bias_ih"))? + p.get(&n("bias_hh"))?;
    let [t, _] = x.dims();
    let h4 = w_hh.dims()[0];
    let hs = h4 / 4;
    let xw = linear_pt(x, w_ih, Some(bias)); // [T, 4H]
    let device = xw.device();
    let mut h = Tensor::<B, 2>::zeros([1, hs], &device);
    let mut c = Tensor::<B, 2>::zeros([1, hs], &device);
    let mut out: Vec<Option<Tensor<B, 2>>> = vec![None; t];
    let order: Vec<usize> = if reverse {
        (0..t).rev().collect()
    } else {
        (0..t).collect()
    };
    for step in order {
        let gates = xw.clone().slice([step..step + 1, 0..h4]) + linear_pt(h, w_hh.clone(), None);
        let gate = |k: usize| gates.clone().slice([0..1, k * hs..(k + 1) * hs]);
        let (i, f, g, o) = (
            activation::sigmoid(gate(0)),
            activation::sigmoid(gate(1)),
            gate(2).tanh(),
            activation::sigmoid(gate(3)),
        );
        c = f * c + i * g;
        h = o * c.clone().tanh();
        out[step] = Some(h.clone());
    }
    let rows: Vec<Tensor<B, 2>> = out.into_iter().flatten().collect();
    Ok(Tensor::cat(rows, 0))
}

/// P-tuning's Hugging Face PEFT form: `peft_type` P_TUNING, the encoder's
/// output saved bare as `prompt_embeddings`.
pub struct Hf;

fn config_of(plan: &Plan) -> Option<&PtuningConfig> {
    plan.sites.iter().find_map(|s| match &s.method {
        MethodConfig::Ptuning(c) => Some(c),
        _ => None,
    })
}

impl HfForm for Hf {
    fn peft_type(&self) -> &'static str {
        "P_TUNING"
    }

    fn prompt_learning(&self) -> bool {
        true
    }

    fn config(&self, plan: &Plan, _info: &super::hf::ExportInfo<'_>) -> Map<String, Value> {
        let d = &plan.model.dims;
        let len = config_of(plan).map(|p| p.len);
        let mut c = prompt_learning_fields(len, d.hidden, d.heads, d.layers);
        if let Some(p) = config_of(plan) {
            c.insert(
                "encoder_reparameterization_type".into(),
                json!(match p.encoder {
                    PromptEncoder::Mlp => "MLP",
                    PromptEncoder::Lstm => "LSTM",
                }),
            );
            c.insert("encoder_hidden_size".into(), json!(p.hidden));
        }
        c.insert("encoder_num_layers".into(), json!(LSTM_LAYERS));
        c.insert("encoder_dropout".into(), json!(0.0));
        c
    }

    /// HF's file holds the encoder's output only, so the encoder's shape
    /// need not agree; its length and width must.
    fn check(&self, plan: &Plan, cfg: &Value) -> std::result::Result<(), String> {
        let Some(p) = config_of(plan) else {
            return Ok(());
        };
        virtual_tokens(cfg, p.len)?;
        let d = plan.model.dims.hidden as u64;
        if cfg["token_dim"].as_u64().is_some_and(|t| t != d) {
            return Err(format!(
                "has token_dim {}, the model's hidden size is {d}",
                shown(&cfg["token_dim"])
            ));
        }
        Ok(())
    }

    fn export(
        &self,
        plan: &Plan,
        values: &BTreeMap<String, HostTensor>,
    ) -> Option<Result<BTreeMap<String, HostTensor>>> {
        Some((|| {
            let c = config_of(plan).ok_or_else(|| {
                RuntimeError::Internal("a P-tuning export without a P-tuning site".into())
            })?;
            let store = crate::model::ParamStore {
                values: values.clone(),
                frozen: Default::default(),
            };
            let device = Default::default();
            let params = Params::<crate::Cpu>::constant(&store, &device);
            let table = crate::train::host(embeddings(c, &params)?);
            let rest: BTreeMap<String, HostTensor> = values
                .iter()
                .filter(|(k, _)| !k.starts_with("prompt_encoder.") && *k != "prompt_embeddings")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let mut out = crate::adapter::hf::names::export_default(plan, &rest, self)?;
            out.insert(
                "prompt_embeddings".into(),
                HostTensor::new(vec![c.len, plan.model.dims.hidden], table),
            );
            Ok(out)
        })())
    }
}
