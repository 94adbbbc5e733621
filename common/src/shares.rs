//! Additive secret sharing over Z_2^64.
//!
//! A vector `v` is split among `n` parties as `n − 1` uniformly random vectors and one
//! `v − Σ others` (wrapping). Any `n − 1` shares are jointly uniform and say nothing about `v`;
//! all `n` sum back to it. The randomness is a ChaCha20 CSPRNG seeded from OS entropy.

use rand::RngCore;
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;

/// A fresh ChaCha20 generator seeded from the operating system.
pub fn os_seeded() -> ChaCha20Rng {
    ChaCha20Rng::from_os_rng()
}

/// Splits `secret` into `n ≥ 1` additive shares with `rng`.
pub fn split<R: RngCore>(secret: &[u64], n: usize, rng: &mut R) -> Vec<Vec<u64>> {
    let n = n.max(1);
    let mut shares: Vec<Vec<u64>> = (0..n - 1)
        .map(|_| (0..secret.len()).map(|_| rng.next_u64()).collect())
        .collect();
    let last: Vec<u64> = secret
        .iter()
        .enumerate()
        .map(|(i, &s)| shares.iter().fold(s, |acc, sh| acc.wrapping_sub(sh[i])))
        .collect();
    shares.push(last);
    shares
}

/// Adds vectors elementwise (wrapping). Vectors of a different length than the first are an
/// error the caller must have excluded; they are ignored here.
pub fn add_into(acc: &mut [u64], v: &[u64]) {
    for (a, x) in acc.iter_mut().zip(v) {
        *a = a.wrapping_add(*x);
    }
}

/// Sums several share vectors of length `len`.
pub fn combine<'a>(len: usize, parts: impl IntoIterator<Item = &'a [u64]>) -> Vec<u64> {
    let mut acc = vec![0u64; len];
    for p in parts {
        add_into(&mut acc, p);
    }
    acc
}

/// A signed integer as an element of Z_2^64.
pub fn encode(x: i64) -> u64 {
    x as u64
}

/// An element of Z_2^64 back to a signed integer (two's complement).
pub fn decode(x: u64) -> i64 {
    x as i64
}

/// Chi-square statistic of the top byte of `samples` over 256 buckets; for uniform 64-bit
/// values it is about 255 ± 23. Used by tests of the share generator.
pub fn top_byte_chi_square(samples: &[u64]) -> f64 {
    let mut counts = [0u64; 256];
    for s in samples {
        counts[(s >> 56) as usize] += 1;
    }
    let expected = samples.len() as f64 / 256.0;
    counts
        .iter()
        .map(|&c| (c as f64 - expected).powi(2) / expected)
        .sum()
}

/// Fraction of set bits at each of the 64 positions.
pub fn bit_frequencies(samples: &[u64]) -> [f64; 64] {
    let mut ones = [0u64; 64];
    for s in samples {
        for (b, o) in ones.iter_mut().enumerate() {
            *o += (s >> b) & 1;
        }
    }
    let n = samples.len().max(1) as f64;
    ones.map(|o| o as f64 / n)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether samples look like uniform 64-bit values: chi-square of the top byte below the
    /// 99.99th percentile for 255 degrees of freedom (~352), every bit within 5 σ of ½.
    fn looks_uniform(samples: &[u64]) -> bool {
        let sigma = 0.5 / (samples.len() as f64).sqrt();
        top_byte_chi_square(samples) < 352.0
            && bit_frequencies(samples)
                .iter()
                .all(|f| (f - 0.5).abs() < 5.0 * sigma)
    }

    #[test]
    fn shares_sum_back_and_any_single_share_is_uniform() {
        let secret = [42u64, encode(-7), u64::MAX, 0];
        let mut rng = os_seeded();
        for n in 1..6 {
            let shares = split(&secret, n, &mut rng);
            assert_eq!(shares.len(), n);
            assert_eq!(
                combine(4, shares.iter().map(Vec::as_slice)),
                secret.to_vec()
            );
        }
        // The share a party receives from a fixed, highly structured input looks uniform.
        let samples: Vec<u64> = (0..20_000)
            .map(|_| split(&[5], 3, &mut rng)[0][0])
            .collect();
        assert!(looks_uniform(&samples));
        // And so does the complementary share (secret − randomness).
        let last: Vec<u64> = (0..20_000)
            .map(|_| split(&[5], 3, &mut rng)[2][0])
            .collect();
        assert!(looks_uniform(&last));
    }

    /// A generator with one bit stuck, or a narrowed range, must fail the test above.
    struct Biased(ChaCha20Rng, u64);
    impl RngCore for Biased {
        fn next_u32(&mut self) -> u32 {
            self.next_u64() as u32
        }
        fn next_u64(&mut self) -> u64 {
            self.0.next_u64() & self.1
        }
        fn fill_bytes(&mut self, dst: &mut [u8]) {
            self.0.fill_bytes(dst)
        }
    }

    #[test]
    fn the_uniformity_test_catches_biased_generators() {
        for mask in [u64::MAX >> 1, !(1u64 << 17), u64::MAX >> 8] {
            let mut rng = Biased(os_seeded(), mask);
            let samples: Vec<u64> = (0..20_000)
                .map(|_| split(&[5], 3, &mut rng)[0][0])
                .collect();
            assert!(!looks_uniform(&samples), "mask {mask:x} passed");
        }
    }

    #[test]
    fn signed_values_roundtrip() {
        for x in [0i64, 1, -1, i64::MIN, i64::MAX, 123_456_789] {
            assert_eq!(decode(encode(x)), x);
        }
        assert_eq!(decode(encode(-5).wrapping_add(encode(3))), -2);
    }
}
