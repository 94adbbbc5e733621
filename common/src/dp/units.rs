//! Contribution bounding for a declared privacy unit: before any aggregate is computed, each
//! unit keeps at most `max_rows` of its selected rows, in at most `max_groups` groups.
//!
//! The rule is deterministic and looks at one unit's rows only (its first rows in dataset
//! order; a row whose group is not among the unit's first `max_groups` groups is dropped), so
//! adding or removing one unit changes only that unit's kept rows: at most `max_rows` rows in
//! at most `max_groups` groups. That is the sensitivity the calibration multiplies by.

use std::collections::HashMap;

use super::grouping::NONE;
use crate::schema::{ColumnData, ContributionBounds};

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
}
