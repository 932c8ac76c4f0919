//! PyTorch's CPU generator, bit for bit: MT19937 seeded by
//! `torch.Generator().manual_seed(seed)`, and `Tensor.uniform_` on f32,
//! which takes one 32-bit draw per element in row-major order. Hugging Face
//! PEFT draws VeRA's frozen projections this way, and does not always save
//! them (`save_projection=False`): peftc regenerates exactly the same ones.

/// The Mersenne Twister MT19937 with torch's seeding (`init_genrand`).
pub struct Mt19937 {
    state: [u32; 624],
    index: usize,
}

impl Mt19937 {
    pub fn new(seed: u64) -> Mt19937 {
        let mut state = [0u32; 624];
        state[0] = seed as u32;
        for i in 1..624 {
            let prev = state[i - 1];
            state[i] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(i as u32);
        }
        Mt19937 { state, index: 624 }
    }

    pub fn next_u32(&mut self) -> u32 {
        if self.index >= 624 {
            for i in 0..624 {
                let y = (self.state[i] & 0x8000_0000) | (self.state[(i + 1) % 624] & 0x7fff_ffff);
                let mag = if y & 1 == 1 { 0x9908_b0df } else { 0 };
                self.state[i] = self.state[(i + 397) % 624] ^ (y >> 1) ^ mag;
            }
            self.index = 0;
        }
        let mut y = self.state[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^= y >> 18;
        y
    }
}

/// `n` values of `torch.empty(n).uniform_(-bound, bound, generator=g)` for
/// a generator seeded with `seed` that already made `skip` draws.
pub fn uniform(seed: u64, skip: u64, n: usize, bound: f32) -> Vec<f32> {
    let mut g = Mt19937::new(seed);
    for _ in 0..skip {
        g.next_u32();
    }
    let (from, to) = ((-bound) as f64, bound as f64);
    (0..n)
        .map(|_| {
            let x = (g.next_u32() & 0x00ff_ffff) as f64 / (1u64 << 24) as f64;
            (x * (to - from) + from) as f32
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first outputs of MT19937 for seed 5489 (the reference
    /// implementation's default seed) and of torch's seed 0.
    #[test]
    fn matches_the_reference_generator() {
        let mut g = Mt19937::new(5489);
        assert_eq!(g.next_u32(), 3_499_211_612);
        assert_eq!(g.next_u32(), 581_869_302);
        let mut g = Mt19937::new(0);
        assert_eq!(g.next_u32(), 2_357_136_044);
    }

    /// `torch.empty(4).uniform_(-0.125, 0.125, generator=torch.Generator().manual_seed(0))`
    /// (torch 2.15), bit for bit; then the same stream after two draws.
    #[test]
    fn uniform_is_torchs() {
        // torch's f32 values, printed exactly as f64.
        let want = [
            -0.0009358525276184082f64,
            0.06705544888973236,
            -0.10288064181804657,
            -0.09199237823486328,
        ];
        let wide = |v: Vec<f32>| v.into_iter().map(f64::from).collect::<Vec<_>>();
        assert_eq!(wide(uniform(0, 0, 4, 0.125)), want);
        assert_eq!(wide(uniform(0, 2, 2, 0.125)), want[2..]);
    }
}
