//! Runs a calibrated plan on the data: WHERE, grouping, the gate (threshold / HAVING / policy
//! floor), exact clamped aggregates in plain Rust, then one OpenDP noise invocation per
//! statistic and released group.

use std::collections::HashMap;

use serde_json::Value;

use super::calibrate::{Calibration, Denominator, Noise, Scalar, Stat};
use super::grouping::{NONE, data_groups, public_groups};
use super::validate::{KeyMode, Kind, NumCol, Slot};
use super::{DpError, DpParams, DpRelease, proof};
use crate::eval::{GroupKey, filter_mask};
use crate::plan::{Plan, Table};
use crate::schema::{ColumnData, Dataset};

/// A released value before JSON encoding.
#[derive(Clone, Copy)]
enum Val {
    Int(i64),
    Float(f64),
    Null,
}

impl Val {
    fn json(self, weight: Option<i64>) -> Value {
        match (self, weight) {
            (Val::Int(v), w) => Value::from(v.saturating_mul(w.unwrap_or(1))),
            (Val::Float(f), w) => {
                let f = f * w.unwrap_or(1) as f64;
                serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
            }
            (Val::Null, _) => Value::Null,
        }
    }
}

fn internal(dataset: &str, message: impl std::fmt::Display) -> DpError {
    DpError::Internal {
        dataset: dataset.to_string(),
        message: message.to_string(),
    }
}

/// Calls `f(group, clamped value in units)` for every non-null value of a selected row.
fn for_each_value(
    data: &ColumnData,
    num: &NumCol,
    gid: &[u32],
    mut f: impl FnMut(usize, i64),
) -> bool {
    let (lo, hi) = (num.lo, num.hi);
    match data {
        ColumnData::Integer(v) => {
            for (x, &g) in v.iter().zip(gid) {
                if let (Some(x), true) = (x, g != NONE) {
                    f(g as usize, (*x).clamp(lo, hi));
                }
            }
        }
        ColumnData::Float(v) => {
            let unit = num.unit as f64;
            for (x, &g) in v.iter().zip(gid) {
                if let (Some(x), true) = (x, g != NONE) {
                    // `as` saturates and maps NaN to 0; the clamp keeps the value in bounds.
                    f(g as usize, ((x * unit).round() as i64).clamp(lo, hi));
                }
            }
        }
        _ => return false,
    }
    true
}

fn non_null_counts(data: &ColumnData, gid: &[u32], n: usize) -> Vec<i64> {
    let mut counts = vec![0i64; n];
    let mut add = |present: bool, g: u32| {
        if present && g != NONE {
            counts[g as usize] += 1;
        }
    };
    match data {
        ColumnData::Integer(v) => v.iter().zip(gid).for_each(|(x, &g)| add(x.is_some(), g)),
        ColumnData::Float(v) => v.iter().zip(gid).for_each(|(x, &g)| add(x.is_some(), g)),
        ColumnData::Text { codes, .. } => codes
            .iter()
            .zip(gid)
            .for_each(|(x, &g)| add(x.is_some(), g)),
        ColumnData::Boolean(v) => v.iter().zip(gid).for_each(|(x, &g)| add(x.is_some(), g)),
    }
    counts
}

fn row_counts(gid: &[u32], n: usize) -> Vec<i64> {
    let mut counts = vec![0i64; n];
    for &g in gid.iter().filter(|&&g| g != NONE) {
        counts[g as usize] += 1;
    }
    counts
}

fn saturate(s: i128) -> i64 {
    i64::try_from(s).unwrap_or(if s < 0 { i64::MIN } else { i64::MAX })
}

fn noisy(s: &Scalar, exact: i64, ds: &str) -> Result<i64, DpError> {
    s.meas.invoke(&exact).map_err(|e| internal(ds, e))
}

/// Exact aggregates of one statistic over the released groups (in units, before noise).
pub(crate) enum Exact {
    /// `COUNT(*)` or `COUNT(col)` per group.
    Counts(Vec<i64>),
    /// Σ (clamp(x) - center) per group (center 0 for a plain SUM).
    Sums(Vec<i128>),
    /// Σ (clamp(x) - center) and the number of values, per group (AVG).
    SumsCounts(Vec<i128>, Vec<i64>),
    /// MIN / MAX: per group, `candidates + 1` bins (see [`Binner`]).
    Hist(Vec<u64>),
}

