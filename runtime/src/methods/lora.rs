//! LoRA and DoRA at run time: the update beside a frozen linear layer (one
//! fused op where the plan says so), batched across adapters when several
//! share a batch, and the fold into the base weight.

use super::hf::HfForm;
use super::hook::{At, Hook, SiteHook, Stage};
use super::trace;
use crate::adapter::hf::config::{check_ranks, check_targets};
use crate::adapter::hf::targets_regex;
use crate::error::{Result, RuntimeError};
use crate::kernels::{self, PeftKernels};
use crate::model::params::pname;
use crate::model::{Frozen, ParamStore, Params, dora_row_norm, routes};
use crate::model::{ctx::site_id, ops::linear_pt};
use crate::weights::HostTensor;
use burn::tensor::Tensor;
use peftc_compiler::ir::FusedOp;
use peftc_compiler::methods::LoraConfig;
use peftc_compiler::plan::{Plan, Site};
use serde_json::{Map, Value, json};

struct LoraHook<B: PeftKernels> {
    scale: f64,
    dropout: f64,
    gated: bool,
    dora: bool,
    fusion: Option<FusedOp>,
    /// `[out, 1]`: the squared row norms of the base weight (DoRA).
    w_row_sq: Option<Tensor<B, 2>>,
}

/// The hook of LoRA configuration `c` at `site`, whose base weight is `w`.
pub fn hook<B: PeftKernels>(c: &LoraConfig, site: &Site, w: Option<&Frozen<B>>) -> Hook<B> {
    Box::new(LoraHook {
        scale: c.scale(),
        dropout: c.dropout,
        gated: site.gated,
        dora: c.dora,
        fusion: site.fusion,
        w_row_sq: w.filter(|_| c.dora).map(Frozen::row_sq_norms),
    })
}

impl<B: PeftKernels> SiteHook<B> for LoraHook<B> {
    fn stage(&self) -> Stage {
        Stage::Delta
    }

    fn output(&self, at: &At<B>, y: Tensor<B, 2>) -> Result<Tensor<B, 2>> {
        let (path, p, ctx, x) = (at.path, at.p, at.ctx, at.x);
        if let Some(r) = &ctx.routes {
            return routed(r, path, x, y, self.scale, p);
        }
        let a = p.get(&pname(path, "lora_A.weight"))?; // [r, in]
        let b = p.get(&pname(path, "lora_B.weight"))?; // [out, r]
        let xd = ctx.dropout(
            x.clone(),
            self.dropout,
            site_id(&format!("{path}.lora_dropout")),
        );
        let dropped = ctx.train && self.dropout > 0.0;
        // Both thin products through the linear kernel (BLAS on the CPU, a
        // hand-written backward), `a` and `b` being PyTorch-layout weights.
        let u = linear_pt(xd.clone(), a.clone(), None); // [n, r]
        if self.fusion == Some(FusedOp::LoraLinear) {
            // The second product, scale and add in one op.
            trace::fused(path, FusedOp::LoraLinear);
            return Ok(kernels::lora_expand(y, u, b, self.scale));
        }
        let mut delta = linear_pt(u.mul_scalar(self.scale), b.clone(), None);
        if self.gated {
            delta = delta * super::gate(path, "lora", x.clone(), p)?;
        }
        if !self.dora {
            return Ok(y + delta);
        }
        // DoRA: m * (W + s BA) / ||W + s BA||_row, the norm detached (Liu et al. 2024 §4.3).
        let base_w = at.base.as_ref().ok_or_else(|| {
            RuntimeError::Internal(format!("DoRA at `{path}` sits on no linear layer"))
        })?;
        let w_sq = self
            .w_row_sq
            .clone()
            .ok_or_else(|| RuntimeError::Internal(format!("DoRA at `{path}` has no row norms")))?;
        let m = p.get(&pname(path, "lora_magnitude_vector"))?; // [1, out]
        let norm = dora_row_norm(base_w.w, w_sq, a.detach(), b.detach(), self.scale);
        let mag = m / norm;
        let base = match base_w.bias {
            Some(bias) => y.clone() - bias.clone(),
            None => y.clone(),
        };
        let base_d = if dropped {
            base_w.w.linear(xd, None)
        } else {
            base
        };
        if self.fusion == Some(FusedOp::DoraLinear) {
            trace::fused(path, FusedOp::DoraLinear);
            Ok(kernels::dora_mix(y, base_d, delta, mag))
        } else {
            Ok(kernels::reference::dora_mix(y, base_d, delta, mag))
        }
    }
}

