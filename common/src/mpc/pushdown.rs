//! A party whose rows stay in a database: its exact local vector computed there.
//!
//! [`pushdown`] says what the database must compute for a room — per group of the plan's WHERE
//! and GROUP BY, one exact aggregate per component of the vector (row counts, non-null counts,
//! fixed-point sums, clamped to the declared bounds in a `dp` room) — in the same
//! [`Pushdown`] form the DP engine's pushdown uses, so the same statement builder serves both.
//! [`vector_from_groups`] places the groups the database returned into the room's key domain,
//! giving exactly the vector [`super::local_vector`] computes over the same rows in memory. The
//! party's noise is then added to it as to any other vector.
//!
//! Equality with the in-memory vector, component by component: a count is a count; a sum is
//! `Σ round(x · 10^d)` with `x` clamped to `[min, max]` first in a `dp` room, and clamping the
//! rounded product to `[round(min · 10^d), round(max · 10^d)]` instead gives the same value
//! for every `x`, as rounding is monotone.

use std::collections::HashMap;

use super::{Layout, MpcError, Part, layout, scale};
use crate::dp::{Measure, Pushdown, SourceGroup};
use crate::plan::Plan;
use crate::release::ReleaseMode;
use crate::room::RoomParams;
use crate::schema::DatasetSchema;
use crate::shares::encode;

/// What a database must compute for this party's vector: measure `0` is the row count, and
/// measure `1 + c` is component `c` of each key.
pub fn pushdown(
    plan: &Plan,
    schema: &DatasetSchema,
    params: &RoomParams,
) -> Result<Pushdown, MpcError> {
    let l = layout(plan, schema, params)?;
    let mut measures = vec![Measure::Rows];
    for (part, _) in &l.parts {
        measures.push(measure(&l, *part)?);
    }
    Ok(Pushdown {
        group_by: plan.group_by.clone(),
        measures,
        unit: l
            .privacy_unit
            .as_ref()
            .map(|(column, b)| crate::dp::UnitBound {
                column: column.clone(),
                max_rows: b.max_rows,
                max_groups: b.max_groups,
            }),
    })
}

fn measure(l: &Layout, part: Part) -> Result<Measure, MpcError> {
    Ok(match part {
        Part::Rows => Measure::Rows,
        Part::NonNull(c) => Measure::NonNull {
            column: l.columns[c].0.clone(),
        },
        Part::Sum(c, _) => {
            let (column, ty, bounds) = &l.columns[c];
            let unit = scale(*ty, l.decimals);
            let in_units = |b: f64| -> Result<i64, MpcError> {
                let v = (b * unit).round();
                if v.is_finite() && v.abs() < 9.2e18 {
                    Ok(v as i64)
                } else {
                    Err(MpcError::Overflow(column.clone()))
                }
            };
            let (lo, hi) = match (l.release, bounds) {
                (ReleaseMode::Dp, Some(b)) => (in_units(b.min)?, in_units(b.max)?),
                _ => (i64::MIN, i64::MAX),
            };
            Measure::ClampedSum {
                column: column.clone(),
                ty: *ty,
                unit: unit as i64,
                lo,
                hi,
                center: 0,
            }
        }
    })
}

