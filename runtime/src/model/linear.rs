//! A frozen base linear layer with the PEFT methods placed on it: LoRA / DoRA,
//! (IA)³, a trainable bias (BitFit), serial and parallel adapters.

use super::ctx::{Ctx, site_id};
use super::device_params::Params;
use super::ops::{act, linear_pt};
use super::params::pname;
use crate::error::Result;
use crate::kernels;
use crate::kernels::{AdapterFn, AdapterParams, PeftKernels};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, activation};
use peftc_compiler::methods::{Activation, MethodConfig};
use peftc_compiler::plan::Site;

#[derive(Debug, Clone)]
pub struct LoraSpec {
    pub scale: f64,
    pub dropout: f64,
    pub dora: bool,
    pub gated: bool,
}

#[derive(Debug, Clone)]
pub struct AdapterSpec {
    pub tag: &'static str,
    pub act: Activation,
    pub scale: f64,
    pub gated: bool,
}

/// The PEFT methods attached at one module (a linear layer or a block).
#[derive(Debug, Clone, Default)]
pub struct Attached {
    pub lora: Option<LoraSpec>,
    /// (IA)³: `Some(true)` scales the input (feed-forward), `Some(false)` the output.
    pub ia3: Option<bool>,
    pub after: Option<AdapterSpec>,
    pub beside: Option<AdapterSpec>,
    pub trainable_bias: bool,
}

impl Attached {
    pub fn from_sites<'a>(sites: impl Iterator<Item = &'a Site>, trainable_bias: bool) -> Attached {
        let mut a = Attached {
            trainable_bias,
            ..Attached::default()
        };
        for s in sites {
            match &s.method {
                MethodConfig::Lora(l) => {
                    a.lora = Some(LoraSpec {
                        scale: l.scale(),
                        dropout: l.dropout,
                        dora: l.dora,
                        gated: s.gated,
                    })
                }
                MethodConfig::Ia3 => a.ia3 = Some(s.feedforward),
                MethodConfig::Adapter(ad) => {
                    let spec = AdapterSpec {
                        tag: if ad.parallel {
                            "adapter_beside"
                        } else {
                            "adapter_after"
                        },
                        act: ad.act,
                        scale: ad.scale,
                        gated: s.gated,
                    };
                    if ad.parallel {
                        a.beside = Some(spec)
                    } else {
                        a.after = Some(spec)
                    }
                }
                _ => {}
            }
        }
        a
    }

    /// Applies the block-level methods (adapters) around a block whose input
    /// was `x` and output `y`, both `[n, d]`.
    pub fn around_block<B: PeftKernels>(
        &self,
        path: &str,
        x: &Tensor<B, 2>,
        y: Tensor<B, 2>,
        p: &Params<B>,
    ) -> Result<Tensor<B, 2>> {
        let mut y = y;
        if let Some(a) = &self.beside {
            y = adapter(path, a, y, x.clone(), p)?;
        }
        if let Some(a) = &self.after {
            y = adapter(path, a, y.clone(), y, p)?;
        }
        Ok(y)
    }
}

/// `res + scale * gate * up(act(down(x)))`: one fused op (`kernels::adapter`)
/// unless a UniPELT gate scales it.
fn adapter<B: PeftKernels>(
    path: &str,
    a: &AdapterSpec,
    res: Tensor<B, 2>,
    x: Tensor<B, 2>,
    p: &Params<B>,
) -> Result<Tensor<B, 2>> {
    let n = |s: &str| pname(path, &format!("{}.{s}", a.tag));
    let w = AdapterParams {
        down: p.get(&n("down.weight"))?,
        down_bias: p.get(&n("down.bias"))?,
        up: p.get(&n("up.weight"))?,
        up_bias: p.get(&n("up.bias"))?,
    };
    if !a.gated {
        let f = AdapterFn {
            act: a.act,
            scale: a.scale,
        };
        return Ok(kernels::adapter(res, x, w, f));
    }
    let h = act(a.act, linear_pt(x.clone(), w.down, Some(w.down_bias)));
    let u = linear_pt(h, w.up, Some(w.up_bias)).mul_scalar(a.scale);
    Ok(res + u * gate(path, a.tag, x, p)?)
}

