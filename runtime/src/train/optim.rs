//! AdamW exactly as `torch.optim.AdamW` (decoupled weight decay, bias
//! correction, eps outside the square root), on host f32 buffers, and SGD.

use crate::weights::HostTensor;
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq)]
pub struct AdamW {
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    /// Steps taken.
    pub t: u64,
    pub m: BTreeMap<String, Vec<f32>>,
    pub v: BTreeMap<String, Vec<f32>>,
    /// State a method keeps beside the optimizer's (AdaLoRA's smoothed
    /// importance), checkpointed with it.
    pub extra: BTreeMap<String, Vec<f32>>,
}

impl AdamW {
    pub fn new(weight_decay: f32) -> AdamW {
        AdamW {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay,
            t: 0,
            m: BTreeMap::new(),
            v: BTreeMap::new(),
            extra: BTreeMap::new(),
        }
    }

    /// One update of every parameter in `params` with its gradient in `grads`.
    pub fn step(
        &mut self,
        params: &mut BTreeMap<String, HostTensor>,
        grads: &BTreeMap<String, HostTensor>,
        lr: f32,
    ) {
        self.t += 1;
        let bc1 = 1.0 - self.beta1.powi(self.t as i32);
        let bc2_sqrt = (1.0 - self.beta2.powi(self.t as i32)).sqrt();
        let step_size = lr / bc1;
        for (name, p) in params.iter_mut() {
            let Some(g) = grads.get(name) else { continue };
            let m = self
                .m
                .entry(name.clone())
                .or_insert_with(|| vec![0.0; p.numel()]);
            let v = self
                .v
                .entry(name.clone())
                .or_insert_with(|| vec![0.0; p.numel()]);
            let decay = 1.0 - lr * self.weight_decay;
            for i in 0..p.data.len() {
                let gi = g.data[i];
                p.data[i] *= decay;
                m[i] = self.beta1 * m[i] + (1.0 - self.beta1) * gi;
                v[i] = self.beta2 * v[i] + (1.0 - self.beta2) * gi * gi;
                let denom = v[i].sqrt() / bc2_sqrt + self.eps;
                p.data[i] -= step_size * m[i] / denom;
            }
        }
    }
}

/// Scales all gradients so their global L2 norm is at most `max_norm`
/// (`torch.nn.utils.clip_grad_norm_`). Returns the norm before clipping.
pub fn clip_grad_norm(grads: &mut BTreeMap<String, HostTensor>, max_norm: f32) -> f32 {
    let total: f64 = grads
        .values()
        .flat_map(|g| g.data.iter())
        .map(|&x| (x as f64) * (x as f64))
        .sum();
    let norm = total.sqrt() as f32;
    if max_norm > 0.0 {
        let coef = max_norm / (norm + 1e-6);
        if coef < 1.0 {
            for g in grads.values_mut() {
                g.data.iter_mut().for_each(|x| *x *= coef);
            }
        }
    }
    norm
}

/// Plain SGD.
pub fn sgd_step(
    params: &mut BTreeMap<String, HostTensor>,
    grads: &BTreeMap<String, HostTensor>,
    lr: f32,
    weight_decay: f32,
) {
    for (name, p) in params.iter_mut() {
        if let Some(g) = grads.get(name) {
            for (x, gi) in p.data.iter_mut().zip(&g.data) {
                *x -= lr * (gi + weight_decay * *x);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Closed form of the first AdamW step: m̂ = g, v̂ = g², so the update is
    /// lr * g / (|g| + eps) ≈ lr * sign(g), after decay p *= 1 - lr*wd.
    #[test]
    fn first_step_is_sign_times_lr() {
        let mut params = BTreeMap::from([(
            "w".to_string(),
            HostTensor::new(vec![3], vec![1.0, -2.0, 0.5]),
        )]);
        let grads = BTreeMap::from([(
            "w".to_string(),
            HostTensor::new(vec![3], vec![0.3, -4.0, 1e-3]),
        )]);
        let mut opt = AdamW::new(0.01);
        opt.step(&mut params, &grads, 0.1);
        let p = &params["w"].data;
        let want = |p0: f32, g: f32| p0 * (1.0 - 0.1 * 0.01) - 0.1 * g / (g.abs() + 1e-8);
        assert!((p[0] - want(1.0, 0.3)).abs() < 1e-6);
        assert!((p[1] - want(-2.0, -4.0)).abs() < 1e-6);
        assert!((p[2] - want(0.5, 1e-3)).abs() < 1e-5);
    }

    #[test]
    fn clipping_scales_to_the_max_norm() {
        let mut g = BTreeMap::from([("a".to_string(), HostTensor::new(vec![2], vec![3.0, 4.0]))]);
        let n = clip_grad_norm(&mut g, 1.0);
        assert!((n - 5.0).abs() < 1e-6);
        let d = &g["a"].data;
        assert!(((d[0] * d[0] + d[1] * d[1]).sqrt() - 1.0).abs() < 1e-5);
    }
}
