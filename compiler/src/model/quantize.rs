//! `model "DIR" quantize nf4 | int8`: a full-precision checkpoint whose
//! linear layers the runtime quantizes at load, as QLoRA (bitsandbytes' NF4
//! with double-quantized block scales) and LLM.int8 (row-scaled int8) hold a
//! frozen base. Every linear layer of the base is quantized but the LM head,
//! as Hugging Face's bitsandbytes integration leaves it; embeddings and norms
//! stay in full precision.

use super::{ModelDesc, Module, ModuleKind, Role};
use serde::{Deserialize, Serialize};

/// Values per NF4 block: a quantized linear's rows must be whole blocks.
pub const NF4_BLOCK: usize = 64;
/// NF4 blocks per group of the double quantization (one f32 scale each).
pub const NF4_SCALE_GROUP: usize = 256;

/// How a full-precision base is quantized at load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Quantize {
    /// QLoRA's 4-bit NormalFloat, block 64, block scales double-quantized.
    Nf4,
    /// LLM.int8's weights: int8 codes, one absmax scale per row.
    Int8,
}

impl Quantize {
    pub const ALL: [Quantize; 2] = [Quantize::Nf4, Quantize::Int8];

    /// The spelling in a spec.
    pub fn name(self) -> &'static str {
        match self {
            Quantize::Nf4 => "nf4",
            Quantize::Int8 => "int8",
        }
    }

    pub fn parse(s: &str) -> Option<Quantize> {
        Quantize::ALL.into_iter().find(|q| q.name() == s)
    }

    /// Bytes a `[out, in]` matrix takes in this coding, or why it cannot be
    /// coded.
    pub fn bytes(self, out: usize, inp: usize) -> Result<u64, String> {
        let n = (out * inp) as u64;
        match self {
            Quantize::Nf4 => {
                if inp == 0 || !inp.is_multiple_of(NF4_BLOCK) {
                    return Err(format!(
                        "has {inp} input features, not a whole number of {NF4_BLOCK}-value NF4 blocks"
                    ));
                }
                let blocks = n / NF4_BLOCK as u64;
                Ok(n / 2 + blocks + 4 * blocks.div_ceil(NF4_SCALE_GROUP as u64) + 4)
            }
            Quantize::Int8 => Ok(n + 4 * out as u64),
        }
    }
}

/// A linear layer that `quantize` cannot code.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("`{module}` {what}")]
pub struct QuantizeError {
    pub module: String,
    pub what: String,
}

/// The modules whose weights a quantized load codes: the base's linear
/// layers but the head.
pub fn quantized_modules(model: &ModelDesc) -> impl Iterator<Item = &Module> {
    model.modules.iter().filter(|m| {
        matches!(m.kind, ModuleKind::Linear { .. }) && m.role != Some(Role::Head) && !m.tied
    })
}

impl ModelDesc {
    /// This model with its linear layers quantized by `q` at load: the
    /// description records it and counts the coded bytes. `Err` names the
    /// first layer that cannot be coded.
    pub fn quantized(mut self, q: Quantize) -> Result<ModelDesc, QuantizeError> {
        let (mut params, mut bytes) = (0u64, 0u64);
        for m in quantized_modules(&self) {
            let ModuleKind::Linear {
                in_features,
                out_features,
                ..
            } = m.kind
            else {
                continue;
            };
            bytes += q
                .bytes(out_features, in_features)
                .map_err(|what| QuantizeError {
                    module: m.path.clone(),
                    what,
                })?;
            params += (out_features * in_features) as u64;
        }
        self.quantize = Some(q);
        self.weights.dtype = q.name().to_string();
        self.weights.packed_params = params;
        self.weights.packed_bytes = bytes;
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_follow_the_codings() {
        // 320 x 384: 61,440 nibble bytes, 1,920 block codes, 8 group scales, offset.
        assert_eq!(Quantize::Nf4.bytes(320, 384), Ok(61_440 + 1_920 + 32 + 4));
        assert_eq!(Quantize::Int8.bytes(2, 3), Ok(6 + 8));
        let e = Quantize::Nf4.bytes(8, 100).unwrap_err();
        assert!(e.contains("100 input features"), "{e}");
        assert_eq!(Quantize::parse("int8"), Some(Quantize::Int8));
        assert_eq!(Quantize::parse("nf8"), None);
    }
}