/// The exact aggregates `st` needs, computed over the rows held in memory.
fn exact_stat(
    st: &Stat,
    ds: &Dataset,
    gid: &[u32],
    n: usize,
    dataset: &str,
) -> Result<Exact, DpError> {
    let column = |c: Option<usize>| {
        c.and_then(|c| ds.columns.get(c))
            .ok_or_else(|| internal(dataset, format!("{} has no column data", st.label)))
    };
    let not_numeric = || internal(dataset, format!("the data of {} is not numeric", st.label));
    match (&st.noise, &st.num) {
        (Noise::Laplace(_), _) if matches!(st.kind, Kind::CountAll | Kind::CountCol) => {
            Ok(Exact::Counts(match st.kind {
                Kind::CountAll => row_counts(gid, n),
                _ => non_null_counts(column(st.col)?, gid, n),
            }))
        }
        (Noise::Laplace(_), Some(num)) => {
            let mut sums = vec![0i128; n];
            if !for_each_value(column(st.col)?, num, gid, |g, x| sums[g] += i128::from(x)) {
                return Err(not_numeric());
            }
            Ok(Exact::Sums(sums))
        }
        (Noise::CenteredSum { center, .. }, Some(num)) => {
            let mut sums = vec![0i128; n];
            if !for_each_value(column(st.col)?, num, gid, |g, x| {
                sums[g] += i128::from(x - center)
            }) {
                return Err(not_numeric());
            }
            Ok(Exact::Sums(sums))
        }
        (Noise::Avg { center, .. }, Some(num)) => {
            let (mut sums, mut counts) = (vec![0i128; n], vec![0i64; n]);
            let ok = for_each_value(column(st.col)?, num, gid, |g, x| {
                sums[g] += i128::from(x - center);
                counts[g] += 1;
            });
            if !ok {
                return Err(not_numeric());
            }
            Ok(Exact::SumsCounts(sums, counts))
        }
        (Noise::Select { candidates, .. }, Some(num)) => {
            let k = candidates.len();
            let min = st.kind == Kind::Min;
            // hist[g][b]: MIN bins by #candidates <= x, MAX bins by #candidates < x.
            let mut hist = vec![0u64; n * (k + 1)];
            let binner = Binner::new(candidates);
            let data = column(st.col)?;
            let ok = if min {
                for_each_value(data, num, gid, |g, x| {
                    hist[g * (k + 1) + binner.bin::<true>(x)] += 1
                })
            } else {
                for_each_value(data, num, gid, |g, x| {
                    hist[g * (k + 1) + binner.bin::<false>(x)] += 1
                })
            };
            if !ok {
                return Err(not_numeric());
            }
            Ok(Exact::Hist(hist))
        }
        _ => Err(miscalibrated(st, dataset)),
    }
}

fn miscalibrated(st: &Stat, dataset: &str) -> DpError {
    internal(dataset, format!("statistic {} is miscalibrated", st.label))
}

/// Noise on the exact aggregates of one statistic over `n` released groups. `gate_counts` are
/// the released groups' noisy gate counts, if there is a gate count; `public_rows` is the
/// dataset's public row count.
fn noise_stat(
    st: &Stat,
    exact: Exact,
    n: usize,
    gate_counts: Option<&[i64]>,
    public_rows: u64,
    dataset: &str,
) -> Result<Vec<Val>, DpError> {
    let unit = st.num.as_ref().map_or(1, |n| n.unit);
    let to_val = |units: i64| {
        if unit == 1 {
            Val::Int(units)
        } else {
            Val::Float(units as f64 / unit as f64)
        }
    };
    let sized = |len: usize| {
        if len == n {
            Ok(())
        } else {
            Err(internal(
                dataset,
                format!("{}: {len} exact values for {n} groups", st.label),
            ))
        }
    };
    match (&st.noise, &st.num, exact) {
        (Noise::Laplace(s), _, Exact::Counts(counts))
            if matches!(st.kind, Kind::CountAll | Kind::CountCol) =>
        {
            sized(counts.len())?;
            counts
                .iter()
                .map(|&c| Ok(Val::Int(noisy(s, c, dataset)?.max(0))))
                .collect()
        }
        (Noise::Laplace(s), Some(_), Exact::Sums(sums)) => {
            sized(sums.len())?;
            sums.iter()
                .map(|&x| Ok(to_val(noisy(s, saturate(x), dataset)?)))
                .collect()
        }
        (Noise::CenteredSum { sum, center }, Some(_), Exact::Sums(sums)) => {
            sized(sums.len())?;
            // Public: every row has a value (not_null) and every row is selected (unfiltered).
            let offset = i128::from(*center) * i128::from(public_rows);
            sums.iter()
                .map(|&x| {
                    let s = noisy(sum, saturate(x), dataset)?;
                    Ok(to_val(saturate(i128::from(s) + offset)))
                })
                .collect()
        }
        (Noise::Avg { sum, count, center }, Some(num), Exact::SumsCounts(sums, counts)) => {
            sized(sums.len())?;
            sized(counts.len())?;
            (0..n)
                .map(|g| {
                    let s = noisy(sum, saturate(sums[g]), dataset)?;
                    let c = match count {
                        Denominator::Own(count) => noisy(count, counts[g], dataset)?,
                        Denominator::PublicRows => i64::try_from(public_rows).unwrap_or(i64::MAX),
                        Denominator::Gate => gate_counts
                            .and_then(|v| v.get(g))
                            .copied()
                            .ok_or_else(|| internal(dataset, "the gate count is missing"))?,
                    };
                    if c <= 0 {
                        return Ok(Val::Null);
                    }
                    let avg =
                        (*center as f64 + s as f64 / c as f64).clamp(num.lo as f64, num.hi as f64);
                    Ok(Val::Float(avg / unit as f64))
                })
                .collect()
        }
        (
            Noise::Select {
                meas, candidates, ..
            },
            Some(_),
            Exact::Hist(hist),
        ) => {
            let k = candidates.len();
            sized(hist.len() / (k + 1))?;
            let min = st.kind == Kind::Min;
            let kk = k as u64;
            (0..n)
                .map(|g| {
                    let h = &hist[g * (k + 1)..(g + 1) * (k + 1)];
                    let mut scores = vec![0u64; k];
                    if min {
                        // #(x < c_i) = Σ_{b <= i} h[b]; ties prefer the larger candidate.
                        let mut acc = 0u64;
                        for i in 0..k {
                            acc += h[i];
                            scores[i] = kk * acc + (kk - 1 - i as u64);
                        }
                    } else {
                        // #(x > c_i) = Σ_{b > i} h[b]; ties prefer the smaller candidate.
                        let mut acc = 0u64;
                        for i in (0..k).rev() {
                            acc += h[i + 1];
                            scores[i] = kk * acc + i as u64;
                        }
                    }
                    let idx = meas.invoke(&scores).map_err(|e| internal(dataset, e))?;
                    let c = candidates
                        .get(idx)
                        .copied()
                        .ok_or_else(|| internal(dataset, "selected index out of range"))?;
                    Ok(to_val(c))
                })
                .collect()
        }
        _ => Err(miscalibrated(st, dataset)),
    }
}

