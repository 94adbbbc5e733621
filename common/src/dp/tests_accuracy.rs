//! Tests of where ε goes: no gate on a public row count, centered sums and count-free averages
//! over `not_null` columns, the gate count as an average's denominator, and the hidden gate's
//! share.

use super::tests::{
    agg, check_noise, discrete_laplace_sd, loose, mean_sd, num, p, plan, population,
};
use super::*;
use crate::plan::{AggFunc, Output};
use crate::schema::ColumnData;

/// `population` with `age` (bounds 0..120) declared not_null.
fn strict(public: bool, counts: &[(&str, usize)]) -> Dataset {
    let mut ds = population(public, counts);
    ds.schema.columns[1].not_null = true;
    ds
}

fn ages(ds: &Dataset) -> Vec<i64> {
    match &ds.columns[1] {
        ColumnData::Integer(v) => v.iter().flatten().copied().collect(),
        _ => unreachable!(),
    }
}

#[test]
fn centered_sum_over_public_row_count_has_half_the_scale() {
    let ds = strict(false, &[("CA", 40)]);
    let truth: i64 = ages(&ds).iter().sum();
    let q = plan(vec![agg(AggFunc::Sum, Some("age"), "s")], &[], None);
    // Σ(age - 60) has sensitivity 60 (not 120), ε = 2: scale 30; 60 × n is public.
    check_noise(&q, &ds, 2.0, truth as f64, 30.0);
    let r = release(&q, &ds, &p(2.0, 0.0), &loose()).expect("release");
    assert_eq!(r.proof.statistics[0].sensitivity, 60.0);
    assert!(r.proof.statistics[0].accuracy.contains("public row count"));
}

#[test]
fn whole_table_release_spends_nothing_on_a_gate() {
    // The default policy's floor of 10 is checked against the public row count.
    let ds = population(false, &[("CA", 50)]);
    let q = plan(vec![agg(AggFunc::Sum, Some("age"), "s")], &[], None);
    let r = release(&q, &ds, &p(1.0, 0.0), &DpPolicy::default()).expect("release");
    assert_eq!(r.proof.statistics.len(), 1, "no hidden count");
    assert_eq!(r.proof.gate.kind, "public_row_count");
    assert_eq!(r.proof.gate.epsilon, 0.0);
    // Nullable column: uncentered, sensitivity 120, all of ε = 1.
    let st = &r.proof.statistics[0];
    assert!((st.noise_scale - 120.0).abs() < 1e-6 * 120.0, "{st:?}");
    assert!(r.cost.epsilon > 0.999 && r.cost.epsilon <= 1.0);
}

#[test]
fn count_free_mean_over_public_row_count() {
    let ds = strict(false, &[("CA", 200)]);
    let a = ages(&ds);
    let truth = a.iter().sum::<i64>() as f64 / a.len() as f64;
    let q = plan(vec![agg(AggFunc::Avg, Some("age"), "a")], &[], None);
    let eps = 0.5;
    let runs = 1500;
    let mut xs = Vec::with_capacity(runs);
    let mut scale = 0.0;
    for _ in 0..runs {
        let r = release(&q, &ds, &p(eps, 0.0), &DpPolicy::default()).expect("release");
        let st = &r.proof.statistics[0];
        assert_eq!(st.components[1].epsilon, 0.0, "{st:?}");
        assert!(st.mechanism.contains("public count"), "{st:?}");
        scale = st.noise_scale;
        xs.push(num(&r.table.rows[0][0]) - truth);
    }
    // All of ε on Σ(age - 60), sensitivity 60: scale 120, divided by the exact n = 200.
    assert!((scale - 120.0).abs() < 1e-6 * 120.0, "scale {scale}");
    let (mean, sd) = mean_sd(&xs);
    let want = discrete_laplace_sd(scale) / a.len() as f64;
    assert!(
        (sd / want - 1.0).abs() < 0.15,
        "empirical sd {sd}, calibrated {want}"
    );
    assert!(
        mean.abs() < 5.0 * want / (runs as f64).sqrt(),
        "mean {mean}"
    );
}

