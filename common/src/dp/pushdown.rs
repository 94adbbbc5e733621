//! Pushdown: the exact aggregates of a DP release computed where the rows are (a PostgreSQL
//! table the node reads), then released by the same gate and the same OpenDP measurements as
//! a dataset held in memory.
//!
//! [`pushdown`] says what the source must compute: per group of the plan's WHERE and GROUP BY,
//! a list of [`Measure`]s (row counts, non-null counts, clamped fixed-point sums). The source
//! computes them exactly and returns one [`SourceGroup`] per group present; [`release_pushed`]
//! then calibrates (the same data-independent calibration as [`super::estimate`]), applies the
//! gate and adds the noise. Nothing about the noise or the cost depends on where the exact
//! values were computed.
//!
//! With a privacy unit the source bounds each unit's contribution before aggregating
//! ([`UnitBound`]): any rule is sound that keeps at most `max_rows` rows of a unit in at most
//! `max_groups` groups and looks at that unit's rows only (in memory, a unit keeps its first
//! rows in dataset order; a database keeps the rows of its first groups in key order).
//!
//! Not pushed down (refused with [`DpError::Unsupported`]): MIN / MAX (their report-noisy-min
//! scores need a histogram over 128 candidates).

use std::collections::HashMap;

use super::calibrate::{self, Calibration, Noise, Stat};
use super::grouping::public_keys;
use super::release::{Exact, finish};
use super::validate::{KeyMode, Kind};
use super::{DpError, DpParams, DpPolicy, DpRelease};
use crate::eval::GroupKey;
use crate::plan::Plan;
use crate::schema::{ColumnType, DatasetSchema};

/// One exact aggregate a source computes per group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Measure {
    /// `COUNT(*)` of the group's selected rows.
    Rows,
    /// The number of non-null values of a column.
    NonNull {
        /// Column name.
        column: String,
    },
    /// `Σ (clamp(round(x · unit), lo, hi) − center)` over the non-null values of a column, in
    /// fixed-point units (`unit` is 1 for integer columns, 100 for float columns).
    ClampedSum {
        /// Column name.
        column: String,
        /// Declared type (integer or float).
        ty: ColumnType,
        /// Fixed-point unit.
        unit: i64,
        /// Lower clamping bound, in units.
        lo: i64,
        /// Upper clamping bound, in units.
        hi: i64,
        /// Subtracted from every clamped value, in units.
        center: i64,
    },
}

/// What a source must compute for a plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Pushdown {
    /// GROUP BY columns, in order (empty: one group).
    pub group_by: Vec<String>,
    /// Per group, these aggregates in this order; the first is always [`Measure::Rows`].
    pub measures: Vec<Measure>,
    /// The privacy unit, when the dataset declares one: before aggregating, the source keeps
    /// of each unit's selected rows (rows with a null unit are dropped) at most `max_rows`, in
    /// at most `max_groups` groups, by a rule that looks at that unit's rows only.
    pub unit: Option<UnitBound>,
}

/// Contribution bounding per privacy unit, as the source must apply it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitBound {
    /// The privacy-unit column.
    pub column: String,
    /// Most rows one unit contributes.
    pub max_rows: u32,
    /// Most groups one unit contributes to.
    pub max_groups: u32,
}

/// One group as the source computed it.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceGroup {
    /// The key, one value per GROUP BY column, rendered like
    /// [`crate::schema::ColumnData::key`] (`None` = null).
    pub key: GroupKey,
    /// One exact value per [`Pushdown::measures`].
    pub values: Vec<i128>,
}

/// Where each statistic finds its exact values among the measures.
enum Uses {
    Count(usize),
    Sum(usize),
    SumCount(usize, usize),
}

fn unsupported(dataset: &str, reason: String) -> DpError {
    DpError::Unsupported {
        dataset: dataset.to_string(),
        reason,
    }
}

/// The measures of a calibration, and which of them each statistic uses.
/// The measures, each statistic's uses of them, and the `not_null` checks: (measure index of
/// a `not_null` column's non-null count, the column), which must equal the row count.
type Measures = (Pushdown, Vec<Uses>, Vec<(usize, String)>);

