//! Tests of the DP engine: noise scales, budget accounting, refusals, key release, accuracy.

use serde_json::Value;

use super::*;
use crate::eval::{filter_mask, group_rows};
use crate::plan::{AggFunc, Aggregate, CmpOp, Literal, Output, Predicate};
use crate::schema::{Bounds, ColumnData, ColumnSpec, ColumnType};

const STATES: [&str; 4] = ["CA", "NY", "TX", "WA"];

fn spec(name: &str, ty: ColumnType, bounds: Option<(f64, f64)>, keys: Option<&[&str]>) -> ColumnSpec {
    ColumnSpec {
        name: name.to_string(),
        ty,
        bounds: bounds.map(|(min, max)| Bounds { min, max }),
        public_keys: keys.map(|k| k.iter().map(|s| s.to_string()).collect()),
    }
}

/// patients(state, age, treatment_cost, cost, note): `state` with public keys when `public`,
/// `age` bounded 0..120, `treatment_cost` without bounds, `cost` float bounded 0..100000.
fn schema(public: bool) -> DatasetSchema {
    DatasetSchema {
        name: "patients".to_string(),
        columns: vec![
            spec("state", ColumnType::Text, None, public.then_some(&STATES[..])),
            spec("age", ColumnType::Integer, Some((0.0, 120.0)), None),
            spec("treatment_cost", ColumnType::Float, None, None),
            spec("cost", ColumnType::Float, Some((0.0, 100_000.0)), None),
            spec("note", ColumnType::Text, None, None),
        ],
    }
}

