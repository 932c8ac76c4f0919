//! Prefix tuning's per-layer keys and values, computed once per forward from
//! the parameters: directly (`prefix.{layer}.kv`, `[len, 2*kv]`) or through a
//! statement's reparameterization MLP (Embedding → Linear → Tanh → Linear).

use crate::error::Result;
use crate::kernels::PeftKernels;
use crate::model::Params;
use crate::model::attention::Prefix;
use crate::model::ops::linear_pt;
use burn::tensor::Tensor;
use peftc_compiler::methods::MethodConfig;
use peftc_compiler::plan::Plan;

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

    /// The longest prefix (positions of real tokens start after it).
    pub fn len(&self) -> usize {
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
