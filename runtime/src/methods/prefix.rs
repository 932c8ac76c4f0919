//! Prefix tuning's per-layer keys and values, computed once per forward from
//! the parameters: directly (`prefix.{layer}.kv`, `[len, 2*kv]`) or through a
//! statement's reparameterization MLP (Embedding → Linear → Tanh → Linear).

use super::hf::HfForm;
use crate::adapter::hf::config::{prompt_learning_fields, virtual_tokens};
use crate::error::{Result, RuntimeError};
use crate::kernels::PeftKernels;
use crate::model::Params;
use crate::model::attention::Prefix;
use crate::model::ops::linear_pt;
use crate::weights::HostTensor;
use burn::tensor::Tensor;
use peftc_compiler::methods::{MethodConfig, PrefixConfig};
use peftc_compiler::plan::Plan;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::path::Path;

/// One layer's prefix: keys and values `[len, kv]`, the attention module's
/// path, and whether it is gated.
type LayerPrefix<B> = (Tensor<B, 2>, Tensor<B, 2>, String, bool);

pub struct PrefixSource<B: PeftKernels> {
    layers: Vec<Option<LayerPrefix<B>>>,
    len: usize,
}

impl<B: PeftKernels> PrefixSource<B> {
    pub fn none(layers: usize) -> PrefixSource<B> {
        PrefixSource {
            layers: (0..layers).map(|_| None).collect(),
            len: 0,
        }
    }

    pub fn build(plan: &Plan, p: &Params<B>) -> Result<PrefixSource<B>> {
        let d = &plan.model.dims;
        let kv = d.kv_heads * d.head_dim;
        let mut out = PrefixSource::none(d.layers);
        let mut projected: Vec<(usize, Tensor<B, 2>)> = Vec::new();
        for s in &plan.sites {
            let MethodConfig::Prefix(cfg) = &s.method else {
                continue;
            };
            let Some(layer) = s.layer() else { continue };
            let full = if cfg.projection == 0 {
                p.get(&format!("prefix.{layer}.kv"))?
            } else {
                let st = s.statement;
                let all = match projected.iter().find(|(i, _)| *i == st) {
                    Some((_, t)) => t.clone(),
                    None => {
                        let n = |x: &str| format!("prefix_encoder.{st}.{x}");
                        let emb = p.get(&n("embedding"))?;
                        let hid =
                            linear_pt(emb, p.get(&n("0.weight"))?, Some(p.get(&n("0.bias"))?))
                                .tanh();
                        let t = linear_pt(hid, p.get(&n("2.weight"))?, Some(p.get(&n("2.bias"))?));
                        projected.push((st, t.clone()));
                        t
                    }
                };
                // This layer's slot among the statement's layers, in layer order.
                let slot = plan
                    .sites
                    .iter()
                    .filter(|t| t.statement == s.statement)
                    .position(|t| t.layer() == Some(layer))
                    .unwrap_or(0);
                all.slice([0..cfg.len, slot * 2 * kv..(slot + 1) * 2 * kv])
            };
            let k = full.clone().slice([0..cfg.len, 0..kv]);
            let v = full.slice([0..cfg.len, kv..2 * kv]);
            out.len = out.len.max(cfg.len);
            if let Some(slot) = out.layers.get_mut(layer) {
                *slot = Some((k, v, s.module.clone(), s.gated));
            }
        }
        Ok(out)
    }

    /// Positions of the longest prefix (real tokens' positions start after it).
    pub fn positions(&self) -> usize {
        self.len
    }

    /// Layer `i`'s prefix; `x` is the attention input (for the gate).
    pub fn layer(&self, i: usize, x: &Tensor<B, 2>, p: &Params<B>) -> Result<Option<Prefix<B>>> {
        let Some(Some((k, v, path, gated))) = self.layers.get(i) else {
            return Ok(None);
        };
        let gate = if *gated {
            Some(super::gate(path, "prefix", x.clone(), p)?)
        } else {
            None
        };
        Ok(Some(Prefix {
            k: k.clone(),
            v: v.clone(),
            gate,
        }))
    }
}

/// Prefix tuning's Hugging Face PEFT form: `peft_type` PREFIX_TUNING, every
/// layer's keys and values in one `prompt_embeddings` table `[len,
/// layers·2·kv]` (a projection MLP is exported as its output).
pub struct Hf;

fn config_of(plan: &Plan) -> Option<&PrefixConfig> {
    plan.sites.iter().find_map(|s| match &s.method {
        MethodConfig::Prefix(c) => Some(c),
        _ => None,
    })
}

