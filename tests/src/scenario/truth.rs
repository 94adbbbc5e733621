//! The plaintext truth of a step: the same SQL evaluated in the clear over the same data the
//! simulator imported (one dataset for a query, every participant's for a room), and the
//! comparison of a released answer with it.
//!
//! The filter and grouping are `prism_common::eval`'s, the ones every backend starts from;
//! the aggregates here are plain sums, counts, minima and maxima with no clamping or noise.

use std::collections::BTreeMap;

use prism_common::eval::{filter_mask, group_rows};
use prism_common::plan::{AggFunc, Output, Plan, Table};
use prism_common::schema::Dataset;
use serde_json::{Value, json};

use super::Expect;

#[derive(Default, Clone, Copy)]
struct Acc {
    rows: u64,
    n: u64,
    sum: f64,
    min: Option<f64>,
    max: Option<f64>,
}

/// Evaluates a plan over the union of `datasets` (each must have the plan's columns).
pub fn evaluate(plan: &Plan, datasets: &[&Dataset]) -> anyhow::Result<Table> {
    let aggs: Vec<_> = plan.aggregates().cloned().collect();
    let mut groups: BTreeMap<Vec<Option<String>>, Vec<Acc>> = BTreeMap::new();
    for ds in datasets {
        let mask = filter_mask(plan.filter.as_ref(), ds)?;
        for (key, rows) in group_rows(&plan.group_by, &mask, ds)? {
            let accs = groups
                .entry(key)
                .or_insert_with(|| vec![Acc::default(); aggs.len()]);
            for (acc, agg) in accs.iter_mut().zip(&aggs) {
                acc.rows += rows.len() as u64;
                let Some(col) = &agg.column else { continue };
                let (_, data) = ds
                    .column(col)
                    .ok_or_else(|| anyhow::anyhow!("unknown column {col}"))?;
                let w = agg.weight.unwrap_or(1) as f64;
                for &i in &rows {
                    if data.is_null(i) {
                        continue;
                    }
                    acc.n += 1;
                    if let Some(x) = data.number(i) {
                        acc.sum += x * w;
                        acc.min = Some(acc.min.map_or(x, |m| m.min(x)));
                        acc.max = Some(acc.max.map_or(x, |m| m.max(x)));
                    }
                }
            }
        }
    }
    let mut rows = Vec::new();
    for (key, accs) in groups {
        let n_rows = accs.first().map_or(0, |a| a.rows);
        if plan.having_min_count.is_some_and(|k| n_rows < k) {
            continue;
        }
        let mut keys = key.into_iter();
        let mut aggs_iter = aggs.iter().zip(accs);
        let mut row = Vec::new();
        for out in &plan.outputs {
            match out {
                Output::Key(_) => row.push(keys.next().flatten().map_or(Value::Null, Value::from)),
                Output::Aggregate(_) => {
                    let Some((agg, acc)) = aggs_iter.next() else {
                        continue;
                    };
                    row.push(match agg.func {
                        AggFunc::Count if agg.column.is_none() => json!(acc.rows),
                        AggFunc::Count => json!(acc.n),
                        AggFunc::Sum => json!(acc.sum),
                        AggFunc::Avg if acc.n > 0 => json!(acc.sum / acc.n as f64),
                        AggFunc::Min => acc.min.map_or(Value::Null, |x| json!(x)),
                        AggFunc::Max => acc.max.map_or(Value::Null, |x| json!(x)),
                        AggFunc::Avg => Value::Null,
                    });
                }
            }
        }
        rows.push(row);
    }
    Ok(Table {
        columns: plan.column_names(),
        rows,
    })
}

