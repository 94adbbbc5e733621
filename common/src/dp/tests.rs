//! Tests of the DP engine: fixtures, noise scales, budget accounting and refusals.
//! Key release, accuracy and grouping are tested in `tests_release`.

use serde_json::Value;

use super::*;
use crate::plan::{AggFunc, Aggregate, Output};
use crate::schema::{Bounds, ColumnData, ColumnSpec, ColumnType};

pub(super) const STATES: [&str; 4] = ["CA", "NY", "TX", "WA"];

pub(super) fn spec(
    name: &str,
    ty: ColumnType,
    bounds: Option<(f64, f64)>,
    keys: Option<&[&str]>,
) -> ColumnSpec {
    ColumnSpec {
        name: name.to_string(),
        ty,
        bounds: bounds.map(|(min, max)| Bounds { min, max }),
        public_keys: keys.map(|k| k.iter().map(|s| s.to_string()).collect()),
        not_null: false,
        privacy_unit: None,
    }
}

/// patients(state, age, treatment_cost, cost, note): `state` with public keys when `public`,
/// `age` bounded 0..120, `treatment_cost` without bounds, `cost` float bounded 0..100000.
pub(super) fn schema(public: bool) -> DatasetSchema {
    DatasetSchema {
        name: "patients".to_string(),
        columns: vec![
            spec(
                "state",
                ColumnType::Text,
                None,
                public.then_some(&STATES[..]),
            ),
            spec("age", ColumnType::Integer, Some((0.0, 120.0)), None),
            spec("treatment_cost", ColumnType::Float, None, None),
            spec("cost", ColumnType::Float, Some((0.0, 100_000.0)), None),
            spec("note", ColumnType::Text, None, None),
        ],
    }
}

pub(super) fn text(values: Vec<Option<String>>) -> ColumnData {
    let mut dict: Vec<String> = Vec::new();
    let codes = values
        .into_iter()
        .map(|v| {
            v.map(|s| match dict.iter().position(|d| *d == s) {
                Some(p) => p as u32,
                None => {
                    dict.push(s);
                    (dict.len() - 1) as u32
                }
            })
        })
        .collect();
    ColumnData::Text { dict, codes }
}

/// Rows (state, age, cost).
pub(super) fn dataset(public: bool, rows: &[(Option<&str>, Option<i64>, Option<f64>)]) -> Dataset {
    let n = rows.len();
    Dataset {
        schema: schema(public),
        columns: vec![
            text(rows.iter().map(|r| r.0.map(str::to_string)).collect()),
            ColumnData::Integer(rows.iter().map(|r| r.1).collect()),
            ColumnData::Float(rows.iter().map(|r| r.2).collect()),
            ColumnData::Float(rows.iter().map(|r| r.2).collect()),
            text(vec![Some("x".to_string()); n]),
        ],
        rows: n,
    }
}

/// Deterministic pseudo-random test data (not noise): `counts[i]` rows in state `STATES[i]`
/// (or "ZZ" past the declared keys), ages 5..=95, costs 100..=90000.
pub(super) fn population(public: bool, counts: &[(&str, usize)]) -> Dataset {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut rows = Vec::new();
    for &(state, k) in counts {
        for _ in 0..k {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let age = 5 + ((x >> 33) % 91) as i64;
            let cost = 100.0 + ((x >> 17) % 8_990_001) as f64 / 100.0;
            rows.push((Some(state), Some(age), Some(cost)));
        }
    }
    dataset(public, &rows)
}

pub(super) fn agg(func: AggFunc, column: Option<&str>, alias: &str) -> Output {
    Output::Aggregate(Aggregate {
        func,
        column: column.map(str::to_string),
        weight: None,
        alias: alias.to_string(),
    })
}

pub(super) fn plan(outputs: Vec<Output>, group_by: &[&str], having: Option<u64>) -> Plan {
    Plan {
        dataset: "patients".to_string(),
        outputs,
        filter: None,
        group_by: group_by.iter().map(|s| s.to_string()).collect(),
        having_min_count: having,
    }
}

