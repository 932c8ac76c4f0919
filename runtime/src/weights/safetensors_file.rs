//! Reading and writing `.safetensors` files (f32, f16, bf16 read; f32 written),
//! with errors that name the file and the tensor.

use super::HostTensor;
use super::mapped::{open, release};
use crate::error::{Result, RuntimeError};
use safetensors::{Dtype, SafeTensors};
use std::collections::BTreeMap;
use std::path::Path;

/// Every floating-point tensor of a safetensors file, converted to f32.
/// Integer tensors (such as BERT's `position_ids` buffer) are skipped.
pub fn read_safetensors(path: &Path) -> Result<BTreeMap<String, HostTensor>> {
    read(path, NonFloat::Skip)
}

/// Every tensor of an adapter or checkpoint file, converted to f32; a tensor
/// that is not floating point is an error naming it (an adapter has no
/// integer tensors to skip).
pub fn read_safetensors_all_float(path: &Path) -> Result<BTreeMap<String, HostTensor>> {
    read(path, NonFloat::Refuse)
}

#[derive(Clone, Copy, PartialEq)]
enum NonFloat {
    Skip,
    Refuse,
}

fn read(path: &Path, non_float: NonFloat) -> Result<BTreeMap<String, HostTensor>> {
    let map = open(path)?;
    collect(&map, path, non_float, |bytes| release(&map, bytes))
}

/// [`read_safetensors_all_float`] of a file's bytes (`path` names it in errors).
pub fn parse_safetensors_all_float(
    bytes: &[u8],
    path: &Path,
) -> Result<BTreeMap<String, HostTensor>> {
    parse(bytes, path, NonFloat::Refuse)
}

/// Hands each floating-point tensor of a safetensors file to `f` as f32, one
/// at a time (integer tensors skipped), so that a caller that codes them
/// (`quantize nf4`) never holds the whole checkpoint in f32.
pub fn for_each_safetensor(
    path: &Path,
    f: impl FnMut(String, HostTensor) -> Result<()>,
) -> Result<()> {
    let map = open(path)?;
    each(&map, path, NonFloat::Skip, f, |bytes| release(&map, bytes))
}

fn parse(map: &[u8], path: &Path, non_float: NonFloat) -> Result<BTreeMap<String, HostTensor>> {
    collect(map, path, non_float, |_| {})
}

fn collect(
    map: &[u8],
    path: &Path,
    non_float: NonFloat,
    done: impl Fn(&[u8]),
) -> Result<BTreeMap<String, HostTensor>> {
    let mut out = BTreeMap::new();
    each(
        map,
        path,
        non_float,
        |name, t| {
            out.insert(name, t);
            Ok(())
        },
        done,
    )?;
    Ok(out)
}

/// Each tensor of the file in `map`, converted to f32 and handed to `f`;
/// `done` is told the bytes of each tensor once converted.
fn each(
    map: &[u8],
    path: &Path,
    non_float: NonFloat,
    mut f: impl FnMut(String, HostTensor) -> Result<()>,
    done: impl Fn(&[u8]),
) -> Result<()> {
    let st = SafeTensors::deserialize(map)
        .map_err(|e| RuntimeError::format(path, format!("not a valid safetensors file: {e}")))?;
    for (name, view) in st.tensors() {
        let shape = view.shape().to_vec();
        let bytes = view.data();
        let data: Vec<f32> = match view.dtype() {
            Dtype::F32 => bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::F16 => bytes
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::BF16 => bytes
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::F64 => bytes
                .chunks_exact(8)
                .map(|c| {
                    f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32
                })
                .collect(),
            other if non_float == NonFloat::Skip => {
                let _ = other;
                continue;
            }
            other => {
                return Err(RuntimeError::Tensor {
                    file: path.to_path_buf(),
                    tensor: name,
                    what: format!(
                        "has dtype {other:?}; adapter tensors are floating point (F32, F16, BF16)"
                    ),
                });
            }
        };
        if data.len() != shape.iter().product::<usize>() {
            return Err(RuntimeError::Tensor {
                file: path.to_path_buf(),
                tensor: name,
                what: format!("holds {} values for shape {shape:?}", data.len()),
            });
        }
        done(bytes);
        f(name, HostTensor::new(shape, data))?;
    }
    Ok(())
}

/// Writes f32 tensors to `path` atomically (a temporary file, then a rename).
pub fn write_safetensors(
    path: &Path,
    tensors: &BTreeMap<String, HostTensor>,
    metadata: Option<std::collections::HashMap<String, String>>,
) -> Result<()> {
    let mut views = Vec::with_capacity(tensors.len());
    let buffers: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(k, t)| {
            let bytes: Vec<u8> = t.data.iter().flat_map(|v| v.to_le_bytes()).collect();
            (k.clone(), t.shape.clone(), bytes)
        })
        .collect();
    for (k, shape, bytes) in &buffers {
        let view = safetensors::tensor::TensorView::new(Dtype::F32, shape.clone(), bytes)
            .map_err(|e| RuntimeError::format(path, format!("tensor `{k}`: {e}")))?;
        views.push((k.clone(), view));
    }
    let bytes = safetensors::serialize(views, metadata)
        .map_err(|e| RuntimeError::format(path, e.to_string()))?;
    crate::atomic::write_atomic(path, &bytes)
}
