//! Turning base weights into device tensors, module by module, with the
//! plan's methods attached.

use super::device_params::into_device;
use super::frozen::Frozen;
use super::linear::{Attached, SiteLinear};
use super::params::sites_of;
use crate::error::Result;
use crate::kernels::PeftKernels;
use crate::weights::Weights;
use burn::tensor::Tensor;
use peftc_compiler::model::ModuleKind;
use peftc_compiler::plan::Plan;

pub struct Loader<'a, B: PeftKernels> {
    pub plan: &'a Plan,
    pub weights: &'a mut Weights,
    pub device: &'a B::Device,
    /// Quantized weights stay packed (where the backend multiplies them).
    pub packed: bool,
}

impl<B: PeftKernels> Loader<'_, B> {
    fn kind(&self, path: &str) -> Option<ModuleKind> {
        self.plan
            .modules
            .iter()
            .find(|m| m.path == path)
            .map(|m| m.kind.clone())
    }

    pub fn trainable_bias(&self, path: &str) -> bool {
        self.plan.trainable_biases.iter().any(|b| b == path)
    }

    /// The methods attached at `path` (for blocks: attention, MLP, layer).
    pub fn attached(&self, path: &str) -> Attached<B> {
        Attached::from_sites(
            sites_of(self.plan, path),
            None::<&Frozen<B>>,
            self.trainable_bias(path),
        )
    }

    /// The methods attached at the linear layer `path` whose weight is `w`.
    pub fn attached_linear(&self, path: &str, w: &Frozen<B>) -> Attached<B> {
        Attached::from_sites(
            sites_of(self.plan, path),
            Some(w),
            self.trainable_bias(path),
        )
    }

    /// Takes a tensor and moves it to the device as 2-D (vectors as `[1, n]`).
    pub fn tensor(&mut self, name: &str, shape: &[usize]) -> Result<Tensor<B, 2>> {
        let t = self.weights.take(name, shape)?;
        Ok(into_device::<B>(t, self.device))
    }

    /// A frozen matrix, packed if it is and may stay so.
    pub fn frozen(&mut self, name: &str, shape: &[usize]) -> Result<Frozen<B>> {
        let w = self.weights.take_weight(name, shape)?;
        Ok(Frozen::from_host(w, self.device, self.packed))
    }

    /// A linear layer `path` as the plan describes it.
    pub fn linear(&mut self, path: &str) -> Result<SiteLinear<B>> {
        let (i, o, bias) = match self.kind(path) {
            Some(ModuleKind::Linear {
                in_features,
                out_features,
                bias,
            }) => (in_features, out_features, bias),
            _ => {
                return Err(crate::error::RuntimeError::Invalid(format!(
                    "internal: `{path}` is not a linear layer"
                )));
            }
        };
        let w = self.frozen(&format!("{path}.weight"), &[o, i])?;
        let bias = if bias {
            Some(self.tensor(&format!("{path}.bias"), &[o])?)
        } else {
            None
        };
        let attached = self.attached_linear(path, &w);
        let mut l = SiteLinear::new(path.to_string(), w, bias, attached);
        l.tuned = crate::methods::tuned(self.plan, path);
        Ok(l)
    }

    /// A norm's weight (and bias, for LayerNorm) `[1, d]`.
    pub fn norm(
        &mut self,
        path: &str,
        d: usize,
        with_bias: bool,
    ) -> Result<(Tensor<B, 2>, Option<Tensor<B, 2>>)> {
        let w = self.tensor(&format!("{path}.weight"), &[d])?;
        let b = if with_bias {
            Some(self.tensor(&format!("{path}.bias"), &[d])?)
        } else {
            None
        };
        Ok((w, b))
    }
}
