//! The node's clear pre-aggregation for an HE query.
//!
//! Rows are grouped by the codes of their filter columns (rows with a null filter column never
//! match a comparison, so they are left out), and each group's count, sums, minima and maxima
//! are computed in the clear. Encrypted work then grows with the number of distinct filter
//! values and groups, never with rows. Nothing here depends on a constant, so doing it in the
//! clear reveals nothing to the node it does not already hold.

use std::collections::HashMap;

use super::encode::{check_aggregated, filter_encoding};
use super::shape::{Atom, Encoding, HeQuery, HeValue, TextDomain};
use super::{HeError, ResultCell, bits_for};
use crate::plan::CmpOp;
use crate::schema::{ColumnData, ColumnSpec, Dataset};

/// What the node's policy allows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Most distinct values of one filter column.
    pub max_distinct_values: usize,
    /// Most groups (distinct combinations of filter values).
    pub max_groups: usize,
}

/// One group of rows sharing their filter codes.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    /// Per filter column, the index of the group's code in [`Prepared::distinct`].
    pub key: Vec<u32>,
    /// Per result cell, the group's clear contribution; `None` for the minimum or maximum of a
    /// group without a non-null value.
    pub cells: Vec<Option<u64>>,
}

/// A dataset pre-aggregated for one query.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    /// Per filter column, the distinct codes present, ascending.
    pub distinct: Vec<Vec<u64>>,
    /// The groups (one group with an empty key when there is no filter).
    pub groups: Vec<Group>,
    /// The result layout.
    pub cells: Vec<ResultCell>,
    /// Rows in the dataset.
    pub rows: u64,
}

impl Prepared {
    /// The exact clear result (for a query without encrypted constants): per cell, the sum (or
    /// min / max) over every group.
    pub fn clear_totals(&self) -> Vec<u64> {
        self.cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let vals = self.groups.iter().filter_map(|g| g.cells[i]);
                match c.value {
                    HeValue::Min { .. } => vals.min().unwrap_or(0),
                    HeValue::Max { .. } => vals.max().unwrap_or(0),
                    _ => vals.fold(0u64, u64::wrapping_add),
                }
            })
            .collect()
    }
}

/// Result widths: 8, 10, 12, 14, 16, 32 or 64 bits, the narrowest that holds `needed`.
pub fn result_bits(needed: u32) -> u32 {
    super::cipher::width_for(needed).max(8)
}

fn column<'a>(ds: &'a Dataset, name: &str) -> Result<(&'a ColumnSpec, &'a ColumnData), HeError> {
    ds.column(name)
        .ok_or_else(|| HeError::column(name, format!("not in dataset {}", ds.schema.name)))
}

fn outside(spec: &ColumnSpec, lo: i64, hi: i64) -> HeError {
    HeError::column(
        &spec.name,
        format!(
            "the data has values outside the declared bounds [{lo}, {hi}]; he_backend is exact and \
             does not clamp, so the data owner must widen the bounds"
        ),
    )
}

/// Per-row codes of one filter column (`None`: null).
fn filter_codes(
    spec: &ColumnSpec,
    data: &ColumnData,
    enc: &Encoding,
) -> Result<Vec<Option<u64>>, HeError> {
    match (data, enc) {
        (ColumnData::Text { dict, codes }, Encoding::Text { len, digest }) => {
            let domain = TextDomain::of(spec, dict);
            if domain.values.len() != *len as usize || &domain.digest != digest {
                return Err(HeError::Mismatch(format!(
                    "the text domain of column {} changed since the query was encoded; run it again",
                    spec.name
                )));
            }
            let index: HashMap<&str, u64> = domain
                .values
                .iter()
                .enumerate()
                .map(|(i, v)| (v.as_str(), i as u64))
                .collect();
            let map: Vec<Option<u64>> = dict
                .iter()
                .map(|d| index.get(d.as_str()).copied())
                .collect();
            codes
                .iter()
                .map(|c| match c {
                    None => Ok(None),
                    Some(c) => map
                        .get(*c as usize)
                        .copied()
                        .flatten()
                        .map(Some)
                        .ok_or_else(|| {
                            HeError::Mismatch(format!("column {}: corrupt code", spec.name))
                        }),
                })
                .collect()
        }
        (ColumnData::Integer(v), Encoding::Integer { min, max }) => v
            .iter()
            .map(|x| match x {
                None => Ok(None),
                Some(x) => enc
                    .int_code(*x)
                    .map(Some)
                    .ok_or_else(|| outside(spec, *min, *max)),
            })
            .collect(),
        (ColumnData::Boolean(v), Encoding::Integer { .. }) => Ok(v
            .iter()
            .map(|b| b.and_then(|b| enc.int_code(i64::from(b))))
            .collect()),
        _ => Err(HeError::Mismatch(format!(
            "column {} does not have the type the query was encoded for",
            spec.name
        ))),
    }
}

