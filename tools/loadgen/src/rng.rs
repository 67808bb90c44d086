//! A small, seeded pseudo-random generator (SplitMix64) for choosing keys and operations.
//!
//! Not cryptographic and not meant to be: it only has to be fast, cheap to give one per worker
//! thread (no shared state, no locks), and reproducible from `--seed`. Invariant: `next_f64` is
//! uniform in `[0, 1)` with 53 bits of precision, so `next_f64() < p` has probability `p`.

/// SplitMix64 (Steele, Lea, Flood 2014): passes BigCrush, one add and three multiplies per draw.
#[derive(Clone, Debug)]
pub struct Rng {
    state: u64,
}

const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// An independent stream for worker `index` of a run seeded with `seed`.
    pub fn for_worker(seed: u64, index: usize) -> Self {
        let mut base = Self::new(seed ^ (index as u64).wrapping_mul(GOLDEN_GAMMA));
        Self::new(base.next_u64())
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN_GAMMA);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `0..n` (`n > 0`), by Lemire's multiply-shift; the bias is below `n / 2^64`.
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "below(0)");
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::Rng;

    #[test]
    fn uniform_draws_stay_in_range_and_cover_it() {
        let mut rng = Rng::new(7);
        let mut seen = [0u32; 10];
        for _ in 0..100_000 {
            let f = rng.next_f64();
            assert!((0.0..1.0).contains(&f));
            seen[rng.below(10) as usize] += 1;
        }
        for count in seen {
            assert!((9_000..11_000).contains(&count), "{seen:?}");
        }
    }

    #[test]
    fn workers_get_different_streams() {
        let a = Rng::for_worker(1, 0).next_u64();
        let b = Rng::for_worker(1, 1).next_u64();
        assert_ne!(a, b);
        assert_eq!(a, Rng::for_worker(1, 0).next_u64());
    }
}
