//! Tests of the streaming scan: over any chunking, it computes what a database computes for
//! the same rows (the reference source of `tests_pushdown`), and bounds privacy units exactly
//! as the in-memory rule does over the whole dataset.

use super::grouping::{NONE, data_groups};
use super::pushdown::*;
use super::scan::Scan;
use super::tests::{STATES, agg, loose, p, plan, population, spec, text};
use super::tests_pushdown::source;
use crate::eval::filter_mask;
use crate::plan::{AggFunc, CmpOp, Literal, Output, Predicate};
use crate::schema::{ColumnData, ColumnType, ContributionBounds, Dataset, DatasetSchema};

/// `ds` cut into chunks of `size` rows, each text column with its own dictionary, in reverse
/// first-seen order (so a chunk's codes differ from the whole dataset's).
fn chunks(ds: &Dataset, size: usize) -> Vec<Dataset> {
    (0..ds.rows)
        .step_by(size)
        .map(|start| {
            let end = (start + size).min(ds.rows);
            let columns = ds
                .columns
                .iter()
                .map(|c| match c {
                    ColumnData::Integer(v) => ColumnData::Integer(v[start..end].to_vec()),
                    ColumnData::Float(v) => ColumnData::Float(v[start..end].to_vec()),
                    ColumnData::Boolean(v) => ColumnData::Boolean(v[start..end].to_vec()),
                    ColumnData::Text { dict, codes } => {
                        let mut values: Vec<Option<String>> = codes[start..end]
                            .iter()
                            .map(|c| c.map(|c| dict[c as usize].clone()))
                            .collect();
                        values.reverse();
                        let ColumnData::Text { dict, mut codes } = text(values) else {
                            unreachable!("text() builds a text column")
                        };
                        codes.reverse();
                        ColumnData::Text { dict, codes }
                    }
                })
                .collect();
            Dataset {
                schema: ds.schema.clone(),
                columns,
                rows: end - start,
            }
        })
        .collect()
}

fn scan(
    ds: &Dataset,
    size: usize,
    push: &Pushdown,
    filter: Option<&Predicate>,
) -> Vec<SourceGroup> {
    let mut s = Scan::new(push.clone(), filter.cloned());
    for c in chunks(ds, size) {
        s.add(&c).expect("chunk");
    }
    assert_eq!(s.rows(), ds.rows as u64);
    let mut out = s.finish();
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out
}

#[test]
fn a_scan_over_any_chunking_is_what_a_database_computes() {
    let mut ds = population(false, &[("CA", 300), ("NY", 200), ("TX", 100), ("ZZ", 50)]);
    // Nulls in every column, so null keys, null values and null comparisons are covered.
    for c in &mut ds.columns {
        match c {
            ColumnData::Integer(v) => v.iter_mut().step_by(7).for_each(|x| *x = None),
            ColumnData::Float(v) => v.iter_mut().step_by(11).for_each(|x| *x = None),
            ColumnData::Text { codes, .. } => codes.iter_mut().step_by(13).for_each(|x| *x = None),
            ColumnData::Boolean(_) => {}
        }
    }
    let filter = Predicate::Or(
        Box::new(Predicate::Compare {
            column: "age".into(),
            op: CmpOp::GtEq,
            value: Literal::Int(30),
        }),
        Box::new(Predicate::In {
            column: "state".into(),
            values: vec![Literal::Text("TX".into())],
            negated: false,
        }),
    );
    let params = p(1.0, 1e-6);
    let queries = [
        (
            plan(
                vec![
                    Output::Key("state".into()),
                    agg(AggFunc::Count, None, "n"),
                    agg(AggFunc::Sum, Some("age"), "s"),
                    agg(AggFunc::Avg, Some("cost"), "a"),
                ],
                &["state"],
                None,
            ),
            None,
        ),
        (
            plan(
                vec![
                    Output::Key("state".into()),
                    Output::Key("age".into()),
                    agg(AggFunc::Count, Some("cost"), "n"),
                ],
                &["state", "age"],
                None,
            ),
            Some(filter.clone()),
        ),
        (
            plan(
                vec![
                    agg(AggFunc::Sum, Some("cost"), "s"),
                    agg(AggFunc::Avg, Some("age"), "a"),
                ],
                &[],
                None,
            ),
            Some(filter),
        ),
        // Nothing selected: the ungrouped query still has its one group, of zeros.
        (
            plan(vec![agg(AggFunc::Count, None, "n")], &[], None),
            Some(Predicate::Compare {
                column: "age".into(),
                op: CmpOp::Gt,
                value: Literal::Int(1_000),
            }),
        ),
    ];
    for (mut q, filter) in queries {
        q.filter = filter.clone();
        let push = pushdown(&q, &ds.schema, &params, &loose()).expect("pushdown");
        let mut want = source(&ds, &q, &push);
        want.sort_by(|a, b| a.key.cmp(&b.key));
        for size in [1, 7, 64, 1_000] {
            assert_eq!(
                scan(&ds, size, &push, filter.as_ref()),
                want,
                "{q:?} in chunks of {size}"
            );
        }
        // Shares of the chunks scanned apart and merged: the same.
        let mut shares: Vec<Scan> = (0..3)
            .map(|_| Scan::new(push.clone(), filter.clone()))
            .collect();
        for (i, c) in chunks(&ds, 50).iter().enumerate() {
            shares[i % 3].add(c).expect("chunk");
        }
        let mut merged = shares.remove(0);
        for s in shares {
            merged.merge(s).expect("merge");
        }
        assert_eq!(merged.rows(), ds.rows as u64);
        let mut got = merged.finish();
        got.sort_by(|a, b| a.key.cmp(&b.key));
        assert_eq!(got, want, "{q:?} in merged shares");
    }
}

