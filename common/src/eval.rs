//! Plain evaluation of a plan's WHERE and GROUP BY over a dataset held in memory.
//!
//! Every backend that computes on a node in the clear (DP before noise, MPC before sharing,
//! HE's clear pre-aggregation) starts here.

use std::collections::BTreeMap;

use crate::plan::{CmpOp, Literal, Predicate};
use crate::schema::{ColumnData, Dataset};

/// Errors evaluating a predicate against a dataset.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EvalError {
    /// The predicate names a column the dataset does not have.
    #[error("unknown column {0}")]
    UnknownColumn(String),
    /// A constant cannot be compared with the column's type.
    #[error("column {column}: cannot compare a {ty} column with {literal:?}")]
    TypeMismatch {
        /// Column name.
        column: String,
        /// Column type.
        ty: String,
        /// The literal.
        literal: Literal,
    },
}

/// A typed constant, resolved against the column it is compared with.
enum Resolved {
    Num(f64),
    /// Text code in the column's dictionary; `None` when the text does not occur at all.
    Code(Option<u32>),
}

fn resolve(column: &str, data: &ColumnData, lit: &Literal) -> Result<Resolved, EvalError> {
    let mismatch = || EvalError::TypeMismatch {
        column: column.to_string(),
        ty: match data {
            ColumnData::Integer(_) => "integer",
            ColumnData::Float(_) => "float",
            ColumnData::Text { .. } => "text",
            ColumnData::Boolean(_) => "boolean",
        }
        .to_string(),
        literal: lit.clone(),
    };
    match (data, lit) {
        (ColumnData::Text { dict, .. }, Literal::Text(s)) => Ok(Resolved::Code(
            dict.iter().position(|d| d == s).map(|p| p as u32),
        )),
        (ColumnData::Text { .. }, _) => Err(mismatch()),
        (ColumnData::Boolean(_), Literal::Bool(b)) => Ok(Resolved::Num(if *b { 1.0 } else { 0.0 })),
        (ColumnData::Boolean(_), _) => Err(mismatch()),
        (ColumnData::Integer(_) | ColumnData::Float(_), Literal::Int(i)) => {
            Ok(Resolved::Num(*i as f64))
        }
        (ColumnData::Integer(_) | ColumnData::Float(_), Literal::Float(f)) => Ok(Resolved::Num(*f)),
        (ColumnData::Integer(_) | ColumnData::Float(_), _) => Err(mismatch()),
    }
}

fn compare(op: CmpOp, ord: std::cmp::Ordering) -> bool {
    use std::cmp::Ordering::*;
    match op {
        CmpOp::Eq => ord == Equal,
        CmpOp::NotEq => ord != Equal,
        CmpOp::Lt => ord == Less,
        CmpOp::LtEq => ord != Greater,
        CmpOp::Gt => ord == Greater,
        CmpOp::GtEq => ord != Less,
    }
}

/// Compares row `i` of `data` with a resolved constant; `None` when the row is null (SQL's
/// unknown, which a WHERE treats as false).
fn cmp_row(data: &ColumnData, i: usize, op: CmpOp, c: &Resolved) -> Option<bool> {
    match (data, c) {
        (ColumnData::Text { codes, .. }, Resolved::Code(code)) => {
            let v = codes[i]?;
            Some(match op {
                CmpOp::Eq => Some(v) == *code,
                CmpOp::NotEq => Some(v) != *code,
                // Ordering on text is refused at planning; treat as no match here.
                _ => false,
            })
        }
        (_, Resolved::Num(x)) => {
            let v = data.number(i)?;
            Some(compare(op, v.partial_cmp(x)?))
        }
        _ => Some(false),
    }
}

/// `cmp_row` over a whole column, with the type and operator dispatched once rather than per
/// row (the WHERE of a million-row query is dominated by this loop).
fn compare_column(data: &ColumnData, op: CmpOp, c: &Resolved) -> Vec<Option<bool>> {
    match (data, c) {
        (ColumnData::Text { codes, .. }, Resolved::Code(code)) => match op {
            CmpOp::Eq => codes.iter().map(|v| v.map(|v| Some(v) == *code)).collect(),
            CmpOp::NotEq => codes.iter().map(|v| v.map(|v| Some(v) != *code)).collect(),
            _ => codes.iter().map(|v| v.map(|_| false)).collect(),
        },
        (ColumnData::Integer(vals), Resolved::Num(x)) => vals
            .iter()
            .map(|v| v.and_then(|v| Some(compare(op, (v as f64).partial_cmp(x)?))))
            .collect(),
        (ColumnData::Float(vals), Resolved::Num(x)) => vals
            .iter()
            .map(|v| v.and_then(|v| Some(compare(op, v.partial_cmp(x)?))))
            .collect(),
        _ => (0..data.len()).map(|i| cmp_row(data, i, op, c)).collect(),
    }
}

