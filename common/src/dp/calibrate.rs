//! Data-independent calibration: checks the plan against the schema, the parameters and the
//! policy, splits ε over the statistics and builds one OpenDP measurement per statistic.
//!
//! Everything here depends only on (plan, schema, params, policy), so [`super::estimate`] and
//! [`super::release`] compute the very same cost.

use std::collections::HashMap;

use opendp::core::Measurement;
use opendp::domains::{AtomDomain, MapDomain, VectorDomain};
use opendp::error::Fallible;
use opendp::measurements::{make_laplace, make_laplace_threshold, make_noisy_max};
use opendp::measures::{Approximate, MaxDivergence};
use opendp::metrics::{AbsoluteDistance, L0PInfDistance, L01InfDistance, LInfDistance};
use opendp::utilities::{Above, fallible_binary_search};

use super::validate::{
    KeyMode, Kind, NumCol, Slot, Spec, check_params, check_predicate, key_mode, specs,
};
use super::{Cost, DpError, DpParams, DpPolicy};
use crate::plan::Plan;
use crate::schema::DatasetSchema;

/// Discrete Laplace noise on one integer.
pub(crate) type Laplace = Measurement<AtomDomain<i64>, AbsoluteDistance<i64>, MaxDivergence, i64>;
/// Discrete Laplace noise on per-group counts, keeping the groups above a threshold.
pub(crate) type Threshold = Measurement<
    MapDomain<AtomDomain<u32>, AtomDomain<i64>>,
    L01InfDistance<AbsoluteDistance<i64>>,
    Approximate<MaxDivergence>,
    HashMap<u32, i64>,
>;
/// Permute-and-flip selection of the lowest score.
pub(crate) type Selector =
    Measurement<VectorDomain<AtomDomain<u64>>, LInfDistance<u64>, MaxDivergence, usize>;

/// Number of MIN / MAX candidates spread across the bounds.
pub(crate) const CANDIDATES: usize = 128;
/// A calibrated discrete Laplace measurement on one integer.
pub(crate) struct Scalar {
    pub meas: Laplace,
    pub scale: f64,
    pub sensitivity: i64,
    pub epsilon: f64,
}

/// How a statistic is noised.
pub(crate) enum Noise {
    Laplace(Scalar),
    /// Noisy Σ(x - center) and noisy non-null count.
    Avg {
        sum: Scalar,
        count: Scalar,
        center: i64,
    },
    /// Report-noisy-min over `candidates` (in units); sensitivity is `candidates.len()`.
    Select {
        meas: Selector,
        scale: f64,
        candidates: Vec<i64>,
        epsilon: f64,
    },
    /// Gate count released with a threshold (unknown key domain).
    Threshold {
        meas: Threshold,
        scale: f64,
        threshold: i64,
        epsilon: f64,
        delta: f64,
    },
}

/// One released (or hidden) statistic.
pub(crate) struct Stat {
    pub kind: Kind,
    /// e.g. `AVG(age)`.
    pub label: String,
    /// Output columns fed by it (empty for the hidden gate count).
    pub outputs: Vec<String>,
    /// Schema index of the column (not for COUNT(*)).
    pub col: Option<usize>,
    pub num: Option<NumCol>,
    pub noise: Noise,
}

impl Stat {
    /// ε this statistic spends (read back from its privacy map).
    pub(crate) fn epsilon(&self) -> f64 {
        match &self.noise {
            Noise::Laplace(s) => s.epsilon,
            Noise::Avg { sum, count, .. } => sum.epsilon + count.epsilon,
            Noise::Select { epsilon, .. } | Noise::Threshold { epsilon, .. } => *epsilon,
        }
    }
}

/// Everything decided before looking at the data.
pub(crate) struct Calibration {
    pub dataset: String,
    /// Schema indices of the GROUP BY columns.
    pub group_cols: Vec<usize>,
    pub keys: KeyMode,
    pub stats: Vec<Stat>,
    pub slots: Vec<Slot>,
    /// The COUNT(*) statistic used for HAVING, the policy floor and the key threshold.
    pub gate: Option<usize>,
    /// A group is released only if its noisy gate count is at least this.
    pub min_count: u64,
    pub cost: Cost,
}

fn internal(dataset: &str) -> impl Fn(opendp::error::Error) -> DpError + '_ {
    move |e| DpError::Internal {
        dataset: dataset.to_string(),
        message: e.to_string(),
    }
}

