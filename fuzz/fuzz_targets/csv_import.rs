//! CSV import: any text, under the sample declaration or under a declaration the input itself
//! carries (JSON before a NUL byte), is imported whole or refused with an error, never a panic;
//! an accepted dataset has one value per row in every column.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prism_common::schema::{Bounds, ColumnData, ColumnSpec, ColumnType};
use prism_node::import::parse_csv;

fn sample() -> Vec<ColumnSpec> {
    let col = |name: &str, ty, bounds: Option<(f64, f64)>| ColumnSpec {
        name: name.to_string(),
        ty,
        bounds: bounds.map(|(min, max)| Bounds { min, max }),
        public_keys: None,
     not_null: false, privacy_unit: None, };
    vec![
        col("age", ColumnType::Integer, Some((0.0, 120.0))),
        col("cost", ColumnType::Float, Some((0.0, 1e5))),
        col("state", ColumnType::Text, None),
        col("smoker", ColumnType::Boolean, None),
    ]
}

fn len(c: &ColumnData) -> usize {
    match c {
        ColumnData::Integer(v) => v.len(),
        ColumnData::Float(v) => v.len(),
        ColumnData::Boolean(v) => v.len(),
        ColumnData::Text { dict, codes } => {
            assert!(codes.iter().flatten().all(|&c| (c as usize) < dict.len()));
            codes.len()
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let (columns, text) = match data.iter().position(|&b| b == 0) {
        Some(i) => match serde_json::from_slice::<Vec<ColumnSpec>>(&data[..i]) {
            Ok(c) => (c, &data[i + 1..]),
            Err(_) => return,
        },
        None => (sample(), data),
    };
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    if let Ok(ds) = parse_csv("fuzzed", columns, text) {
        assert!(ds.rows > 0, "an accepted dataset has rows");
        assert_eq!(ds.columns.len(), ds.schema.columns.len());
        assert!(
            ds.columns.iter().all(|c| len(c) == ds.rows),
            "ragged dataset"
        );
    }
});