/// UniPELT gate `sigmoid(x w + b)`, `[n, 1]`.
pub fn gate<B: PeftKernels>(
    path: &str,
    tag: &str,
    x: Tensor<B, 2>,
    p: &Params<B>,
) -> Result<Tensor<B, 2>> {
    let w = p.get(&pname(path, &format!("{tag}_gate.weight")))?;
    let b = p.get(&pname(path, &format!("{tag}_gate.bias")))?;
    Ok(activation::sigmoid(linear_pt(x, w, Some(b))))
}

/// A frozen linear layer and what is attached to it.
pub struct SiteLinear<B: PeftKernels> {
    pub path: String,
    /// `[out, in]`, the checkpoint's layout (multiplied as a transposed view).
    pub w: Tensor<B, 2>,
    /// `[1, out]`; replaced by the trainable copy when `attached.trainable_bias`.
    pub bias: Option<Tensor<B, 2>>,
    pub attached: Attached,
    /// `[out, 1]`: the squared row norms of `w`, kept when DoRA is attached.
    w_row_sq: Option<Tensor<B, 2>>,
}

impl<B: PeftKernels> SiteLinear<B> {
    pub fn new(
        path: String,
        w: Tensor<B, 2>,
        bias: Option<Tensor<B, 2>>,
        attached: Attached,
    ) -> Self {
        let dora = attached.lora.as_ref().is_some_and(|l| l.dora);
        let w_row_sq = dora.then(|| w.clone().powf_scalar(2.0).sum_dim(1));
        SiteLinear {
            path,
            w,
            bias,
            attached,
            w_row_sq,
        }
    }

    pub fn forward(&self, x: Tensor<B, 2>, p: &Params<B>, ctx: &Ctx<B>) -> Result<Tensor<B, 2>> {
        let a = &self.attached;
        let x_in = x.clone();
        let x = match a.ia3 {
            Some(true) => kernels::scale_cols(x, p.get(&pname(&self.path, "ia3_l"))?),
            _ => x,
        };
        let bias = if a.trainable_bias {
            Some(p.get(&pname(&self.path, "bias"))?)
        } else {
            self.bias.clone()
        };
        let mut y = linear_pt(x.clone(), self.w.clone(), bias.clone());
        if let Some(l) = &a.lora {
            y = self.lora(l, x, y, bias, p, ctx)?;
        }
        if a.ia3 == Some(false) {
            y = kernels::scale_cols(y, p.get(&pname(&self.path, "ia3_l"))?);
        }
        a.around_block(&self.path, &x_in, y, p)
    }

    fn lora(
        &self,
        l: &LoraSpec,
        x: Tensor<B, 2>,
        y: Tensor<B, 2>,
        bias: Option<Tensor<B, 2>>,
        p: &Params<B>,
        ctx: &Ctx<B>,
    ) -> Result<Tensor<B, 2>> {
        if let Some(routes) = &ctx.routes {
            // Many adapters in one batch: each adapter's rows through its own A, B.
            let out = y.dims()[1];
            let (an, bn) = (
                pname(&self.path, "lora_A.weight"),
                pname(&self.path, "lora_B.weight"),
            );
            if B::SGMV
                && let Some(out) = sgmv(routes, &x, &y, &an, &bn, l.scale, p)?
            {
                return Ok(out);
            }
            let delta = routes.segmented(x, out, |k, xk| {
                let a = p.get(&super::routes::routed(&an, k))?;
                let b = p.get(&super::routes::routed(&bn, k))?;
                Ok(xk
                    .matmul(a.transpose())
                    .matmul(b.transpose())
                    .mul_scalar(l.scale))
            })?;
            return Ok(y + delta);
        }
        let a = p.get(&pname(&self.path, "lora_A.weight"))?; // [r, in]
        let b = p.get(&pname(&self.path, "lora_B.weight"))?; // [out, r]
        let xd = ctx.dropout(
            x.clone(),
            l.dropout,
            site_id(&format!("{}.lora_dropout", self.path)),
        );
        let dropped = ctx.train && l.dropout > 0.0;
        // Both thin products through the linear kernel (BLAS on the CPU, a
        // hand-written backward), `a` and `b` being PyTorch-layout weights.
        let u = linear_pt(xd.clone(), a.clone(), None); // [n, r]
        if !l.gated && !l.dora {
            // fused_lora_linear: the second product, scale and add in one op.
            return Ok(kernels::lora_expand(y, u, b, l.scale));
        }
        let mut delta = linear_pt(u.mul_scalar(l.scale), b.clone(), None);
        if l.gated {
            delta = delta * gate(&self.path, "lora", x.clone(), p)?;
        }
        if !l.dora {
            return Ok(y + delta);
        }
        // DoRA: m * (W + s BA) / ||W + s BA||_row, the norm detached (Liu et al. 2024 §4.3).
        let m = p.get(&pname(&self.path, "lora_magnitude_vector"))?; // [1, out]
        let norm = self.dora_norm(a.detach(), b.detach(), l.scale)?; // [1, out]
        let mag = m / norm;
        let base = match &bias {
            Some(b) => y.clone() - b.clone(),
            None => y.clone(),
        };
        let base_d = if dropped {
            xd.matmul(self.w.clone().transpose())
        } else {
            base
        };
        Ok(kernels::dora_mix(y, base_d, delta, mag))
    }