#[test]
fn grouped_avg_divides_by_the_released_count() {
    let ds = strict(true, &[("CA", 400), ("NY", 300)]);
    let q = plan(
        vec![
            Output::Key("state".into()),
            agg(AggFunc::Avg, Some("age"), "a"),
            agg(AggFunc::Count, None, "n"),
        ],
        &["state"],
        None,
    );
    let r = release(&q, &ds, &p(1.0, 0.0), &DpPolicy::default()).expect("release");
    assert_eq!(r.proof.gate.kind, "released_count");
    assert_eq!(r.proof.statistics.len(), 2);
    let avg = &r.proof.statistics[0];
    // Half of ε each; the average's half goes entirely to its sum.
    assert!((avg.epsilon - 0.5).abs() < 1e-6, "{avg:?}");
    assert!((avg.components[0].epsilon - avg.epsilon).abs() < 1e-12);
    assert_eq!(avg.components[1].epsilon, 0.0);
    assert_eq!(
        avg.components[1].noise_scale,
        r.proof.statistics[1].noise_scale
    );
    assert!((avg.noise_scale - 120.0).abs() < 1e-6 * 120.0, "{avg:?}");
    // Nullable: the average pays for its own count, a quarter of its share.
    let ds = population(true, &[("CA", 400), ("NY", 300)]);
    let r = release(&q, &ds, &p(1.0, 0.0), &DpPolicy::default()).expect("release");
    let avg = &r.proof.statistics[0];
    assert!((avg.components[1].epsilon - 0.125).abs() < 1e-6, "{avg:?}");
    assert!((avg.components[0].epsilon - 0.375).abs() < 1e-6, "{avg:?}");
}

#[test]
fn hidden_gate_gets_a_quarter_at_most() {
    let ds = population(true, &[("CA", 400), ("NY", 300)]);
    let sum = agg(AggFunc::Sum, Some("age"), "s");
    let q = plan(
        vec![Output::Key("state".into()), sum.clone()],
        &["state"],
        None,
    );
    let r = release(&q, &ds, &p(1.0, 0.0), &DpPolicy::default()).expect("release");
    assert_eq!(r.proof.gate.kind, "hidden_count");
    assert!(
        (r.proof.gate.epsilon - 0.25).abs() < 1e-6,
        "{:?}",
        r.proof.gate
    );
    assert!((r.proof.statistics[0].epsilon - 0.75).abs() < 1e-6);
    assert_eq!(
        r.proof.gate.epsilon, r.proof.statistics[1].epsilon,
        "the hidden statistic is the gate"
    );
    // Four released statistics: the gate gets what each gets, 1/5.
    let q = plan(
        vec![
            Output::Key("state".into()),
            sum,
            agg(AggFunc::Avg, Some("age"), "a"),
            agg(AggFunc::Max, Some("age"), "mx"),
            agg(AggFunc::Count, Some("age"), "c"),
        ],
        &["state"],
        None,
    );
    let r = release(&q, &ds, &p(1.0, 0.0), &DpPolicy::default()).expect("release");
    assert!(
        (r.proof.gate.epsilon - 0.2).abs() < 1e-6,
        "{:?}",
        r.proof.gate
    );
    let total: f64 = r.proof.statistics.iter().map(|s| s.epsilon).sum();
    assert!((total - r.cost.epsilon).abs() < 1e-12 && r.cost.epsilon <= 1.0);
}

#[test]
fn filtered_whole_table_query_keeps_a_noisy_gate() {
    use crate::plan::{CmpOp, Literal, Predicate};
    let ds = strict(false, &[("CA", 100)]);
    let mut q = plan(vec![agg(AggFunc::Sum, Some("age"), "s")], &[], None);
    q.filter = Some(Predicate::Compare {
        column: "age".into(),
        op: CmpOp::GtEq,
        value: Literal::Int(50),
    });
    let r = release(&q, &ds, &p(1.0, 0.0), &DpPolicy::default()).expect("release");
    // The filtered row count is not public: a hidden gate, and an uncentered sum.
    assert_eq!(r.proof.gate.kind, "hidden_count");
    assert_eq!(r.proof.statistics[0].sensitivity, 120.0);
}