fn text(values: Vec<Option<String>>) -> ColumnData {
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
fn dataset(public: bool, rows: &[(Option<&str>, Option<i64>, Option<f64>)]) -> Dataset {
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
fn population(public: bool, counts: &[(&str, usize)]) -> Dataset {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut rows = Vec::new();
    for &(state, k) in counts {
        for _ in 0..k {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let age = 5 + ((x >> 33) % 91) as i64;
            let cost = 100.0 + ((x >> 17) % 8_990_001) as f64 / 100.0;
            rows.push((Some(state), Some(age), Some(cost)));
        }
    }
    dataset(public, &rows)
}

fn agg(func: AggFunc, column: Option<&str>, alias: &str) -> Output {
    Output::Aggregate(Aggregate { func, column: column.map(str::to_string), weight: None, alias: alias.to_string() })
}

fn plan(outputs: Vec<Output>, group_by: &[&str], having: Option<u64>) -> Plan {
    Plan {
        dataset: "patients".to_string(),
        outputs,
        filter: None,
        group_by: group_by.iter().map(|s| s.to_string()).collect(),
        having_min_count: having,
    }
}

/// `SELECT state, AVG(age), COUNT(*) FROM patients GROUP BY state HAVING COUNT(*) >= 25`
fn showcase() -> Plan {
    plan(
        vec![Output::Key("state".to_string()), agg(AggFunc::Avg, Some("age"), "avg_age"), agg(AggFunc::Count, None, "count")],
        &["state"],
        Some(25),
    )
}

fn loose() -> DpPolicy {
    DpPolicy { max_epsilon_per_query: 100.0, max_delta_per_query: 1e-5, min_group_size: 0 }
}

fn p(epsilon: f64, delta: f64) -> DpParams {
    DpParams { epsilon, delta }
}

fn num(v: &Value) -> f64 {
    v.as_f64().expect("a number")
}

fn mean_sd(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

/// Standard deviation of discrete Laplace noise of scale `s`.
fn discrete_laplace_sd(s: f64) -> f64 {
    let q = (-1.0 / s).exp();
    (2.0 * q / (1.0 - q).powi(2)).sqrt()
}

/// Releases `plan` `runs` times and checks the empirical noise against the calibrated scale.
fn check_noise(plan: &Plan, ds: &Dataset, eps: f64, truth: f64, expected_scale: f64) {
    let runs = 1500;
    let mut xs = Vec::with_capacity(runs);
    let mut scale = 0.0;
    for _ in 0..runs {
        let r = release(plan, ds, &p(eps, 0.0), &loose()).expect("release");
        scale = r.proof.statistics[0].noise_scale;
        xs.push(num(&r.table.rows[0][0]) - truth);
    }
    assert!((scale - expected_scale).abs() <= 1e-6 * expected_scale, "scale {scale} vs {expected_scale}");
    let (mean, sd) = mean_sd(&xs);
    let want = discrete_laplace_sd(scale);
    // Relative standard error of a Laplace sample sd over 1500 draws is about 3%.
    assert!((sd / want - 1.0).abs() < 0.15, "empirical sd {sd}, calibrated {want}");
    assert!(mean.abs() < 5.0 * want / (runs as f64).sqrt(), "mean noise {mean}");
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
        (plan(vec![agg(AggFunc::Count, None, "count")], &[], None), 0.0),
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
        (plan(vec![Output::Key("state".into()), agg(AggFunc::Sum, Some("cost"), "s")], &["state"], None), 1e-7),
    ];
    let small = population(false, &[("CA", 30), ("NY", 3)]);
    let big = population(false, &[("CA", 400), ("TX", 700), ("WA", 1)]);
    let policy = DpPolicy::default();
    for (q, delta) in &plans {
        for eps in [0.1, 1.0 / 3.0, 0.7, 1.0] {
            let params = p(eps, *delta);
            let est = estimate(q, &small.schema, &params, &policy).expect("estimate");
            assert!(est.epsilon <= eps && est.epsilon > 0.99 * eps, "{est:?} for ε {eps}");
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

    let (c, msg) = code(&plan(vec![agg(AggFunc::Sum, Some("treatment_cost"), "s")], &[], None), p(1.0, 0.0));
    assert_eq!(c, "missing_bounds");
    assert!(msg.contains("treatment_cost") && msg.contains("prism-node dataset bounds patients treatment_cost"), "{msg}");
    let (c, _) = code(&plan(vec![agg(AggFunc::Max, Some("treatment_cost"), "m")], &[], None), p(1.0, 0.0));
    assert_eq!(c, "missing_bounds");

    let (c, msg) = code(&plan(vec![agg(AggFunc::Sum, Some("note"), "s")], &[], None), p(1.0, 0.0));
    assert_eq!(c, "dp_unsupported");
    assert!(msg.contains("note") && msg.contains("text"), "{msg}");

    for eps in [0.0, -1.0, f64::NAN, f64::INFINITY] {
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
    assert!(msg.contains("pass a delta") && msg.contains("public keys of state"), "{msg}");

    let (c, _) = code(&plan(vec![agg(AggFunc::Count, Some("nope"), "c")], &[], None), p(1.0, 0.0));
    assert_eq!(c, "unknown_column");
}

#[test]
fn public_keys_release_every_declared_key() {
    let ds = population(true, &[("CA", 300), ("NY", 200), ("TX", 100), ("ZZ", 50)]);
    let q = plan(vec![Output::Key("state".into()), agg(AggFunc::Count, None, "n")], &["state"], None);
    let r = release(&q, &ds, &p(50.0, 0.0), &loose()).expect("release");
    let keys: Vec<&str> = r.table.rows.iter().map(|row| row[0].as_str().expect("key")).collect();
    assert_eq!(keys, STATES);
    let counts: Vec<f64> = r.table.rows.iter().map(|row| num(&row[1])).collect();
    for (got, want) in counts.iter().zip([300.0, 200.0, 100.0, 0.0]) {
        assert!((got - want).abs() <= 2.0, "{counts:?}");
    }
    assert_eq!(r.cost.delta, 0.0);
    assert_eq!(r.proof.key_release, KeyRelease::PublicKeys { keys: 4 });
    assert_eq!(r.table.columns, vec!["state".to_string(), "n".to_string()]);
}

#[test]
fn threshold_hides_a_single_row_group() {
    let ds = population(false, &[("CA", 200), ("NY", 150), ("RARE", 1)]);
    let q = plan(vec![Output::Key("state".into()), agg(AggFunc::Sum, Some("age"), "s")], &["state"], None);
    for _ in 0..300 {
        let r = release(&q, &ds, &p(1.0, 1e-6), &loose()).expect("release");
        let keys: Vec<&str> = r.table.rows.iter().map(|row| row[0].as_str().expect("key")).collect();
        assert_eq!(keys, ["CA", "NY"]);
        let KeyRelease::Threshold { threshold, delta } = r.proof.key_release else { panic!("threshold mode") };
        assert!(threshold > 10 && delta <= 1e-6 && delta > 0.0);
        assert!(r.proof.mechanism.starts_with("laplace_threshold"), "{}", r.proof.mechanism);
        assert!(r.proof.statistics.iter().any(|s| s.hidden));
    }
}

#[test]
fn avg_min_max_near_truth_at_large_epsilon() {
    let ds = population(false, &[("CA", 2000)]);
    let (ages, costs): (Vec<i64>, Vec<f64>) = match (&ds.columns[1], &ds.columns[3]) {
        (ColumnData::Integer(a), ColumnData::Float(c)) => (a.iter().flatten().copied().collect(), c.iter().flatten().copied().collect()),
        _ => unreachable!(),
    };
    let avg = ages.iter().sum::<i64>() as f64 / ages.len() as f64;
    let (amin, amax) = (*ages.iter().min().expect("rows"), *ages.iter().max().expect("rows"));
    let cmin = costs.iter().copied().fold(f64::INFINITY, f64::min);
    let cmax = costs.iter().copied().fold(0.0, f64::max);
    let q = plan(
        vec![
            agg(AggFunc::Avg, Some("age"), "avg_age"),
            agg(AggFunc::Min, Some("age"), "min_age"),
            agg(AggFunc::Max, Some("age"), "max_age"),
            agg(AggFunc::Min, Some("cost"), "min_cost"),
            agg(AggFunc::Max, Some("cost"), "max_cost"),
            agg(AggFunc::Avg, Some("cost"), "avg_cost"),
        ],
        &[],
        None,
    );
    // 6 statistics at ε = 200 each. Below the true minimum all candidates tie on the data
    // score and only the tie-break separates them: each step away costs ε / K, so the release
    // sits within a few candidates of the truth (and is exact in the limit).
    let policy = DpPolicy { max_epsilon_per_query: 2000.0, ..loose() };
    let spacing = 100_000.0 / 127.0;
    for _ in 0..5 {
        let r = release(&q, &ds, &p(1200.0, 0.0), &policy).expect("release");
        let row = &r.table.rows[0];
        assert!((num(&row[0]) - avg).abs() < 0.5, "avg {} vs {avg}", row[0]);
        assert!(row[1].is_i64() && row[0].is_f64());
        let (mn, mx) = (row[1].as_i64().expect("int"), row[2].as_i64().expect("int"));
        assert!(mn <= amin && mn >= amin - 8, "min age {mn} vs {amin}");
        assert!(mx >= amax && mx <= amax + 8, "max age {mx} vs {amax}");
        let (mn, mx) = (num(&row[3]), num(&row[4]));
        assert!(mn <= cmin + 0.01 && mn > cmin - 8.0 * spacing, "min cost {mn} vs {cmin}");
        assert!(mx >= cmax - 0.01 && mx < cmax + 8.0 * spacing, "max cost {mx} vs {cmax}");
        let mean_cost = costs.iter().sum::<f64>() / costs.len() as f64;
        assert!((num(&row[5]) - mean_cost).abs() < 0.01 * mean_cost, "avg cost {} vs {mean_cost}", row[5]);
        assert!(r.proof.statistics[1].mechanism.contains("noisy_min"));
    }
}

#[test]
fn showcase_plan() {
    let counts = [("CA", 400), ("NY", 120), ("TX", 20), ("WA", 3)];
    for public in [true, false] {
        let ds = population(public, &counts);
        let delta = if public { 0.0 } else { 1e-6 };
        let params = p(1.0, delta);
        let est = estimate(&showcase(), &ds.schema, &params, &DpPolicy::default()).expect("estimate");
        let r = release(&showcase(), &ds, &params, &DpPolicy::default()).expect("release");
        assert_eq!(r.cost, est);
        assert_eq!(r.table.columns, ["state", "avg_age", "count"]);
        // The COUNT(*) of the plan is the gate: two statistics, ε split in halves.
        assert_eq!(r.proof.statistics.len(), 2);
        assert!((r.proof.statistics[0].epsilon - 0.5).abs() < 1e-9);
        assert_eq!(r.proof.min_released_count, 25);
        let keys: Vec<&str> = r.table.rows.iter().map(|row| row[0].as_str().expect("key")).collect();
        assert!(!keys.contains(&"WA") && keys.contains(&"CA") && keys.contains(&"NY"), "{keys:?}");
        for row in &r.table.rows {
            assert!(row[2].as_i64().expect("count") >= 25);
            let a = num(&row[1]);
            assert!((0.0..=120.0).contains(&a));
        }
        let ca = &r.table.rows[0];
        assert!((num(&ca[1]) - 50.0).abs() < 10.0 && (num(&ca[2]) - 400.0).abs() < 30.0, "{ca:?}");
        let mech = if public { "discrete_laplace" } else { "laplace_threshold + discrete_laplace" };
        assert_eq!(r.proof.mechanism, mech);
        let json = serde_json::to_string(&r.proof).expect("serialize");
        let back: DpProof = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, r.proof);
    }
}

#[test]
fn grouping_matches_eval_group_rows() {
    let mut ds = population(false, &[("CA", 40), ("NY", 30), ("TX", 5)]);
    if let ColumnData::Integer(v) = &mut ds.columns[1] {
        v[3] = None;
        v[50] = None;
    }
    if let ColumnData::Text { codes, .. } = &mut ds.columns[0] {
        codes[7] = None;
    }
    let filter = Predicate::Compare { column: "age".into(), op: CmpOp::GtEq, value: Literal::Int(30) };
    let mask = filter_mask(Some(&filter), &ds).expect("mask");
    for by in [vec!["state"], vec!["age"], vec!["state", "age"], vec!["age", "state"]] {
        let by: Vec<String> = by.iter().map(|s| s.to_string()).collect();
        let cols: Vec<usize> = by.iter().map(|c| ds.schema.column_index(c).expect("col")).collect();
        let want = group_rows(&by, &mask, &ds).expect("groups");
        let got = grouping::data_groups(&ds, &by, &cols, &mask).expect("groups");
        assert_eq!(got.keys, want.keys().cloned().collect::<Vec<_>>());
        for (g, rows) in want.values().enumerate() {
            let mine: Vec<usize> = (0..ds.rows).filter(|&i| got.gid[i] == g as u32).collect();
            assert_eq!(&mine, rows);
        }
    }
}

#[test]
fn candidate_bins_are_exact() {
    for (lo, hi) in [(0, 120), (0, 10_000_000), (-5_000, 7_001), (3, 3), (-1_000_000_000_000, 1_000_000_000_000)] {
        let cands = calibrate::candidates(lo, hi);
        assert!(cands.windows(2).all(|w| w[0] < w[1]) && cands.len() <= calibrate::CANDIDATES);
        assert_eq!((cands[0], cands[cands.len() - 1]), (lo, hi));
        let span = hi - lo;
        for j in 0..=400 {
            let x = lo + span / 400 * j + (j % 3) - 1;
            for inclusive in [true, false] {
                let want = cands.partition_point(|&c| if inclusive { c <= x } else { c < x });
                assert_eq!(release::bin(&cands, x, inclusive), want, "{x} in {lo}..{hi}");
            }
        }
        for &c in &cands {
            assert_eq!(release::bin(&cands, c, true), cands.partition_point(|&d| d <= c));
            assert_eq!(release::bin(&cands, c, false), cands.partition_point(|&d| d < c));
        }
    }
}

/// Timing on a million rows; run with
/// `cargo test --release -p prism-common --lib dp::tests::million_rows -- --ignored --nocapture`.
#[test]
#[ignore]
fn million_rows_timing() {
    let counts: Vec<(&str, usize)> = STATES.iter().map(|s| (*s, 250_000)).collect();
    for public in [true, false] {
        let ds = population(public, &counts);
        let params = p(1.0, 1e-6);
        let filtered = Plan {
            filter: Some(Predicate::Compare { column: "age".into(), op: CmpOp::Gt, value: Literal::Int(30) }),
            ..plan(vec![agg(AggFunc::Count, None, "n")], &[], None)
        };
        let plans = [
            ("count", plan(vec![agg(AggFunc::Count, None, "n")], &[], None)),
            ("count where", filtered),
            ("showcase", showcase()),
            (
                "sum/avg/min/max by state",
                plan(
                    vec![
                        Output::Key("state".into()),
                        agg(AggFunc::Sum, Some("cost"), "s"),
                        agg(AggFunc::Avg, Some("age"), "a"),
                        agg(AggFunc::Min, Some("age"), "mn"),
                        agg(AggFunc::Max, Some("cost"), "mx"),
                    ],
                    &["state"],
                    None,
                ),
            ),
            ("sum cost", plan(vec![agg(AggFunc::Sum, Some("cost"), "s")], &[], None)),
            ("avg age", plan(vec![agg(AggFunc::Avg, Some("age"), "s")], &[], None)),
            ("min age", plan(vec![agg(AggFunc::Min, Some("age"), "s")], &[], None)),
            ("max cost", plan(vec![agg(AggFunc::Max, Some("cost"), "s")], &[], None)),
            ("count by age", plan(vec![Output::Key("age".into()), agg(AggFunc::Count, None, "n")], &["age"], None)),
        ];
        for (name, q) in &plans {
            let mut best = f64::INFINITY;
            for _ in 0..5 {
                let t = std::time::Instant::now();
                release(q, &ds, &params, &DpPolicy::default()).expect("release");
                best = best.min(t.elapsed().as_secs_f64() * 1e3);
            }
            println!("public={public} {name}: {best:.1} ms");
        }
        if !public {
            let r = release(&showcase(), &ds, &params, &DpPolicy::default()).expect("release");
            println!("{}", serde_json::to_string_pretty(&r).expect("json"));
        }
    }
}
