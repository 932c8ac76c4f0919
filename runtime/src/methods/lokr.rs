//! LoKr at run time: `ΔW = kron(w1, w2) · alpha/r`, each factor whole or a
//! low-rank product as the layer's tensors say, added as `x·ΔWᵀ`; the fold
//! into the weight; HF PEFT's `LOKR` form.

use super::hf::HfForm;
use super::hook::{At, Hook, SiteHook, Stage};
use crate::adapter::hf::config::{check_ranks, check_targets, shown};
use crate::error::Result;
use crate::kernels::PeftKernels;
use crate::model::ops::linear_pt;
use crate::model::params::pname;
use crate::model::{ParamStore, Params};
use crate::weights::HostTensor;
use burn::tensor::Tensor;
use peftc_compiler::methods::{LokrConfig, MethodConfig};
use peftc_compiler::plan::{Plan, Site};
use serde_json::{Map, Value, json};

struct LokrHook {
    scale: f64,
}

pub fn hook<B: PeftKernels>(c: &LokrConfig) -> Hook<B> {
    Box::new(LokrHook { scale: c.scale() })
}

/// Factor `i` (1 or 2): whole (`lokr_w{i}`) or `lokr_w{i}_a · lokr_w{i}_b`.
fn factor<B: PeftKernels>(path: &str, i: u8, p: &Params<B>) -> Result<Tensor<B, 2>> {
    let whole = pname(path, &format!("lokr_w{i}"));
    if p.has(&whole) {
        return p.get(&whole);
    }
    let a = p.get(&pname(path, &format!("lokr_w{i}_a")))?;
    Ok(a.matmul(p.get(&pname(path, &format!("lokr_w{i}_b")))?))
}

/// `kron(a, b)`: `[p·s, q·t]` for `a: [p, q]`, `b: [s, t]`.
fn kron<B: PeftKernels>(a: Tensor<B, 2>, b: Tensor<B, 2>) -> Tensor<B, 2> {
    let ([p, q], [s, t]) = (a.dims(), b.dims());
    let a4: Tensor<B, 4> = a.reshape([p, 1, q, 1]);
    let b4: Tensor<B, 4> = b.reshape([1, s, 1, t]);
    (a4 * b4).reshape([p * s, q * t])
}

impl<B: PeftKernels> SiteHook<B> for LokrHook {
    fn stage(&self) -> Stage {
        Stage::Delta
    }

    fn output(&self, at: &At<B>, y: Tensor<B, 2>) -> Result<Tensor<B, 2>> {
        let (path, p) = (at.path, at.p);
        let dw = kron(factor(path, 1, p)?, factor(path, 2, p)?).mul_scalar(self.scale);
        Ok(y + linear_pt(at.x.clone(), dw, None))
    }
}

fn host_factor(store: &ParamStore, m: &str, i: u8) -> Result<HostTensor> {
    if let Some(t) = store.get(&pname(m, &format!("lokr_w{i}"))) {
        return Ok(t.clone());
    }
    let a = super::trained(store, &pname(m, &format!("lokr_w{i}_a")))?;
    let b = super::trained(store, &pname(m, &format!("lokr_w{i}_b")))?;
    Ok(super::host_matmul(a, b))
}

/// `W += kron(w1, w2) · alpha/r`.
pub fn merge(c: &LokrConfig, site: &Site, w: &mut HostTensor, store: &ParamStore) -> Result<()> {
    let m = &site.module;
    let (a, b) = (host_factor(store, m, 1)?, host_factor(store, m, 2)?);
    let (p, q, s, t) = (a.rows(), a.cols(), b.rows(), b.cols());
    let scale = c.scale() as f32;
    let inp = w.cols();
    for i in 0..p {
        for j in 0..q {
            let aij = a.data[i * q + j] * scale;
            for k in 0..s {
                let row = (i * s + k) * inp + j * t;
                for (x, bkl) in w.data[row..row + t]
                    .iter_mut()
                    .zip(&b.data[k * t..(k + 1) * t])
                {
                    *x += aij * bkl;
                }
            }
        }
    }
    Ok(())
}

/// LoKr's Hugging Face PEFT form.
pub struct Hf;

fn config_of(plan: &Plan) -> Option<&LokrConfig> {
    plan.sites.iter().find_map(|s| match &s.method {
        MethodConfig::Lokr(c) => Some(c),
        _ => None,
    })
}

impl HfForm for Hf {
    fn peft_type(&self) -> &'static str {
        "LOKR"
    }

    fn config(&self, plan: &Plan, _info: &super::hf::ExportInfo<'_>) -> Map<String, Value> {
        let mut c = super::lycoris_config(plan);
        if let Some(l) = config_of(plan) {
            c.insert("r".into(), json!(l.r));
            c.insert("alpha".into(), json!(l.alpha));
            c.insert("decompose_both".into(), json!(l.decompose_both));
            c.insert("decompose_factor".into(), json!(l.decompose_factor));
        }
        c.insert("rank_dropout_scale".into(), json!(false));
        c
    }

    fn check(&self, plan: &Plan, cfg: &Value) -> std::result::Result<(), String> {
        let Some(l) = config_of(plan) else {
            return Ok(());
        };
        super::check_alpha(cfg, l.alpha)?;
        check_ranks(plan, cfg, |s| match &s.method {
            MethodConfig::Lokr(c) => Some(c.r),
            _ => None,
        })?;
        let both = cfg["decompose_both"].as_bool().unwrap_or(false);
        let factor = cfg["decompose_factor"].as_i64().unwrap_or(-1);
        if both != l.decompose_both || factor != l.decompose_factor {
            return Err(format!(
                "has decompose_both {} / decompose_factor {}, the spec says decompose_both={} decompose_factor={}",
                shown(&cfg["decompose_both"]),
                shown(&cfg["decompose_factor"]),
                l.decompose_both,
                l.decompose_factor
            ));
        }
        check_targets(plan, cfg, "target_modules", |_| true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Cpu;

    #[test]
    fn kron_is_the_kronecker_product() {
        let d = Default::default();
        let a = Tensor::<Cpu, 2>::from_floats([[1.0, 2.0], [3.0, 4.0]], &d);
        let b = Tensor::<Cpu, 2>::from_floats([[0.0, 1.0, 2.0]], &d);
        let k = kron(a, b).into_data().into_vec::<f32>().expect("f32");
        // kron(A, B)[i*s+k, j*t+l] = A[i,j] * B[k,l]: rows of [a_i0*B, a_i1*B].
        assert_eq!(
            k,
            vec![0.0, 1.0, 2.0, 0.0, 2.0, 4.0, 0.0, 3.0, 6.0, 0.0, 4.0, 8.0]
        );
    }
}