#[test]
fn a_scan_bounds_each_privacy_unit_across_chunks_as_memory_does() {
    // 60 patients with 1..=9 visits each, moving between states, interleaved so a patient's
    // rows spread over many chunks.
    let mut id = spec("patient_id", ColumnType::Text, None, None);
    id.privacy_unit = Some(ContributionBounds {
        max_rows: 3,
        max_groups: 2,
    });
    let schema = DatasetSchema {
        name: "patients".into(),
        columns: vec![
            id,
            spec("state", ColumnType::Text, None, None),
            spec("age", ColumnType::Integer, Some((0.0, 120.0)), None),
        ],
    };
    let (mut ids, mut states, mut ages) = (Vec::new(), Vec::new(), Vec::new());
    for visit in 0..9 {
        for patient in 0..60usize {
            if visit < 1 + patient % 9 {
                ids.push(Some(format!("p{patient}")));
                states.push(Some(STATES[(patient + visit / 2) % 4].to_string()));
                ages.push(Some((20 + patient + visit) as i64));
            }
        }
    }
    let ds = Dataset {
        schema,
        rows: ids.len(),
        columns: vec![text(ids), text(states), ColumnData::Integer(ages)],
    };
    let q = plan(
        vec![
            Output::Key("state".into()),
            agg(AggFunc::Count, None, "n"),
            agg(AggFunc::Sum, Some("age"), "s"),
        ],
        &["state"],
        None,
    );
    let push = pushdown(&q, &ds.schema, &p(1.0, 1e-6), &loose()).expect("pushdown");
    let unit = push.unit.clone().expect("a unit");
    assert_eq!((unit.max_rows, unit.max_groups), (3, 2));

    // The in-memory rule over the whole dataset: groups, then `units::bound`.
    let mask = filter_mask(None, &ds).expect("mask");
    let mut groups = data_groups(&ds, &push.group_by, &[1], &mask).expect("groups");
    super::units::bound(
        &mut groups.gid,
        &ds.columns[0],
        ContributionBounds {
            max_rows: 3,
            max_groups: 2,
        },
    );
    let ColumnData::Integer(age) = &ds.columns[2] else {
        unreachable!()
    };
    let mut want: Vec<SourceGroup> = groups
        .keys
        .iter()
        .enumerate()
        .map(|(g, key)| {
            let kept: Vec<usize> = (0..ds.rows)
                .filter(|&i| groups.gid[i] == g as u32)
                .collect();
            let mut values = vec![kept.len() as i128];
            for m in &push.measures[1..] {
                values.push(match m {
                    Measure::ClampedSum { lo, hi, center, .. } => kept
                        .iter()
                        .map(|&i| i128::from(age[i].expect("age").clamp(*lo, *hi) - center))
                        .sum(),
                    Measure::NonNull { .. } => kept.len() as i128,
                    Measure::Rows => kept.len() as i128,
                });
            }
            SourceGroup {
                key: key.clone(),
                values,
            }
        })
        .filter(|g| g.values[0] > 0)
        .collect();
    want.sort_by(|a, b| a.key.cmp(&b.key));
    assert!(groups.gid.contains(&NONE), "the bound drops rows here");
    for size in [1, 5, 64, ds.rows] {
        assert_eq!(scan(&ds, size, &push, None), want, "in chunks of {size}");
    }
    // Bounding depends on the order of a unit's rows: shares are not merged.
    let mut a = Scan::new(push.clone(), None);
    let b = Scan::new(push.clone(), None);
    a.add(&ds).expect("rows");
    assert!(a.merge(b).is_err());
}
