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
        })
    }

    /// `[1, d]`.
    pub fn weight(&self, p: &Params<B>) -> Result<Tensor<B, 2>> {
        match &self.tuned {
            Some((w, _)) => p.get(w),
            None => Ok(self.weight.clone()),
        }
    }

    /// `[1, d]`, or `None` for a norm without one (RMSNorm).
    pub fn bias(&self, p: &Params<B>) -> Result<Option<Tensor<B, 2>>> {
        if let Some((_, Some(b))) = &self.tuned {
            return p.get(b).map(Some);
        }
        if self.trainable_bias {
            return p.get(&format!("{}.bias", self.path)).map(Some);
        }
        Ok(self.bias.clone())
    }
}
