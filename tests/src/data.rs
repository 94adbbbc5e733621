//! Realistic synthetic `patients` datasets, reproducible from a seed.
//!
//! Columns: id, age, diagnosis, treatment_cost, state. Ages follow a broad adult distribution,
//! diagnoses are age-dependent, costs depend on the diagnosis, and each organization draws its
//! patients from a few states with different weights, so cross-organization totals differ
//! from any one organization's.

use prism_common::schema::{Bounds, ColumnSpec, ColumnType};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// States patients come from (declared as public GROUP BY keys).
pub const STATES: [&str; 8] = ["CA", "NY", "TX", "FL", "IL", "PA", "OH", "WA"];
/// Diagnoses (declared as public GROUP BY keys).
pub const DIAGNOSES: [&str; 6] = [
    "diabetes",
    "hypertension",
    "asthma",
    "copd",
    "cancer",
    "healthy",
];

/// The declared columns of a patients dataset.
pub fn patient_columns() -> Vec<ColumnSpec> {
    let keys = |xs: &[&str]| Some(xs.iter().map(|s| s.to_string()).collect());
    vec![
        ColumnSpec {
            name: "id".into(),
            ty: ColumnType::Integer,
            bounds: None,
            public_keys: None,
            not_null: false,
            privacy_unit: None,
        },
        ColumnSpec {
            name: "age".into(),
            ty: ColumnType::Integer,
            bounds: Some(Bounds {
                min: 0.0,
                max: 110.0,
            }),
            public_keys: None,
            not_null: true,
            privacy_unit: None,
        },
        ColumnSpec {
            name: "diagnosis".into(),
            ty: ColumnType::Text,
            bounds: None,
            public_keys: keys(&DIAGNOSES),
            not_null: false,
            privacy_unit: None,
        },
        ColumnSpec {
            name: "treatment_cost".into(),
            ty: ColumnType::Float,
            bounds: Some(Bounds {
                min: 0.0,
                max: 50_000.0,
            }),
            public_keys: None,
            not_null: true,
            privacy_unit: None,
        },
        ColumnSpec {
            name: "state".into(),
            ty: ColumnType::Text,
            bounds: None,
            public_keys: keys(&STATES),
            not_null: false,
            privacy_unit: None,
        },
    ]
}

/// One patient row.
#[derive(Debug, Clone, PartialEq)]
pub struct Patient {
    /// Row id.
    pub id: i64,
    /// Age in years.
    pub age: i64,
    /// Diagnosis.
    pub diagnosis: &'static str,
    /// Treatment cost in dollars (two decimals).
    pub treatment_cost: f64,
    /// US state.
    pub state: &'static str,
}

/// Generates `rows` patients for organization number `org_index`.
pub fn patients(seed: u64, org_index: usize, rows: usize) -> Vec<Patient> {
    let mut rng = ChaCha8Rng::seed_from_u64(
        seed ^ (org_index as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15),
    );
    // Each organization serves mostly three states.
    let home: Vec<usize> = (0..3).map(|k| (org_index * 3 + k) % STATES.len()).collect();
    (0..rows)
        .map(|i| {
            let age = (rng.random_range(18.0..90.0f64) * 0.7 + rng.random_range(0.0..30.0f64))
                .round()
                .min(105.0) as i64;
            let r: f64 = rng.random();
            let diagnosis = if age > 60 && r < 0.3 {
                "hypertension"
            } else if age > 45 && r < 0.45 {
                "diabetes"
            } else if r < 0.55 {
                "asthma"
            } else if age > 55 && r < 0.62 {
                "copd"
            } else if r < 0.68 {
                "cancer"
            } else {
                "healthy"
            };
            let base = match diagnosis {
                "cancer" => 30_000.0,
                "copd" => 9_000.0,
                "diabetes" => 6_000.0,
                "hypertension" => 3_500.0,
                "asthma" => 2_000.0,
                _ => 400.0,
            };
            let cost = ((base * rng.random_range(0.5..1.5f64)) * 100.0).round() / 100.0;
            let state = if rng.random::<f64>() < 0.85 {
                STATES[home[rng.random_range(0..3)]]
            } else {
                STATES[rng.random_range(0..STATES.len())]
            };
            Patient {
                id: i as i64 + 1,
                age,
                diagnosis,
                treatment_cost: cost.min(50_000.0),
                state,
            }
        })
        .collect()
}

/// Patients as CSV with a header row.
pub fn to_csv(rows: &[Patient]) -> String {
    let mut s = String::with_capacity(rows.len() * 40 + 64);
    s.push_str("id,age,diagnosis,treatment_cost,state\n");
    for p in rows {
        s.push_str(&format!(
            "{},{},{},{:.2},{}\n",
            p.id, p.age, p.diagnosis, p.treatment_cost, p.state
        ));
    }
    s
}
