//! A norm's parameters as the forward pass reads them: the frozen ones, or
//! a trained copy where a method retrains the norm (LN tuning, `full`), or a trained
//! bias (BitFit).

use super::build::Loader;
use super::device_params::Params;
use crate::error::Result;
use crate::kernels::PeftKernels;
use burn::tensor::Tensor;

pub struct NormWeights<B: PeftKernels> {
    pub path: String,
    weight: Tensor<B, 2>,
    bias: Option<Tensor<B, 2>>,
    /// Names of the trained copy (weight, bias), when a method retrains it.
    tuned: Option<(String, Option<String>)>,
    trainable_bias: bool,
    /// SSF after the norm: its scale and shift (folded into weight and bias).
    scale_shift: Option<(String, String)>,
}

impl<B: PeftKernels> NormWeights<B> {
    /// The norm `path` of width `d` (with a bias for LayerNorm).
    pub fn load(
        l: &mut Loader<B>,
        path: &str,
        d: usize,
        with_bias: bool,
    ) -> Result<NormWeights<B>> {
        let (weight, bias) = l.norm(path, d, with_bias)?;
        Ok(NormWeights {
            path: path.to_string(),
            weight,
            bias,
            tuned: crate::methods::tuned(l.plan, path),
            trainable_bias: l.trainable_bias(path),
            scale_shift: crate::methods::norm_scale_shift(l.plan, path),
        })
    }

    /// `[1, d]`: the norm's weight, times SSF's scale after it.
    pub fn weight(&self, p: &Params<B>) -> Result<Tensor<B, 2>> {
        let w = match &self.tuned {
            Some((w, _)) => p.get(w)?,
            None => self.weight.clone(),
        };
        Ok(match &self.scale_shift {
            Some((scale, _)) => w * p.get(scale)?,
            None => w,
        })
    }

    fn own_bias(&self, p: &Params<B>) -> Result<Option<Tensor<B, 2>>> {
        if let Some((_, Some(b))) = &self.tuned {
            return p.get(b).map(Some);
        }
        if self.trainable_bias {
            return p.get(&format!("{}.bias", self.path)).map(Some);
        }
        Ok(self.bias.clone())
    }

    /// `[1, d]`, or `None` for a norm without one (RMSNorm): its bias, and
    /// SSF after it as `scale ⊙ bias + shift`.
    pub fn bias(&self, p: &Params<B>) -> Result<Option<Tensor<B, 2>>> {
        let b = self.own_bias(p)?;
        Ok(match (&self.scale_shift, b) {
            (Some((scale, shift)), Some(b)) => Some(b * p.get(scale)? + p.get(shift)?),
            (Some(_), None) => None,
            (None, b) => b,
        })
    }

    /// What an RMSNorm adds after its product: SSF's shift, where SSF sits
    /// after it (a LayerNorm folds the shift into its bias).
    pub fn shift(&self, p: &Params<B>) -> Result<Option<Tensor<B, 2>>> {
        match (&self.scale_shift, &self.bias) {
            (Some((_, shift)), None) => p.get(shift).map(Some),
            _ => Ok(None),
        }
    }

    /// RMSNorm of `x` with this norm's weight, and SSF's shift after it.
    pub fn rms(&self, x: Tensor<B, 2>, eps: f64, p: &Params<B>) -> Result<Tensor<B, 2>> {
        let y = super::ops::rms_norm(x, self.weight(p)?, eps);
        Ok(match self.shift(p)? {
            Some(s) => y + s,
            None => y,
        })
    }
}
