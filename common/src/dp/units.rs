//! Contribution bounding for a declared privacy unit: before any aggregate is computed, each
//! unit keeps at most `max_rows` of its selected rows, in at most `max_groups` groups.
//!
//! The rule is deterministic and looks at one unit's rows only (its first rows in dataset
//! order; a row whose group is not among the unit's first `max_groups` groups is dropped), so
//! adding or removing one unit changes only that unit's kept rows: at most `max_rows` rows in
//! at most `max_groups` groups. That is the sensitivity the calibration multiplies by.

use std::collections::HashMap;

use super::grouping::NONE;
use crate::schema::{ColumnData, ContributionBounds, Dataset};

/// A unit's identity: the column's integer value, text code or boolean.
fn unit_id(data: &ColumnData, i: usize) -> Option<u64> {
    match data {
        ColumnData::Integer(v) => v[i].map(|x| x as u64),
        ColumnData::Text { codes, .. } => codes[i].map(u64::from),
        ColumnData::Boolean(v) => v[i].map(u64::from),
        ColumnData::Float(v) => v[i].map(f64::to_bits),
    }
}

/// Sets `gid[i] = NONE` for every selected row beyond its unit's bounds. Rows without a unit
/// (null) are dropped too: import refuses them, this keeps the bound if one slipped through.
pub(crate) fn bound(gid: &mut [u32], unit: &ColumnData, b: ContributionBounds) {
    #[derive(Default)]
    struct Seen {
        rows: u32,
        groups: Vec<u32>,
    }
    let mut seen: HashMap<u64, Seen> = HashMap::new();
    for (i, g) in gid.iter_mut().enumerate() {
        if *g == NONE {
            continue;
        }
        let Some(id) = unit_id(unit, i) else {
            *g = NONE;
            continue;
        };
        let s = seen.entry(id).or_default();
        let known = s.groups.contains(&*g);
        if s.rows >= b.max_rows || (!known && s.groups.len() >= b.max_groups as usize) {
            *g = NONE;
            continue;
        }
        if !known {
            s.groups.push(*g);
        }
        s.rows += 1;
    }
}

/// The dataset as a release without GROUP BY or WHERE in the clear sees it under its privacy
/// unit: each unit's first `max_rows` rows in dataset order, rows without a unit dropped (HE
/// evaluates its encrypted filter on these rows, so the bound cannot depend on the filter).
/// `None` when the dataset declares no unit.
pub fn bounded_rows(ds: &Dataset) -> Option<Dataset> {
    let (ci, b) = ds.schema.privacy_unit()?;
    let unit = ds.columns.get(ci)?;
    let mut seen: HashMap<u64, u32> = HashMap::new();
    let keep: Vec<bool> = (0..ds.rows)
        .map(|i| match unit_id(unit, i) {
            None => false,
            Some(id) => {
                let n = seen.entry(id).or_default();
                *n += 1;
                *n <= b.max_rows
            }
        })
        .collect();
    fn pick<T: Clone>(v: &[T], keep: &[bool]) -> Vec<T> {
        v.iter()
            .zip(keep)
            .filter(|(_, k)| **k)
            .map(|(x, _)| x.clone())
            .collect()
    }
    let columns = ds
        .columns
        .iter()
        .map(|c| match c {
            ColumnData::Integer(v) => ColumnData::Integer(pick(v, &keep)),
            ColumnData::Float(v) => ColumnData::Float(pick(v, &keep)),
            ColumnData::Boolean(v) => ColumnData::Boolean(pick(v, &keep)),
            ColumnData::Text { dict, codes } => ColumnData::Text {
                dict: dict.clone(),
                codes: pick(codes, &keep),
            },
        })
        .collect();
    Some(Dataset {
        schema: ds.schema.clone(),
        columns,
        rows: keep.iter().filter(|k| **k).count(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_first_rows_and_groups_of_each_unit() {
        // Unit 1: rows in groups 0, 0, 1, 2, 0; unit 2: one row in group 2; unit 3: unselected.
        let unit = ColumnData::Integer(vec![
            Some(1),
            Some(1),
            Some(1),
            Some(1),
            Some(1),
            Some(2),
            Some(3),
            None,
        ]);
        let mut gid = vec![0, 0, 1, 2, 0, 2, NONE, 0];
        bound(
            &mut gid,
            &unit,
            ContributionBounds {
                max_rows: 3,
                max_groups: 2,
            },
        );
        // Unit 1 keeps rows 0, 1 (group 0) and 2 (group 1); row 3 opens a third group, row 4
        // is its fourth row. The null unit's row is dropped.
        assert_eq!(gid, [0, 0, 1, NONE, NONE, 2, NONE, NONE]);
    }

    #[test]
    fn bounded_rows_keeps_each_units_first_rows() {
        use crate::schema::{ColumnSpec, ColumnType, DatasetSchema};
        let spec = |name: &str, unit: bool| ColumnSpec {
            name: name.into(),
            ty: ColumnType::Integer,
            bounds: None,
            public_keys: None,
            not_null: false,
            privacy_unit: unit.then_some(ContributionBounds {
                max_rows: 2,
                max_groups: 1,
            }),
        };
        let ds = Dataset {
            schema: DatasetSchema {
                name: "visits".into(),
                columns: vec![spec("patient", true), spec("age", false)],
            },
            columns: vec![
                ColumnData::Integer(vec![Some(1), Some(2), Some(1), Some(1), None, Some(2)]),
                ColumnData::Integer(vec![
                    Some(10),
                    Some(20),
                    Some(11),
                    Some(12),
                    Some(99),
                    Some(21),
                ]),
            ],
            rows: 6,
        };
        let b = bounded_rows(&ds).expect("a unit");
        assert_eq!(b.rows, 4);
        assert_eq!(
            b.columns[1],
            ColumnData::Integer(vec![Some(10), Some(20), Some(11), Some(21)])
        );
        let mut plain = ds.clone();
        plain.schema.columns[0].privacy_unit = None;
        assert!(bounded_rows(&plain).is_none());
    }
}