impl HfForm for Hf {
    fn peft_type(&self) -> &'static str {
        "PREFIX_TUNING"
    }

    fn prompt_learning(&self) -> bool {
        true
    }

    fn config(&self, plan: &Plan, _info: &super::hf::ExportInfo<'_>) -> Map<String, Value> {
        let d = &plan.model.dims;
        let kv = d.kv_heads * d.head_dim;
        let len = config_of(plan).map(|p| p.len);
        let mut c = prompt_learning_fields(len, kv, d.kv_heads, d.layers);
        c.insert("encoder_hidden_size".into(), json!(kv));
        c.insert("prefix_projection".into(), json!(false));
        c
    }

    fn check(&self, plan: &Plan, cfg: &Value) -> std::result::Result<(), String> {
        let Some(p) = config_of(plan) else {
            return Ok(());
        };
        virtual_tokens(cfg, p.len)?;
        let projected = cfg["prefix_projection"].as_bool().unwrap_or(false);
        if projected != (p.projection > 0) {
            return Err(format!(
                "has prefix_projection {projected}; the spec's prefix {} a projection",
                if p.projection > 0 { "has" } else { "has no" }
            ));
        }
        Ok(())
    }

    fn export(
        &self,
        plan: &Plan,
        values: &BTreeMap<String, HostTensor>,
    ) -> Option<Result<BTreeMap<String, HostTensor>>> {
        let is_prefix = |k: &str| k.starts_with("prefix.") || k.starts_with("prefix_encoder.");
        let rest: BTreeMap<String, HostTensor> = values
            .iter()
            .filter(|(k, _)| !is_prefix(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Some((|| {
            let mut out = crate::adapter::hf::names::export_default(plan, &rest, self)?;
            out.insert("prompt_embeddings".into(), table(plan, values)?);
            Ok(out)
        })())
    }

    fn import(
        &self,
        plan: &Plan,
        tensors: &BTreeMap<String, HostTensor>,
        dir: &Path,
    ) -> Option<Result<BTreeMap<String, HostTensor>>> {
        let mut rest = tensors.clone();
        let table = rest.remove("prompt_embeddings");
        Some((|| {
            let mut out = crate::adapter::hf::names::import_default(plan, rest, self, dir)?;
            if let Some(t) = table {
                split(plan, &t, &mut out).map_err(|what| RuntimeError::Adapter {
                    dir: dir.to_path_buf(),
                    what,
                })?;
            }
            Ok(out)
        })())
    }
}

/// HF's prefix table `[len, layers*2*kv]`: every layer's keys and values, in
/// layer order (projections evaluated on the host).
fn table(plan: &Plan, values: &BTreeMap<String, HostTensor>) -> Result<HostTensor> {
    let layers = plan.model.dims.layers;
    let mut per_layer: Vec<Option<HostTensor>> = vec![None; layers];
    for (name, t) in values {
        if let Some(l) = name
            .strip_prefix("prefix.")
            .and_then(|r| r.split('.').next())
            .and_then(|l| l.parse::<usize>().ok())
            .filter(|&l| l < layers)
        {
            per_layer[l] = Some(t.clone());
        }
    }
    for s in &plan.sites {
        let MethodConfig::Prefix(p) = &s.method else {
            continue;
        };
        if p.projection == 0 {
            continue;
        }
        let st = s.statement;
        let get = |x: &str| {
            values
                .get(&format!("prefix_encoder.{st}.{x}"))
                .ok_or_else(|| {
                    RuntimeError::Internal(format!("prefix encoder tensor `{x}` missing"))
                })
        };
        let hidden = host_linear(get("embedding")?, get("0.weight")?, get("0.bias")?, true);
        let full = host_linear(&hidden, get("2.weight")?, get("2.bias")?, false);
        let group: Vec<&peftc_compiler::plan::Site> =
            plan.sites.iter().filter(|t| t.statement == st).collect();
        let kv2 = full.cols() / group.len().max(1);
        for (slot, t) in group.iter().enumerate() {
            if let Some(l) = t.layer() {
                let mut data = Vec::with_capacity(p.len * kv2);
                for r in 0..p.len {
                    let row = r * full.cols();
                    data.extend_from_slice(&full.data[row + slot * kv2..row + (slot + 1) * kv2]);
                }
                per_layer[l] = Some(HostTensor::new(vec![p.len, kv2], data));
            }
        }
    }
    let Some(first) = per_layer.iter().flatten().next() else {
        return Err(RuntimeError::Invalid("no prefix tensors to export".into()));
    };
    let (len, kv2) = (first.rows(), first.cols());
    if per_layer
        .iter()
        .any(|t| t.as_ref().is_none_or(|t| t.rows() != len))
    {
        return Err(RuntimeError::Invalid(
            "Hugging Face PEFT's prefix tuning needs the same prefix on every layer; this plan's prefixes differ".into(),
        ));
    }
    let mut data = Vec::with_capacity(len * layers * kv2);
    for r in 0..len {
        for t in per_layer.iter().flatten() {
            data.extend_from_slice(&t.data[r * kv2..(r + 1) * kv2]);
        }
    }
    Ok(HostTensor::new(vec![len, layers * kv2], data))
}

/// HF's table back into peftc's per-layer `prefix.{l}.kv`.
fn split(
    plan: &Plan,
    t: &HostTensor,
    out: &mut BTreeMap<String, HostTensor>,
) -> std::result::Result<(), String> {
    let layers = plan.model.dims.layers;
    let (len, width) = (t.rows(), t.cols());
    if width % layers != 0 {
        return Err(format!(
            "prompt_embeddings has {width} columns, not a multiple of {layers} layers"
        ));
    }
    let kv2 = width / layers;
    for l in 0..layers {
        let mut data = Vec::with_capacity(len * kv2);
        for r in 0..len {
            data.extend_from_slice(&t.data[r * width + l * kv2..r * width + (l + 1) * kv2]);
        }
        out.insert(
            format!("prefix.{l}.kv"),
            HostTensor::new(vec![len, kv2], data),
        );
    }
    Ok(())
}

/// `act(x @ w.T + b)` on the host (`tanh` when `tanh`).
fn host_linear(x: &HostTensor, w: &HostTensor, b: &HostTensor, tanh: bool) -> HostTensor {
    let (n, i, o) = (x.rows(), x.cols(), w.rows());
    let mut out = vec![0f32; n * o];
    for r in 0..n {
        for c in 0..o {
            let mut acc = b.data[c];
            for k in 0..i {
                acc += x.data[r * i + k] * w.data[c * i + k];
            }
            out[r * o + c] = if tanh { acc.tanh() } else { acc };
        }
    }
    HostTensor::new(vec![n, o], out)
}
