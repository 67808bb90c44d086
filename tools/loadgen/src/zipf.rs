//! Zipf-distributed ranks in `1..=n` by rejection-inversion (Hörmann and Derflinger, "Rejection-
//! inversion to generate variates from monotone discrete distributions", 1996), the method of
//! Apache Commons RNG and `rand_distr`.
//!
//! `P(rank = k)` is proportional to `1 / k^s`. Set-up is O(1) whatever `n` is (no harmonic sum
//! over the key space, unlike YCSB's generator), and a draw needs about one uniform number:
//! the acceptance rate is above 0.9 for every `s`. Invariants: `n >= 1`, `s` finite and above
//! zero (checked by [`Zipf::new`]); a draw is always in `1..=n`. Rank 1 is the hottest.

use crate::rng::Rng;

/// Draws before a sample is taken as-is. Rejections are rare (under 10 % each), so this bound
/// is never reached in practice; it exists so the loop has one.
const DRAWS_MAX: u32 = 1000;

#[derive(Clone, Debug)]
pub struct Zipf {
    n: f64,
    s: f64,
    h_integral_x1: f64,
    h_integral_n: f64,
    threshold: f64,
}

impl Zipf {
    pub fn new(n: u64, s: f64) -> Result<Self, String> {
        if n == 0 {
            return Err("zipf needs at least one key".into());
        }
        if !s.is_finite() || s <= 0.0 {
            return Err(format!("zipf exponent must be above 0, not {s}"));
        }
        let n = n as f64;
        Ok(Self {
            n,
            s,
            h_integral_x1: h_integral(1.5, s) - 1.0,
            h_integral_n: h_integral(n + 0.5, s),
            threshold: 2.0 - h_integral_inverse(h_integral(2.5, s) - h(2.0, s), s),
        })
    }

    /// A rank in `1..=n`.
    pub fn sample(&self, rng: &mut Rng) -> u64 {
        let mut k = 1.0;
        for _ in 0..DRAWS_MAX {
            let u = self.h_integral_n + rng.next_f64() * (self.h_integral_x1 - self.h_integral_n);
            let x = h_integral_inverse(u, self.s);
            k = (x + 0.5).floor().clamp(1.0, self.n);
            if k - x <= self.threshold || u >= h_integral(k + 0.5, self.s) - h(k, self.s) {
                break;
            }
        }
        k as u64
    }
}

/// `h(x) = x^-s`, the unnormalised density.
fn h(x: f64, s: f64) -> f64 {
    (-s * x.ln()).exp()
}

/// An antiderivative of `h`: `(x^(1-s) - 1) / (1 - s)`, continuous at `s = 1` (`ln x`).
fn h_integral(x: f64, s: f64) -> f64 {
    let log_x = x.ln();
    helper_expm1_over((1.0 - s) * log_x) * log_x
}

fn h_integral_inverse(x: f64, s: f64) -> f64 {
    let t = (x * (1.0 - s)).max(-1.0);
    (helper_log1p_over(t) * x).exp()
}

/// `ln(1 + x) / x`, accurate near 0.
fn helper_log1p_over(x: f64) -> f64 {
    if x.abs() > 1e-8 {
        x.ln_1p() / x
    } else {
        1.0 - x * (0.5 - x * (1.0 / 3.0 - 0.25 * x))
    }
}

/// `(e^x - 1) / x`, accurate near 0.
fn helper_expm1_over(x: f64) -> f64 {
    if x.abs() > 1e-8 {
        x.exp_m1() / x
    } else {
        1.0 + x * 0.5 * (1.0 + x / 3.0 * (1.0 + 0.25 * x))
    }
}

#[cfg(test)]
mod tests {
    use super::Zipf;
    use crate::rng::Rng;

    /// Empirical frequencies of the hottest ranks match `k^-s / H(n, s)` within 5 standard
    /// deviations, and every draw is in range.
    fn check(n: u64, s: f64) {
        let zipf = Zipf::new(n, s).expect("valid parameters");
        let draws = 200_000u32;
        let mut counts = vec![0u32; n as usize + 1];
        let mut rng = Rng::new(42);
        for _ in 0..draws {
            let k = zipf.sample(&mut rng);
            assert!((1..=n).contains(&k), "rank {k} outside 1..={n}");
            counts[k as usize] += 1;
        }
        let norm: f64 = (1..=n).map(|k| (k as f64).powf(-s)).sum();
        for k in [1u64, 2, 3, 10, n] {
            let p = (k as f64).powf(-s) / norm;
            let expected = p * f64::from(draws);
            let sigma = (expected * (1.0 - p)).sqrt();
            let got = f64::from(counts[k as usize]);
            assert!(
                (got - expected).abs() <= 5.0 * sigma + 1.0,
                "n={n} s={s} rank {k}: got {got}, expected {expected:.0} ± {sigma:.0}"
            );
        }
    }

    #[test]
    fn matches_the_zipf_pmf() {
        check(1000, 0.99);
        check(100, 1.0);
        check(50, 0.5);
        check(20, 2.0);
    }

    #[test]
    fn one_key_and_bad_exponents() {
        let zipf = Zipf::new(1, 0.99).expect("valid");
        assert_eq!(zipf.sample(&mut Rng::new(1)), 1);
        assert!(Zipf::new(10, 0.0).is_err());
        assert!(Zipf::new(10, f64::NAN).is_err());
        assert!(Zipf::new(0, 1.0).is_err());
    }
}
