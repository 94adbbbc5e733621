//! The key holder's side of the plan: which constructs HE evaluates, which columns it can use
//! and how, and the encoding of a plan into its public shape plus the secret constant codes.

use super::HeError;
use super::shape::{Atom, Encoding, FilterColumn, HeQuery, HeValue, TextDomain};
use crate::plan::{AggFunc, CmpOp, Literal, Output, Plan, Predicate};
use crate::schema::{ColumnSpec, ColumnType, DatasetSchema};

fn unsupported(construct: &str, hint: &str) -> HeError {
    HeError::Unsupported {
        construct: construct.to_string(),
        hint: hint.to_string(),
    }
}

/// Plan-only checks (no schema needed): what `support::check_supported` refuses for HE.
pub fn check_plan(plan: &Plan) -> Result<(), HeError> {
    if !plan.group_by.is_empty() || plan.outputs.iter().any(|o| matches!(o, Output::Key(_))) {
        return Err(unsupported(
            "group by",
            "he_backend returns one row; run one query per group with a where filter, or use dp_sandbox",
        ));
    }
    if plan.having_min_count.is_some() {
        return Err(unsupported(
            "having",
            "he_backend returns one row; drop having",
        ));
    }
    if let Some(f) = &plan.filter {
        check_predicate(f)?;
    }
    Ok(())
}

fn check_predicate(p: &Predicate) -> Result<(), HeError> {
    match p {
        Predicate::And(a, b) => {
            check_predicate(a)?;
            check_predicate(b)
        }
        Predicate::Or(..) => Err(unsupported(
            "or in where",
            "combine conditions with and, or use in (...) for alternatives on one column",
        )),
        Predicate::Not(_) => Err(unsupported(
            "not in where",
            "use <>, not in or not between on the column instead",
        )),
        Predicate::IsNull { .. } => Err(unsupported(
            "is null in where",
            "rows with a null filter column never match; count(col) counts non-null values",
        )),
        Predicate::Compare { .. } | Predicate::In { .. } | Predicate::Between { .. } => Ok(()),
    }
}

/// Refuses a weighted sum `SUM(col * k)` whose exact result could leave the 64-bit range: the
/// weight is bounded by the column's declared bounds and the dataset's row count, so the
/// answer is exact (and the refusal comes before any encrypted work).
pub fn check_weights(plan: &Plan, schema: &DatasetSchema, rows: u64) -> Result<(), HeError> {
    for a in plan.aggregates() {
        let (Some(k), Some(c)) = (a.weight, &a.column) else {
            continue;
        };
        let (lo, hi) = check_aggregated(spec(schema, c)?)?;
        let largest = i128::from(lo.unsigned_abs().max(hi.unsigned_abs()).max(1));
        let rows = i128::from(rows.max(1));
        let reach = i128::from(k.unsigned_abs()) * largest * rows;
        if reach > i128::from(i64::MAX) {
            let max_k = i128::from(i64::MAX) / (largest * rows);
            return Err(unsupported(
                &format!("sum({c} * {k})"),
                &format!(
                    "over {rows} rows with {c} in {lo} .. {hi} the weighted sum could exceed the 64-bit \
                     exact result; use a weight of at most {max_k} in absolute value"
                ),
            ));
        }
    }
    Ok(())
}

/// Integer bounds of a column: `ceil(min) ..= floor(max)`.
pub fn int_bounds(spec: &ColumnSpec) -> Result<(i64, i64), HeError> {
    let b = spec.bounds.ok_or_else(|| {
        HeError::column(
            &spec.name,
            "bounds are not declared; he_backend sizes its encrypted integers from them, so the data \
             owner must declare bounds for this column",
        )
    })?;
    const LIMIT: f64 = (1u64 << 52) as f64;
    let (lo, hi) = (b.min.ceil(), b.max.floor());
    if !(lo.is_finite() && hi.is_finite() && lo <= hi && lo.abs() <= LIMIT && hi.abs() <= LIMIT) {
        return Err(HeError::column(
            &spec.name,
            format!(
                "declared bounds {} .. {} hold no integer range he_backend can encode (|bound| ≤ 2^52)",
                b.min, b.max
            ),
        ));
    }
    Ok((lo as i64, hi as i64))
}

/// The column's spec, or an error naming it.
fn spec<'a>(schema: &'a DatasetSchema, column: &str) -> Result<&'a ColumnSpec, HeError> {
    schema
        .column(column)
        .ok_or_else(|| HeError::column(column, format!("not in dataset {}", schema.name)))
}

