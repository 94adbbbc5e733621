//! Validation of a plan against the schema, the parameters and the policy: which statistics a
//! query releases, where each output column comes from, how its numeric columns are clamped,
//! and how GROUP BY keys are released. Data-independent, like the rest of calibration.

use super::{DpError, DpParams, DpPolicy};
use crate::plan::{AggFunc, Output, Plan, Predicate};
use crate::schema::{Bounds, ColumnSpec, ColumnType, DatasetSchema};

/// Fixed-point scale of float columns: values are handled in hundredths (cents).
pub(crate) const FLOAT_UNIT: i64 = 100;
/// Most groups a public-key release may have.
pub(crate) const MAX_PUBLIC_GROUPS: u64 = 100_000;
/// Largest bound magnitude, in fixed-point units.
const MAX_ABS_UNITS: f64 = 1e15;

/// The kind of a released statistic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    CountAll,
    CountCol,
    Sum,
    Avg,
    Min,
    Max,
}

/// A numeric column prepared for DP: fixed-point unit and clamping bounds in that unit.
#[derive(Debug, Clone)]
pub(crate) struct NumCol {
    /// 1 for integer columns, [`FLOAT_UNIT`] for float columns.
    pub unit: i64,
    /// Clamping bounds in units (declared bounds rounded inwards).
    pub lo: i64,
    pub hi: i64,
    /// The bounds as declared by the owner.
    pub declared: Bounds,
    /// Declared `not_null`: every row has a value.
    pub not_null: bool,
}

/// Where each output column comes from.
pub(crate) enum Slot {
    /// Position in `plan.group_by`.
    Key(usize),
    /// A statistic, times a constant weight (`SUM(col * k)`).
    Stat { stat: usize, weight: Option<i64> },
}

/// How GROUP BY keys are released.
pub(crate) enum KeyMode {
    /// No GROUP BY: one group with the empty key.
    Ungrouped,
    /// Declared keys per GROUP BY column, sorted and deduplicated.
    Public(Vec<Vec<String>>),
    /// Keys present in the data, behind the threshold of the gate count.
    Threshold,
}

/// What a statistic will be, before its noise is calibrated.
pub(crate) struct Spec {
    pub kind: Kind,
    pub label: String,
    pub outputs: Vec<String>,
    pub col: Option<usize>,
    pub num: Option<NumCol>,
}

pub(crate) fn check_params(ds: &str, params: &DpParams, policy: &DpPolicy) -> Result<(), DpError> {
    let (eps, delta) = (params.epsilon, params.delta);
    if !(eps.is_finite() && eps >= super::MIN_EPSILON) {
        return Err(DpError::InvalidEpsilon {
            dataset: ds.to_string(),
            value: eps,
        });
    }
    if eps
        .partial_cmp(&policy.max_epsilon_per_query)
        .is_none_or(|o| o.is_gt())
    {
        let limit = policy.max_epsilon_per_query;
        return Err(DpError::PolicyViolation {
            dataset: ds.to_string(),
            what: "epsilon",
            value: eps,
            limit,
        });
    }
    if !(delta.is_finite() && (0.0..1.0).contains(&delta)) {
        return Err(DpError::InvalidDelta {
            dataset: ds.to_string(),
            value: delta,
        });
    }
    if delta
        .partial_cmp(&policy.max_delta_per_query)
        .is_none_or(|o| o.is_gt())
    {
        let limit = policy.max_delta_per_query;
        return Err(DpError::PolicyViolation {
            dataset: ds.to_string(),
            what: "delta",
            value: delta,
            limit,
        });
    }
    Ok(())
}

pub(crate) fn check_predicate(pred: &Predicate, schema: &DatasetSchema) -> Result<(), DpError> {
    let col = |c: &String| match schema.column(c) {
        Some(_) => Ok(()),
        None => Err(DpError::UnknownColumn {
            dataset: schema.name.clone(),
            column: c.clone(),
        }),
    };
    match pred {
        Predicate::Compare { column, .. }
        | Predicate::In { column, .. }
        | Predicate::Between { column, .. }
        | Predicate::IsNull { column, .. } => col(column),
        Predicate::And(a, b) | Predicate::Or(a, b) => {
            check_predicate(a, schema)?;
            check_predicate(b, schema)
        }
        Predicate::Not(a) => check_predicate(a, schema),
    }
}

/// Resolves a numeric column's bounds into fixed-point clamping bounds.
fn numeric(schema: &DatasetSchema, idx: usize, func: &str) -> Result<NumCol, DpError> {
    let spec = &schema.columns[idx];
    let dataset = schema.name.clone();
    let unit = match spec.ty {
        ColumnType::Integer => 1,
        ColumnType::Float => FLOAT_UNIT,
        ty => {
            let reason = format!(
                "{func} of {ty} column {} is not supported under differential privacy",
                spec.name
            );
            return Err(DpError::Unsupported { dataset, reason });
        }
    };
    let Some(b) = spec.bounds else {
        return Err(DpError::MissingBounds {
            dataset,
            column: spec.name.clone(),
        });
    };
    let bad = |reason: &str| DpError::InvalidBounds {
        dataset: dataset.clone(),
        column: spec.name.clone(),
        min: b.min,
        max: b.max,
        reason: reason.to_string(),
    };
    if !(b.min.is_finite() && b.max.is_finite()) || b.min > b.max {
        return Err(bad("bounds must be finite with min <= max"));
    }
    let (lo, hi) = ((b.min * unit as f64).ceil(), (b.max * unit as f64).floor());
    if lo.abs() > MAX_ABS_UNITS || hi.abs() > MAX_ABS_UNITS {
        return Err(bad(
            "bounds must be at most 1e15 in magnitude (1e13 for float columns)",
        ));
    }
    if lo > hi {
        return Err(bad("no representable value lies within the bounds"));
    }
    Ok(NumCol {
        unit,
        lo: lo as i64,
        hi: hi as i64,
        declared: b,
        not_null: spec.not_null,
    })
}