/// Locates values among (nearly) evenly spaced candidates: an arithmetic guess lands within a
/// step of the answer and a short walk makes it exact.
pub(crate) struct Binner<'a> {
    candidates: &'a [i64],
    first: f64,
    per_unit: f64,
}

impl<'a> Binner<'a> {
    pub(crate) fn new(candidates: &'a [i64]) -> Self {
        let (first, last) = match (candidates.first(), candidates.last()) {
            (Some(&a), Some(&b)) => (a as f64, b as f64),
            _ => (0.0, 0.0),
        };
        let per_unit = if last > first {
            (candidates.len() - 1) as f64 / (last - first)
        } else {
            0.0
        };
        Binner {
            candidates,
            first,
            per_unit,
        }
    }

    /// Number of candidates `<= x` (`INCLUSIVE`) or `< x`.
    #[inline]
    pub(crate) fn bin<const INCLUSIVE: bool>(&self, x: i64) -> usize {
        let c = self.candidates;
        let below = |v: i64| if INCLUSIVE { v <= x } else { v < x };
        let mut i = (((x as f64 - self.first) * self.per_unit).max(0.0) as usize).min(c.len());
        while i < c.len() && below(c[i]) {
            i += 1;
        }
        while i > 0 && !below(c[i - 1]) {
            i -= 1;
        }
        i
    }
}

/// Applies the gate: which groups are released, with their noisy gate counts. `counts` are
/// the groups' exact `COUNT(*)`, `public_rows` the dataset's public row count.
fn gate(
    cal: &Calibration,
    counts: &[i64],
    public_rows: u64,
) -> Result<(Vec<usize>, Option<Vec<i64>>), DpError> {
    let ds = cal.dataset.as_str();
    let n = counts.len();
    if cal.public_rows {
        // The one group holds every row; their number is public, so this costs nothing.
        let open = public_rows >= cal.min_count;
        return Ok((if open { (0..n).collect() } else { Vec::new() }, None));
    }
    let Some(gi) = cal.gate else {
        return Ok(((0..n).collect(), None));
    };
    let noisy: Vec<(usize, i64)> = match &cal.stats[gi].noise {
        Noise::Threshold { meas, .. } => {
            let input: HashMap<u32, i64> = counts
                .iter()
                .enumerate()
                .filter(|(_, c)| **c > 0)
                .map(|(g, &c)| (g as u32, c))
                .collect();
            let mut out: Vec<(usize, i64)> = meas
                .invoke(&input)
                .map_err(|e| internal(ds, e))?
                .into_iter()
                .map(|(g, v)| (g as usize, v))
                .collect();
            out.sort_unstable();
            out
        }
        Noise::Laplace(s) => counts
            .iter()
            .enumerate()
            .map(|(g, &c)| Ok((g, noisy(s, c, ds)?)))
            .collect::<Result<_, DpError>>()?,
        _ => return Err(internal(ds, "the gate is not a count")),
    };
    let floor = i64::try_from(cal.min_count).unwrap_or(i64::MAX);
    let (released, values): (Vec<usize>, Vec<i64>) =
        noisy.into_iter().filter(|(_, v)| *v >= floor).unzip();
    Ok((released, Some(values)))
}

