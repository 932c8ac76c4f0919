//! Many LoRA adapters on one base: one batch with rows routed to their adapter
//! (the frozen projection once for all rows, each adapter's A, B on its rows:
//! `runtime/src/model/routes.rs`) against a loop that runs each adapter's rows
//! as their own batch, at 1, 8 and 64 adapters. One MiniLM- and one 7B-shaped
//! projection; decode-shaped (one token per sequence) and prefill-shaped rows.
//!
//!     cargo bench --bench multi_lora
//!
//! Prints milliseconds per projection for both, the loop / batched ratio, and
//! the batched time relative to the single-adapter batch.

use burn::tensor::{Distribution, Tensor};
use peftc_runtime::Cpu as B;
use peftc_runtime::burn;
use peftc_runtime::kernels;
use peftc_runtime::model::routes::Routes;
use std::time::Instant;

fn rand(shape: [usize; 2]) -> Tensor<B, 2> {
    Tensor::<B, 2>::random(shape, Distribution::Normal(0.0, 0.5), &Default::default())
}

fn time(mut f: impl FnMut()) -> f64 {
    for _ in 0..2 {
        f();
    }
    let mut v: Vec<f64> = (0..7)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let device = Default::default();
    // (name, hidden, rank, sequences, tokens per sequence)
    let cases = [
        ("minilm decode", 384, 8, 64, 1),
        ("minilm prefill", 384, 8, 64, 32),
        ("7b-like decode", 4096, 16, 64, 1),
    ];
    for (name, h, r, seqs, seq) in cases {
        let w = rand([h, h]);
        let x = rand([seqs * seq, h]);
        let mut single = 0.0;
        for adapters in [1usize, 8, 64] {
            let a: Vec<Tensor<B, 2>> = (0..adapters).map(|_| rand([r, h])).collect();
            let b: Vec<Tensor<B, 2>> = (0..adapters).map(|_| rand([h, r])).collect();
            // Sorted by adapter, as `infer_routed` arranges a batch.
            let adapter_of: Vec<usize> = (0..seqs).map(|s| s * adapters / seqs).collect();
            let routes = Routes::<B>::new(&adapter_of, adapters, seq, &device);
            let batched = time(|| {
                let y = kernels::linear(x.clone(), w.clone(), None);
                let d = routes
                    .segmented(x.clone(), h, |k, xk| {
                        Ok(xk
                            .matmul(a[k].clone().transpose())
                            .matmul(b[k].clone().transpose()))
                    })
                    .expect("routed");
                let _ = (y + d).into_data();
            });
            // The loop: each adapter's sequences as their own batch.
            let rows_of: Vec<Tensor<B, 2>> = (0..adapters)
                .map(|k| {
                    let rows: Vec<Tensor<B, 2>> = (0..seqs)
                        .filter(|&s| adapter_of[s] == k)
                        .map(|s| x.clone().slice([s * seq..(s + 1) * seq, 0..h]))
                        .collect();
                    Tensor::cat(rows, 0)
                })
                .collect();
            let looped = time(|| {
                for k in 0..adapters {
                    let xk = rows_of[k].clone();
                    let y = kernels::linear(xk.clone(), w.clone(), None)
                        + xk.matmul(a[k].clone().transpose())
                            .matmul(b[k].clone().transpose());
                    let _ = y.into_data();
                }
            });
            if adapters == 1 {
                single = batched;
            }
            println!(
                "{name:<16} {adapters:>3} adapters  batched {:>8.3} ms  loop {:>8.3} ms  loop/batched {:>5.2}x  batched/single-adapter {:>5.2}x",
                batched * 1e3,
                looped * 1e3,
                looped / batched,
                batched / single
            );
        }
    }
}