/// `SELECT state, AVG(age), COUNT(*) FROM patients GROUP BY state HAVING COUNT(*) >= 25`
pub(super) fn showcase() -> Plan {
    plan(
        vec![
            Output::Key("state".to_string()),
            agg(AggFunc::Avg, Some("age"), "avg_age"),
            agg(AggFunc::Count, None, "count"),
        ],
        &["state"],
        Some(25),
    )
}

pub(super) fn loose() -> DpPolicy {
    DpPolicy {
        max_epsilon_per_query: 100.0,
        max_delta_per_query: 1e-5,
        min_group_size: 0,
    }
}

pub(super) fn p(epsilon: f64, delta: f64) -> DpParams {
    DpParams { epsilon, delta }
}

pub(super) fn num(v: &Value) -> f64 {
    v.as_f64().expect("a number")
}

pub(super) fn mean_sd(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

/// Standard deviation of discrete Laplace noise of scale `s`.
pub(super) fn discrete_laplace_sd(s: f64) -> f64 {
    let q = (-1.0 / s).exp();
    (2.0 * q / (1.0 - q).powi(2)).sqrt()
}

/// Releases `plan` `runs` times and checks the empirical noise against the calibrated scale.
pub(super) fn check_noise(plan: &Plan, ds: &Dataset, eps: f64, truth: f64, expected_scale: f64) {
    let runs = 1500;
    let mut xs = Vec::with_capacity(runs);
    let mut scale = 0.0;
    for _ in 0..runs {
        let r = release(plan, ds, &p(eps, 0.0), &loose()).expect("release");
        scale = r.proof.statistics[0].noise_scale;
        xs.push(num(&r.table.rows[0][0]) - truth);
    }
    assert!(
        (scale - expected_scale).abs() <= 1e-6 * expected_scale,
        "scale {scale} vs {expected_scale}"
    );
    let (mean, sd) = mean_sd(&xs);
    let want = discrete_laplace_sd(scale);
    // Relative standard error of a Laplace sample sd over 1500 draws is about 3%.
    assert!(
        (sd / want - 1.0).abs() < 0.15,
        "empirical sd {sd}, calibrated {want}"
    );
    assert!(
        mean.abs() < 5.0 * want / (runs as f64).sqrt(),
        "mean noise {mean}"
    );
}

#[test]
fn count_noise_matches_calibrated_scale() {
    let ds = population(false, &[("CA", 50)]);
    let q = plan(vec![agg(AggFunc::Count, None, "count")], &[], None);
    // Sensitivity 1, ε = 0.5: scale 2.
    check_noise(&q, &ds, 0.5, 50.0, 2.0);
}

#[test]
fn sum_noise_matches_calibrated_scale() {
    let ds = population(false, &[("CA", 40)]);
    let truth: i64 = match &ds.columns[1] {
        ColumnData::Integer(v) => v.iter().flatten().sum(),
        _ => unreachable!(),
    };
    let q = plan(vec![agg(AggFunc::Sum, Some("age"), "sum_age")], &[], None);
    // Bounds 0..120: sensitivity 120, ε = 2: scale 60.
    check_noise(&q, &ds, 2.0, truth as f64, 60.0);
}

#[test]
fn cost_never_exceeds_estimate_or_request() {
    let plans = vec![
        (
            plan(vec![agg(AggFunc::Count, None, "count")], &[], None),
            0.0,
        ),
        (
            plan(
                vec![
                    agg(AggFunc::Sum, Some("age"), "s"),
                    agg(AggFunc::Avg, Some("cost"), "a"),
                    agg(AggFunc::Min, Some("age"), "mn"),
                    agg(AggFunc::Max, Some("cost"), "mx"),
                    agg(AggFunc::Count, Some("age"), "c"),
                ],
                &[],
                Some(5),
            ),
            0.0,
        ),
        (showcase(), 1e-6),
        (
            plan(
                vec![
                    Output::Key("state".into()),
                    agg(AggFunc::Sum, Some("cost"), "s"),
                ],
                &["state"],
                None,
            ),
            1e-7,
        ),
    ];
    let small = population(false, &[("CA", 30), ("NY", 3)]);
    let big = population(false, &[("CA", 400), ("TX", 700), ("WA", 1)]);
    let policy = DpPolicy::default();
    for (q, delta) in &plans {
        for eps in [0.1, 1.0 / 3.0, 0.7, 1.0] {
            let params = p(eps, *delta);
            let est = estimate(q, &small.schema, &params, &policy).expect("estimate");
            assert!(
                est.epsilon <= eps && est.epsilon > 0.99 * eps,
                "{est:?} for ε {eps}"
            );
            assert!(est.delta <= *delta);
            for ds in [&small, &big] {
                let r = release(q, ds, &params, &policy).expect("release");
                assert!(r.cost.epsilon <= est.epsilon && r.cost.delta <= est.delta);
                assert_eq!(r.cost, est, "estimate is data-independent and exact");
                assert_eq!(r.proof.epsilon, r.cost.epsilon);
                let sum: f64 = r.proof.statistics.iter().map(|s| s.epsilon).sum();
                assert!((sum - r.cost.epsilon).abs() < 1e-12);
            }
        }
    }
}

#[test]
fn refusals() {
    let ds = population(false, &[("CA", 30)]);
    let pol = DpPolicy::default();
    let code = |q: &Plan, params: DpParams| {
        let e = estimate(q, &ds.schema, &params, &pol).expect_err("refused");
        let r = release(q, &ds, &params, &pol).expect_err("refused");
        assert_eq!(e.to_string(), r.to_string());
        (e.code(), e.to_string())
    };
    let count = plan(vec![agg(AggFunc::Count, None, "count")], &[], None);

    let (c, msg) = code(
        &plan(
            vec![agg(AggFunc::Sum, Some("treatment_cost"), "s")],
            &[],
            None,
        ),
        p(1.0, 0.0),
    );
    assert_eq!(c, "missing_bounds");
    assert!(
        msg.contains("treatment_cost")
            && msg.contains("prism-node --config node.toml bounds patients treatment_cost"),
        "{msg}"
    );
    let (c, _) = code(
        &plan(
            vec![agg(AggFunc::Max, Some("treatment_cost"), "m")],
            &[],
            None,
        ),
        p(1.0, 0.0),
    );
    assert_eq!(c, "missing_bounds");

    let (c, msg) = code(
        &plan(vec![agg(AggFunc::Sum, Some("note"), "s")], &[], None),
        p(1.0, 0.0),
    );
    assert_eq!(c, "dp_unsupported");
    assert!(msg.contains("note") && msg.contains("text"), "{msg}");

    for eps in [0.0, -1.0, f64::NAN, f64::INFINITY, 5e-324, 1e-9] {
        let (c, msg) = code(&count, p(eps, 0.0));
        assert_eq!(c, "invalid_epsilon", "{eps}");
        assert!(msg.contains("patients"), "{msg}");
    }
    let (c, msg) = code(&count, p(1.5, 0.0));
    assert_eq!(c, "policy_violation");
    assert!(msg.contains("1.5") && msg.contains("limit of 1"), "{msg}");
    let (c, _) = code(&count, p(1.0, 1e-3));
    assert_eq!(c, "policy_violation");
    let (c, _) = code(&count, p(1.0, -1e-9));
    assert_eq!(c, "invalid_delta");

    let (c, msg) = code(&showcase(), p(1.0, 0.0));
    assert_eq!(c, "delta_required");
    assert!(
        msg.contains("pass a delta") && msg.contains("public keys of state"),
        "{msg}"
    );

    let (c, _) = code(
        &plan(vec![agg(AggFunc::Count, Some("nope"), "c")], &[], None),
        p(1.0, 0.0),
    );
    assert_eq!(c, "unknown_column");
}