/// Releases the plan's table from the rows held in memory.
pub(crate) fn run(
    plan: &Plan,
    ds: &Dataset,
    cal: &Calibration,
    params: &DpParams,
) -> Result<DpRelease, DpError> {
    let dataset = cal.dataset.as_str();
    let eval = |source| DpError::Eval {
        dataset: dataset.to_string(),
        source,
    };
    if ds.columns.len() != ds.schema.columns.len() || ds.columns.iter().any(|c| c.len() != ds.rows)
    {
        return Err(internal(dataset, "column data does not match the schema"));
    }
    let mask = filter_mask(plan.filter.as_ref(), ds).map_err(eval)?;
    let mut groups = match &cal.keys {
        KeyMode::Public(domains) => public_groups(ds, &cal.group_cols, domains, &mask),
        KeyMode::Ungrouped | KeyMode::Threshold => {
            data_groups(ds, &plan.group_by, &cal.group_cols, &mask).map_err(eval)?
        }
    };
    if let Some((ci, bounds)) = cal.unit {
        let unit = ds
            .columns
            .get(ci)
            .ok_or_else(|| internal(dataset, "the privacy unit has no column data"))?;
        super::units::bound(&mut groups.gid, unit, bounds);
    }
    let counts = row_counts(&groups.gid, groups.keys.len());
    // Row → released position, computed once the gate has decided, so the aggregates only
    // touch released groups.
    let mut released_gid: Option<Vec<u32>> = None;
    finish(
        plan,
        cal,
        params,
        &groups.keys,
        &counts,
        ds.rows as u64,
        |st, released| {
            let gid = released_gid.get_or_insert_with(|| {
                let mut rel = vec![NONE; groups.keys.len()];
                for (r, &g) in released.iter().enumerate() {
                    rel[g] = r as u32;
                }
                groups
                    .gid
                    .iter()
                    .map(|&g| if g == NONE { NONE } else { rel[g as usize] })
                    .collect()
            });
            exact_stat(st, ds, gid, released.len(), dataset)
        },
    )
}

/// The gate, the noise and the table, whoever computed the exact aggregates: `keys` are the
/// groups (in output order) with their exact `COUNT(*)` in `counts`; `exact(stat, released)`
/// gives a statistic's exact aggregates over the released groups (indices into `keys`).
pub(crate) fn finish(
    plan: &Plan,
    cal: &Calibration,
    params: &DpParams,
    keys: &[GroupKey],
    counts: &[i64],
    public_rows: u64,
    mut exact: impl FnMut(&Stat, &[usize]) -> Result<Exact, DpError>,
) -> Result<DpRelease, DpError> {
    let dataset = cal.dataset.as_str();
    if keys.len() != counts.len() {
        return Err(internal(dataset, "group keys and counts differ in number"));
    }
    let (released, gate_values) = gate(cal, counts, public_rows)?;
    let n = released.len();

    let mut values: Vec<Vec<Val>> = Vec::with_capacity(cal.stats.len());
    for (i, st) in cal.stats.iter().enumerate() {
        values.push(match (&gate_values, cal.gate == Some(i)) {
            // The gate count is released as it is (clamped at 0): no second noise draw.
            (Some(g), true) => g.iter().map(|&c| Val::Int(c.max(0))).collect(),
            _ if st.outputs.is_empty() => Vec::new(),
            _ => noise_stat(
                st,
                exact(st, &released)?,
                n,
                gate_values.as_deref(),
                public_rows,
                dataset,
            )?,
        });
    }

    let mut rows = Vec::with_capacity(n);
    for (r, &g) in released.iter().enumerate() {
        let key = &keys[g];
        let row = cal
            .slots
            .iter()
            .map(|slot| match slot {
                Slot::Key(p) => key
                    .get(*p)
                    .cloned()
                    .flatten()
                    .map_or(Value::Null, Value::String),
                Slot::Stat { stat, weight } => values
                    .get(*stat)
                    .and_then(|v| v.get(r))
                    .copied()
                    .unwrap_or(Val::Null)
                    .json(*weight),
            })
            .collect();
        rows.push(row);
    }
    Ok(DpRelease {
        table: Table {
            columns: plan.column_names(),
            rows,
        },
        proof: proof::build(cal, params, n),
        cost: cal.cost,
    })
}