fn measures(cal: &Calibration, schema: &DatasetSchema) -> Result<Measures, DpError> {
    let dataset = cal.dataset.as_str();
    let unit = cal.unit.map(|(i, b)| UnitBound {
        column: schema.columns[i].name.clone(),
        max_rows: b.max_rows,
        max_groups: b.max_groups,
    });
    let mut list = vec![Measure::Rows];
    let mut index = |m: Measure| match list.iter().position(|x| *x == m) {
        Some(i) => i,
        None => {
            list.push(m);
            list.len() - 1
        }
    };
    let name = |st: &Stat| {
        st.col
            .and_then(|c| schema.columns.get(c))
            .map(|c| (c.name.clone(), c.ty))
            .ok_or_else(|| unsupported(dataset, format!("{} names no column", st.label)))
    };
    let mut uses = Vec::with_capacity(cal.stats.len());
    let mut not_null = Vec::new();
    for st in &cal.stats {
        // The calibration trusts `not_null` (public counts, the gate as a denominator); a
        // table can gain nulls after registration, so the source's count is checked.
        if st.num.as_ref().is_some_and(|n| n.not_null) {
            let column = name(st)?.0;
            let i = index(Measure::NonNull {
                column: column.clone(),
            });
            if !not_null.iter().any(|(j, _)| *j == i) {
                not_null.push((i, column));
            }
        }
        let sum = |center: i64| -> Result<Measure, DpError> {
            let (column, ty) = name(st)?;
            let num = st
                .num
                .as_ref()
                .ok_or_else(|| unsupported(dataset, format!("{} is not numeric", st.label)))?;
            Ok(Measure::ClampedSum {
                column,
                ty,
                unit: num.unit,
                lo: num.lo,
                hi: num.hi,
                center,
            })
        };
        uses.push(match (&st.noise, st.kind) {
            (Noise::Laplace(_) | Noise::Threshold { .. }, Kind::CountAll) => Uses::Count(0),
            (Noise::Laplace(_), Kind::CountCol) => {
                let column = name(st)?.0;
                Uses::Count(index(Measure::NonNull { column }))
            }
            (Noise::Laplace(_), Kind::Sum) => Uses::Sum(index(sum(0)?)),
            (Noise::CenteredSum { center, .. }, _) => Uses::Sum(index(sum(*center)?)),
            (Noise::Avg { center, .. }, _) => {
                let s = index(sum(*center)?);
                let column = name(st)?.0;
                Uses::SumCount(s, index(Measure::NonNull { column }))
            }
            (Noise::Select { .. }, _) => {
                return Err(unsupported(
                    dataset,
                    format!(
                        "{} is not computed by pushdown, on a source whose rows stay where they \
                         are (a dp minimum or maximum scores 128 candidates per group); ask for \
                         count, sum or avg, or hold the data in memory (import it)",
                        st.label
                    ),
                ));
            }
            _ => {
                return Err(DpError::Internal {
                    dataset: dataset.to_string(),
                    message: format!("statistic {} is miscalibrated", st.label),
                });
            }
        });
    }
    let group_by = cal
        .group_cols
        .iter()
        .map(|&c| schema.columns[c].name.clone())
        .collect();
    Ok((
        Pushdown {
            group_by,
            measures: list,
            unit,
        },
        uses,
        not_null,
    ))
}

/// What a source must compute for `plan`, or why the plan is not pushed down. Depends only on
/// the plan, the schema, the parameters and the policy.
pub fn pushdown(
    plan: &Plan,
    schema: &DatasetSchema,
    params: &DpParams,
    policy: &DpPolicy,
) -> Result<Pushdown, DpError> {
    let cal = calibrate::calibrate(plan, schema, params, policy)?;
    Ok(measures(&cal, schema)?.0)
}

