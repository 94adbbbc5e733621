//! The 95 % confidence half-width of each released column, read from a run's or a room's
//! proof artifacts, so the console and API clients can show `value ± half-width` without
//! knowing each backend's proof layout.
//!
//! `dp_sandbox` proofs list statistics with the output columns they feed; `he_backend` proofs
//! map output columns to half-widths; data rooms list noise per component (COUNT and SUM
//! components carry their column's name; an AVG's interval follows from two components and is
//! left out). Exact releases and key columns have none.

use prism_common::plan::Table;
use serde_json::Value;

/// One entry per column of `result` (none: empty): the column's 95 % half-width, or `None`.
pub fn ci95(result: Option<&Table>, proof: &Value) -> Vec<Option<f64>> {
    let Some(t) = result else {
        return Vec::new();
    };
    t.columns.iter().map(|c| column(proof, c)).collect()
}

fn column(proof: &Value, name: &str) -> Option<f64> {
    let release = &proof["release"];
    if let Some(stats) = release["statistics"].as_array() {
        return stats
            .iter()
            .filter(|s| s["hidden"] != Value::Bool(true))
            .find(|s| {
                s["outputs"]
                    .as_array()
                    .is_some_and(|o| o.iter().any(|x| x == name))
            })
            .and_then(|s| s["ci95_half_width"].as_f64());
    }
    if let Some(m) = release["ci95_half_width"].as_object() {
        return m.get(name).and_then(Value::as_f64);
    }
    // A room's proof, or a run answered by a room (under `mpc`).
    let dp = if proof["dp"].is_object() {
        &proof["dp"]
    } else {
        &proof["mpc"]["dp"]
    };
    dp["noise"]
        .as_array()?
        .iter()
        .find(|n| n["component"] == name)
        .and_then(|n| n["ci95_half_width"].as_f64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn table(cols: &[&str]) -> Table {
        Table {
            columns: cols.iter().map(|c| c.to_string()).collect(),
            rows: vec![],
        }
    }

    #[test]
    fn each_backend_s_proof_gives_its_columns_intervals() {
        let dp = json!({"release": {"statistics": [
            {"outputs": [], "hidden": true, "ci95_half_width": 9.0},
            {"outputs": ["n"], "hidden": false, "ci95_half_width": 5.99},
        ]}});
        assert_eq!(
            ci95(Some(&table(&["state", "n"])), &dp),
            vec![None, Some(5.99)]
        );
        let he = json!({"release": {"mode": "dp", "ci95_half_width": {"total": 12.5}}});
        assert_eq!(ci95(Some(&table(&["total"])), &he), vec![Some(12.5)]);
        let room = json!({"dp": {"noise": [{"component": "count", "ci95_half_width": 7.0}]}});
        assert_eq!(ci95(Some(&table(&["count"])), &room), vec![Some(7.0)]);
        let run = json!({"room_id": "r", "mpc": room});
        assert_eq!(
            ci95(Some(&table(&["count", "avg"])), &run),
            vec![Some(7.0), None]
        );
        let exact = json!({"release": {"mode": "exact"}});
        assert_eq!(ci95(Some(&table(&["n"])), &exact), vec![None]);
        assert!(ci95(None, &dp).is_empty());
    }
}
