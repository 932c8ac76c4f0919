//! Bottleneck adapters at run time: `res + s·up(act(down(x)))` after or
//! beside a module — one fused op where the plan says so, else its reference
//! composition (a UniPELT gate scales the update there).

use super::hook::{At, Hook, SiteHook, Stage};
use super::trace;
use crate::error::Result;
use crate::kernels::{self, AdapterFn, AdapterParams, PeftKernels};
use crate::model::ops::{act, linear_pt};
use crate::model::params::pname;
use burn::tensor::Tensor;
use peftc_compiler::ir::FusedOp;
use peftc_compiler::methods::{Activation, AdapterConfig};
use peftc_compiler::plan::Site;

struct AdapterHook {
    tag: &'static str,
    act: Activation,
    scale: f64,
    parallel: bool,
    gated: bool,
    fused: bool,
}

pub fn hook<B: PeftKernels>(c: &AdapterConfig, site: &Site) -> Hook<B> {
    Box::new(AdapterHook {
        tag: c.tag(),
        act: c.act,
        scale: c.scale,
        parallel: c.parallel,
        gated: site.gated,
        fused: site.fusion == Some(FusedOp::Adapter),
    })
}

impl<B: PeftKernels> SiteHook<B> for AdapterHook {
    fn stage(&self) -> Stage {
        if self.parallel {
            Stage::Beside
        } else {
            Stage::After
        }
    }

    /// Serial: the residual and the input are the output so far; parallel:
    /// the residual is the output, the input the module's.
    fn output(&self, at: &At<B>, y: Tensor<B, 2>) -> Result<Tensor<B, 2>> {
        let (path, p) = (at.path, at.p);
        let x = if self.parallel {
            at.input.clone()
        } else {
            y.clone()
        };
        let n = |s: &str| pname(path, &format!("{}.{s}", self.tag));
        let w = AdapterParams {
            down: p.get(&n("down.weight"))?,
            down_bias: p.get(&n("down.bias"))?,
            up: p.get(&n("up.weight"))?,
            up_bias: p.get(&n("up.bias"))?,
        };
        if self.fused {
            trace::fused(path, FusedOp::Adapter);
            let f = AdapterFn {
                act: self.act,
                scale: self.scale,
            };
            return Ok(kernels::adapter(y, x, w, f));
        }
        let h = act(self.act, linear_pt(x.clone(), w.down, Some(w.down_bias)));
        let mut u = linear_pt(h, w.up, Some(w.up_bias)).mul_scalar(self.scale);
        if self.gated {
            u = u * super::gate(path, self.tag, x, p)?;
        }
        Ok(y + u)
    }
}
