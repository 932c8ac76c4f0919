//! A packed frozen weight on a GPU backend: its codes uploaded once per
//! device (cached on the weight, [`crate::weights::Resident`]) and its
//! products run by `packed_matmul`, so the device holds the GGUF's (or NF4's)
//! bytes and never the f32 matrix.

use super::dequant::format_code;
use super::launch::{Unsupported, dims, output};
use super::packed_matmul::{TILE, packed_matmul};
use super::upload;
use crate::weights::PackedMatrix;
use burn::tensor::DType;
use burn_cubecl::CubeRuntime;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;

/// A weight's codes on one device.
#[derive(Clone)]
pub struct OnDevice<R: CubeRuntime> {
    words: CubeTensor<R>,
    aux: CubeTensor<R>,
    format: u32,
    row_bytes: u32,
    cols: u32,
}

/// `w`'s codes on `like`'s device, uploaded the first time. `Err` when no
/// kernel decodes its coding or its bytes exceed 32-bit indexing.
pub fn resident<R: CubeRuntime>(
    w: &PackedMatrix,
    like: &CubeTensor<R>,
) -> Result<OnDevice<R>, Unsupported> {
    let form = w.device_form();
    let op = "packed_linear";
    let format = format_code(form.coding).ok_or(Unsupported::Shape {
        op,
        shapes: vec![w.shape().to_vec()],
    })?;
    if form.bytes.len() >= u32::MAX as usize || w.rows() * w.cols() >= u32::MAX as usize {
        return Err(Unsupported::TooLarge {
            op,
            len: w.rows() * w.cols(),
        });
    }
    let key = format!("{:?}", like.device);
    Ok(w.resident().get_or_insert(&key, || {
        let words: Vec<u32> = form
            .bytes
            .chunks(4)
            .map(|c| {
                let mut b = [0u8; 4];
                b[..c.len()].copy_from_slice(c);
                u32::from_le_bytes(b)
            })
            .collect();
        // A kernel argument cannot be empty.
        let aux = if form.aux.is_empty() {
            vec![0f32]
        } else {
            form.aux
        };
        OnDevice {
            words: upload(like, &words, DType::U32),
            aux: upload(like, &aux, DType::F32),
            format,
            row_bytes: form.row_bytes as u32,
            cols: w.cols() as u32,
        }
    }))
}

/// `a Wᵀ` (`a: [n, cols]` → `[n, rows]`) or, `transposed`, `a W`
/// (`a: [n, rows]` → `[n, cols]`); `a` contiguous, of a float dtype.
pub fn packed_matmul_on<R: CubeRuntime>(
    a: CubeTensor<R>,
    w: &PackedMatrix,
    d: &OnDevice<R>,
    transposed: bool,
) -> CubeTensor<R> {
    let n = dims(&a)[0];
    let m = if transposed { w.cols() } else { w.rows() };
    let out = output(&a, vec![n, m]);
    let client = a.client.clone();
    let count = CubeCount::Static(m.div_ceil(TILE) as u32, n.div_ceil(TILE) as u32, 1);
    let dim = CubeDim::new_2d(TILE as u32, TILE as u32);
    macro_rules! go {
        ($f:ty) => {
            packed_matmul::launch::<$f, R>(
                &client,
                count,
                dim,
                a.into_tensor_arg(),
                d.words.clone().into_tensor_arg(),
                d.aux.clone().into_tensor_arg(),
                out.clone().into_tensor_arg(),
                d.cols,
                d.row_bytes,
                d.format,
                transposed,
            )
        };
    }
    by_dtype!(out.dtype, go);
    out
}
