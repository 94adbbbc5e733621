//! Tests of pushdown: a release from a reference source (the rows in memory, aggregated as a
//! database would) equals the in-memory release; what is refused.

use super::pushdown::*;
use super::release;
use super::tests::{agg, loose, p, plan, population};
use crate::eval::{filter_mask, group_rows};
use crate::plan::Plan;
use crate::plan::{AggFunc, CmpOp, Literal, Output, Predicate};
use crate::schema::Dataset;

/// What a database computes for `push`, from the rows in memory (the reference source).
pub(super) fn source(ds: &Dataset, plan: &Plan, push: &Pushdown) -> Vec<SourceGroup> {
    let mask = filter_mask(plan.filter.as_ref(), ds).expect("mask");
    let groups = group_rows(&push.group_by, &mask, ds).expect("groups");
    groups
        .into_iter()
        .map(|(key, rows)| {
            let values = push
                .measures
                .iter()
                .map(|m| match m {
                    Measure::Rows => rows.len() as i128,
                    Measure::NonNull { column } => {
                        let (_, d) = ds.column(column).expect("column");
                        rows.iter().filter(|&&r| !d.is_null(r)).count() as i128
                    }
                    Measure::ClampedSum {
                        column,
                        unit,
                        lo,
                        hi,
                        center,
                        ..
                    } => {
                        let (_, d) = ds.column(column).expect("column");
                        rows.iter()
                            .filter_map(|&r| d.number(r))
                            .map(|x| ((x * *unit as f64).round() as i64).clamp(*lo, *hi))
                            .map(|x| i128::from(x - center))
                            .sum()
                    }
                })
                .collect();
            SourceGroup { key, values }
        })
        .collect()
}

#[test]
fn a_pushed_down_release_is_the_in_memory_release() {
    let ds = population(true, &[("CA", 300), ("NY", 200), ("TX", 100), ("ZZ", 50)]);
    let filter = Predicate::Compare {
        column: "age".into(),
        op: CmpOp::GtEq,
        value: Literal::Int(30),
    };
    let grouped = plan(
        vec![
            Output::Key("state".into()),
            agg(AggFunc::Count, None, "n"),
            agg(AggFunc::Sum, Some("age"), "s"),
            agg(AggFunc::Avg, Some("cost"), "a"),
        ],
        &["state"],
        None,
    );
    let mut filtered = plan(
        vec![
            agg(AggFunc::Sum, Some("cost"), "s"),
            agg(AggFunc::Count, Some("age"), "c"),
        ],
        &[],
        Some(5),
    );
    filtered.filter = Some(filter);
    let whole = plan(
        vec![
            agg(AggFunc::Count, None, "n"),
            agg(AggFunc::Avg, Some("age"), "a"),
        ],
        &[],
        None,
    );
    let params = p(100.0, 1e-6);
    // Without declared keys, GROUP BY releases the keys present behind a noisy threshold.
    let hidden = population(false, &[("CA", 300), ("NY", 200), ("TX", 40)]);
    let threshold = plan(
        vec![
            Output::Key("state".into()),
            agg(AggFunc::Sum, Some("age"), "s"),
        ],
        &["state"],
        None,
    );
    for (ds, q) in [
        (&ds, grouped),
        (&ds, filtered),
        (&ds, whole),
        (&hidden, threshold),
    ] {
        let push = pushdown(&q, &ds.schema, &params, &loose()).expect("pushdown");
        assert_eq!((&push.measures[0], &push.unit), (&Measure::Rows, &None));
        let groups = source(ds, &q, &push);
        let pushed = release_pushed(&q, &ds.schema, &params, &loose(), groups, ds.rows as u64)
            .expect("pushed");
        let memory = release(&q, ds, &params, &loose()).expect("memory");
        assert_eq!(pushed.cost, memory.cost);
        assert_eq!(pushed.proof, memory.proof);
        assert_eq!(pushed.table.columns, memory.table.columns);
        assert_eq!(pushed.table.rows.len(), memory.table.rows.len());
        for (a, b) in pushed.table.rows.iter().zip(&memory.table.rows) {
            for (x, y) in a.iter().zip(b) {
                // Two independent noise draws (sum scale about 3.6 here): equal up to noise.
                match (x.as_f64(), y.as_f64()) {
                    (Some(x), Some(y)) => {
                        assert!((x - y).abs() <= 100.0 + 0.02 * y.abs(), "{a:?} vs {b:?}")
                    }
                    _ => assert_eq!(x, y),
                }
            }
        }
    }
}

#[test]
fn min_max_and_a_changed_row_count_are_refused_and_a_privacy_unit_is_passed_on() {
    let ds = population(false, &[("CA", 30)]);
    let q = plan(vec![agg(AggFunc::Max, Some("age"), "m")], &[], None);
    let err = pushdown(&q, &ds.schema, &p(1.0, 0.0), &loose()).expect_err("max");
    assert!(err.to_string().contains("MAX(age)"), "{err}");

    let mut unit = ds.schema.clone();
    unit.columns[0].privacy_unit = Some(crate::schema::ContributionBounds {
        max_rows: 2,
        max_groups: 1,
    });
    let q = plan(vec![agg(AggFunc::Count, None, "n")], &[], None);
    let push = pushdown(&q, &unit, &p(1.0, 0.0), &loose()).expect("unit");
    assert_eq!(
        push.unit,
        Some(UnitBound {
            column: "state".into(),
            max_rows: 2,
            max_groups: 1
        })
    );

    // age declared not_null: a source whose count of ages falls short of its row count now
    // holds nulls there, and the release is refused.
    let mut nn = ds.schema.clone();
    nn.columns[1].not_null = true;
    let avg = plan(vec![agg(AggFunc::Avg, Some("age"), "a")], &[], None);
    let push = pushdown(&avg, &nn, &p(1.0, 0.0), &loose()).expect("avg");
    let mut groups = source(&ds, &avg, &push);
    let i = push
        .measures
        .iter()
        .position(|m| {
            *m == Measure::NonNull {
                column: "age".into(),
            }
        })
        .expect("the not_null check");
    groups[0].values[i] -= 1;
    let err = release_pushed(&avg, &nn, &p(1.0, 0.0), &loose(), groups, 30).expect_err("nulls");
    assert!(err.to_string().contains("not_null"), "{err}");

    let push = pushdown(&q, &ds.schema, &p(1.0, 0.0), &loose()).expect("count");
    let groups = source(&ds, &q, &push);
    let err = release_pushed(&q, &ds.schema, &p(1.0, 0.0), &loose(), groups, 29)
        .expect_err("stale count");
    assert!(err.to_string().contains("refresh"), "{err}");
}