/// This party's exact local vector from the groups the database computed for [`pushdown`]:
/// groups outside the room's key domain (or with a null key) are left out, as in memory.
pub fn vector_from_groups(
    plan: &Plan,
    schema: &DatasetSchema,
    params: &RoomParams,
    groups: &[SourceGroup],
) -> Result<Vec<u64>, MpcError> {
    let l = layout(plan, schema, params)?;
    let overflow = || MpcError::Overflow(schema.name.clone());
    let key_index: HashMap<&[String], usize> = l
        .keys
        .iter()
        .enumerate()
        .map(|(i, k)| (k.as_slice(), i))
        .collect();
    let np = l.parts.len();
    let mut acc = vec![0i64; l.len()];
    for g in groups {
        let Some(key) = g.key.iter().cloned().collect::<Option<Vec<String>>>() else {
            continue;
        };
        let Some(&k) = key_index.get(key.as_slice()) else {
            continue;
        };
        if g.values.len() != np + 1 {
            return Err(MpcError::Schema {
                dataset: schema.name.clone(),
                message: format!(
                    "the database answered {} aggregates per group, the room needs {}",
                    g.values.len(),
                    np + 1
                ),
            });
        }
        for (c, (part, _)) in l.parts.iter().enumerate() {
            let v = g.values[c + 1];
            let v = match part {
                Part::Sum(_, w) => v.checked_mul(i128::from(*w)).ok_or_else(overflow)?,
                _ => v,
            };
            let v = i64::try_from(v).map_err(|_| overflow())?;
            let slot = &mut acc[k * np + c];
            *slot = slot.checked_add(v).ok_or_else(overflow)?;
        }
    }
    Ok(acc.into_iter().map(encode).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::filter_mask;
    use crate::plan::{AggFunc, Aggregate, CmpOp, Literal, Output, Predicate};
    use crate::schema::{Bounds, ColumnData, ColumnSpec, ColumnType, Dataset};

    fn ds() -> Dataset {
        let ages = [
            Some(30),
            Some(95),
            None,
            Some(41),
            Some(-3),
            Some(60),
            Some(77),
        ];
        let costs = [
            Some(10.004),
            Some(5000.5),
            Some(0.125),
            None,
            Some(-1.0),
            Some(2499.995),
            Some(1.5),
        ];
        let states = ["CA", "NY", "CA", "TX", "NY", "OR", "CA"];
        let mut dict: Vec<String> = Vec::new();
        let codes = states
            .iter()
            .map(|s| {
                let p = dict.iter().position(|d| d == s).unwrap_or_else(|| {
                    dict.push(s.to_string());
                    dict.len() - 1
                });
                Some(p as u32)
            })
            .collect();
        let spec = |name: &str, ty, bounds| ColumnSpec {
            name: name.into(),
            ty,
            bounds,
            public_keys: None,
            not_null: false,
            privacy_unit: None,
        };
        Dataset {
            schema: DatasetSchema {
                name: "visits".into(),
                columns: vec![
                    spec(
                        "age",
                        ColumnType::Integer,
                        Some(Bounds {
                            min: 0.0,
                            max: 90.0,
                        }),
                    ),
                    spec(
                        "cost",
                        ColumnType::Float,
                        Some(Bounds {
                            min: 0.0,
                            max: 2500.0,
                        }),
                    ),
                    spec("state", ColumnType::Text, None),
                ],
            },
            rows: 7,
            columns: vec![
                ColumnData::Integer(ages.to_vec()),
                ColumnData::Float(costs.to_vec()),
                ColumnData::Text { dict, codes },
            ],
        }
    }

    fn agg(func: AggFunc, column: Option<&str>, alias: &str) -> Output {
        Output::Aggregate(Aggregate {
            func,
            column: column.map(str::to_string),
            alias: alias.into(),
            weight: None,
        })
    }

    /// What a database computes for `push` over the rows `filter` keeps: one group per key
    /// present, in the form the PostgreSQL source returns.
    fn groups_of(ds: &Dataset, plan: &Plan, push: &Pushdown) -> Vec<SourceGroup> {
        let mask = filter_mask(plan.filter.as_ref(), ds).expect("mask");
        let mut out: Vec<SourceGroup> = Vec::new();
        for row in (0..ds.rows).filter(|&r| mask[r]) {
            let key: Vec<Option<String>> = push
                .group_by
                .iter()
                .map(|g| ds.column(g).expect("column").1.key(row))
                .collect();
            let values: Vec<i128> = push
                .measures
                .iter()
                .map(|m| match m {
                    Measure::Rows => 1,
                    Measure::NonNull { column } => {
                        i128::from(!ds.column(column).expect("column").1.is_null(row))
                    }
                    Measure::ClampedSum {
                        column,
                        unit,
                        lo,
                        hi,
                        ..
                    } => match ds.column(column).expect("column").1.number(row) {
                        Some(x) => i128::from(((x * *unit as f64).round() as i64).clamp(*lo, *hi)),
                        None => 0,
                    },
                })
                .collect();
            match out.iter_mut().find(|g| g.key == key) {
                Some(g) => g.values.iter_mut().zip(values).for_each(|(a, v)| *a += v),
                None => out.push(SourceGroup { key, values }),
            }
        }
        out
    }

    #[test]
    fn the_pushed_down_vector_is_the_in_memory_vector_in_dp_and_exact_rooms() {
        let ds = ds();
        let mut plan = Plan {
            dataset: "visits".into(),
            outputs: vec![
                Output::Key("state".into()),
                agg(AggFunc::Count, None, "n"),
                agg(AggFunc::Sum, Some("age"), "ages"),
                agg(AggFunc::Avg, Some("cost"), "cost"),
                agg(AggFunc::Count, Some("age"), "aged"),
            ],
            group_by: vec!["state".into()],
            filter: Some(Predicate::Compare {
                column: "age".into(),
                op: CmpOp::NotEq,
                value: Literal::Int(41),
            }),
            having_min_count: None,
        };
        for release in [ReleaseMode::Dp, ReleaseMode::Exact] {
            for decimals in [0, 2, 3] {
                let params = RoomParams {
                    group_keys: vec![vec!["CA".into(), "NY".into(), "TX".into()]],
                    release,
                    fixed_point_decimals: decimals,
                    ..Default::default()
                };
                let push = pushdown(&plan, &ds.schema, &params).expect("pushdown");
                let groups = groups_of(&ds, &plan, &push);
                let pushed =
                    vector_from_groups(&plan, &ds.schema, &params, &groups).expect("vector");
                let memory = super::super::local_vector(&plan, &ds, &params).expect("memory");
                assert_eq!(pushed, memory, "{release:?}, {decimals} decimals");
            }
        }
        // Without GROUP BY: one group with the empty key.
        plan.outputs.remove(0);
        plan.group_by.clear();
        let params = RoomParams::default();
        let push = pushdown(&plan, &ds.schema, &params).expect("pushdown");
        let groups = groups_of(&ds, &plan, &push);
        assert_eq!(
            vector_from_groups(&plan, &ds.schema, &params, &groups).expect("vector"),
            super::super::local_vector(&plan, &ds, &params).expect("memory")
        );
    }

    #[test]
    fn a_database_answer_of_the_wrong_shape_is_refused() {
        let ds = ds();
        let plan = Plan {
            dataset: "visits".into(),
            outputs: vec![agg(AggFunc::Count, None, "n")],
            filter: None,
            group_by: vec![],
            having_min_count: None,
        };
        let params = RoomParams::default();
        let bad = [SourceGroup {
            key: vec![],
            values: vec![1],
        }];
        let e = vector_from_groups(&plan, &ds.schema, &params, &bad).expect_err("short");
        assert!(e.to_string().contains("aggregates per group"), "{e}");
    }
}
