//! Choosing which entries a sparse method keeps: the largest scores, or a
//! seeded sample. Shared by masks and SparseAdapter.

use crate::rng::Rng;

/// Positions of the `k` largest of `scores`, ties to the lower position,
/// sorted ascending.
pub fn largest(scores: &[f32], k: usize) -> Vec<u32> {
    let mut order: Vec<u32> = (0..scores.len() as u32).collect();
    let k = k.min(order.len());
    let better = |a: &u32, b: &u32| {
        scores[*b as usize]
            .total_cmp(&scores[*a as usize])
            .then(a.cmp(b))
    };
    if k < order.len() {
        order.select_nth_unstable_by(k, better);
    }
    let mut kept = order[..k].to_vec();
    kept.sort_unstable();
    kept
}

/// `count` of `0..n` drawn without replacement (Floyd's algorithm), sorted.
pub fn sample(n: usize, count: usize, rng: &mut Rng) -> Vec<u32> {
    let count = count.min(n);
    let mut chosen = std::collections::BTreeSet::new();
    for j in n - count..n {
        let t = (rng.next_u64() % (j as u64 + 1)) as u32;
        if !chosen.insert(t) {
            chosen.insert(j as u32);
        }
    }
    chosen.into_iter().collect()
}

/// A 0/1 mask of length `n` with ones at `kept`.
pub fn mask_of(n: usize, kept: &[u32]) -> Vec<f32> {
    let mut m = vec![0f32; n];
    for &i in kept {
        m[i as usize] = 1.0;
    }
    m
}