/// Many adapters in one batch: each adapter's rows through its own A, B —
/// one SGMV kernel per product where the backend has it and the factors were
/// stacked, else one segment per adapter.
fn routed<B: PeftKernels>(
    r: &routes::Routes<B>,
    path: &str,
    x: &Tensor<B, 2>,
    y: Tensor<B, 2>,
    scale: f64,
    p: &Params<B>,
) -> Result<Tensor<B, 2>> {
    let out = y.dims()[1];
    let (an, bn) = (pname(path, "lora_A.weight"), pname(path, "lora_B.weight"));
    if B::SGMV
        && let Some(ids) = r.row_ids(x.dims()[0])
    {
        let (a, b) = (routes::stacked(&an), routes::stacked(&bn));
        if p.has(&a) && p.has(&b) {
            let scales = vec![scale as f32; r.adapters];
            return Ok(kernels::sgmv(
                y,
                x.clone(),
                &ids,
                p.get(&a)?,
                p.get(&b)?,
                &scales,
            ));
        }
    }
    let delta = r.segmented(x.clone(), out, |k, xk| {
        let a = p.get(&routes::routed(&an, k))?;
        let b = p.get(&routes::routed(&bn, k))?;
        Ok(xk
            .matmul(a.transpose())
            .matmul(b.transpose())
            .mul_scalar(scale))
    })?;
    Ok(y + delta)
}

/// Folds the update into `w: [out, in]`: `W + s·B·A`, then for DoRA each
/// row rescaled to its magnitude.
pub fn merge(c: &LoraConfig, site: &Site, w: &mut HostTensor, store: &ParamStore) -> Result<()> {
    let m = &site.module;
    let get = |suffix: &str| super::trained(store, &pname(m, suffix));
    let (a, b) = (get("lora_A.weight")?, get("lora_B.weight")?);
    let (out, inp) = (w.rows(), w.cols());
    super::fold_low_rank(w, a, b, c.r, c.scale() as f32);
    if c.dora {
        let mag = get("lora_magnitude_vector")?;
        for o in 0..out {
            let row = &mut w.data[o * inp..(o + 1) * inp];
            let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
            let f = mag.data[o] / norm;
            row.iter_mut().for_each(|v| *v *= f);
        }
    }
    Ok(())
}

/// LoRA's (and DoRA's) Hugging Face PEFT form: `peft_type` LORA.
pub struct Hf;

/// The plan's LoRA configuration (every LoRA site of one block shares it
/// in HF's form, which stores one `r` and `lora_alpha`).
fn config_of(plan: &Plan) -> Option<&LoraConfig> {
    plan.sites.iter().find_map(|s| match &s.method {
        peftc_compiler::methods::MethodConfig::Lora(c) => Some(c),
        _ => None,
    })
}

/// The `adapter_config.json` fields of a LoRA `l` over the plan's sites
/// (DyLoRA cut to a rank writes these too).
pub(super) fn fields(plan: &Plan, l: &LoraConfig) -> Map<String, Value> {
    let mut c = Map::new();
    let bias = if plan.trainable_biases.is_empty() {
        "none"
    } else {
        "lora_only"
    };
    c.insert("r".into(), json!(l.r));
    c.insert("lora_alpha".into(), json!(l.alpha));
    c.insert("lora_dropout".into(), json!(l.dropout));
    c.insert("use_rslora".into(), json!(l.rslora));
    c.insert("use_dora".into(), json!(l.dora));
    c.insert("bias".into(), json!(bias));
    c.insert("fan_in_fan_out".into(), json!(false));
    c.insert("init_lora_weights".into(), json!(true));
    c.insert(
        "target_modules".into(),
        json!(targets_regex(plan, |_| true)),
    );
    c
}

impl HfForm for Hf {
    fn peft_type(&self) -> &'static str {
        "LORA"
    }

    fn config(&self, plan: &Plan, _info: &super::hf::ExportInfo<'_>) -> Map<String, Value> {
        match config_of(plan) {
            Some(l) => fields(plan, l),
            None => Map::new(),
        }
    }

    fn check(&self, plan: &Plan, cfg: &Value) -> std::result::Result<(), String> {
        let Some(l) = config_of(plan) else {
            return Ok(());
        };
        let flag = |key: &str| cfg[key].as_bool().unwrap_or(false);
        let alpha = cfg["lora_alpha"].as_f64().unwrap_or(8.0);
        if (alpha - l.alpha).abs() > 1e-9 {
            return Err(format!(
                "has lora_alpha {alpha}, the spec says alpha={}",
                l.alpha
            ));
        }
        if flag("use_rslora") != l.rslora {
            return Err(format!(
                "has use_rslora {}, the spec says rslora={}",
                flag("use_rslora"),
                l.rslora
            ));
        }
        if flag("use_dora") != l.dora {
            return Err(format!(
                "has use_dora {}; the spec {} DoRA",
                flag("use_dora"),
                if l.dora { "uses" } else { "does not use" }
            ));
        }
        check_ranks(plan, cfg, |s| match &s.method {
            peftc_compiler::methods::MethodConfig::Lora(c) => Some(c.r),
            _ => None,
        })?;
        check_targets(plan, cfg, "target_modules", |_| true)
    }
}
