//! The one interface through which a method acts on a module at run time.
//! A linear layer (or a block: attention, MLP, a layer) holds its methods'
//! hooks in the order of their [`Stage`]s and threads its input and output
//! through them.

use crate::error::Result;
use crate::kernels::PeftKernels;
use crate::model::{Ctx, Frozen, Params};
use burn::tensor::Tensor;

/// When a hook acts, in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// On the input, before the base product ((IA)³ on a feed-forward layer).
    Input,
    /// Adds to the base product's output (LoRA, DoRA).
    Delta,
    /// Rescales the output ((IA)³).
    Output,
    /// A parallel block beside the module, from its input (adapter `beside`).
    Beside,
    /// A serial block on the module's output (adapter `after`).
    After,
}

/// A frozen base linear layer as its hooks see it.
pub struct BaseLinear<'a, B: PeftKernels> {
    /// `[out, in]`, the checkpoint's layout.
    pub w: &'a Frozen<B>,
    /// `[1, out]`: the bias the product added (a trainable one under BitFit).
    pub bias: Option<&'a Tensor<B, 2>>,
}

/// Everything a hook may read at its module.
pub struct At<'a, B: PeftKernels> {
    /// The module's path (`encoder.layer.0.attention.self.query`).
    pub path: &'a str,
    /// The module's input, before any input hook.
    pub input: &'a Tensor<B, 2>,
    /// The input the base product read (after input hooks).
    pub x: &'a Tensor<B, 2>,
    /// The base linear layer; `None` around a block.
    pub base: Option<BaseLinear<'a, B>>,
    pub p: &'a Params<B>,
    pub ctx: &'a Ctx<B>,
}

/// A method at one module. `Send + Sync`: a model steps on any of rayon's
/// workers (`kernels::on_pool`).
pub trait SiteHook<B: PeftKernels>: Send + Sync {
    fn stage(&self) -> Stage;

    /// [`Stage::Input`] hooks: the input the base product reads.
    fn input(&self, x: Tensor<B, 2>, _path: &str, _p: &Params<B>) -> Result<Tensor<B, 2>> {
        Ok(x)
    }

    /// Every other stage: the module's output so far, transformed.
    fn output(&self, _at: &At<B>, y: Tensor<B, 2>) -> Result<Tensor<B, 2>> {
        Ok(y)
    }
}

/// A hook, boxed so a module holds the hooks of any methods.
pub type Hook<B> = Box<dyn SiteHook<B>>;