/// The 95 % half-width the answer's proof states for an output column, wherever the backend
/// puts it: a `ci95_half_width` map keyed by column (HE), a statistic whose `outputs` name
/// the column (DP), or a noise `component` named after it (a dp room).
pub fn interval(proof: &Value, column: &str) -> Option<f64> {
    match proof {
        Value::Object(m) => {
            if let Some(Value::Object(ci)) = m.get("ci95_half_width")
                && let Some(x) = ci.get(column).and_then(Value::as_f64)
            {
                return Some(x);
            }
            let names_it = m
                .get("outputs")
                .and_then(Value::as_array)
                .is_some_and(|o| o.iter().any(|c| c == column))
                || m.get("component").is_some_and(|c| c == column);
            if names_it && let Some(x) = m.get("ci95_half_width").and_then(Value::as_f64) {
                return Some(x);
            }
            m.values().find_map(|v| interval(v, column))
        }
        Value::Array(a) => a.iter().find_map(|v| interval(v, column)),
        _ => None,
    }
}

/// How an answer compared with the truth.
#[derive(Debug, Clone)]
pub struct Comparison {
    /// Whether every compared value was within tolerance (and at least one was compared).
    pub ok: bool,
    /// Values compared.
    pub compared: usize,
    /// Largest |answer − truth|.
    pub max_error: f64,
    /// A one-line account.
    pub summary: String,
}

/// Compares a released table with the truth: rows matched on the GROUP BY keys, every
/// aggregate within the expected tolerance (a released group the truth lacks is compared
/// with 0 for counts and sums). Groups the answer suppressed are not compared.
pub fn compare(
    plan: &Plan,
    answer: &Value,
    proof: &Value,
    truth: &Table,
    expect: &Expect,
) -> Comparison {
    let nkeys = plan.group_by.len();
    let aggs: Vec<_> = plan.aggregates().collect();
    let key_of =
        |r: &[Value]| -> Vec<String> { r.iter().take(nkeys).map(Value::to_string).collect() };
    let truth_rows: BTreeMap<Vec<String>, &Vec<Value>> =
        truth.rows.iter().map(|r| (key_of(r), r)).collect();
    let columns = plan.column_names();
    let mut compared = 0;
    let mut max_error: f64 = 0.0;
    let mut misses = Vec::new();
    let mut no_tolerance = 0;
    let released = answer["rows"].as_array().cloned().unwrap_or_default();
    for row in &released {
        let Some(row) = row.as_array() else { continue };
        let t = truth_rows.get(&key_of(row));
        for (j, agg) in aggs.iter().enumerate() {
            let c = nkeys + j;
            let Some(a) = row.get(c).and_then(Value::as_f64) else {
                continue;
            };
            let want = match t.and_then(|t| t.get(c)).and_then(Value::as_f64) {
                Some(x) => x,
                None if t.is_none() && matches!(agg.func, AggFunc::Count | AggFunc::Sum) => 0.0,
                None => continue,
            };
            let ci = interval(proof, &columns[c]);
            let allowed = [
                expect.within_ci95.zip(ci).map(|(k, h)| k * h),
                expect.within,
                expect.within_rel.map(|r| r * want.abs()),
            ]
            .into_iter()
            .flatten()
            .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))));
            let Some(allowed) = allowed else {
                no_tolerance += 1;
                continue;
            };
            let err = (a - want).abs();
            compared += 1;
            max_error = max_error.max(err);
            if err > allowed + 1e-9 * want.abs().max(1.0) {
                misses.push(format!(
                    "{}{} = {a} vs truth {want} (allowed ±{allowed:.3})",
                    columns[c],
                    if nkeys > 0 {
                        format!("[{}]", key_of(row).join(","))
                    } else {
                        String::new()
                    }
                ));
            }
        }
    }
    let ok = compared > 0 && misses.is_empty();
    let mut summary = if compared == 0 {
        "nothing to compare (no released value has a tolerance)".to_string()
    } else {
        format!(
            "{}/{compared} values within tolerance (max |Δ| {max_error:.3})",
            compared - misses.len()
        )
    };
    if no_tolerance > 0 {
        summary.push_str(&format!("; {no_tolerance} without a stated interval"));
    }
    if let Some(m) = misses.first() {
        summary.push_str(&format!("; e.g. {m}"));
    }
    Comparison {
        ok,
        compared,
        max_error,
        summary,
    }
}
