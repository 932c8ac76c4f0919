//! `model "DIR" quantize nf4 | int8` at load: each linear layer the
//! compiler lists ([`quantized_modules`]) is coded from its f32 weight and
//! the f32 form dropped — tensor by tensor as a safetensors checkpoint is
//! read ([`Coder::code`]), so the whole model never exists in f32.

use super::{HostTensor, HostWeight, Int8Matrix, Nf4Matrix, PackedMatrix};
use crate::error::{Result, RuntimeError};
use peftc_compiler::model::{ModelDesc, Quantize, quantized_modules};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::result::Result as StdResult;
use std::sync::Arc;

/// `t` coded by `q`, or why its shape cannot be.
pub(super) fn code_matrix(q: Quantize, t: &HostTensor) -> StdResult<PackedMatrix, String> {
    Ok(match q {
        Quantize::Nf4 => Nf4Matrix::quantize(t)?.into(),
        Quantize::Int8 => Int8Matrix::quantize(t)?.into(),
    })
}

/// Which tensors a quantized load codes, and how.
pub(super) struct Coder {
    q: Quantize,
    names: BTreeSet<String>,
}

impl Coder {
    /// The coder for `model`, if it is loaded quantized.
    pub(super) fn of(model: &ModelDesc) -> Option<Coder> {
        let q = model.quantize?;
        let names = quantized_modules(model)
            .map(|m| format!("{}.weight", m.path))
            .collect();
        Some(Coder { q, names })
    }

    /// Tensor `name` of `file` as held: coded if it is a listed linear
    /// layer's weight, else as read.
    pub(super) fn code(&self, file: &Path, name: &str, t: HostTensor) -> Result<HostWeight> {
        if !self.names.contains(name) {
            return Ok(HostWeight::Dense(t));
        }
        let err = |what: String| RuntimeError::Tensor {
            file: file.to_path_buf(),
            tensor: name.to_string(),
            what,
        };
        // A NaN would code as a silent -absmax: refuse it here.
        if let Some(bad) = t.data.iter().find(|v| !v.is_finite()) {
            return Err(err(format!("holds a non-finite value ({bad})")));
        }
        let packed = code_matrix(self.q, &t).map_err(err)?;
        Ok(HostWeight::Packed(Arc::new(packed)))
    }

    /// Codes the listed tensors of an already read map (a full-precision GGUF).
    pub(super) fn code_all(
        &self,
        file: &Path,
        tensors: &mut BTreeMap<String, HostWeight>,
    ) -> Result<()> {
        for name in &self.names {
            let Some(w) = tensors.remove(name) else {
                continue;
            };
            let coded = match w {
                HostWeight::Dense(t) => self.code(file, name, t)?,
                HostWeight::Packed(p) => {
                    return Err(RuntimeError::Tensor {
                        file: file.to_path_buf(),
                        tensor: name.clone(),
                        what: format!(
                            "is already {}; `quantize {}` codes full-precision weights",
                            p.format(),
                            self.q.name()
                        ),
                    });
                }
            };
            tensors.insert(name.clone(), coded);
        }
        Ok(())
    }
}
