//! Each fused op against its unfused reference on the same backend (burn's Flex
//! CPU backend under autodiff), forward + backward, at MiniLM, SmolLM2 and
//! 7B-like training shapes. "Fused" is peftc's kernel (`kernels::*`: one pass,
//! hand-written backward); "reference" is the same math composed from plain
//! burn ops (`kernels::reference::*`), differentiated by burn's autodiff.
//!
//!     cargo bench --bench kernels [-- FILTER]
//!
//! Prints one line per op and shape: milliseconds for each path, the speedup,
//! and the fused path's throughput (GFLOP/s for products, GB/s otherwise).

use burn::tensor::{Distribution, Tensor};
use peftc_compiler::methods::Activation;
use peftc_runtime::CpuTrain as B;
use peftc_runtime::burn;
use peftc_runtime::kernels::{self, AdapterFn, AdapterParams, AttnShape, reference};
use peftc_runtime::model::{Frozen, dora_row_norm};
use std::sync::Arc;
use std::time::Instant;

struct Shape {
    name: &'static str,
    rows: usize,
    seq: usize,
    hidden: usize,
    ff: usize,
    heads: usize,
    kv_heads: usize,
    r: usize,
}

const SHAPES: &[Shape] = &[
    Shape {
        name: "minilm b16 s64",
        rows: 16,
        seq: 64,
        hidden: 384,
        ff: 1536,
        heads: 12,
        kv_heads: 12,
        r: 8,
    },
    Shape {
        name: "smollm2 b4 s128",
        rows: 4,
        seq: 128,
        hidden: 576,
        ff: 1536,
        heads: 9,
        kv_heads: 3,
        r: 8,
    },
    Shape {
        name: "7b-like b1 s256",
        rows: 1,
        seq: 256,
        hidden: 4096,
        ff: 11008,
        heads: 32,
        kv_heads: 32,
        r: 16,
    },
];

fn rand(shape: [usize; 2], grad: bool) -> Tensor<B, 2> {
    let t = Tensor::<B, 2>::random(shape, Distribution::Normal(0.0, 0.5), &Default::default());
    if grad { t.require_grad() } else { t }
}

