//! Cross-entropy of logits `[n, classes]`, forward (per-row log-sum-exp) and
//! backward (`softmax - onehot`, scaled), rows in parallel.

use super::simd_fn;
use rayon::prelude::*;

simd_fn! {
    fn lse_row(x: &[f32]) -> f32 {
        let max = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let mut sum = 0f64;
        for &v in x {
            sum += (v - max).exp() as f64;
        }
        max + (sum as f32).ln()
    }
}

simd_fn! {
    fn grad_row(x: &[f32], lse: f32, target: usize, scale: f32, dx: &mut [f32]) {
        for (o, &v) in dx.iter_mut().zip(x) {
            *o = (v - lse).exp() * scale;
        }
        if let Some(t) = dx.get_mut(target) {
            *t -= scale;
        }
    }
}

simd_fn! {
    fn grad_row_in_place(x: &mut [f32], lse: f32, target: usize, scale: f32) {
        for v in x.iter_mut() {
            *v = (*v - lse).exp() * scale;
        }
        if let Some(t) = x.get_mut(target) {
            *t -= scale;
        }
    }
}

/// Mean weighted cross-entropy and each row's log-sum-exp.
pub fn forward(
    logits: &[f32],
    classes: usize,
    targets: &[i64],
    weights: &[f32],
) -> (f32, Vec<f32>) {
    let lse: Vec<f32> = logits.par_chunks(classes).map(lse_row).collect();
    let count: f64 = weights.iter().map(|&w| w as f64).sum::<f64>().max(1.0);
    let mut total = 0f64;
    for (r, (&t, &w)) in targets.iter().zip(weights).enumerate() {
        if w != 0.0 {
            let t = (t.max(0) as usize).min(classes - 1);
            total += w as f64 * (lse[r] - logits[r * classes + t]) as f64;
        }
    }
    ((total / count) as f32, lse)
}

/// `dlogits = dloss * w / count * (softmax - onehot(target))`.
pub fn backward(
    logits: &[f32],
    classes: usize,
    lse: &[f32],
    targets: &[i64],
    weights: &[f32],
    dloss: f32,
) -> Vec<f32> {
    let count: f32 = weights.iter().sum::<f32>().max(1.0);
    let mut d = vec![0f32; logits.len()];
    d.par_chunks_mut(classes).enumerate().for_each(|(r, dx)| {
        let scale = dloss * weights[r] / count;
        if scale != 0.0 {
            let t = (targets[r].max(0) as usize).min(classes - 1);
            grad_row(
                &logits[r * classes..(r + 1) * classes],
                lse[r],
                t,
                scale,
                dx,
            );
        }
    });
    d
}

/// [`backward`] written over the logits themselves: the saved logits of a
/// causal LM are vocabulary-sized (100 MB for SmolLM2 at batch 4 × 128), and
/// the backward is their last use.
pub fn backward_in_place(
    logits: &mut [f32],
    classes: usize,
    lse: &[f32],
    targets: &[i64],
    weights: &[f32],
    dloss: f32,
) {
    let count: f32 = weights.iter().sum::<f32>().max(1.0);
    logits
        .par_chunks_mut(classes)
        .enumerate()
        .for_each(|(r, x)| {
            let scale = dloss * weights[r] / count;
            if scale != 0.0 {
                let t = (targets[r].max(0) as usize).min(classes - 1);
                grad_row_in_place(x, lse[r], t, scale);
            } else {
                x.fill(0.0);
            }
        });
}
