//! Differential privacy engine of the `dp_sandbox` backend: answers a validated [`Plan`]
//! (COUNT / SUM / AVG / MIN / MAX, WHERE, GROUP BY, HAVING COUNT(*) >= k) over a dataset held
//! on this node, with noise from [OpenDP](https://opendp.org) measurements.
//!
//! The node calls [`estimate`] first (it depends only on the plan, the schema, the analyst's
//! [`DpParams`] and the node's [`DpPolicy`], never on the rows), reserves that [`Cost`] in its
//! budget ledger, then calls [`release`]. `release(..).cost` never exceeds the estimate: both are
//! computed from the same data-independent calibration, so they are equal.
//!
//! # Privacy unit
//!
//! Neighbouring datasets differ by adding or removing one row ("unbounded" DP), or, when the
//! schema declares a privacy-unit column (`ColumnSpec::privacy_unit`, bounds `max_rows = k` and
//! `max_groups = g`), all rows of one unit: each unit's selected rows are then bounded to its
//! first `k` in its first `g` groups before aggregation (see `units`), and every sensitivity
//! below is `k ×` the row-level one (the key threshold uses `(l0, l1, l∞) = (g, k, k)`). The
//! proof's `privacy_unit` says which applies. `params.epsilon`
//! and `params.delta` are the total the analyst spends on the whole query. They are refused
//! unless `0 < epsilon <= policy.max_epsilon_per_query` and `0 <= delta <= policy.max_delta_per_query`
//! (both finite; delta < 1).
//!
//! # Budget rules
//!
//! * **Statistics.** Every distinct aggregate of the SELECT list is one statistic (the same
//!   aggregate written twice is released once and copied). AVG is one statistic (a noisy
//!   clamped sum over a count, see below); MIN and MAX are one each.
//! * **The gate.** Small groups are suppressed: a group is released only if its `COUNT(*)` is at
//!   least `max(k of HAVING COUNT(*) >= k, policy.min_group_size)`. An ungrouped, unfiltered
//!   query has one group holding every row, and the dataset's row count is public (the catalog
//!   shows it), so the gate compares that exact count with the floor: no noisy count, no ε.
//!   Otherwise the gate is a noisy `COUNT(*)`. When the plan itself selects `COUNT(*)`, that
//!   statistic's noisy value is the gate (used for the output column, for HAVING, for the policy
//!   floor and for the key threshold below, at no extra cost: filtering on an already released
//!   noisy value is post-processing). Otherwise a hidden noisy `COUNT(*)` is added, whenever a
//!   gate is needed (a HAVING, a non-zero `min_group_size`, or threshold key release).
//! * **Split.** A hidden gate only decides which groups appear, so it gets
//!   `min(1/4, 1/(statistics + 1))` of ε; the released statistics split the rest evenly (all of
//!   ε when there is no hidden gate). The gate's share is in the proof (`gate.epsilon`). Each
//!   statistic's noise scale is the smallest one for which the OpenDP measurement's privacy map,
//!   evaluated at the sensitivity derived below, is at most its share (found with OpenDP's
//!   `fallible_binary_search`). The ε actually used by each statistic is read back from the map
//!   and their sum is the reported `cost.epsilon` (<= `params.epsilon`): sequential composition.
//! * **Groups.** GROUP BY groups partition the rows, so one row changes the data of one group
//!   only: per-group releases compose in parallel and a grouped query costs what one group costs.
//! * **Keys.** If every GROUP BY column has `public_keys` declared by the owner, exactly the cross
//!   product of the declared keys is released (keys with no rows get noise added to zero; rows
//!   whose key is outside the declared domain, null included, are ignored); this costs no δ.
//!   Otherwise the keys present in the data are released through OpenDP's
//!   `make_laplace_threshold` applied to the gate count: a key appears only if its noisy count
//!   clears a threshold chosen (by binary search on the measurement's privacy map) as the smallest
//!   one whose δ is at most `params.delta`. This needs `params.delta > 0`. The other statistics of
//!   a key that does not clear the threshold are never released, so the whole query is
//!   (ε, δ)-DP with δ the threshold measurement's. Released threshold counts are biased upwards
//!   for small groups (only the lucky ones clear the bar).
//! * **Ungrouped queries** are one group with the empty key: the gate also applies, and a
//!   suppressed result is a table with no rows.
//!
//! # Mechanisms and sensitivities
//!
//! Exact aggregates are computed in plain Rust over the selected rows, then one OpenDP scalar
//! measurement (built once per query, invoked once per released group) adds the noise. All
//! randomness comes from OpenDP.
//!
//! * **Numbers.** Integer columns are used as they are; float columns are converted to fixed
//!   point with 2 decimals (value × 100, rounded: cents), so every sum is an integer and gets
//!   discrete Laplace noise (`make_laplace` on `AtomDomain<i64>` / `AbsoluteDistance<i64>`).
//!   Values are clamped to the owner's declared bounds (`ColumnSpec.bounds`, rounded inwards to
//!   the fixed-point grid); SUM / AVG / MIN / MAX on a column without bounds are refused. Nulls
//!   are skipped, as in SQL.
//! * **COUNT(\*) and COUNT(col)**: sensitivity 1 (one row changes one count by one). Released
//!   counts are clamped at 0 (post-processing).
//! * **SUM(col)**: the sum of values clamped to `[L, U]` changes by at most `max(|L|, |U|)` when a
//!   row is added or removed. When the column is declared `not_null` and the query is ungrouped
//!   and unfiltered, the number of values is the public row count `n`, and the sum is released
//!   as `center · n + noisy Σ(x - center)` with `center` the midpoint of the bounds: sensitivity
//!   `max(U - center, center - L)` ≈ `(U - L) / 2`, half of `max(|L|, |U|)` for `L = 0`.
//!   `SUM(col * k)` is `k ×` the noisy sum (post-processing; the proof lists the unweighted
//!   sum's scale and half-width, which scale by `|k|`).
//! * **AVG(col)**: `center + noisy Σ(x - center) / count`, sensitivity of the sum
//!   `max(U - center, center - L)`. The count is, in order of preference: the public row count
//!   (ungrouped, unfiltered, `not_null` column: the count-free mean, all of the statistic's ε on
//!   the sum); the group's noisy gate `COUNT(*)` (`not_null` column: it counts the same rows, at
//!   no extra ε); otherwise the average's own noisy `COUNT(col)`, which gets 1/4 of the
//!   statistic's share (the count's noise enters the average scaled by `|avg - center| / n`, the
//!   sum's by `(U - L) / 2n`; for a ratio `r` of the two the error-minimising count share is
//!   `√r / (1 + √r)`, and 1/4 is optimal at `r = 1/9`). The result is clamped into the bounds;
//!   when the count is <= 0 the average is reported as null.
//! * **MIN / MAX**: report-noisy-min (OpenDP `make_noisy_max`, permute-and-flip) over 128
//!   candidates evenly spaced across the bounds (integer-rounded and deduplicated for integer
//!   columns). It is OpenDP's quantile scoring at α = 0 (MIN: score = #(x < c)) and α = 1 (MAX:
//!   score = #(x > c)), computed here in one pass, with a data-independent tie-break towards the
//!   candidate nearest to the data (all candidates below the minimum score 0; the largest of them
//!   is preferred), implemented by multiplying counts by the number of candidates K and adding
//!   the tie-break rank (< K). Adding or removing a row moves every count by 0 or 1 in the same
//!   direction, so the score vector has monotonic L∞ sensitivity K. With ε large, MIN releases
//!   the largest candidate <= the true minimum (MAX: the smallest candidate >= the maximum).
//!   The tie-break never outweighs a single row, so below the minimum the candidates are told
//!   apart only by it: the release falls below the true minimum by roughly `(U - L) / ε_share`
//!   (and above it only when the noise outweighs whole rows). DP minima and maxima are
//!   inherently coarse; tight bounds help most.
//!
//! Integer sums are accumulated in 128 bits and saturated to 64 bits before noise (saturation is
//! 1-Lipschitz, so the sensitivity is unchanged). Bounds larger than 10^15 in magnitude (10^13 for
//! floats) are refused.
//!
//! # Output
//!
//! The table's columns are `plan.column_names()`. Rows are in key order (the order of
//! [`crate::eval::group_rows`]: key strings compared lexicographically, null first); keys are
//! JSON strings or null; counts, integer sums and integer MIN / MAX are JSON integers; float
//! sums, float MIN / MAX and averages are JSON floats.
//!
//! The [`DpProof`] of a release records the mechanisms, the per-statistic ε, noise scales,
//! sensitivities, bounds and 95% half-widths (OpenDP's `discrete_laplacian_scale_to_accuracy`).

