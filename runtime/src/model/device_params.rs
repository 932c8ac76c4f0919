//! Trainable parameters on the device for one forward pass: every value as a
//! 2-D tensor (vectors as `[1, n]`, so they broadcast over rows).

use super::params::ParamStore;
use crate::error::{Result, RuntimeError};
use crate::weights::HostTensor;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use std::collections::BTreeMap;

pub struct Params<B: Backend> {
    map: BTreeMap<String, Tensor<B, 2>>,
}

/// A host tensor as a 2-D device tensor (vectors become `[1, n]`).
pub fn to_device<B: Backend>(t: &HostTensor, device: &B::Device) -> Tensor<B, 2> {
    let shape = match t.shape.as_slice() {
        [n] => [1, *n],
        [r, c] => [*r, *c],
        other => [
            other.iter().take(other.len().saturating_sub(1)).product(),
            *other.last().unwrap_or(&1),
        ],
    };
    Tensor::from_data(TensorData::new(t.data.clone(), shape), device)
}

impl<B: Backend> Params<B> {
    /// The store's values as constants (evaluation).
    pub fn constant(store: &ParamStore, device: &B::Device) -> Params<B> {
        Params {
            map: store
                .values
                .iter()
                .map(|(k, v)| (k.clone(), to_device::<B>(v, device)))
                .collect(),
        }
    }

    /// Several adapters' values side by side, `name@k` for adapter `k`
    /// (batched multi-adapter inference, see [`super::routes`]).
    pub fn routed(stores: &[&ParamStore], device: &B::Device) -> Params<B> {
        Params {
            map: stores
                .iter()
                .enumerate()
                .flat_map(|(k, s)| {
                    s.values
                        .iter()
                        .map(move |(n, v)| (super::routes::routed(n, k), to_device::<B>(v, device)))
                })
                .collect(),
        }
    }

    pub fn get(&self, name: &str) -> Result<Tensor<B, 2>> {
        self.map.get(name).cloned().ok_or_else(|| {
            RuntimeError::Invalid(format!(
                "internal: parameter `{name}` was not created for this plan"
            ))
        })
    }

    pub fn has(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }
}

impl<B: AutodiffBackend> Params<B> {
    /// The store's values as leaves that collect gradients (training).
    pub fn tracked(store: &ParamStore, device: &B::Device) -> Params<B> {
        Params {
            map: store
                .values
                .iter()
                .map(|(k, v)| (k.clone(), to_device::<B>(v, device).require_grad()))
                .collect(),
        }
    }

    /// Gradients of every parameter, on the host in the store's shapes.
    pub fn grads(&self, grads: &B::Gradients, store: &ParamStore) -> BTreeMap<String, HostTensor> {
        let mut out = BTreeMap::new();
        for (k, t) in &self.map {
            let shape = store
                .values
                .get(k)
                .map(|v| v.shape.clone())
                .unwrap_or_else(|| t.dims().to_vec());
            let data: Vec<f32> = match t.grad(grads) {
                Some(g) => g
                    .into_data()
                    .convert::<f32>()
                    .into_vec::<f32>()
                    .unwrap_or_default(),
                None => vec![0.0; shape.iter().product()],
            };
            out.insert(k.clone(), HostTensor::new(shape, data));
        }
        out
    }
}