/// Validates the plan and lists its statistics and output slots.
pub(crate) fn specs(
    plan: &Plan,
    schema: &DatasetSchema,
) -> Result<(Vec<Spec>, Vec<Slot>), DpError> {
    let dataset = schema.name.clone();
    let unsupported = |reason: String| DpError::Unsupported {
        dataset: dataset.clone(),
        reason,
    };
    let resolve = |c: &str| {
        schema
            .column_index(c)
            .ok_or_else(|| DpError::UnknownColumn {
                dataset: dataset.clone(),
                column: c.to_string(),
            })
    };
    let mut specs: Vec<Spec> = Vec::new();
    let mut slots = Vec::new();
    for out in &plan.outputs {
        let agg = match out {
            Output::Key(k) => {
                let pos = plan.group_by.iter().position(|g| g.eq_ignore_ascii_case(k));
                let pos = pos.ok_or_else(|| {
                    unsupported(format!("output column {k} is not a GROUP BY column"))
                })?;
                slots.push(Slot::Key(pos));
                continue;
            }
            Output::Aggregate(a) => a,
        };
        let func = format!("{:?}", agg.func).to_uppercase();
        let (kind, col) = match (agg.func, &agg.column) {
            (AggFunc::Count, None) => (Kind::CountAll, None),
            (AggFunc::Count, Some(c)) => (Kind::CountCol, Some(resolve(c)?)),
            (f, Some(c)) => {
                let kind = match f {
                    AggFunc::Sum => Kind::Sum,
                    AggFunc::Avg => Kind::Avg,
                    AggFunc::Min => Kind::Min,
                    AggFunc::Max => Kind::Max,
                    AggFunc::Count => Kind::CountCol,
                };
                (kind, Some(resolve(c)?))
            }
            (_, None) => {
                return Err(unsupported(format!(
                    "{func}(*) ({}) needs a column",
                    agg.alias
                )));
            }
        };
        if agg.weight.is_some() && kind != Kind::Sum {
            return Err(unsupported(format!(
                "a weighted {func} ({}) is not supported",
                agg.alias
            )));
        }
        let idx = match specs.iter().position(|s| s.kind == kind && s.col == col) {
            Some(i) => i,
            None => {
                let num = match (kind, col) {
                    (Kind::Sum | Kind::Avg | Kind::Min | Kind::Max, Some(c)) => {
                        Some(numeric(schema, c, &func)?)
                    }
                    _ => None,
                };
                let name = col.map_or("*".to_string(), |c| schema.columns[c].name.clone());
                specs.push(Spec {
                    kind,
                    label: format!("{func}({name})"),
                    outputs: Vec::new(),
                    col,
                    num,
                });
                specs.len() - 1
            }
        };
        specs[idx].outputs.push(agg.alias.clone());
        slots.push(Slot::Stat {
            stat: idx,
            weight: agg.weight,
        });
    }
    Ok((specs, slots))
}

pub(crate) fn key_mode(
    schema: &DatasetSchema,
    group_cols: &[usize],
    params: &DpParams,
    policy: &DpPolicy,
) -> Result<KeyMode, DpError> {
    if group_cols.is_empty() {
        return Ok(KeyMode::Ungrouped);
    }
    let specs: Vec<_> = group_cols.iter().map(|&i| &schema.columns[i]).collect();
    let names = |cols: &[&ColumnSpec]| {
        cols.iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let missing: Vec<_> = specs
        .iter()
        .copied()
        .filter(|c| c.public_keys.is_none())
        .collect();
    if missing.is_empty() {
        let domains: Vec<Vec<String>> = specs
            .iter()
            .map(|c| {
                let mut keys = c.public_keys.clone().unwrap_or_default();
                keys.sort();
                keys.dedup();
                keys
            })
            .collect();
        let count = domains.iter().map(|d| d.len() as u128).product::<u128>();
        if count > u128::from(MAX_PUBLIC_GROUPS) {
            let columns = names(&specs);
            return Err(DpError::TooManyGroups {
                dataset: schema.name.clone(),
                columns,
                count,
                limit: MAX_PUBLIC_GROUPS,
            });
        }
        return Ok(KeyMode::Public(domains));
    }
    if params.delta <= 0.0 {
        let columns = names(&missing);
        return Err(DpError::DeltaRequired {
            dataset: schema.name.clone(),
            columns,
            max_delta: policy.max_delta_per_query,
        });
    }
    Ok(KeyMode::Threshold)
}