mod calibrate;
mod grouping;
pub mod noise;
mod proof;
mod pushdown;
mod release;
mod scan;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_accuracy;
#[cfg(test)]
mod tests_pushdown;
#[cfg(test)]
mod tests_release;
#[cfg(test)]
mod tests_scan;
#[cfg(test)]
mod tests_units;
mod units;
mod validate;

use serde::{Deserialize, Serialize};

use crate::eval::EvalError;
use crate::plan::{Plan, Table};
use crate::schema::{Dataset, DatasetSchema};

pub use proof::{DpProof, GateProof, KeyRelease, NoiseComponent, StatisticProof};
pub use pushdown::{Measure, Pushdown, SourceGroup, UnitBound, pushdown, release_pushed};
pub use scan::Scan;
pub use units::bounded_rows;

/// What the analyst asks to spend on one query, in total.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DpParams {
    /// Privacy loss ε of the whole query; finite and > 0.
    pub epsilon: f64,
    /// Failure probability δ of the whole query; 0 unless keys are released by threshold.
    pub delta: f64,
}

/// Limits the node owner puts on every query.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DpPolicy {
    /// Largest ε one query may spend.
    pub max_epsilon_per_query: f64,
    /// Largest δ one query may spend.
    pub max_delta_per_query: f64,
    /// Groups whose noisy `COUNT(*)` is below this are not released.
    pub min_group_size: u64,
}

