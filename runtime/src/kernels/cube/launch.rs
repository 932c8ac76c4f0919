//! What every launch needs: contiguous f32 operands on one device, an output
//! buffer, a grid over the output's elements; and the typed refusal that
//! sends an op back to its reference composition.

use burn::tensor::{DType, Shape};
use burn_cubecl::CubeRuntime;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::tensor::CubeTensor;
use cubecl::calculate_cube_count_elemwise;
use cubecl::client::ComputeClient;
use cubecl::prelude::*;
use std::collections::BTreeSet;
use std::sync::Mutex;

/// Why a kernel declined its operands.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unsupported {
    #[error(
        "{op}: dtype {dtype:?} (the CubeCL kernels take f32, f16 and bf16, all operands alike)"
    )]
    DType { op: &'static str, dtype: DType },
    #[error("{op}: operand shapes {shapes:?} do not fit")]
    Shape {
        op: &'static str,
        shapes: Vec<Vec<usize>>,
    },
    #[error("{op}: {len} elements exceed the kernels' 32-bit indexing")]
    TooLarge { op: &'static str, len: usize },
}

/// Prints one line per op and reason the first time a kernel declines, then
/// lets the caller run the reference composition.
pub fn notice(e: &Unsupported) {
    static SEEN: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
    let line = e.to_string();
    if let Ok(mut seen) = SEEN.lock()
        && seen.insert(line.clone())
    {
        eprintln!("notice: fused kernel not used, reference path instead: {line}");
    }
}

/// A refusal, with the operands handed back for the reference path.
pub type Refused<R, const N: usize> = (Unsupported, [CubeTensor<R>; N]);

/// The float dtypes the kernels are instantiated for.
pub const FLOATS: [DType; 3] = [DType::F32, DType::F16, DType::BF16];

/// The operands made contiguous, after checking that they share one float
/// dtype of `allowed` and fit 32-bit indexing.
pub fn operands<R: CubeRuntime, const N: usize>(
    op: &'static str,
    allowed: &[DType],
    ts: [CubeTensor<R>; N],
) -> Result<[CubeTensor<R>; N], Refused<R, N>> {
    let first = ts.first().map(|t| t.dtype).unwrap_or(DType::F32);
    for t in &ts {
        if t.dtype != first || !allowed.contains(&t.dtype) {
            let dtype = t.dtype;
            return Err((Unsupported::DType { op, dtype }, ts));
        }
        let len = t.meta.num_elements();
        if len >= u32::MAX as usize {
            return Err((Unsupported::TooLarge { op, len }, ts));
        }
    }
    Ok(ts.map(into_contiguous))
}

pub fn dims<R: CubeRuntime>(t: &CubeTensor<R>) -> Vec<usize> {
    t.meta.shape().to_vec()
}

/// A contiguous output of `shape` and `like`'s dtype on `like`'s device.
pub fn output<R: CubeRuntime>(like: &CubeTensor<R>, shape: Vec<usize>) -> CubeTensor<R> {
    empty_device_contiguous_dtype(
        like.client.clone(),
        like.device.clone(),
        Shape::from(shape),
        like.dtype,
    )
}

/// A 1-D grid with one unit per element of an `n`-element output.
pub fn grid<R: CubeRuntime>(client: &ComputeClient<R>, n: usize) -> (CubeCount, CubeDim) {
    let dim = CubeDim::new(client, n.max(1));
    (calculate_cube_count_elemwise(client, n.max(1), dim), dim)
}

/// The widest vector (elements per unit) of 128-bit-or-narrower loads the
/// device prefers for `t`'s dtype that divides `t`'s row length: every
/// operand of a vectorized kernel shares that row length (or is one row).
pub fn vector_size<R: CubeRuntime>(t: &CubeTensor<R>) -> usize {
    let d = t.meta.shape().last().copied().unwrap_or(1);
    t.client
        .io_optimized_vector_sizes(t.dtype.size())
        .filter(|&v| v > 0 && d % v == 0)
        .max()
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Wgpu;
    use burn::tensor::{Int, Tensor};

    /// An operand of a dtype the kernels do not take is refused with its
    /// dtype named, and handed back intact.
    #[test]
    fn a_non_f32_operand_is_refused_by_type() {
        let device = Default::default();
        let t = Tensor::<Wgpu, 1, Int>::from_ints([1, 2, 3], &device).into_primitive();
        let dtype = t.dtype;
        match operands("gelu", &FLOATS, [t]) {
            Err((e, [back])) => {
                assert_eq!(e, Unsupported::DType { op: "gelu", dtype });
                assert!(e.to_string().starts_with("gelu: dtype"));
                assert_eq!(back.meta.num_elements(), 3);
            }
            Ok(_) => panic!("an int tensor was accepted"),
        }
    }

    /// Rows of 96 f32 take 128-bit vectors where the device loads them;
    /// rows of 33 take single elements, rows of 6 pairs at most.
    #[test]
    fn vector_size_divides_the_row_length() {
        let device = Default::default();
        let t = |d: usize| {
            Tensor::<Wgpu, 2>::zeros([3, d], &device)
                .into_primitive()
                .tensor()
        };
        let widest = vector_size(&t(96));
        assert!(widest >= 2 && 96 % widest == 0, "96 -> {widest}");
        assert_eq!(vector_size(&t(33)), 1);
        assert!(vector_size(&t(6)) <= 2);
    }
}
