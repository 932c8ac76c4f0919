//! Trainable parameters on the device for one forward pass: every value as a
//! 2-D tensor (vectors as `[1, n]`, so they broadcast over rows).

use super::params::ParamStore;
use crate::error::{Result, RuntimeError};
use crate::kernels::PeftKernels;
use crate::weights::HostTensor;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use std::collections::BTreeMap;

pub struct Params<B: Backend> {
    map: BTreeMap<String, Tensor<B, 2>>,
}

/// Names of the tensors that collect gradients in a [`Params::tracked`].
fn trained<'a>(store: &'a ParamStore) -> impl Iterator<Item = &'a String> + 'a {
    store.values.keys().filter(|k| store.trains(k))
}

/// A host tensor as a 2-D device tensor (vectors become `[1, n]`).
pub fn to_device<B: Backend>(t: &HostTensor, device: &B::Device) -> Tensor<B, 2> {
    Tensor::from_data(TensorData::new(t.data.clone(), shape_2d(&t.shape)), device)
}

/// [`to_device`] of a tensor the caller gives up: its values move into the
/// tensor data rather than being copied, so loading a base holds each
/// weight once on the CPU (a copy's freed pages stay with the allocator,
/// see the binary's `alloc.rs`, and added 1.1 GB to an f32 Qwen2.5-0.5B).
pub fn into_device<B: Backend>(t: HostTensor, device: &B::Device) -> Tensor<B, 2> {
    let shape = shape_2d(&t.shape);
    Tensor::from_data(TensorData::new(t.data, shape), device)
}

fn shape_2d(shape: &[usize]) -> [usize; 2] {
    match shape {
        [n] => [1, *n],
        [r, c] => [*r, *c],
        other => [
            other.iter().take(other.len().saturating_sub(1)).product(),
            *other.last().unwrap_or(&1),
        ],
    }
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

impl<B: PeftKernels> Params<B> {
    /// Several adapters' values side by side, `name@k` for adapter `k`
    /// (batched multi-adapter inference, see [`super::routes`]). Where the
    /// backend runs SGMV, each LoRA factor is also stacked once here, over
    /// the adapters, under [`super::routes::stacked`] (when their ranks
    /// agree), so no forward pass concatenates them again.
    pub fn routed(stores: &[&ParamStore], device: &B::Device) -> Params<B> {
        let mut map: BTreeMap<String, Tensor<B, 2>> = stores
            .iter()
            .enumerate()
            .flat_map(|(k, s)| {
                s.values
                    .iter()
                    .map(move |(n, v)| (super::routes::routed(n, k), to_device::<B>(v, device)))
            })
            .collect();
        if B::SGMV
            && let Some(first) = stores.first()
        {
            for (name, v) in &first.values {
                let factor = name.ends_with("lora_A.weight") || name.ends_with("lora_B.weight");
                let agree = stores
                    .iter()
                    .all(|s| s.values.get(name).is_some_and(|w| w.shape == v.shape));
                if factor && agree {
                    let parts = (0..stores.len())
                        .filter_map(|k| map.get(&super::routes::routed(name, k)).cloned())
                        .collect();
                    map.insert(super::routes::stacked(name), Tensor::cat(parts, 0));
                }
            }
        }
        Params { map }
    }
}

impl<B: AutodiffBackend> Params<B> {
    /// The store's values, the trainable ones as leaves that collect
    /// gradients and the frozen ones as constants (training).
    pub fn tracked(store: &ParamStore, device: &B::Device) -> Params<B> {
        Params {
            map: store
                .values
                .iter()
                .map(|(k, v)| {
                    let t = to_device::<B>(v, device);
                    let t = if store.trains(k) { t.require_grad() } else { t };
                    (k.clone(), t)
                })
                .collect(),
        }
    }

    /// Gradients of every trainable tensor, on the host in the store's shapes.
    pub fn grads(&self, grads: &B::Gradients, store: &ParamStore) -> BTreeMap<String, HostTensor> {
        let mut out = BTreeMap::new();
        for k in trained(store) {
            let Some(t) = self.map.get(k) else { continue };
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::routes::{routed, stacked};

    fn store(rank: usize, fill: f32) -> ParamStore {
        let t = |shape: Vec<usize>| {
            let n = shape.iter().product();
            HostTensor::new(shape, vec![fill; n])
        };
        ParamStore {
            values: [
                ("q.lora_A.weight".to_string(), t(vec![rank, 6])),
                ("q.lora_B.weight".to_string(), t(vec![4, rank])),
                ("head.weight".to_string(), t(vec![2, 6])),
            ]
            .into_iter()
            .collect(),
            frozen: Default::default(),
        }
    }

    /// On an SGMV backend the LoRA factors are stacked once, adapter by
    /// adapter, and only when the ranks agree; the CPU stacks nothing.
    #[test]
    fn routed_params_stack_lora_factors_for_sgmv_only() {
        let (a, b) = (store(2, 1.0), store(2, 2.0));
        let p = Params::<burn::backend::Wgpu>::routed(&[&a, &b], &Default::default());
        let s = p.get(&stacked("q.lora_B.weight")).expect("stacked B");
        assert_eq!(s.dims(), [8, 2]);
        let v = s.into_data().into_vec::<f32>().expect("f32");
        assert_eq!(
            (v[0], v[8]),
            (1.0, 2.0),
            "adapter 0's rows, then adapter 1's"
        );
        assert!(p.has(&stacked("q.lora_A.weight")) && p.has(&routed("q.lora_A.weight", 1)));
        assert!(
            !p.has(&stacked("head.weight")),
            "only LoRA factors are stacked"
        );

        let ranks_differ =
            Params::<burn::backend::Wgpu>::routed(&[&a, &store(3, 1.0)], &Default::default());
        assert!(!ranks_differ.has(&stacked("q.lora_A.weight")));
        let cpu = Params::<crate::Cpu>::routed(&[&a, &b], &Default::default());
        assert!(!cpu.has(&stacked("q.lora_A.weight")));
    }
}
