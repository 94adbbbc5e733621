//! Calibrated discrete Laplace noise on one integer, for the backends that add noise outside
//! the DP engine: the HE node adds it to encrypted results, an MPC party to its own vector
//! before it is split into shares.
//!
//! The noise is drawn by invoking OpenDP's `make_laplace` measurement (discrete Laplace on
//! `AtomDomain<i64>`) on zero, so `x + sample()` has exactly the distribution of the
//! measurement applied to `x`; the scale is the smallest whose privacy map at the sensitivity
//! is at most the ε given, and the ε reported is read back from that map.

use super::DpError;
use super::calibrate::{Scalar, calibrate_laplace};

/// Discrete Laplace noise calibrated to one sensitivity and ε.
pub struct IntegerNoise {
    scalar: Scalar,
}

impl std::fmt::Debug for IntegerNoise {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IntegerNoise")
            .field("scale", &self.scalar.scale)
            .field("sensitivity", &self.scalar.sensitivity)
            .field("epsilon", &self.scalar.epsilon)
            .finish()
    }
}

fn internal(what: &str) -> impl Fn(opendp::error::Error) -> DpError + '_ {
    move |e| DpError::Internal {
        dataset: what.to_string(),
        message: e.to_string(),
    }
}

impl IntegerNoise {
    /// Noise for a value whose sensitivity (under adding or removing one row) is
    /// `sensitivity`, spending at most `epsilon`.
    pub fn calibrate(sensitivity: i64, epsilon: f64, what: &str) -> Result<IntegerNoise, DpError> {
        if !(epsilon.is_finite() && epsilon > 0.0) {
            return Err(DpError::InvalidEpsilon {
                dataset: what.to_string(),
                value: epsilon,
            });
        }
        if sensitivity < 0 {
            return Err(DpError::Internal {
                dataset: what.to_string(),
                message: format!("negative sensitivity {sensitivity}"),
            });
        }
        let scalar = calibrate_laplace(sensitivity, epsilon).map_err(internal(what))?;
        Ok(IntegerNoise { scalar })
    }

    /// One draw of the noise.
    pub fn sample(&self) -> Result<i64, DpError> {
        self.scalar.meas.invoke(&0).map_err(internal("noise"))
    }

    /// The discrete Laplace scale.
    pub fn scale(&self) -> f64 {
        self.scalar.scale
    }

    /// The sensitivity it was calibrated to.
    pub fn sensitivity(&self) -> i64 {
        self.scalar.sensitivity
    }

    /// ε it spends (from the measurement's privacy map at the sensitivity).
    pub fn epsilon(&self) -> f64 {
        self.scalar.epsilon
    }

    /// Half-width `a` with `P(|noise| > a) <= alpha` (OpenDP's accuracy of discrete Laplace).
    pub fn half_width(&self, alpha: f64) -> Option<f64> {
        half_width(self.scalar.scale, alpha)
    }

    /// A bound `t` with `P(|noise| > t)` below 10⁻¹⁸: the headroom a fixed-width encoding of
    /// a noisy value needs.
    pub fn tail_bound(&self) -> u64 {
        (self.scalar.scale * 42.0).ceil() as u64 + 1
    }
}

/// Half-width `a` of discrete Laplace noise of `scale` with `P(|noise| > a) <= alpha`.
pub fn half_width(scale: f64, alpha: f64) -> Option<f64> {
    if scale == 0.0 {
        return Some(0.0);
    }
    opendp::accuracy::discrete_laplacian_scale_to_accuracy(scale, alpha).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The empirical distribution of the draws matches discrete Laplace of the reported scale
    /// (Kolmogorov–Smirnov distance against the exact CDF).
    #[test]
    fn draws_follow_the_claimed_discrete_laplace() {
        let n = IntegerNoise::calibrate(10, 0.5, "test").expect("noise");
        assert!(n.epsilon() <= 0.5 + 1e-12);
        let scale = n.scale();
        assert!((scale - 20.0).abs() < 0.5, "scale {scale}");
        let mut draws: Vec<i64> = (0..4000).map(|_| n.sample().expect("draw")).collect();
        draws.sort_unstable();
        // P(Z <= k) for discrete Laplace with parameter t = exp(-1/scale).
        let t = (-1.0 / scale).exp();
        let cdf = |k: i64| -> f64 {
            if k < 0 {
                t.powi((-k) as i32) / (1.0 + t)
            } else {
                1.0 - t.powi((k + 1) as i32) / (1.0 + t)
            }
        };
        let len = draws.len() as f64;
        let mut d: f64 = 0.0;
        let mut i = 0;
        while i < draws.len() {
            let k = draws[i];
            let mut j = i;
            while j < draws.len() && draws[j] == k {
                j += 1;
            }
            let below = i as f64 / len;
            let upto = j as f64 / len;
            d = d.max((upto - cdf(k)).abs()).max((below - cdf(k - 1)).abs());
            i = j;
        }
        // The 0.001 critical value of the KS statistic is about 1.95 / sqrt(n).
        assert!(d < 1.95 / len.sqrt(), "KS distance {d}");
        let a = n.half_width(0.05).expect("ci");
        let inside = draws.iter().filter(|z| (z.abs() as f64) <= a).count() as f64 / len;
        assert!(
            inside >= 0.93,
            "{inside} of draws inside the 95% half-width {a}"
        );
    }

    #[test]
    fn bad_parameters_are_refused() {
        assert!(IntegerNoise::calibrate(1, 0.0, "x").is_err());
        assert!(IntegerNoise::calibrate(1, f64::NAN, "x").is_err());
        assert!(IntegerNoise::calibrate(-1, 1.0, "x").is_err());
        let zero = IntegerNoise::calibrate(0, 1.0, "x").expect("zero sensitivity");
        assert_eq!(zero.sample().expect("draw"), 0);
    }
}
