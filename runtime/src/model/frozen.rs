//! A frozen base weight `[out, in]` as the model holds it: a dense device
//! tensor, or a GGUF-quantized matrix kept in its blocks on a backend that
//! multiplies those itself ([`PeftKernels::PACKED`]). Layers ask it for
//! products and rows and never see which it is.

use super::device_params::{into_device, to_device};
use super::ops::linear_pt;
use crate::kernels::{self, PeftKernels};
use crate::weights::{HostTensor, HostWeight, PackedMatrix};
use burn::tensor::{Int, Tensor, TensorData};
use std::sync::Arc;

#[derive(Clone)]
pub enum Frozen<B: PeftKernels> {
    Dense(Tensor<B, 2>),
    Packed {
        w: Arc<PackedMatrix>,
        device: B::Device,
    },
}

impl<B: PeftKernels> Frozen<B> {
    /// `w` on `device`: kept packed when `packed` is asked for and the
    /// backend multiplies packed blocks, else expanded to f32.
    pub fn from_host(w: HostWeight, device: &B::Device, packed: bool) -> Frozen<B> {
        match w {
            HostWeight::Packed(p) if packed && B::PACKED => Frozen::Packed {
                w: p,
                device: device.clone(),
            },
            other => Frozen::Dense(into_device::<B>(other.into_dense(), device)),
        }
    }

    /// `x @ Wᵀ + b`: `x: [n, in]`, `b: [1, out]`; gradients reach `x` and `b`.
    pub fn linear(&self, x: Tensor<B, 2>, b: Option<Tensor<B, 2>>) -> Tensor<B, 2> {
        match self {
            Frozen::Dense(w) => linear_pt(x, w.clone(), b),
            Frozen::Packed { w, .. } => kernels::packed_linear(x, w, b),
        }
    }

    /// The weight as a loss kernel takes it ([`kernels::head_cross_entropy`]).
    pub fn head(&self) -> kernels::HeadWeight<B> {
        match self {
            Frozen::Dense(w) => kernels::HeadWeight::dense(w.clone()),
            Frozen::Packed { w, .. } => kernels::HeadWeight::Packed(w.clone()),
        }
    }

    /// Rows `ids` of `W` (an embedding lookup), `[ids, in]`.
    pub fn rows(&self, ids: Tensor<B, 1, Int>) -> Tensor<B, 2> {
        match self {
            Frozen::Dense(w) => w.clone().select(0, ids),
            Frozen::Packed { w, device } => {
                let ids: Vec<i64> = ids.into_data().iter::<i64>().collect();
                let k = w.cols();
                let mut out = vec![0f32; ids.len() * k];
                for (o, &id) in out.chunks_exact_mut(k).zip(&ids) {
                    // Token ids were checked against the vocabulary by the tokenizer.
                    let id = (id.max(0) as usize).min(w.rows() - 1);
                    w.dequantize_rows(id, o);
                }
                Tensor::from_data(TensorData::new(out, [ids.len(), k]), device)
            }
        }
    }

    /// `Σ_j W_ij²` per row, `[out, 1]` (DoRA's base norms).
    pub fn row_sq_norms(&self) -> Tensor<B, 2> {
        match self {
            Frozen::Dense(w) => w.clone().powf_scalar(2.0).sum_dim(1),
            Frozen::Packed { w, device } => {
                let norms = HostTensor::new(vec![w.rows(), 1], w.row_sq_norms());
                to_device::<B>(&norms, device)
            }
        }
    }
}