impl Default for DpPolicy {
    fn default() -> Self {
        DpPolicy {
            max_epsilon_per_query: 1.0,
            max_delta_per_query: 1e-6,
            min_group_size: 10,
        }
    }
}

/// A privacy cost (ε, δ).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
pub struct Cost {
    /// ε spent.
    pub epsilon: f64,
    /// δ spent.
    pub delta: f64,
}

/// The answer of a DP query: the noisy table, how it was made, and what it cost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DpRelease {
    /// Columns = `plan.column_names()`, rows in key order.
    pub table: Table,
    /// Mechanisms and parameters, for the run's proof artifacts.
    pub proof: DpProof,
    /// What the release spent; equal to [`estimate`] for the same inputs.
    pub cost: Cost,
}

/// The smallest ε accepted: below it the noise scale (sensitivity / ε) overflows or the answer
/// is pure noise.
pub const MIN_EPSILON: f64 = 1e-6;

/// Why a DP query was refused or failed.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DpError {
    /// ε is not a finite number of at least [`MIN_EPSILON`].
    #[error(
        "dataset {dataset}: epsilon {value} is invalid; it must be a finite number > 0, at least {MIN_EPSILON:e} (a smaller one makes the noise scale overflow)"
    )]
    InvalidEpsilon {
        /// Dataset name.
        dataset: String,
        /// The ε asked for.
        value: f64,
    },
    /// δ is not a finite number in [0, 1).
    #[error("dataset {dataset}: delta {value} is invalid; it must be a finite number in [0, 1)")]
    InvalidDelta {
        /// Dataset name.
        dataset: String,
        /// The δ asked for.
        value: f64,
    },
    /// ε or δ exceeds the node's per-query limit.
    #[error("dataset {dataset}: {what} {value} exceeds the node's per-query limit of {limit}")]
    PolicyViolation {
        /// Dataset name.
        dataset: String,
        /// `"epsilon"` or `"delta"`.
        what: &'static str,
        /// The value asked for.
        value: f64,
        /// The policy limit.
        limit: f64,
    },
    /// SUM / AVG / MIN / MAX on a column whose owner declared no bounds.
    #[error(
        "dataset {dataset}: column {column} has no declared bounds; the dataset owner must declare them, e.g. `prism-node --config node.toml bounds {dataset} {column} --min 0 --max 100000` (or PATCH /v1/datasets/{dataset}/columns/{column} on the node admin API), before sum/avg/min/max can run under differential privacy"
    )]
    MissingBounds {
        /// Dataset name.
        dataset: String,
        /// Column name.
        column: String,
    },
    /// Declared bounds that cannot be used (not finite, min > max, too large).
    #[error("dataset {dataset}: column {column} has unusable bounds [{min}, {max}]: {reason}")]
    InvalidBounds {
        /// Dataset name.
        dataset: String,
        /// Column name.
        column: String,
        /// Declared minimum.
        min: f64,
        /// Declared maximum.
        max: f64,
        /// What is wrong.
        reason: String,
    },
    /// The plan asks for something the DP engine does not release (e.g. SUM of a text column).
    #[error("dataset {dataset}: {reason}")]
    Unsupported {
        /// Dataset name.
        dataset: String,
        /// What is not supported, naming the column.
        reason: String,
    },
    /// GROUP BY keys must be released by a noisy threshold, which needs δ > 0.
    #[error(
        "dataset {dataset}: group by {columns} has no declared public keys, so group keys are released by a noisy threshold, which needs delta > 0; pass a delta (e.g. 1e-7, at most {max_delta}) or have the dataset owner declare the public keys of {columns}"
    )]
    DeltaRequired {
        /// Dataset name.
        dataset: String,
        /// GROUP BY columns without public keys, comma-separated.
        columns: String,
        /// The policy's δ limit.
        max_delta: f64,
    },
    /// The plan names a column the dataset does not have.
    #[error("dataset {dataset}: unknown column {column}")]
    UnknownColumn {
        /// Dataset name.
        dataset: String,
        /// Column name.
        column: String,
    },
    /// The plan is for another dataset.
    #[error("plan targets dataset {plan} but the dp engine was given dataset {dataset}")]
    DatasetMismatch {
        /// Dataset named by the plan.
        plan: String,
        /// Dataset given.
        dataset: String,
    },
    /// The declared public keys give more groups than a release may have.
    #[error(
        "dataset {dataset}: the declared public keys of {columns} give {count} groups, more than the {limit} a dp release allows"
    )]
    TooManyGroups {
        /// Dataset name.
        dataset: String,
        /// GROUP BY columns, comma-separated.
        columns: String,
        /// Size of the cross product of declared keys.
        count: u128,
        /// The limit.
        limit: u64,
    },
    /// WHERE or GROUP BY could not be evaluated on the data.
    #[error("dataset {dataset}: {source}")]
    Eval {
        /// Dataset name.
        dataset: String,
        /// The evaluation error.
        #[source]
        source: EvalError,
    },
    /// OpenDP refused to build or run a measurement (a bug or an extreme parameter).
    #[error("dataset {dataset}: internal differential privacy error: {message}")]
    Internal {
        /// Dataset name.
        dataset: String,
        /// OpenDP's message.
        message: String,
    },
}

