//! Weights of a LLaMA-family GGUF file, renamed to the Hugging Face
//! checkpoint names (`blk.3.attn_q.weight` becomes
//! `model.layers.3.self_attn.q_proj.weight`), with llama.cpp's rotary row
//! permutation of Q and K undone where the converter applied it (`llama`,
//! `mistral`; Qwen2's NEOX-style rotary is stored unpermuted). Quantized
//! matrices stay in their blocks ([`PackedMatrix`], rows reordered as whole
//! blocks); the rest is read as f32.

use super::dequant::{DECODED, dequantize};
use super::{HostTensor, HostWeight, PackedMatrix};
use crate::error::{Result, RuntimeError};
use peftc_compiler::model::gguf::GgmlType;
use peftc_compiler::model::gguf::{GgufHeader, GgufTensorInfo, parse_header};
use peftc_compiler::plan::Plan;
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// The Hugging Face name of a GGUF tensor, if peftc knows it.
pub fn hf_name(gguf: &str) -> Option<String> {
    let direct = match gguf {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(d) = direct {
        return Some(d.to_string());
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, tail) = rest.split_once('.')?;
    layer.parse::<usize>().ok()?;
    let (part, kind) = tail.rsplit_once('.')?;
    let hf = match part {
        "attn_norm" => "input_layernorm",
        "ffn_norm" => "post_attention_layernorm",
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{hf}.{kind}"))
}

/// Undoes llama.cpp's permutation of Q/K rows: within each head of `head_dim`
/// rows, GGUF row `2i + j` is Hugging Face row `j * head_dim/2 + i`.
pub fn unpermute_rows(t: &HostTensor, heads: usize) -> HostTensor {
    let rows = t.rows();
    let cols = t.numel() / rows.max(1);
    let mut out = vec![0.0; t.numel()];
    for (dst, src) in unpermuted_order(rows, heads).into_iter().enumerate() {
        out[dst * cols..(dst + 1) * cols].copy_from_slice(&t.data[src * cols..(src + 1) * cols]);
    }
    HostTensor::new(t.shape.clone(), out)
}

/// The HF row order of a Q/K matrix of `rows` rows in `heads` heads: row
/// `dst` of the result is GGUF row `order[dst]` (see [`unpermute_rows`]).
fn unpermuted_order(rows: usize, heads: usize) -> Vec<usize> {
    let hd = rows / heads.max(1);
    let half = hd / 2;
    let mut order = vec![0; rows];
    for h in 0..heads {
        for i in 0..half {
            for j in 0..2 {
                order[h * hd + j * half + i] = h * hd + 2 * i + j;
            }
        }
    }
    order
}

/// How a GGUF file's quantized matrices are held once read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgufForm {
    /// In their blocks (the packed base).
    Packed,
    /// Expanded to f32 straight from the file (`train { base = f32 }`): no
    /// packed copy is made, so none is left in the allocator's pages beside
    /// the f32 one.
    F32,
}

impl GgufForm {
    /// The form `plan`'s base takes ([`Plan::base_packed`]).
    pub fn of(plan: &Plan) -> GgufForm {
        if plan.base_packed() {
            GgufForm::Packed
        } else {
            GgufForm::F32
        }
    }
}

/// Reads every tensor of the GGUF file keyed by Hugging Face name:
/// quantized matrices as `form` says, everything else as f32. Each tensor's
/// mapped pages are dropped from the resident set once it is read.
pub fn read_gguf_weights(
    path: &Path,
    heads: usize,
    kv_heads: usize,
    form: GgufForm,
) -> Result<BTreeMap<String, HostWeight>> {
    let map = super::mapped::open(path)?;
    decode_gguf(&map, path, heads, kv_heads, form, &|bytes| {
        super::mapped::release(&map, bytes)
    })
}

/// [`read_gguf_weights`] of a file's bytes (`path` names it in errors);
/// `done` is told each tensor's bytes once they are read.
pub fn decode_gguf(
    map: &[u8],
    path: &Path,
    heads: usize,
    kv_heads: usize,
    form: GgufForm,
    done: &(dyn Fn(&[u8]) + Sync),
) -> Result<BTreeMap<String, HostWeight>> {
    let header = parse_header(map, &path.display().to_string())
        .map_err(|e| RuntimeError::format(path, e.what.clone()))?;
    // llama.cpp's converter permutes Q/K rows for its interleaved rotary
    // only in LLaMA-architecture files; Qwen2 keeps Hugging Face's layout.
    let permuted = matches!(
        header
            .get("general.architecture")
            .and_then(|v| v.as_str())
            .unwrap_or("llama"),
        "llama" | "mistral"
    );
    let decoded: Vec<Result<(String, HostWeight)>> = header
        .tensors
        .par_iter()
        .filter_map(|info| hf_name(&info.name).map(|name| (name, info)))
        .map(|(name, info)| {
            let t = decode(path, &header, info, map, form, done)?;
            let heads_of = if !permuted {
                None
            } else if name.ends_with("self_attn.q_proj.weight") {
                Some(heads)
            } else if name.ends_with("self_attn.k_proj.weight") {
                Some(kv_heads)
            } else {
                None
            };
            let t = match heads_of {
                Some(h) => {
                    let rows = t.shape()[0];
                    if h == 0 || rows % h != 0 || (rows / h) % 2 != 0 {
                        return Err(RuntimeError::Tensor {
                            file: path.to_path_buf(),
                            tensor: info.name.clone(),
                            what: format!(
                                "has {rows} rows, which do not split into {h} heads of an even size (the model's head count)"
                            ),
                        });
                    }
                    match t {
                        HostWeight::Dense(t) => HostWeight::Dense(unpermute_rows(&t, h)),
                        HostWeight::Packed(p) => {
                            let re = p.with_rows(&unpermuted_order(rows, h)).ok_or_else(|| {
                                RuntimeError::Internal(format!(
                                    "`{}` is {}, whose rows cannot be reordered",
                                    info.name,
                                    p.format()
                                ))
                            })?;
                            HostWeight::Packed(Arc::new(re))
                        }
                    }
                }
                None => t,
            };
            Ok((name, t))
        })
        .collect();
    decoded.into_iter().collect()
}

/// Whether a tensor of type `ty` stays in its blocks: quantized matrices do.
fn stays_packed(ty: GgmlType, dims: usize) -> bool {
    ty.is_quantized() && dims == 2
}

fn decode(
    path: &Path,
    header: &GgufHeader,
    info: &GgufTensorInfo,
    map: &[u8],
    form: GgufForm,
    done: &(dyn Fn(&[u8]) + Sync),
) -> Result<HostWeight> {
    let err = |what: String| RuntimeError::Tensor {
        file: path.to_path_buf(),
        tensor: info.name.clone(),
        what,
    };
    let len = info.byte_len().ok_or_else(|| {
        err(format!(
            "has type {} which peftc cannot read (supported: {DECODED})",
            info.ty.name()
        ))
    })?;
    let start = header
        .data_offset
        .checked_add(info.offset)
        .ok_or_else(|| err("has an offset past the end of the file".into()))?;
    let end = start.saturating_add(len);
    if end > map.len() as u64 {
        return Err(err(format!(
            "needs bytes {start}..{end} but the file has {} (truncated?)",
            map.len()
        )));
    }
    let bytes = &map[start as usize..end as usize];
    // ggml dims are innermost-first; torch shapes are outermost-first.
    let shape: Vec<usize> = info.dims.iter().rev().map(|&d| d as usize).collect();
    if form == GgufForm::Packed && stays_packed(info.ty, shape.len()) {
        let p = PackedMatrix::new(info.ty, shape[0], shape[1], bytes.to_vec())
            .map_err(|what| err(format!("{what} (supported: {DECODED})")))?;
        done(bytes);
        return Ok(HostWeight::Packed(Arc::new(p)));
    }
    let mut data = vec![0f32; info.elements() as usize];
    if !dequantize(info.ty, bytes, &mut data) {
        return Err(err(format!(
            "has type {} which peftc cannot read (supported: {DECODED})",
            info.ty.name()
        )));
    }
    done(bytes);
    Ok(HostWeight::Dense(HostTensor::new(shape, data)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_hugging_face() {
        assert_eq!(
            hf_name("blk.12.attn_q.weight").as_deref(),
            Some("model.layers.12.self_attn.q_proj.weight")
        );
        assert_eq!(
            hf_name("blk.0.ffn_norm.weight").as_deref(),
            Some("model.layers.0.post_attention_layernorm.weight")
        );
        assert_eq!(
            hf_name("token_embd.weight").as_deref(),
            Some("model.embed_tokens.weight")
        );
        assert_eq!(hf_name("blk.x.attn_q.weight"), None);
    }

    #[test]
    fn unpermute_inverts_llama_cpp_permute() {
        // llama.cpp: w.reshape(heads, 2, hd/2, cols).swapaxes(1, 2): HF row j*hd/2+i -> GGUF row 2i+j.
        let (heads, hd, cols) = (2, 4, 3);
        let hf: Vec<f32> = (0..heads * hd * cols).map(|v| v as f32).collect();
        let mut gguf = vec![0.0; hf.len()];
        for h in 0..heads {
            for j in 0..2 {
                for i in 0..hd / 2 {
                    let src = h * hd + j * hd / 2 + i;
                    let dst = h * hd + 2 * i + j;
                    gguf[dst * cols..(dst + 1) * cols]
                        .copy_from_slice(&hf[src * cols..(src + 1) * cols]);
                }
            }
        }
        let back = unpermute_rows(&HostTensor::new(vec![heads * hd, cols], gguf), heads);
        assert_eq!(back.data, hf);
    }
}