    /// [`dora_row_norm`] with this layer's weight and kept row norms.
    fn dora_norm(&self, a: Tensor<B, 2>, b: Tensor<B, 2>, s: f64) -> Result<Tensor<B, 2>> {
        let w_sq = self.w_row_sq.clone().ok_or_else(|| {
            crate::error::RuntimeError::Invalid(format!(
                "internal: {} has DoRA but no row norms",
                self.path
            ))
        })?;
        Ok(dora_row_norm(self.w.clone(), w_sq, a, b, s))
    }
}

/// DoRA's `||W + s BA||` per output row, `[1, out]`, without the `[out, in]`
/// sum: `||W_o||² + 2s Σ_k B_ok (W Aᵀ)_ok + s² Σ_k (B A Aᵀ)_ok B_ok`, with
/// `w_row_sq = ||W_o||²: [out, 1]` kept from loading (`w: [out, in]`,
/// `a: [r, in]`, `b: [out, r]`).
pub fn dora_row_norm<B: Backend>(
    w: Tensor<B, 2>,
    w_row_sq: Tensor<B, 2>,
    a: Tensor<B, 2>,
    b: Tensor<B, 2>,
    s: f64,
) -> Tensor<B, 2> {
    let wa = w.matmul(a.clone().transpose()); // [out, r]
    let gram = a.clone().matmul(a.transpose()); // [r, r]
    let cross = (b.clone() * wa).sum_dim(1); // [out, 1]
    let quad = (b.clone().matmul(gram) * b).sum_dim(1); // [out, 1]
    let sq = w_row_sq + cross.mul_scalar(2.0 * s) + quad.mul_scalar(s * s);
    sq.sqrt().transpose()
}

/// `y` plus batched multi-adapter LoRA in one kernel per product
/// (`kernels::sgmv`): the adapters' factors stacked (once, by
/// `Params::routed`), each row routed by its adapter id. `None` when the
/// factors were not stacked (the adapters' ranks differ; the segmented path
/// handles that).
fn sgmv<B: PeftKernels>(
    routes: &super::routes::Routes<B>,
    x: &Tensor<B, 2>,
    y: &Tensor<B, 2>,
    an: &str,
    bn: &str,
    scale: f64,
    p: &Params<B>,
) -> Result<Option<Tensor<B, 2>>> {
    let Some(ids) = routes.row_ids(x.dims()[0]) else {
        return Ok(None);
    };
    let (a, b) = (super::routes::stacked(an), super::routes::stacked(bn));
    if !(p.has(&a) && p.has(&b)) {
        return Ok(None);
    }
    let scales = vec![scale as f32; routes.adapters];
    Ok(Some(kernels::sgmv(
        y.clone(),
        x.clone(),
        &ids,
        p.get(&a)?,
        p.get(&b)?,
        &scales,
    )))
}
