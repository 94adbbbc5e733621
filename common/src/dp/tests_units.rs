//! Tests of privacy units: contributions are bounded before aggregation and every release is
//! calibrated to one unit (k × the row-level sensitivity), as its proof says.

use super::tests::{STATES, agg, check_noise, loose, p, plan, spec, text};
use super::*;
use crate::plan::{AggFunc, Output};
use crate::schema::{ColumnData, ColumnType, ContributionBounds};

/// `patients` visits: 100 patients × 6 rows; patient i is in state `STATES[i % 4]` for its
/// first 4 rows and `STATES[(i + 1) % 4]` for the last 2; age 20 + i % 50.
fn visits(unit: Option<ContributionBounds>) -> Dataset {
    let mut id_col = spec("patient_id", ColumnType::Integer, None, None);
    id_col.privacy_unit = unit;
    let schema = DatasetSchema {
        name: "patients".to_string(),
        columns: vec![
            id_col,
            spec("state", ColumnType::Text, None, Some(&STATES[..])),
            spec("age", ColumnType::Integer, Some((0.0, 120.0)), None),
        ],
    };
    let (mut ids, mut states, mut ages) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..100i64 {
        for r in 0..6 {
            ids.push(Some(i));
            let s = (if r < 4 { i } else { i + 1 }) as usize % STATES.len();
            states.push(Some(STATES[s].to_string()));
            ages.push(Some(20 + i % 50));
        }
    }
    Dataset {
        schema,
        rows: ids.len(),
        columns: vec![
            ColumnData::Integer(ids),
            text(states),
            ColumnData::Integer(ages),
        ],
    }
}

fn bounds(max_rows: u32, max_groups: u32) -> Option<ContributionBounds> {
    Some(ContributionBounds {
        max_rows,
        max_groups,
    })
}

#[test]
fn unit_count_noise_is_k_times_the_row_level_scale() {
    let q = plan(vec![agg(AggFunc::Count, None, "n")], &[], None);
    let rows = visits(None);
    let r = release(&q, &rows, &p(0.5, 0.0), &loose()).expect("release");
    assert_eq!(r.proof.privacy_unit, "row");
    let row_scale = r.proof.statistics[0].noise_scale;
    assert!((row_scale - 2.0).abs() < 1e-6, "{row_scale}");

    // Each patient keeps 3 of its 6 rows: the exact bounded count is 300, and the noise is
    // calibrated to 3 rows: scale 3 × 2, checked empirically over 1500 releases.
    let units = visits(bounds(3, 1));
    check_noise(&q, &units, 0.5, 300.0, 3.0 * row_scale);
    let r = release(&q, &units, &p(0.5, 0.0), &loose()).expect("release");
    assert_eq!(
        r.proof.privacy_unit,
        "unit: patient_id, max_rows 3, max_groups 1"
    );
    assert!(r.proof.neighbouring.contains("privacy unit"));
    assert_eq!(r.proof.statistics[0].sensitivity, 3.0);
}

#[test]
fn unit_sum_and_grouped_release_scale_by_k() {
    let sum = plan(vec![agg(AggFunc::Sum, Some("age"), "s")], &[], None);
    let row = release(&sum, &visits(None), &p(1.0, 0.0), &loose()).expect("release");
    let unit = release(&sum, &visits(bounds(4, 1)), &p(1.0, 0.0), &loose()).expect("release");
    let (a, b) = (
        row.proof.statistics[0].noise_scale,
        unit.proof.statistics[0].noise_scale,
    );
    assert!((b / a - 4.0).abs() < 1e-6, "row {a}, unit {b}");
    assert_eq!(unit.proof.statistics[0].sensitivity, 480.0);

    // Grouped, public keys: each patient counts in at most 1 state (its first) with 4 rows.
    let q = plan(
        vec![Output::Key("state".into()), agg(AggFunc::Count, None, "n")],
        &["state"],
        None,
    );
    let ds = visits(bounds(4, 1));
    let policy = DpPolicy {
        max_epsilon_per_query: 1000.0,
        ..loose()
    };
    let r = release(&q, &ds, &p(1000.0, 0.0), &policy).expect("release");
    for row in &r.table.rows {
        // 25 patients per first state × 4 rows, noise scale 0.004.
        assert_eq!(row[1], 100, "{row:?}");
    }
    let est = estimate(&q, &ds.schema, &p(1000.0, 0.0), &policy).expect("estimate");
    assert_eq!(est, r.cost);
}

#[test]
fn unit_threshold_release_accounts_for_max_groups() {
    let q = plan(
        vec![Output::Key("age".into()), agg(AggFunc::Count, None, "n")],
        &["age"],
        None,
    );
    let one = release(&q, &visits(bounds(2, 1)), &p(1.0, 1e-6), &loose()).expect("release");
    let two = release(&q, &visits(bounds(2, 2)), &p(1.0, 1e-6), &loose()).expect("release");
    let threshold = |r: &DpRelease| match r.proof.key_release {
        KeyRelease::Threshold { threshold, .. } => threshold,
        ref other => panic!("{other:?}"),
    };
    // More groups per unit: a larger δ per threshold, so a higher threshold for the same δ.
    assert!(threshold(&two) > threshold(&one), "{:?}", two.proof);
    assert!(two.cost.delta <= 1e-6);
}