/// Releases `plan` from the exact aggregates a source computed for [`pushdown`]'s measures:
/// the same gate, noise, proof and cost as [`super::release`] over the same rows.
///
/// `published_rows` is the row count the catalog publishes. An ungrouped, unfiltered query
/// uses the row count as public (see the module docs of [`super`]); if the source's count has
/// changed since it was published, the query is refused (refresh the source first) rather
/// than release a count that is not public.
pub fn release_pushed(
    plan: &Plan,
    schema: &DatasetSchema,
    params: &DpParams,
    policy: &DpPolicy,
    groups: Vec<SourceGroup>,
    published_rows: u64,
) -> Result<DpRelease, DpError> {
    let cal = calibrate::calibrate(plan, schema, params, policy)?;
    let (push, uses, not_null) = measures(&cal, schema)?;
    let dataset = cal.dataset.as_str();
    let bad = |m: String| DpError::Internal {
        dataset: dataset.to_string(),
        message: format!("the source's answer: {m}"),
    };
    let width = push.measures.len();
    if let Some(g) = groups.iter().find(|g| g.values.len() != width) {
        return Err(bad(format!(
            "{} values for {width} measures",
            g.values.len()
        )));
    }
    if let Some((_, column)) = not_null
        .iter()
        .find(|(i, _)| groups.iter().any(|g| g.values[*i] != g.values[0]))
    {
        return Err(unsupported(
            dataset,
            format!(
                "column {column} is declared not_null but the source now holds nulls in it; fix \
                 the table or the declaration (a refresh refuses such a table)"
            ),
        ));
    }
    // Groups in output order, with their exact values (zero for a declared key with no rows).
    let (keys, values): (Vec<GroupKey>, Vec<Vec<i128>>) = match &cal.keys {
        KeyMode::Ungrouped => {
            let [g] = groups.as_slice() else {
                return Err(bad(format!(
                    "{} groups for an ungrouped query",
                    groups.len()
                )));
            };
            (vec![Vec::new()], vec![g.values.clone()])
        }
        KeyMode::Public(domains) => {
            let keys = public_keys(domains);
            let at: HashMap<&GroupKey, usize> =
                keys.iter().enumerate().map(|(i, k)| (k, i)).collect();
            let mut values = vec![vec![0i128; width]; keys.len()];
            // Keys outside the declared domain (null included) are ignored, as in memory.
            for g in &groups {
                if let Some(&i) = at.get(&g.key) {
                    values[i] = g.values.clone();
                }
            }
            (keys, values)
        }
        KeyMode::Threshold => {
            let mut groups = groups;
            groups.sort_by(|a, b| a.key.cmp(&b.key));
            if groups.windows(2).any(|w| w[0].key == w[1].key) {
                return Err(bad("a group key appears twice".into()));
            }
            groups.into_iter().map(|g| (g.key, g.values)).unzip()
        }
    };
    let small = |v: i128| i64::try_from(v).map_err(|_| bad(format!("count {v} out of range")));
    let counts = values
        .iter()
        .map(|v| small(v[0]))
        .collect::<Result<Vec<_>, _>>()?;
    let public_rows = if cal.public_rows {
        let now = u64::try_from(counts[0]).unwrap_or(0);
        if now != published_rows {
            return Err(unsupported(
                dataset,
                format!(
                    "the source's row count changed since the catalog published it; refresh the \
                     dataset (`prism-node source refresh {dataset}`) and ask again"
                ),
            ));
        }
        now
    } else {
        0
    };
    let stat_index = |st: &Stat| {
        cal.stats
            .iter()
            .position(|s| std::ptr::eq(s, st))
            .ok_or_else(|| bad("unknown statistic".into()))
    };
    finish(
        plan,
        &cal,
        params,
        &keys,
        &counts,
        public_rows,
        |st, released| {
            let pick = |m: usize| released.iter().map(|&g| values[g][m]).collect::<Vec<_>>();
            let counts_of = |m: usize| {
                pick(m)
                    .into_iter()
                    .map(small)
                    .collect::<Result<Vec<i64>, _>>()
            };
            Ok(match uses[stat_index(st)?] {
                Uses::Count(m) => Exact::Counts(counts_of(m)?),
                Uses::Sum(m) => Exact::Sums(pick(m)),
                Uses::SumCount(s, c) => Exact::SumsCounts(pick(s), counts_of(c)?),
            })
        },
    )
}
