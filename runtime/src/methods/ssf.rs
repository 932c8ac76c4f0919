//! SSF at run time: `y ⊙ scale + shift` on the module's output, and the
//! fold into a linear layer with a bias (`W ← diag(scale)·W`,
//! `b ← scale ⊙ b + shift`).

use super::hook::{At, Hook, SiteHook, Stage};
use crate::error::{Result, RuntimeError};
use crate::kernels::PeftKernels;
use crate::model::ParamStore;
use crate::weights::HostTensor;
use burn::tensor::Tensor;
use peftc_compiler::methods::ssf_names;
use peftc_compiler::plan::Site;

struct SsfHook;

pub fn hook<B: PeftKernels>() -> Hook<B> {
    Box::new(SsfHook)
}

impl<B: PeftKernels> SiteHook<B> for SsfHook {
    /// After the module's own output and its reparameterizations, so the
    /// fold sees the finished weight.
    fn stage(&self) -> Stage {
        Stage::Output
    }

    fn output(&self, at: &At<B>, y: Tensor<B, 2>) -> Result<Tensor<B, 2>> {
        let (scale, shift) = ssf_names(at.path);
        Ok(y * at.p.get(&scale)? + at.p.get(&shift)?)
    }
}

pub fn merge(
    site: &Site,
    w: &mut HostTensor,
    bias: Option<&mut HostTensor>,
    store: &ParamStore,
) -> Result<()> {
    let (scale, shift) = ssf_names(&site.module);
    let (g, s) = (
        super::trained(store, &scale)?,
        super::trained(store, &shift)?,
    );
    let Some(b) = bias else {
        return Err(RuntimeError::Invalid(format!(
            "`ssf` after `{}` cannot be folded: the module has no bias to take the shift",
            site.module
        )));
    };
    if w.shape.len() == 1 {
        // A LayerNorm: its weight and bias scale elementwise.
        for ((x, &gv), (bv, &sv)) in w
            .data
            .iter_mut()
            .zip(&g.data)
            .zip(b.data.iter_mut().zip(&s.data))
        {
            *x *= gv;
            *bv = *bv * gv + sv;
        }
        return Ok(());
    }
    let cols = w.cols();
    for ((row, &gv), (bv, &sv)) in w
        .data
        .chunks_exact_mut(cols)
        .zip(&g.data)
        .zip(b.data.iter_mut().zip(&s.data))
    {
        row.iter_mut().for_each(|x| *x *= gv);
        *bv = *bv * gv + sv;
    }
    Ok(())
}