/// Median seconds of `f` (forward + backward) over 11 runs after 3 warm-ups
/// (thread pools, first-touch page faults).
fn time(mut f: impl FnMut()) -> f64 {
    for _ in 0..3 {
        f();
    }
    let mut v: Vec<f64> = (0..11)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn backward(y: Tensor<B, 2>) {
    let _ = y.sum().backward();
}

fn report(op: &str, shape: &str, fused: f64, reference: f64, work: f64, flops: bool) {
    let rate = work / fused / 1e9;
    println!(
        "{op:<22} {shape:<16} fused {:>8.2} ms  reference {:>8.2} ms  speedup {:>5.2}x  {rate:>7.1} {}",
        fused * 1e3,
        reference * 1e3,
        reference / fused,
        if flops { "GFLOP/s" } else { "GB/s" }
    );
}

fn main() {
    let filter = std::env::args().nth(1).filter(|a| !a.starts_with('-'));
    let want = |op: &str| filter.as_deref().is_none_or(|f| op.contains(f));
    for s in SHAPES {
        let n = s.rows * s.seq;
        let (h, ff, r) = (s.hidden, s.ff, s.r);
        let bytes = |elems: usize| (elems * 4) as f64;

        if want("lora_linear") {
            // A frozen base projection with a LoRA update: y = x·Wᵀ + s·(x·Aᵀ)·Bᵀ.
            let x = rand([n, h], true);
            let w = rand([h, h], false);
            let (a, b) = (rand([r, h], true), rand([h, r], true));
            let lora = |y: Tensor<B, 2>, x: Tensor<B, 2>| {
                y + x
                    .matmul(a.clone().transpose())
                    .matmul(b.clone().transpose())
                    .mul_scalar(2.0)
            };
            // The model's path: the frozen linear kernel, then LoRA's
            // expand-and-add onto its output (BLAS accumulation, no delta tensor).
            let fused = time(|| {
                let y = kernels::linear(x.clone(), w.clone(), None);
                let u = kernels::linear(x.clone(), a.clone(), None);
                backward(kernels::lora_expand(y, u, b.clone(), 2.0))
            });
            let refr = time(|| {
                backward(lora(
                    reference::linear(x.clone(), w.clone(), None),
                    x.clone(),
                ))
            });
            let flops = 3.0 * 2.0 * (n * h * h) as f64;
            report("lora_linear", s.name, fused, refr, flops, true);
            // DoRA's step on the same linear as the model runs it (no dropout):
            // the LoRA delta, the row norm from ||W||² (kept from loading),
            // W Aᵀ and A Aᵀ, then the magnitude mix.
            let m = rand([1, h], true);
            let w_sq = w.clone().powf_scalar(2.0).sum_dim(1);
            let frozen = Frozen::Dense(w.clone());
            let dora = time(|| {
                let y = kernels::linear(x.clone(), w.clone(), None);
                let u = kernels::linear(x.clone(), a.clone(), None).mul_scalar(2.0);
                let delta = kernels::linear(u, b.clone(), None);
                let norm = dora_row_norm(
                    &frozen,
                    w_sq.clone(),
                    a.clone().detach(),
                    b.clone().detach(),
                    2.0,
                );
                backward(kernels::dora_mix(y.clone(), y, delta, m.clone() / norm))
            });
            println!(
                "{:<22} {:<16} step  {:>8.2} ms = {:.2}x the LoRA step (target <= 1.3x; HF PEFT's DoRA: about 2x)",
                "dora_linear",
                s.name,
                dora * 1e3,
                dora / fused
            );
        }
        if want("ffn_linear") {
            let x = rand([n, h], true);
            let w = rand([ff, h], false);
            let fused = time(|| backward(kernels::linear(x.clone(), w.clone(), None)));
            let refr = time(|| backward(reference::linear(x.clone(), w.clone(), None)));
            report(
                "ffn_linear (frozen)",
                s.name,
                fused,
                refr,
                2.0 * 2.0 * (n * h * ff) as f64,
                true,
            );
        }
        if want("ia3_scale") {
            let x = rand([n, ff], true);
            let l = rand([1, ff], true);
            let fused = time(|| backward(kernels::scale_cols(x.clone(), l.clone())));
            let refr = time(|| backward(reference::scale_cols(x.clone(), l.clone())));
            report("ia3_scale", s.name, fused, refr, bytes(4 * n * ff), false);
        }
        if want("dora_mix") {
            let (y, base, delta) = (rand([n, h], true), rand([n, h], true), rand([n, h], true));
            let mag = rand([1, h], true);
            let fused = time(|| {
                backward(kernels::dora_mix(
                    y.clone(),
                    base.clone(),
                    delta.clone(),
                    mag.clone(),
                ))
            });
            let refr = time(|| {
                backward(reference::dora_mix(
                    y.clone(),
                    base.clone(),
                    delta.clone(),
                    mag.clone(),
                ))
            });
            report("dora_mix", s.name, fused, refr, bytes(8 * n * h), false);
        }
        if want("adapter") {
            // A serial bottleneck adapter (bottleneck 8r) after a block's output.
            let bn = 8 * r;
            let x = rand([n, h], true);
            let w = AdapterParams {
                down: rand([bn, h], true),
                down_bias: rand([1, bn], true),
                up: rand([h, bn], true),
                up_bias: rand([1, h], true),
            };
            let f = AdapterFn {
                act: Activation::Gelu,
                scale: 1.0,
            };
            let fused = time(|| backward(kernels::adapter(x.clone(), x.clone(), w.clone(), f)));
            let refr = time(|| backward(reference::adapter(x.clone(), x.clone(), w.clone(), f).0));
            // Two products forward, four backward, each 2·n·h·bn.
            let flops = 6.0 * 2.0 * (n * h * bn) as f64;
            report("adapter (serial)", s.name, fused, refr, flops, true);
            // The same math from peftc's separate kernels (the model's path
            // before the adapter was one op): what fusing adds beyond BLAS.
            let composed = time(|| {
                let z = kernels::linear(x.clone(), w.down.clone(), Some(w.down_bias.clone()));
                let u = kernels::linear(kernels::gelu(z), w.up.clone(), Some(w.up_bias.clone()));
                backward(x.clone() + u.mul_scalar(f.scale))
            });
            report("adapter vs kernels", s.name, fused, composed, flops, true);
        }
        if want("layer_norm") {
            let x = rand([n, h], true);
            let (g, b) = (rand([1, h], true), rand([1, h], true));
            let fused =
                time(|| backward(kernels::layer_norm(x.clone(), g.clone(), b.clone(), 1e-12)));
            let refr = time(|| {
                backward(reference::layer_norm(
                    x.clone(),
                    g.clone(),
                    b.clone(),
                    1e-12,
                ))
            });
            report("layer_norm", s.name, fused, refr, bytes(5 * n * h), false);
        }
        if want("gelu") {
            let x = rand([n, ff], true);
            let fused = time(|| backward(kernels::gelu(x.clone())));
            let refr = time(|| backward(reference::gelu(x.clone())));
            report("gelu", s.name, fused, refr, bytes(4 * n * ff), false);
        }
        if want("attention") {
            let kvw = s.kv_heads * (h / s.heads);
            let (q, k, v) = (
                rand([n, h], true),
                rand([n, kvw], true),
                rand([n, kvw], true),
            );
            let shape = AttnShape {
                rows: s.rows,
                seq: s.seq,
                heads: s.heads,
                kv_heads: s.kv_heads,
                head_dim: h / s.heads,
                prefix: 0,
                causal: s.kv_heads != s.heads || s.hidden > 1000,
                key_mask: Arc::new(vec![1u8; n]),
                dropout: 0.0,
                dropout_key: 0,
            };
            let fused = time(|| {
                backward(kernels::attention(
                    q.clone(),
                    k.clone(),
                    v.clone(),
                    None,
                    &shape,
                ))
            });
            let refr = time(|| {
                backward(
                    reference::attention(q.clone(), k.clone(), v.clone(), None, None, None, &shape)
                        .0,
                )
            });
            let flops = 3.0 * 2.0 * 2.0 * (s.rows * s.heads * s.seq * s.seq * (h / s.heads)) as f64;
            report("attention", s.name, fused, refr, flops, true);
        }
    }
}