fn column<'a>(ds: &'a Dataset, name: &str) -> Result<&'a ColumnData, EvalError> {
    ds.column(name)
        .map(|(_, d)| d)
        .ok_or_else(|| EvalError::UnknownColumn(name.to_string()))
}

/// Evaluates a predicate to SQL three-valued logic per row (`None` = unknown).
fn eval3(pred: &Predicate, ds: &Dataset) -> Result<Vec<Option<bool>>, EvalError> {
    let n = ds.rows;
    Ok(match pred {
        Predicate::Compare {
            column: col,
            op,
            value,
        } => {
            let data = column(ds, col)?;
            let c = resolve(col, data, value)?;
            compare_column(data, *op, &c)
        }
        Predicate::In {
            column: col,
            values,
            negated,
        } => {
            let data = column(ds, col)?;
            let cs = values
                .iter()
                .map(|v| resolve(col, data, v))
                .collect::<Result<Vec<_>, _>>()?;
            (0..n)
                .map(|i| {
                    if data.is_null(i) {
                        return None;
                    }
                    let hit = cs
                        .iter()
                        .any(|c| cmp_row(data, i, CmpOp::Eq, c) == Some(true));
                    Some(hit != *negated)
                })
                .collect()
        }
        Predicate::Between {
            column: col,
            low,
            high,
            negated,
        } => {
            let data = column(ds, col)?;
            let lo = resolve(col, data, low)?;
            let hi = resolve(col, data, high)?;
            (0..n)
                .map(|i| {
                    let a = cmp_row(data, i, CmpOp::GtEq, &lo)?;
                    let b = cmp_row(data, i, CmpOp::LtEq, &hi)?;
                    Some((a && b) != *negated)
                })
                .collect()
        }
        Predicate::IsNull {
            column: col,
            negated,
        } => {
            let data = column(ds, col)?;
            (0..n).map(|i| Some(data.is_null(i) != *negated)).collect()
        }
        Predicate::And(a, b) => {
            let (a, b) = (eval3(a, ds)?, eval3(b, ds)?);
            a.into_iter()
                .zip(b)
                .map(|(x, y)| match (x, y) {
                    (Some(false), _) | (_, Some(false)) => Some(false),
                    (Some(true), Some(true)) => Some(true),
                    _ => None,
                })
                .collect()
        }
        Predicate::Or(a, b) => {
            let (a, b) = (eval3(a, ds)?, eval3(b, ds)?);
            a.into_iter()
                .zip(b)
                .map(|(x, y)| match (x, y) {
                    (Some(true), _) | (_, Some(true)) => Some(true),
                    (Some(false), Some(false)) => Some(false),
                    _ => None,
                })
                .collect()
        }
        Predicate::Not(a) => eval3(a, ds)?.into_iter().map(|x| x.map(|b| !b)).collect(),
    })
}

/// Which rows satisfy the WHERE (all rows when there is none). Null comparisons are false.
pub fn filter_mask(pred: Option<&Predicate>, ds: &Dataset) -> Result<Vec<bool>, EvalError> {
    match pred {
        None => Ok(vec![true; ds.rows]),
        Some(p) => Ok(eval3(p, ds)?.into_iter().map(|x| x == Some(true)).collect()),
    }
}

/// A group key: one value per GROUP BY column (`None` = null).
pub type GroupKey = Vec<Option<String>>;

/// Groups the selected rows by the GROUP BY columns: key → row indices, keys in sorted order.
/// With no GROUP BY, all selected rows form the single group with the empty key.
pub fn group_rows(
    group_by: &[String],
    mask: &[bool],
    ds: &Dataset,
) -> Result<BTreeMap<GroupKey, Vec<usize>>, EvalError> {
    let cols = group_by
        .iter()
        .map(|g| column(ds, g))
        .collect::<Result<Vec<_>, _>>()?;
    let mut groups: BTreeMap<GroupKey, Vec<usize>> = BTreeMap::new();
    if cols.is_empty() {
        groups.insert(Vec::new(), (0..ds.rows).filter(|&i| mask[i]).collect());
        return Ok(groups);
    }
    for i in (0..ds.rows).filter(|&i| mask[i]) {
        let key: GroupKey = cols.iter().map(|c| c.key(i)).collect();
        groups.entry(key).or_default().push(i);
    }
    Ok(groups)
}
