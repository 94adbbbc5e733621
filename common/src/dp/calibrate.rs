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

/// Where an average's denominator (the number of values) comes from.
pub(crate) enum Denominator {
    /// Its own noisy non-null count.
    Own(Scalar),
    /// The group's noisy gate `COUNT(*)` (the column is `not_null`, so it counts the same rows).
    Gate,
    /// The dataset's public row count (ungrouped, unfiltered, `not_null` column).
    PublicRows,
}

/// How a statistic is noised.
pub(crate) enum Noise {
    Laplace(Scalar),
    /// `center · n + noisy Σ(x - center)` with `n` the public row count (ungrouped, unfiltered,
    /// `not_null` column): the sum's sensitivity is half the bounds' width, not the largest bound.
    CenteredSum {
        sum: Scalar,
        center: i64,
    },
    /// `center + noisy Σ(x - center) / denominator`.
    Avg {
        sum: Scalar,
        count: Denominator,
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
            Noise::Laplace(s) | Noise::CenteredSum { sum: s, .. } => s.epsilon,
            Noise::Avg { sum, count, .. } => match count {
                Denominator::Own(c) => sum.epsilon + c.epsilon,
                Denominator::Gate | Denominator::PublicRows => sum.epsilon,
            },
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
    /// Ungrouped and unfiltered: the one group's row count is the dataset's row count, which
    /// the catalog publishes, so the gate compares that exact count with `min_count` (no noisy
    /// count, no ε) and `not_null` sums and averages use it.
    pub public_rows: bool,
    /// ε share of a hidden gate count (0 when there is none).
    pub gate_share: f64,
    /// The privacy unit: (schema index, bounds); `None` for row-level privacy.
    pub unit: Option<(usize, crate::schema::ContributionBounds)>,
    /// What one protected individual is: `row`, or `unit: <column>, max_rows k, max_groups g`.
    pub semantics: String,
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

/// Gate count with threshold: scale from ε, then the smallest threshold whose δ fits. One
/// unit changes at most `groups` counts, each by at most `rows` and all together by `rows`.
fn calibrate_threshold(eps: f64, delta: f64, rows: i64, groups: u32) -> Fallible<Noise> {
    let scale = calibrate_laplace(rows, eps)?.scale;
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
    // (l0, l1, l∞): one row changes one group's count by one; one unit (at most `rows` rows in
    // at most `groups` groups) changes up to `groups` counts by `rows` in all.
    let d_in = (groups, rows, rows);
    let fits = |t: &i64| -> Fallible<bool> { Ok(build(*t)?.map(&d_in)?.1 <= delta) };
    // OpenDP needs the threshold to be at least the l∞ sensitivity.
    let threshold = if fits(&rows)? {
        rows
    } else {
        fallible_binary_search(fits, Above(rows))?
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

fn calibrate_select(candidates: Vec<i64>, eps: f64, rows: u64) -> Fallible<Noise> {
    let k = candidates.len();
    let build = |scale: f64| {
        let domain = VectorDomain::new(AtomDomain::<u64>::default()).with_size(k);
        make_noisy_max(domain, LInfDistance::new(true), MaxDivergence, scale, true)
    };
    // Scores are K·count + tie-break rank; one row moves every count by 0 or 1 in the same
    // direction, so the score vector moves by at most K (K · rows for a unit of `rows` rows),
    // monotonically.
    let d_in = k as u64 * rows;
    let upper = 2.0 * d_in as f64 / eps + 1.0;
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

/// The statistic's context: what the rest of the calibration decided.
struct Context {
    /// See [`Calibration::public_rows`].
    public_rows: bool,
    /// A gate count exists and counts exactly the rows this statistic aggregates.
    gate: bool,
    /// δ of the threshold, for the gate count of a threshold key release.
    threshold_delta: Option<f64>,
    /// Rows one privacy unit may contribute (1 for row-level privacy).
    rows: i64,
    /// Groups one privacy unit may contribute to (1 for row-level privacy).
    groups: u32,
}

/// Share of an average's ε given to its own noisy count; the sum gets the rest. The count's
/// noise enters the average scaled by |avg - center| / n, the sum's by half-width / n; for a
/// ratio r = |avg - center| / half-width the error-minimising count share is √r / (1 + √r),
/// and 1/4 is optimal at r = 1/9, the typical case of an average well inside its bounds.
pub(crate) const AVG_COUNT_SHARE: f64 = 0.25;
/// Largest share of ε a hidden gate count gets (less when there are 4 or more statistics: it
/// then gets what each statistic gets).
pub(crate) const MAX_GATE_SHARE: f64 = 0.25;

fn calibrate_spec(ds: &str, spec: &Spec, share: f64, cx: &Context) -> Result<Noise, DpError> {
    let err = internal(ds);
    let num = spec.num.as_ref();
    let center_of = |n: &NumCol| (i128::from(n.lo) + i128::from(n.hi)).div_euclid(2) as i64;
    // One unit contributes at most `rows` rows, so every row-level sensitivity scales by it.
    let k = cx.rows;
    let times_k = |sens: i64| {
        sens.checked_mul(k)
            .filter(|s| *s <= 1 << 53)
            .ok_or_else(|| DpError::Unsupported {
                dataset: ds.to_string(),
                reason: format!(
                    "{}: the bounds times the privacy unit's max_rows {k} are too large for exact noise; tighten the bounds or max_rows",
                    spec.label
                ),
            })
    };
    Ok(match (spec.kind, num, cx.threshold_delta) {
        (Kind::CountAll, _, Some(delta)) => {
            calibrate_threshold(share, delta, k, cx.groups).map_err(err)?
        }
        (Kind::CountAll | Kind::CountCol, _, _) => {
            Noise::Laplace(calibrate_laplace(k, share).map_err(err)?)
        }
        (Kind::Sum, Some(n), _) if cx.public_rows && n.not_null => {
            // Σ clamp(x) = center · n + Σ (clamp(x) - center) with n public; the second term
            // changes by at most max(U - center, center - L) when one row is added or removed.
            let center = center_of(n);
            let sens = times_k((n.hi - center).max(center - n.lo))?;
            let sum = calibrate_laplace(sens, share).map_err(err)?;
            Noise::CenteredSum { sum, center }
        }
        (Kind::Sum, Some(n), _) => {
            // |Σ clamp(x)| changes by at most max(|L|, |U|) when one row is added or removed.
            let sens = times_k(n.lo.unsigned_abs().max(n.hi.unsigned_abs()) as i64)?;
            Noise::Laplace(calibrate_laplace(sens, share).map_err(err)?)
        }
        (Kind::Avg, Some(n), _) => {
            // Σ (clamp(x) - center) changes by at most max(U - center, center - L).
            let center = center_of(n);
            let sens = times_k((n.hi - center).max(center - n.lo))?;
            let (sum, count) = if n.not_null && (cx.public_rows || cx.gate) {
                let sum = calibrate_laplace(sens, share).map_err(&err)?;
                let count = if cx.public_rows {
                    Denominator::PublicRows
                } else {
                    Denominator::Gate
                };
                (sum, count)
            } else {
                let c_share = share * AVG_COUNT_SHARE;
                let sum = calibrate_laplace(sens, share - c_share).map_err(&err)?;
                let count = calibrate_laplace(k, c_share).map_err(&err)?;
                (sum, Denominator::Own(count))
            };
            Noise::Avg { sum, count, center }
        }
        (Kind::Min | Kind::Max, Some(n), _) => {
            calibrate_select(candidates(n.lo, n.hi), share, k as u64).map_err(err)?
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
    let unit = schema.privacy_unit();
    // With a privacy unit, bounding contributions drops rows, so the count used is not public.
    let public_rows = matches!(keys, KeyMode::Ungrouped) && plan.filter.is_none() && unit.is_none();
    let semantics = match unit {
        None => "row".to_string(),
        Some((i, b)) => format!(
            "unit: {}, max_rows {}, max_groups {}",
            schema.columns[i].name, b.max_rows, b.max_groups
        ),
    };
    let (rows, groups) = unit.map_or((1, 1), |(_, b)| {
        // One unit touches one group when there is no GROUP BY.
        let groups = if group_cols.is_empty() {
            1
        } else {
            b.max_groups
        };
        (i64::from(b.max_rows), groups)
    });
    let mut hidden_gate = false;
    let gate = if threshold || (min_count > 0 && !public_rows) {
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
                hidden_gate = true;
                specs.len() - 1
            }
        })
    } else {
        None
    };

    // Shares: a hidden gate count only decides which groups appear, so it gets at most
    // MAX_GATE_SHARE and the released statistics split the rest evenly.
    let released = specs.len() - usize::from(hidden_gate);
    let gate_share = if hidden_gate {
        MAX_GATE_SHARE.min(1.0 / specs.len() as f64)
    } else {
        0.0
    };
    let stat_share = (1.0 - gate_share) / released.max(1) as f64;
    // Shrink the shares by a hair if float rounding pushed the sum over ε.
    let mut scale = params.epsilon;
    for _ in 0..8 {
        let mut stats = Vec::with_capacity(specs.len());
        for (i, spec) in specs.iter().enumerate() {
            let is_gate = Some(i) == gate;
            let cx = Context {
                public_rows,
                gate: gate.is_some(),
                threshold_delta: (threshold && is_gate).then_some(params.delta),
                rows,
                groups,
            };
            let share = if is_gate && hidden_gate {
                gate_share
            } else {
                stat_share
            };
            let noise = calibrate_spec(&dataset, spec, share * scale, &cx)?;
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
            let gate_share = match gate {
                Some(g) if hidden_gate => stats[g].epsilon(),
                _ => 0.0,
            };
            return Ok(Calibration {
                dataset,
                group_cols,
                keys,
                stats,
                slots,
                gate,
                public_rows,
                gate_share,
                unit,
                semantics: semantics.clone(),
                min_count,
                cost,
            });
        }
        scale *= 1.0 - 1e-9;
    }
    Err(DpError::Internal {
        dataset,
        message: "could not fit the statistics within epsilon".to_string(),
    })
}