/// An aggregated column: shifted values per row (`value - lo`) and its bounds.
struct AggColumn {
    name: String,
    lo: i64,
    range: u64,
    values: Vec<Option<u64>>,
}

fn agg_column(ds: &Dataset, name: &str) -> Result<AggColumn, HeError> {
    let (spec, data) = column(ds, name)?;
    let (lo, hi) = check_aggregated(spec)?;
    let ColumnData::Integer(v) = data else {
        return Err(HeError::Mismatch(format!(
            "column {name} is not an integer column"
        )));
    };
    let values = v
        .iter()
        .map(|x| match x {
            None => Ok(None),
            Some(x) if (lo..=hi).contains(x) => Ok(Some((i128::from(*x) - i128::from(lo)) as u64)),
            Some(_) => Err(outside(spec, lo, hi)),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(AggColumn {
        name: spec.name.clone(),
        lo,
        range: (i128::from(hi) - i128::from(lo)) as u64,
        values,
    })
}

/// Checks a query's shape against the dataset and pre-aggregates it.
pub fn prepare(query: &HeQuery, ds: &Dataset, limits: &Limits) -> Result<Prepared, HeError> {
    let rows = ds.rows as u64;
    // Filter columns: the node re-derives each encoding from its own schema and data.
    let mut codes: Vec<Vec<Option<u64>>> = Vec::new();
    for f in &query.filter {
        let (spec, data) = column(ds, &f.column)?;
        if f.atoms.is_empty() || f.atoms.iter().any(|a| a.constants() == 0) {
            return Err(HeError::Mismatch(format!(
                "column {}: empty predicate",
                f.column
            )));
        }
        if data_is_text(data) {
            let ordered = f.atoms.iter().any(|a| match a {
                Atom::Compare { op } => !matches!(op, CmpOp::Eq | CmpOp::NotEq),
                Atom::Between { .. } => true,
                Atom::In { .. } => false,
            });
            if ordered {
                return Err(HeError::column(
                    &f.column,
                    "text columns accept =, <> and in only",
                ));
            }
        } else {
            let own = filter_encoding(spec, None)?;
            if own != f.encoding {
                return Err(HeError::Mismatch(format!(
                    "the declared bounds of column {} changed since the query was encoded; run it again",
                    f.column
                )));
            }
        }
        codes.push(filter_codes(spec, data, &f.encoding)?);
    }
    // Distinct codes per filter column.
    let mut distinct: Vec<Vec<u64>> = Vec::new();
    let mut index: Vec<HashMap<u64, u32>> = Vec::new();
    for (f, col) in query.filter.iter().zip(&codes) {
        let mut d: Vec<u64> = col.iter().flatten().copied().collect();
        d.sort_unstable();
        d.dedup();
        if d.len() > limits.max_distinct_values {
            return Err(HeError::Policy(format!(
                "column {} has {} distinct values; this node evaluates encrypted filters on columns \
                 with at most {} (policy he_max_distinct_values)",
                f.column,
                d.len(),
                limits.max_distinct_values
            )));
        }
        index.push(d.iter().enumerate().map(|(i, c)| (*c, i as u32)).collect());
        distinct.push(d);
    }
    // Aggregated columns and the result layout.
    let mut aggs: Vec<AggColumn> = Vec::new();
    let mut cells = Vec::new();
    for v in &query.values {
        let col = match v.column() {
            None => None,
            Some(name) => {
                let (spec, _) = column(ds, name)?;
                if spec.name != name {
                    return Err(HeError::Mismatch(format!(
                        "column {name} is spelled {}",
                        spec.name
                    )));
                }
                match v {
                    HeValue::CountNonNull { .. } => None,
                    _ => Some(match aggs.iter().position(|a| a.name == spec.name) {
                        Some(i) => i,
                        None => {
                            aggs.push(agg_column(ds, name)?);
                            aggs.len() - 1
                        }
                    }),
                }
            }
        };
        let (needed, offset) = match (v, col) {
            (HeValue::Sum { .. }, Some(i)) => {
                let max = u128::from(rows) * u128::from(aggs[i].range);
                let max = u64::try_from(max).map_err(|_| {
                    HeError::column(
                        &aggs[i].name,
                        "its sum can exceed 64 bits; narrow the declared bounds",
                    )
                })?;
                (bits_for(max), aggs[i].lo)
            }
            (HeValue::Min { .. } | HeValue::Max { .. }, Some(i)) => {
                (bits_for(aggs[i].range), aggs[i].lo)
            }
            _ => (bits_for(rows), 0),
        };
        cells.push(ResultCell {
            value: v.clone(),
            bits: result_bits(needed),
            offset,
            noise: None,
        });
    }
    // Row → group, by the mixed-radix number of its distinct-value indices.
    let mut strides = Vec::with_capacity(distinct.len());
    let mut radix: u64 = 1;
    for d in &distinct {
        strides.push(radix);
        radix = radix
            .checked_mul(d.len().max(1) as u64)
            .ok_or_else(|| HeError::Policy("too many combinations of filter values".to_string()))?;
    }
    let sources: Vec<Source> = query
        .values
        .iter()
        .map(|v| {
            let agg = |c: &str| aggs.iter().position(|a| a.name == c).unwrap_or(0);
            match v {
                HeValue::CountRows => Source::Rows,
                HeValue::CountNonNull { column } => Source::NonNull(column_data(ds, column)),
                HeValue::Sum { column } => Source::Sum(agg(column)),
                HeValue::Min { column } => Source::Min(agg(column)),
                HeValue::Max { column } => Source::Max(agg(column)),
            }
        })
        .collect();
    let mut group_of: HashMap<u64, usize> = HashMap::new();
    let mut groups: Vec<Group> = Vec::new();
    if query.filter.is_empty() {
        group_of.insert(0, 0);
        groups.push(empty_group(vec![], &cells));
    }
    'rows: for r in 0..ds.rows {
        let mut key = 0u64;
        for (c, col) in codes.iter().enumerate() {
            let Some(code) = col[r] else { continue 'rows };
            key += u64::from(index[c][&code]) * strides[c];
        }
        let g = match group_of.get(&key) {
            Some(g) => *g,
            None => {
                if groups.len() >= limits.max_groups {
                    return Err(HeError::Policy(format!(
                        "the filter columns have more than {} combinations of values (policy he_max_groups)",
                        limits.max_groups
                    )));
                }
                let k = codes
                    .iter()
                    .enumerate()
                    .map(|(c, col)| col[r].map_or(0, |code| index[c][&code]))
                    .collect();
                groups.push(empty_group(k, &cells));
                group_of.insert(key, groups.len() - 1);
                groups.len() - 1
            }
        };
        accumulate(&mut groups[g], &sources, &aggs, r);
    }
    Ok(Prepared {
        distinct,
        groups,
        cells,
        rows,
    })
}

fn data_is_text(d: &ColumnData) -> bool {
    matches!(d, ColumnData::Text { .. })
}

fn column_data<'a>(ds: &'a Dataset, name: &str) -> Option<&'a ColumnData> {
    ds.column(name).map(|(_, d)| d)
}