/// Checks that an aggregated column can be summed / compared under HE.
pub fn check_aggregated(spec: &ColumnSpec) -> Result<(i64, i64), HeError> {
    if spec.ty != ColumnType::Integer {
        return Err(HeError::column(
            &spec.name,
            format!(
                "he_backend sums, averages and compares integer columns only and this is a {} column; \
                 use dp_sandbox for it",
                spec.ty
            ),
        ));
    }
    int_bounds(spec)
}

/// The encoding of a filter column (text columns need their domain).
pub fn filter_encoding(
    spec: &ColumnSpec,
    domain: Option<&TextDomain>,
) -> Result<Encoding, HeError> {
    match spec.ty {
        ColumnType::Text => {
            let d = domain.ok_or_else(|| HeError::column(&spec.name, "no text domain for it"))?;
            let len = u32::try_from(d.values.len())
                .ok()
                .filter(|l| *l < u32::MAX)
                .ok_or_else(|| HeError::column(&spec.name, "text domain too large"))?;
            Ok(Encoding::Text {
                len,
                digest: d.digest.clone(),
            })
        }
        ColumnType::Boolean => Ok(Encoding::Integer { min: 0, max: 1 }),
        ColumnType::Integer => {
            let (min, max) = int_bounds(spec)?;
            let enc = Encoding::Integer { min, max };
            if enc.bits() > 32 {
                return Err(HeError::column(
                    &spec.name,
                    "declared bounds are wider than 2^32 values; he_backend filters need narrower bounds",
                ));
            }
            Ok(enc)
        }
        ColumnType::Float => Err(HeError::column(
            &spec.name,
            "he_backend filters integer, text and boolean columns, not float ones; use dp_sandbox",
        )),
    }
}

/// Text columns the plan filters on (their domains must be fetched before encoding).
pub fn text_filter_columns(plan: &Plan, schema: &DatasetSchema) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    if let Some(f) = &plan.filter {
        for (col, _) in leaves(f) {
            if let Some(s) = schema.column(col)
                && s.ty == ColumnType::Text
                && !out.contains(&s.name)
            {
                out.push(s.name.clone());
            }
        }
    }
    out
}

/// The leaves of a conjunction with their column names.
fn leaves(p: &Predicate) -> Vec<(&str, &Predicate)> {
    match p {
        Predicate::And(a, b) => {
            let mut v = leaves(a);
            v.extend(leaves(b));
            v
        }
        Predicate::Compare { column, .. }
        | Predicate::In { column, .. }
        | Predicate::Between { column, .. }
        | Predicate::IsNull { column, .. } => vec![(column.as_str(), p)],
        Predicate::Or(..) | Predicate::Not(_) => vec![],
    }
}

/// The values a plan needs, deduplicated in order.
pub fn values_for(plan: &Plan, schema: &DatasetSchema) -> Result<Vec<HeValue>, HeError> {
    let mut out: Vec<HeValue> = Vec::new();
    let mut add = |v: HeValue| {
        if !out.contains(&v) {
            out.push(v);
        }
    };
    for a in plan.aggregates() {
        let Some(c) = &a.column else {
            add(HeValue::CountRows);
            continue;
        };
        let column = spec(schema, c)?.name.clone();
        if a.func != AggFunc::Count {
            check_aggregated(spec(schema, c)?)?;
        }
        let nn = HeValue::CountNonNull {
            column: column.clone(),
        };
        match a.func {
            AggFunc::Count => add(nn),
            AggFunc::Sum | AggFunc::Avg => {
                add(HeValue::Sum { column });
                add(nn);
            }
            AggFunc::Min => {
                add(HeValue::Min { column });
                add(nn);
            }
            AggFunc::Max => {
                add(HeValue::Max { column });
                add(nn);
            }
        }
    }
    Ok(out)
}

/// A plan turned into its public shape plus the secret codes of its constants.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Encoded {
    /// What the node sees.
    pub query: HeQuery,
    /// Constant codes, in the order of [`HeQuery::constant_bits`]; only ever sent encrypted.
    pub codes: Vec<u64>,
}

