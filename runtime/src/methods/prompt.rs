//! Prompt tuning at run time: the soft prompt's rows, prepended to the
//! input embeddings by the model.

use crate::error::Result;
use crate::kernels::PeftKernels;
use crate::model::Params;
use burn::tensor::Tensor;
use peftc_compiler::methods::PromptConfig;

/// The `[len, hidden]` virtual token embeddings.
pub fn embeddings<B: PeftKernels>(_c: &PromptConfig, p: &Params<B>) -> Result<Tensor<B, 2>> {
    p.get("prompt_embeddings")
}