fn empty_group(key: Vec<u32>, cells: &[ResultCell]) -> Group {
    Group {
        key,
        cells: cells
            .iter()
            .map(|c| match c.value {
                HeValue::Min { .. } | HeValue::Max { .. } => None,
                _ => Some(0),
            })
            .collect(),
    }
}

/// Where a cell's per-row contribution comes from.
enum Source<'a> {
    Rows,
    NonNull(Option<&'a ColumnData>),
    Sum(usize),
    Min(usize),
    Max(usize),
}

fn accumulate(g: &mut Group, sources: &[Source<'_>], aggs: &[AggColumn], r: usize) {
    for (slot, src) in g.cells.iter_mut().zip(sources) {
        match *src {
            Source::Rows => *slot = slot.map(|n| n + 1),
            Source::NonNull(d) => {
                if d.is_some_and(|d| !d.is_null(r)) {
                    *slot = slot.map(|n| n + 1);
                }
            }
            Source::Sum(a) => {
                if let Some(x) = aggs[a].values[r] {
                    *slot = slot.map(|s| s + x);
                }
            }
            Source::Min(a) => {
                if let Some(x) = aggs[a].values[r] {
                    *slot = Some(slot.map_or(x, |m| m.min(x)));
                }
            }
            Source::Max(a) => {
                if let Some(x) = aggs[a].values[r] {
                    *slot = Some(slot.map_or(x, |m| m.max(x)));
                }
            }
        }
    }
}