/// Encodes a plan (the key holder's side). `domains` must hold every text filter column.
pub fn encode(
    plan: &Plan,
    schema: &DatasetSchema,
    domains: &[TextDomain],
) -> Result<Encoded, HeError> {
    check_plan(plan)?;
    let values = values_for(plan, schema)?;
    let mut filter: Vec<(FilterColumn, Vec<u64>)> = Vec::new();
    if let Some(p) = &plan.filter {
        for (col, leaf) in leaves(p) {
            let s = spec(schema, col)?;
            let pos = match filter.iter().position(|(f, _)| f.column == s.name) {
                Some(i) => i,
                None => {
                    let domain = domains.iter().find(|d| d.column == s.name);
                    let encoding = filter_encoding(s, domain)?;
                    let fc = FilterColumn {
                        column: s.name.clone(),
                        encoding,
                        atoms: vec![],
                    };
                    filter.push((fc, vec![]));
                    filter.len() - 1
                }
            };
            let domain = domains.iter().find(|d| d.column == s.name);
            let (fc, codes) = &mut filter[pos];
            let (atom, mut c) = encode_leaf(s, &fc.encoding, domain, leaf)?;
            fc.atoms.push(atom);
            codes.append(&mut c);
        }
    }
    let codes: Vec<u64> = filter.iter().flat_map(|(_, c)| c.iter().copied()).collect();
    if codes.len() > super::MAX_CONSTANTS {
        return Err(unsupported(
            &format!("{} filter constants", codes.len()),
            &format!("use at most {} constants", super::MAX_CONSTANTS),
        ));
    }
    Ok(Encoded {
        query: HeQuery {
            dataset: plan.dataset.clone(),
            values,
            filter: filter.into_iter().map(|(f, _)| f).collect(),
        },
        codes,
    })
}

/// How a constant is rounded onto an integer column.
#[derive(Clone, Copy)]
enum Round {
    /// Must equal an integer (=, <>, in): a fractional constant matches nothing.
    Exact,
    /// `ceil` (for `<` and `>=`, a lower bound).
    Up,
    /// `floor` (for `<=` and `>`, an upper bound).
    Down,
}

fn encode_leaf(
    spec: &ColumnSpec,
    enc: &Encoding,
    domain: Option<&TextDomain>,
    leaf: &Predicate,
) -> Result<(Atom, Vec<u64>), HeError> {
    let code = |lit: &Literal, round: Round| constant_code(spec, enc, domain, lit, round);
    match leaf {
        Predicate::Compare { op, value, .. } => {
            let round = match op {
                CmpOp::Eq | CmpOp::NotEq => Round::Exact,
                CmpOp::Lt | CmpOp::GtEq => Round::Up,
                CmpOp::LtEq | CmpOp::Gt => Round::Down,
            };
            Ok((Atom::Compare { op: *op }, vec![code(value, round)?]))
        }
        Predicate::In {
            values, negated, ..
        } => {
            let codes = values
                .iter()
                .map(|v| code(v, Round::Exact))
                .collect::<Result<Vec<_>, _>>()?;
            let count = u32::try_from(codes.len()).unwrap_or(u32::MAX);
            Ok((
                Atom::In {
                    count,
                    negated: *negated,
                },
                codes,
            ))
        }
        Predicate::Between {
            low, high, negated, ..
        } => Ok((
            Atom::Between { negated: *negated },
            vec![code(low, Round::Up)?, code(high, Round::Down)?],
        )),
        Predicate::IsNull { .. } | Predicate::And(..) | Predicate::Or(..) | Predicate::Not(_) => {
            Err(unsupported(
                "this predicate",
                "use comparisons, in and between",
            ))
        }
    }
}

fn constant_code(
    spec: &ColumnSpec,
    enc: &Encoding,
    domain: Option<&TextDomain>,
    lit: &Literal,
    round: Round,
) -> Result<u64, HeError> {
    let mismatch = || {
        HeError::column(
            &spec.name,
            format!("cannot compare a {} column with {lit:?}", spec.ty),
        )
    };
    match (enc, lit) {
        (Encoding::Text { len, .. }, Literal::Text(s)) => {
            let d = domain.ok_or_else(|| HeError::column(&spec.name, "no text domain for it"))?;
            Ok(d.values
                .iter()
                .position(|v| v == s)
                .map_or(u64::from(*len), |p| p as u64))
        }
        (Encoding::Integer { min, max }, lit) => {
            let (lo, hi) = ((*min as f64) - 1.0, (*max as f64) + 1.0);
            let x = match (spec.ty, lit) {
                (ColumnType::Boolean, Literal::Bool(b)) => f64::from(u8::from(*b)),
                (ColumnType::Integer, Literal::Int(i)) => *i as f64,
                (ColumnType::Integer, Literal::Float(f)) if !f.is_nan() => *f,
                _ => return Err(mismatch()),
            };
            // Clamp first (bounds are ≤ 2^52, exact in f64), then round to an integer.
            let x = x.clamp(lo, hi);
            let x = match round {
                Round::Exact if x.fract() != 0.0 => lo,
                Round::Exact => x,
                Round::Up => x.ceil(),
                Round::Down => x.floor(),
            };
            Ok((x - lo) as u64)
        }
        _ => Err(mismatch()),
    }
}