/// Smallest discrete Laplace scale whose privacy map at `sensitivity` is at most `eps`.
pub(crate) fn calibrate_laplace(sensitivity: i64, eps: f64) -> Fallible<Scalar> {
    let build = |scale: f64| {
        make_laplace::<_, _, MaxDivergence>(
            AtomDomain::<i64>::default(),
            AbsoluteDistance::default(),
            scale,
            None,
        )
    };
    let scale = if sensitivity == 0 {
        0.0
    } else {
        let upper = 2.0 * sensitivity as f64 / eps + 1.0;
        fallible_binary_search(
            |s: &f64| Ok(build(*s)?.map(&sensitivity)? <= eps),
            (0.0, upper),
        )?
    };
    let meas = build(scale)?;
    let epsilon = meas.map(&sensitivity)?;
    Ok(Scalar {
        meas,
        scale,
        sensitivity,
        epsilon,
    })
}

/// Gate count with threshold: scale from ε, then the smallest threshold whose δ fits.
fn calibrate_threshold(eps: f64, delta: f64) -> Fallible<Noise> {
    let scale = calibrate_laplace(1, eps)?.scale;
    let build = |t: i64| {
        let domain = MapDomain::new(AtomDomain::<u32>::default(), AtomDomain::<i64>::default());
        make_laplace_threshold::<_, _, Approximate<MaxDivergence>>(
            domain,
            L0PInfDistance(AbsoluteDistance::default()),
            scale,
            t,
            None,
        )
    };
    // One row changes one group's count by one: (l0, l1, l∞) = (1, 1, 1).
    let d_in = (1u32, 1i64, 1i64);
    let fits = |t: &i64| -> Fallible<bool> { Ok(build(*t)?.map(&d_in)?.1 <= delta) };
    let threshold = if fits(&1)? {
        1
    } else {
        fallible_binary_search(fits, Above(1i64))?
    };
    let meas = build(threshold)?;
    let (epsilon, delta) = meas.map(&d_in)?;
    Ok(Noise::Threshold {
        meas,
        scale,
        threshold,
        epsilon,
        delta,
    })
}

/// MIN / MAX candidates: up to [`CANDIDATES`] values evenly spread over `[lo, hi]` (units).
pub(crate) fn candidates(lo: i64, hi: i64) -> Vec<i64> {
    let span = i128::from(hi) - i128::from(lo);
    if span < CANDIDATES as i128 {
        return (lo..=hi).collect();
    }
    let steps = (CANDIDATES - 1) as i128;
    let mut out: Vec<i64> = (0..=steps)
        .map(|i| (i128::from(lo) + (span * i + steps / 2) / steps) as i64)
        .collect();
    out.dedup();
    out
}

fn calibrate_select(candidates: Vec<i64>, eps: f64) -> Fallible<Noise> {
    let k = candidates.len();
    let build = |scale: f64| {
        let domain = VectorDomain::new(AtomDomain::<u64>::default()).with_size(k);
        make_noisy_max(domain, LInfDistance::new(true), MaxDivergence, scale, true)
    };
    // Scores are K·count + tie-break rank; one row moves every count by 0 or 1 in the same
    // direction, so the score vector moves by at most K, monotonically.
    let d_in = k as u64;
    let upper = 2.0 * k as f64 / eps + 1.0;
    let scale = fallible_binary_search(|s: &f64| Ok(build(*s)?.map(&d_in)? <= eps), (0.0, upper))?;
    let meas = build(scale)?;
    let epsilon = meas.map(&d_in)?;
    Ok(Noise::Select {
        meas,
        scale,
        candidates,
        epsilon,
    })
}