impl DpError {
    /// A stable machine-readable code for the error kind.
    pub fn code(&self) -> &'static str {
        match self {
            DpError::InvalidEpsilon { .. } => "invalid_epsilon",
            DpError::InvalidDelta { .. } => "invalid_delta",
            DpError::PolicyViolation { .. } => "policy_violation",
            DpError::MissingBounds { .. } => "missing_bounds",
            DpError::InvalidBounds { .. } => "invalid_bounds",
            DpError::Unsupported { .. } => "dp_unsupported",
            DpError::DeltaRequired { .. } => "delta_required",
            DpError::UnknownColumn { .. } => "unknown_column",
            DpError::DatasetMismatch { .. } => "dataset_mismatch",
            DpError::TooManyGroups { .. } => "too_many_groups",
            DpError::Eval { .. } => "invalid_plan",
            DpError::Internal { .. } => "dp_internal",
        }
    }
}

/// The privacy cost `release` will have for these inputs, or why it would be refused. Depends
/// only on the plan, the schema, the parameters and the policy, never on the rows.
pub fn estimate(
    plan: &Plan,
    schema: &DatasetSchema,
    params: &DpParams,
    policy: &DpPolicy,
) -> Result<Cost, DpError> {
    Ok(calibrate::calibrate(plan, schema, params, policy)?.cost)
}

/// Runs the plan on the dataset and releases a differentially private table. Its cost equals
/// [`estimate`] for the same plan, schema, parameters and policy.
pub fn release(
    plan: &Plan,
    ds: &Dataset,
    params: &DpParams,
    policy: &DpPolicy,
) -> Result<DpRelease, DpError> {
    let cal = calibrate::calibrate(plan, &ds.schema, params, policy)?;
    release::run(plan, ds, &cal, params)
}
