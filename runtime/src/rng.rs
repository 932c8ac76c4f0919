//! Deterministic randomness. Every random draw in peftc is a pure function of
//! (seed, purpose, step, index), never of a hidden generator's state, so a run
//! resumed from a checkpoint draws exactly what the uninterrupted run drew.

/// SplitMix64 step: a good 64-bit mix of `x`.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// `n` standard-normal draws (Box-Muller on 53-bit uniforms) of stream
/// `seed`: test and benchmark inputs that no other thread's use of a
/// backend's global generator can change.
pub fn normal(seed: u64, n: usize) -> Vec<f32> {
    let u = |i: u64| (mix(seed ^ mix(i)) >> 11) as f64 / (1u64 << 53) as f64;
    (0..n as u64)
        .map(|i| {
            let (u1, u2) = (u(2 * i).max(1e-300), u(2 * i + 1));
            ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
        })
        .collect()
}

/// A stream key from several parts (seed, purpose, step, site, ...).
pub fn key(parts: &[u64]) -> u64 {
    parts.iter().fold(0x5EED_u64, |acc, &p| mix(acc ^ p))
}

/// Uniform in [0, 1) (16-bit resolution) for element `i` of stream `k`.
/// Four consecutive elements share one 64-bit draw, a 16-bit lane each;
/// [`uniform4`] returns all four at once for loops over chunks.
pub fn uniform(k: u64, i: u64) -> f32 {
    lane(mix(k ^ mix(i >> 2)), i & 3)
}

/// The uniforms of elements `4q .. 4q + 4` of stream `k`.
#[inline(always)]
pub fn uniform4(k: u64, q: u64) -> [f32; 4] {
    let r = mix(k ^ mix(q));
    [lane(r, 0), lane(r, 1), lane(r, 2), lane(r, 3)]
}

/// `out[j] = uniform(k, start + j)`, one 64-bit draw per four elements.
pub fn uniforms(k: u64, start: u64, out: &mut [f32]) {
    let mut i = start;
    let end = start + out.len() as u64;
    let mut o = 0;
    while i < end {
        let r = mix(k ^ mix(i >> 2));
        let mut l = i & 3;
        while l < 4 && i < end {
            out[o] = lane(r, l);
            o += 1;
            i += 1;
            l += 1;
        }
    }
}

#[inline(always)]
fn lane(r: u64, l: u64) -> f32 {
    ((r >> (16 * l)) & 0xFFFF) as f32 * (1.0 / 65536.0)
}

/// A sequential generator for initialization and shuffling.
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

impl Rng {
    pub fn new(k: u64) -> Rng {
        Rng { state: k }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.state)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [lo, hi).
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f32 {
        (lo + (hi - lo) * self.next_f64()) as f32
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f32 {
        let u1 = self.next_f64().max(1e-300);
        let u2 = self.next_f64();
        ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
    }

    /// Fisher–Yates shuffle.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = (self.next_u64() % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    /// The normal draws have the standard normal's first moments and tail.
    #[test]
    fn normal_draws_are_standard_normal() {
        let v = super::normal(7, 200_000);
        let n = v.len() as f64;
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
        let beyond2 = v.iter().filter(|x| x.abs() > 2.0).count() as f64 / n;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.01, "variance {var}");
        // P(|Z| > 2) = 0.0455
        assert!((beyond2 - 0.0455).abs() < 0.002, "tail {beyond2}");
        assert_eq!(super::normal(7, 5), v[..5].to_vec());
    }

    use super::*;

    #[test]
    fn uniform_is_in_range_and_balanced() {
        let k = key(&[1, 2, 3]);
        let n = 100_000;
        let mean: f64 = (0..n).map(|i| uniform(k, i) as f64).sum::<f64>() / n as f64;
        assert!((mean - 0.5).abs() < 0.01, "{mean}");
        assert!((0..1000).all(|i| (0.0..1.0).contains(&uniform(k, i))));
    }

    #[test]
    fn bulk_uniforms_equal_single_ones() {
        let mut v = vec![0f32; 37];
        uniforms(99, 5, &mut v);
        for (j, x) in v.iter().enumerate() {
            assert_eq!(*x, uniform(99, 5 + j as u64));
        }
    }

    #[test]
    fn normal_has_unit_variance() {
        let mut r = Rng::new(7);
        let v: Vec<f64> = (0..50_000).map(|_| r.normal() as f64).collect();
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len() as f64;
        assert!(
            mean.abs() < 0.02 && (var - 1.0).abs() < 0.03,
            "{mean} {var}"
        );
    }
}
