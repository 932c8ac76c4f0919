//! A frozen base linear layer, and any module, with the plan's methods
//! attached: each method's hook (`crate::methods`) in the order of its stage.

use super::ctx::Ctx;
use super::device_params::Params;
use super::frozen::Frozen;
use super::params::pname;
use crate::error::Result;
use crate::kernels::PeftKernels;
use crate::methods::{At, BaseLinear, Hook, Stage};
use burn::tensor::Tensor;
use peftc_compiler::plan::Site;

/// The methods' hooks at one module, ordered by [`Stage`].
pub struct Attached<B: PeftKernels> {
    hooks: Vec<Hook<B>>,
    /// The layer the module belongs to (AdapterDrop leaves out the hooks of
    /// layers below [`Ctx::adapter_drop`]).
    layer: Option<usize>,
    /// The module's bias is a trained tensor (BitFit, LoRA `bias=`).
    pub trainable_bias: bool,
}

impl<B: PeftKernels> Attached<B> {
    /// The hooks of `sites` (all at one module whose base weight is `w`).
    pub fn from_sites<'a>(
        sites: impl Iterator<Item = &'a Site>,
        w: Option<&Frozen<B>>,
        trainable_bias: bool,
    ) -> Attached<B> {
        let mut layer = None;
        let mut hooks: Vec<Hook<B>> = sites
            .inspect(|s| layer = layer.or(s.layer()))
            .filter_map(|s| crate::methods::hook::<B>(s, w))
            .collect();
        hooks.sort_by_key(|h| h.stage());
        Attached {
            hooks,
            layer,
            trainable_bias,
        }
    }

    /// The hooks acting in this pass: none in a layer AdapterDrop leaves out.
    fn active(&self, ctx: &Ctx<B>) -> &[Hook<B>] {
        match self.layer {
            Some(l) if l < ctx.adapter_drop => &[],
            _ => &self.hooks,
        }
    }

    /// Whether any method acts here.
    pub fn is_empty(&self) -> bool {
        self.hooks.is_empty() && !self.trainable_bias
    }

    /// The block-level hooks (adapters) around a block whose input was `x`
    /// and output `y`, both `[n, d]`.
    pub fn around_block(
        &self,
        path: &str,
        x: &Tensor<B, 2>,
        y: Tensor<B, 2>,
        p: &Params<B>,
        ctx: &Ctx<B>,
    ) -> Result<Tensor<B, 2>> {
        let at = At {
            path,
            input: x,
            x,
            base: None,
            p,
            ctx,
        };
        let mut y = y;
        for h in self.active(ctx) {
            y = h.output(&at, y)?;
        }
        Ok(y)
    }
}

/// A frozen linear layer and what is attached to it.
pub struct SiteLinear<B: PeftKernels> {
    pub path: String,
    /// `[out, in]`, the checkpoint's layout (multiplied as a transposed view).
    pub w: Frozen<B>,
    /// `[1, out]`; replaced by the trainable copy when `attached.trainable_bias`.
    pub bias: Option<Tensor<B, 2>>,
    pub attached: Attached<B>,
    /// Names of the trained copy of the weight (and bias) when a method
    /// retrains the layer itself (`full`).
    pub tuned: Option<(String, Option<String>)>,
}

impl<B: PeftKernels> SiteLinear<B> {
    pub fn new(
        path: String,
        w: Frozen<B>,
        bias: Option<Tensor<B, 2>>,
        attached: Attached<B>,
    ) -> Self {
        SiteLinear {
            path,
            w,
            bias,
            attached,
            tuned: None,
        }
    }

    /// The frozen weight when the layer is nothing but `x @ Wᵀ`: no method
    /// placed on it, no bias, not retrained.
    pub fn plain_weight(&self) -> Option<&Frozen<B>> {
        let plain = self.attached.is_empty()
            && !self.attached.trainable_bias
            && self.bias.is_none()
            && self.tuned.is_none();
        plain.then_some(&self.w)
    }

    pub fn forward(&self, x: Tensor<B, 2>, p: &Params<B>, ctx: &Ctx<B>) -> Result<Tensor<B, 2>> {
        let hooks = self.attached.active(ctx);
        let input = x.clone();
        let mut x = x;
        for h in hooks.iter().filter(|h| h.stage() == Stage::Input) {
            x = h.input(x, &self.path, p)?;
        }
        let bias = match &self.tuned {
            Some((_, Some(b))) => Some(p.get(b)?),
            _ if self.attached.trainable_bias => Some(p.get(&pname(&self.path, "bias"))?),
            _ => self.bias.clone(),
        };
        // A method retraining the layer (`full`) replaces the weight by its copy.
        let tuned_w = match &self.tuned {
            Some((w, _)) => Some(Frozen::Dense(p.get(w)?)),
            None => None,
        };
        let w = tuned_w.as_ref().unwrap_or(&self.w);
        let mut y = w.linear(x.clone(), bias.clone());
        let at = At {
            path: &self.path,
            input: &input,
            x: &x,
            base: Some(BaseLinear {
                w,
                bias: bias.as_ref(),
            }),
            p,
            ctx,
        };
        for h in hooks.iter().filter(|h| h.stage() != Stage::Input) {
            y = h.output(&at, y)?;
        }
        Ok(y)
    }
}

/// DoRA's `||W + s BA||` per output row, `[1, out]`, without the `[out, in]`
/// sum: `||W_o||² + 2s Σ_k B_ok (W Aᵀ)_ok + s² Σ_k (B A Aᵀ)_ok B_ok`, with
/// `w_row_sq = ||W_o||²: [out, 1]` kept from loading (`w: [out, in]`,
/// `a: [r, in]`, `b: [out, r]`).
pub fn dora_row_norm<B: PeftKernels>(
    w: &Frozen<B>,
    w_row_sq: Tensor<B, 2>,
    a: Tensor<B, 2>,
    b: Tensor<B, 2>,
    s: f64,
) -> Tensor<B, 2> {
    let wa = w.linear(a.clone(), None).transpose(); // [out, r]
    let gram = a.clone().matmul(a.transpose()); // [r, r]
    let cross = (b.clone() * wa).sum_dim(1); // [out, 1]
    let quad = (b.clone().matmul(gram) * b).sum_dim(1); // [out, 1]
    let sq = w_row_sq + cross.mul_scalar(2.0 * s) + quad.mul_scalar(s * s);
    sq.sqrt().transpose()
}
