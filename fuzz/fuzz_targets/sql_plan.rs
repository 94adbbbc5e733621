//! SQL → plan: the planner must answer every input with a plan or an error, never a panic or a
//! stack overflow, and every plan it accepts must survive the wire and the stores (JSON encode
//! and decode back to the same plan, inside a request frame too).
#![no_main]

use libfuzzer_sys::fuzz_target;
use prism_common::plan::Plan;
use prism_common::schema::{Bounds, ColumnSpec, ColumnType, DatasetSchema};
use prism_common::sql::{plan_query, table_name};

fn schema() -> DatasetSchema {
    let col = |name: &str, ty, bounds: Option<(f64, f64)>, keys: Option<&[&str]>| ColumnSpec {
        name: name.to_string(),
        ty,
        bounds: bounds.map(|(min, max)| Bounds { min, max }),
        public_keys: keys.map(|k| k.iter().map(|s| s.to_string()).collect()),
     not_null: false, privacy_unit: None, };
    DatasetSchema {
        name: "patients".into(),
        columns: vec![
            col("id", ColumnType::Integer, Some((0.0, 1e6)), None),
            col("age", ColumnType::Integer, Some((0.0, 120.0)), None),
            col("diagnosis", ColumnType::Text, None, None),
            col("cost", ColumnType::Float, Some((0.0, 100_000.0)), None),
            col("state", ColumnType::Text, None, Some(&["ca", "ny"])),
            col("smoker", ColumnType::Boolean, None, None),
        ],
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(sql) = std::str::from_utf8(data) else {
        return;
    };
    let _ = table_name(sql);
    let Ok(plan) = plan_query(sql, &schema()) else {
        return;
    };
    let json = serde_json::to_vec(&plan).expect("an accepted plan encodes");
    let back: Plan = serde_json::from_slice(&json).expect("an accepted plan decodes");
    assert_eq!(back, plan, "plan changed over a JSON round trip: {sql}");
});
