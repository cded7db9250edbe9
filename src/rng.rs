//! The one seeded random generator of the crate: SplitMix64 (Steele, Lea and Flood, 2014).
//!
//! Small, portable and the same on every platform and version: the retriever's pair sample and
//! UMAP's layout use it, and so can the random weights and the kernel tests. The folds use
//! scikit-learn's own generator instead (MT19937, in `eval::folds`), to reproduce its splits.

/// A SplitMix64 generator.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator seeded with `seed`.
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform float in `[-1, 1)`, from the top 24 bits.
    pub(crate) fn signed_unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    /// A uniform integer in `0..n`, without modulo bias.
    ///
    /// # Panics
    /// When `n` is 0 (a broken caller: there is no integer in `0..0`).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "SplitMix64::below(0)");
        let zone = u64::MAX - u64::MAX % n;
        loop {
            let x = self.next_u64();
            if x < zone {
                return x % n;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_matches_the_reference_sequence() {
        // First outputs for seed 1234567 of Vigna's splitmix64.c (prng.di.unimi.it).
        let mut r = SplitMix64::new(1_234_567);
        assert_eq!(r.next_u64(), 6_457_827_717_110_365_317);
        assert_eq!(r.next_u64(), 3_203_168_211_198_807_973);
    }

    #[test]
    fn signed_unit_covers_minus_one_to_one() {
        let mut r = SplitMix64::new(5);
        let v: Vec<f32> = (0..10_000).map(|_| r.signed_unit()).collect();
        assert!(v.iter().all(|x| (-1.0..1.0).contains(x)));
        let mean = v.iter().sum::<f32>() / v.len() as f32;
        assert!(mean.abs() < 0.03, "mean {mean}");
        assert!(v.iter().any(|&x| x < -0.99) && v.iter().any(|&x| x > 0.99));
    }

    #[test]
    fn below_stays_below() {
        let mut r = SplitMix64::new(0);
        assert!((0..1000).all(|_| r.below(7) < 7));
    }
}