fn calibrate_spec(
    ds: &str,
    spec: &Spec,
    share: f64,
    threshold_delta: Option<f64>,
) -> Result<Noise, DpError> {
    let err = internal(ds);
    let num = spec.num.as_ref();
    Ok(match (spec.kind, num, threshold_delta) {
        (Kind::CountAll, _, Some(delta)) => calibrate_threshold(share, delta).map_err(err)?,
        (Kind::CountAll | Kind::CountCol, _, _) => {
            Noise::Laplace(calibrate_laplace(1, share).map_err(err)?)
        }
        (Kind::Sum, Some(n), _) => {
            // |Σ clamp(x)| changes by at most max(|L|, |U|) when one row is added or removed.
            let sens = n.lo.unsigned_abs().max(n.hi.unsigned_abs()) as i64;
            Noise::Laplace(calibrate_laplace(sens, share).map_err(err)?)
        }
        (Kind::Avg, Some(n), _) => {
            // Σ (clamp(x) - center) changes by at most max(U - center, center - L).
            let center = (i128::from(n.lo) + i128::from(n.hi)).div_euclid(2) as i64;
            let sens = (n.hi - center).max(center - n.lo);
            let sum = calibrate_laplace(sens, share / 2.0).map_err(&err)?;
            let count = calibrate_laplace(1, share / 2.0).map_err(&err)?;
            Noise::Avg { sum, count, center }
        }
        (Kind::Min | Kind::Max, Some(n), _) => {
            calibrate_select(candidates(n.lo, n.hi), share).map_err(err)?
        }
        _ => {
            let message = format!("statistic {} has no numeric column", spec.label);
            return Err(DpError::Internal {
                dataset: ds.to_string(),
                message,
            });
        }
    })
}

/// Validates and calibrates a plan. Never looks at rows.
pub(crate) fn calibrate(
    plan: &Plan,
    schema: &DatasetSchema,
    params: &DpParams,
    policy: &DpPolicy,
) -> Result<Calibration, DpError> {
    let dataset = schema.name.clone();
    check_params(&dataset, params, policy)?;
    if !plan.dataset.eq_ignore_ascii_case(&schema.name) {
        return Err(DpError::DatasetMismatch {
            plan: plan.dataset.clone(),
            dataset,
        });
    }
    if plan.outputs.is_empty() {
        return Err(DpError::Unsupported {
            dataset,
            reason: "the query selects nothing".to_string(),
        });
    }
    if let Some(p) = &plan.filter {
        check_predicate(p, schema)?;
    }
    let group_cols = plan
        .group_by
        .iter()
        .map(|g| {
            schema
                .column_index(g)
                .ok_or_else(|| DpError::UnknownColumn {
                    dataset: dataset.clone(),
                    column: g.clone(),
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let (mut specs, slots) = specs(plan, schema)?;

    let keys = key_mode(schema, &group_cols, params, policy)?;
    let min_count = plan
        .having_min_count
        .unwrap_or(0)
        .max(policy.min_group_size);
    let threshold = matches!(keys, KeyMode::Threshold);
    let gate = if threshold || min_count > 0 {
        Some(match specs.iter().position(|s| s.kind == Kind::CountAll) {
            Some(i) => i,
            None => {
                let label = "COUNT(*)".to_string();
                specs.push(Spec {
                    kind: Kind::CountAll,
                    label,
                    outputs: Vec::new(),
                    col: None,
                    num: None,
                });
                specs.len() - 1
            }
        })
    } else {
        None
    };

    // Even split; shrink the share by a hair if float rounding pushed the sum over ε.
    let mut share = params.epsilon / specs.len().max(1) as f64;
    for _ in 0..8 {
        let mut stats = Vec::with_capacity(specs.len());
        for (i, spec) in specs.iter().enumerate() {
            let td = (threshold && Some(i) == gate).then_some(params.delta);
            let noise = calibrate_spec(&dataset, spec, share, td)?;
            stats.push(noise);
        }
        let stats: Vec<Stat> = specs
            .iter()
            .zip(stats)
            .map(|(s, noise)| Stat {
                kind: s.kind,
                label: s.label.clone(),
                outputs: s.outputs.clone(),
                col: s.col,
                num: s.num.clone(),
                noise,
            })
            .collect();
        let epsilon: f64 = stats.iter().map(Stat::epsilon).sum();
        let delta = stats
            .iter()
            .map(|s| match s.noise {
                Noise::Threshold { delta, .. } => delta,
                _ => 0.0,
            })
            .sum();
        if epsilon <= params.epsilon && delta <= params.delta {
            let cost = Cost { epsilon, delta };
            return Ok(Calibration {
                dataset,
                group_cols,
                keys,
                stats,
                slots,
                gate,
                min_count,
                cost,
            });
        }
        share *= 1.0 - 1e-9;
    }
    Err(DpError::Internal {
        dataset,
        message: "could not fit the statistics within epsilon".to_string(),
    })
}
