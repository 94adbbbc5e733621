//! Decoding the reconstructed total into the answer table (on the coordinator).
//!
//! Everything here is post-processing of the total: in a `dp` room counts are clamped at 0,
//! an average whose noisy count is not positive is null and an average is clamped into the
//! column's declared bounds (the coordinator's catalog copy), and every group whose (noisy)
//! row count is below the room's `min_group_size` is suppressed, like `HAVING COUNT(*) >= k`.

use super::{Layout, MpcError, Part, layout, scale};
use crate::plan::{AggFunc, Aggregate, Output, Plan, Table};
use crate::release::ReleaseMode;
use crate::room::RoomParams;
use crate::schema::DatasetSchema;
use crate::shares::decode;

/// The answer and what was held back.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// The released rows.
    pub table: Table,
    /// Groups dropped because their row count was below the room's minimum group size.
    pub suppressed_groups: usize,
}

/// Decodes the reconstructed total into the answer table.
pub fn decode_total(
    plan: &Plan,
    schema: &DatasetSchema,
    params: &RoomParams,
    total: &[u64],
) -> Result<Decoded, MpcError> {
    let l = layout(plan, schema, params)?;
    if total.len() != l.len() {
        return Err(MpcError::Unsupported(format!(
            "total has {} elements, expected {}",
            total.len(),
            l.len()
        )));
    }
    let np = l.parts.len();
    let mut rows = Vec::new();
    let mut suppressed_groups = 0;
    for (g, key) in l.keys.iter().enumerate() {
        let v = |p: usize| decode(total[g * np + p]);
        let count = l.rows.map(v);
        if let (Some(k), Some(n)) = (plan.having_min_count, count)
            && n < k as i64
        {
            continue;
        }
        if let Some(n) = count
            && params.min_group_size > 0
            && n < params.min_group_size as i64
        {
            suppressed_groups += 1;
            continue;
        }
        let mut agg = l.outputs.iter();
        let mut aggs = plan.aggregates();
        let mut row = Vec::new();
        let mut key_iter = key.iter();
        for o in &plan.outputs {
            match o {
                Output::Key(_) => row.push(
                    key_iter
                        .next()
                        .map_or(serde_json::Value::Null, |k| serde_json::json!(k)),
                ),
                Output::Aggregate(_) => {
                    let (Some(idx), Some(a)) = (agg.next(), aggs.next()) else {
                        continue;
                    };
                    row.push(value(a, idx, &v, &l, params));
                }
            }
        }
        rows.push(row);
    }
    Ok(Decoded {
        table: Table {
            columns: plan.column_names(),
            rows,
        },
        suppressed_groups,
    })
}

fn value(
    a: &Aggregate,
    idx: &[usize],
    v: &dyn Fn(usize) -> i64,
    l: &Layout,
    params: &RoomParams,
) -> serde_json::Value {
    let sum_scale = |p: usize| match l.parts[p].0 {
        Part::Sum(c, _) => scale(l.columns[c].1, params.fixed_point_decimals),
        _ => 1.0,
    };
    // A noisy count can come out negative; no count is.
    let count = |p: usize| {
        if l.release == ReleaseMode::Dp {
            v(p).max(0)
        } else {
            v(p)
        }
    };
    match a.func {
        AggFunc::Count => serde_json::json!(count(idx[0])),
        AggFunc::Sum => {
            let s = sum_scale(idx[0]);
            if s == 1.0 {
                serde_json::json!(v(idx[0]))
            } else {
                serde_json::json!(v(idx[0]) as f64 / s)
            }
        }
        AggFunc::Avg => {
            let (sum, n) = (v(idx[0]) as f64 / sum_scale(idx[0]), count(idx[1]));
            if n <= 0 {
                return serde_json::Value::Null;
            }
            let avg = sum / n as f64;
            // A noisy average can leave the declared bounds; no true average can.
            match (l.release, l.parts[idx[0]].0) {
                (ReleaseMode::Dp, Part::Sum(c, _)) => match l.columns[c].2 {
                    Some(b) => serde_json::json!(avg.clamp(b.min, b.max)),
                    None => serde_json::json!(avg),
                },
                _ => serde_json::json!(avg),
            }
        }
        AggFunc::Min | AggFunc::Max => serde_json::Value::Null,
    }
}
