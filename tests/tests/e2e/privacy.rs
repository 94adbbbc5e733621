//! Output privacy on he_backend: under the default policy every answer carries DP noise the
//! node adds under encryption and charges to its ledger; in the owner's opt-in exact mode the
//! minimum group size is enforced obliviously and identifying columns are refused. The attacks
//! that singled out one patient at ε = 0 now fail.

use prism_common::release::ReleaseMode;
use prism_tests::data::{self, Patient};
use prism_tests::{Federation, FederationSpec};
use serde_json::{Value, json};

const DATASET: &str = "hospital-a.patients";
/// Enough rows that a noisy count of one diagnosis (about a sixth) never falls under the
/// default minimum group size of 10, few enough ids for the node's 256-value filter limit.
const ROWS: usize = 250;

fn spec() -> FederationSpec {
    FederationSpec {
        orgs: vec!["hospital-a".into()],
        rows_per_org: ROWS,
        ..Default::default()
    }
}

fn patients() -> Vec<Patient> {
    data::patients(FederationSpec::default().seed, 0, ROWS)
}

/// Runs an he_backend query and waits for it to finish (the first run of a federation
/// generates its key set, which on a loaded machine can outlast the API's wait).
async fn run(f: &Federation, sql: &str, epsilon: Option<f64>) -> Value {
    let (_, status, run) = f
        .analyst()
        .run_query(DATASET, sql, "he_backend", epsilon)
        .await
        .expect("run");
    finished(f, status, run).await
}

/// Runs a query that must be refused (at validation or at run time) and returns the code,
/// checking that nothing was charged.
async fn refused(f: &Federation, sql: &str, epsilon: Option<f64>) -> String {
    let before = spent(f).await;
    let (_, status, body) = f
        .analyst()
        .run_query(DATASET, sql, "he_backend", epsilon)
        .await
        .expect("run");
    let code = if status == 422 {
        body["error"]["code"].as_str().unwrap_or("?").to_string()
    } else {
        let r = finished(f, status, body).await;
        assert_eq!(r["status"], "failed", "{sql}: {r}");
        r["error_code"].as_str().unwrap_or("?").to_string()
    };
    assert_eq!(spent(f).await, before, "{sql} charged ε");
    code
}

async fn finished(f: &Federation, status: u16, mut run: Value) -> Value {
    assert!(status == 200 || status == 202, "{run}");
    for _ in 0..600 {
        if run["status"] != "running" && run["status"] != "pending" {
            return run;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let id = run["id"].as_str().expect("run id").to_string();
        run = f
            .analyst()
            .get(&format!("/api/v1/runs/{id}"))
            .await
            .expect("run")
            .1;
    }
    panic!("the run did not finish: {run}");
}

async fn spent(f: &Federation) -> f64 {
    spent_on(f, "patients").await
}

async fn spent_on(f: &Federation, dataset: &str) -> f64 {
    let node = f.node_admin("hospital-a").expect("node admin");
    let (_, b) = node
        .get(&format!("/v1/datasets/{dataset}/budget"))
        .await
        .expect("budget");
    b["spent_epsilon"].as_f64().expect("spent")
}

fn value(run: &Value) -> i64 {
    run["result"]["rows"][0][0]
        .as_i64()
        .unwrap_or_else(|| panic!("an integer answer: {run}"))
}

/// One federation (one key set) for every default-policy check: key generation is the
/// expensive part of an HE test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_the_default_policy_he_answers_are_noisy_charged_and_the_attacks_fail() {
    let f = Federation::start(spec()).await.expect("federation");
    noisy_answers_are_charged_and_carry_their_ci(&f).await;
    the_differencing_and_singling_out_attacks_fail(&f).await;
    concurrent_runs_never_overspend_the_budget(&f).await;
    f.shutdown().await;
}

async fn noisy_answers_are_charged_and_carry_their_ci(f: &Federation) {
    let rows = patients();
    // The catalog says how the node releases each backend.
    let (_, cat) = f.analyst().get("/api/v1/datasets").await.expect("catalog");
    assert_eq!(cat[0]["release"]["he_backend"], "dp", "{cat}");

    // Validation states the mode and the ε the node will charge.
    let (_, v) = f
        .analyst()
        .post(
            "/api/v1/queries/validate",
            &json!({"dataset_id": DATASET, "backend": "he_backend", "epsilon": 0.4,
                     "sql": "SELECT COUNT(*) FROM patients WHERE diagnosis = 'diabetes'"}),
        )
        .await
        .expect("validate");
    assert_eq!(v["valid"], true, "{v}");
    assert_eq!(v["release_mode"], "dp", "{v}");
    let est = v["estimated_epsilon"].as_f64().expect("estimate");
    assert!(est > 0.3 && est <= 0.4 + 1e-12, "{v}");

    let truth = rows.iter().filter(|p| p.diagnosis == "diabetes").count() as i64;
    let mut differed = false;
    for i in 0..4 {
        let before = spent(f).await;
        let r = run(
            f,
            "SELECT COUNT(*) FROM patients WHERE diagnosis = 'diabetes'",
            Some(0.2),
        )
        .await;
        assert_eq!(r["status"], "completed", "{r}");
        let release = &r["proof_artifacts"]["release"];
        assert_eq!(release["mode"], "dp", "{release}");
        assert!(
            release["mechanism"]
                .as_str()
                .is_some_and(|m| m.contains("discrete_laplace"))
        );
        let eps = r["epsilon_consumed"].as_f64().expect("epsilon");
        assert!(eps > 0.15 && eps <= 0.2 + 1e-12, "{r}");
        // The node charged exactly what the run reports.
        assert!(((spent(f).await - before) - eps).abs() < 1e-9, "run {i}");
        let ci = release["ci95_half_width"]["count"]
            .as_f64()
            .unwrap_or_else(|| panic!("a confidence interval: {r}"));
        // Scale 5 at ε = 0.2: the 95% half-width is about 15.
        assert!(ci > 10.0 && ci < 20.0, "{release}");
        let got = value(&r);
        // Three half-widths: a false alarm has probability about 0.05³ per run.
        assert!(
            ((got - truth).abs() as f64) <= 3.0 * ci,
            "{got} vs {truth} ± {ci}"
        );
        differed |= got != truth;
    }
    assert!(differed, "four noisy answers all equal to the exact count");

    // MIN / MAX have no vetted mechanism under encryption: a clear refusal, nothing charged.
    assert_eq!(
        refused(
            f,
            "SELECT MIN(age) FROM patients WHERE diagnosis = 'asthma'",
            None
        )
        .await,
        "he_unsupported"
    );

    // The proof carries nothing an analyst could test guesses of a column's values against.
    let r = run(
        f,
        "SELECT SUM(age) FROM patients WHERE diagnosis = 'copd'",
        Some(0.5),
    )
    .await;
    assert_eq!(r["status"], "completed", "{r}");
    let text = r["proof_artifacts"].to_string();
    for leak in ["digest", "distinct_filter_values", "\"groups\""] {
        assert!(!text.contains(leak), "{leak} in {text}");
    }
}

async fn the_differencing_and_singling_out_attacks_fail(f: &Federation) {
    let rows = patients();
    // One patient's age from a pair of range sums at ε = 0, before: now each sum is noisy.
    let oldest = rows.iter().map(|p| p.age).max().expect("ages");
    let at_top: Vec<&Patient> = rows.iter().filter(|p| p.age == oldest).collect();
    let a = run(
        f,
        &format!("SELECT SUM(age) FROM patients WHERE age >= {}", oldest),
        Some(0.5),
    )
    .await;
    let b = run(
        f,
        &format!("SELECT SUM(age) FROM patients WHERE age >= {}", oldest + 1),
        Some(0.5),
    )
    .await;
    for r in [&a, &b] {
        assert_eq!(r["status"], "completed", "{r}");
        assert_eq!(r["proof_artifacts"]["release"]["mode"], "dp");
    }
    let exact: i64 = at_top.iter().map(|p| p.age).sum();
    // The sum's noise has scale 2 × 110 / 0.5 = 440: the difference is not the exact value.
    let a_val = a["result"]["rows"][0][0].as_i64();
    let b_val = b["result"]["rows"][0][0].as_i64();
    let diff = a_val.unwrap_or(0) - b_val.unwrap_or(0);
    assert_ne!(diff, exact, "the pair still singles out: {a} {b}");
    let scale = a["proof_artifacts"]["release"]["noise"][0]["noise_scale"]
        .as_f64()
        .expect("scale");
    assert!(scale > 100.0, "{a}");

    // WHERE name = 'X' on a table with one row per person: a noisy count (suppressed under the
    // minimum group size, itself decided on the noisy count), not a membership test.
    let node = f.node_admin("hospital-a").expect("node admin");
    let csv: String = std::iter::once("name,age\n".to_string())
        .chain((0..12).map(|i| format!("person{i},{}\n", 30 + i)))
        .collect();
    let (status, body) = node
        .post(
            "/v1/datasets",
            &json!({"name": "staff", "csv": csv, "columns": [
                {"name": "name", "type": "text"},
                {"name": "age", "type": "integer", "bounds": {"min": 18, "max": 80}}]}),
        )
        .await
        .expect("import");
    assert_eq!(status, 201, "{body}");
    let mut published = false;
    for _ in 0..100 {
        let (_, cat) = f.analyst().get("/api/v1/datasets").await.expect("catalog");
        if cat.as_array().is_some_and(|c| c.len() == 2) {
            published = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(published, "the catalog shows the new dataset");
    let before = spent_on(f, "staff").await;
    let (_, status, r) = f
        .analyst()
        .run_query(
            "hospital-a.staff",
            "SELECT COUNT(*), SUM(age) FROM staff WHERE name = 'person3'",
            "he_backend",
            Some(0.5),
        )
        .await
        .expect("run");
    let r = finished(f, status, r).await;
    assert_eq!(r["status"], "completed", "{r}");
    assert_eq!(r["proof_artifacts"]["release"]["mode"], "dp", "{r}");
    let exact = json!([[1, 33]]);
    assert_ne!(r["result"]["rows"], exact, "an exact individual row: {r}");
    assert!(spent_on(f, "staff").await > before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_mode_is_the_owners_opt_in_with_an_oblivious_minimum_group_size() {
    let mut s = spec();
    s.policy.min_group_size = 5;
    let f = Federation::start(s).await.expect("federation");
    let rows = patients();
    let node = f.node_admin("hospital-a").expect("node admin");
    // The owner opts in for this dataset; the catalog follows.
    let (status, body) = node
        .put(
            "/v1/datasets/patients/release",
            &json!({"he_backend": "exact"}),
        )
        .await
        .expect("set release");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["effective"]["he_backend"], "exact", "{body}");
    let (status, body) = node
        .put(
            "/v1/datasets/patients/release",
            &json!({"dp_sandbox": "exact"}),
        )
        .await
        .expect("set release");
    assert_eq!(status, 422, "dp_sandbox has no exact mode: {body}");
    let (_, audit) = node.get("/v1/audit").await.expect("audit");
    assert!(
        audit
            .as_array()
            .expect("entries")
            .iter()
            .any(|e| e["action"] == "release_mode_set"),
        "{audit}"
    );
    let mut published = false;
    for _ in 0..50 {
        let (_, cat) = f.analyst().get("/api/v1/datasets").await.expect("catalog");
        if cat[0]["release"]["he_backend"] == json!(ReleaseMode::Exact) {
            published = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(published, "the catalog shows the owner's mode");

    // A group of at least k rows is answered exactly; below k the answer is suppressed.
    let count = |age: i64| rows.iter().filter(|p| p.age == age).count();
    let big = (0..=110).find(|a| count(*a) >= 5);
    let small = (0..=110).find(|a| (1..5).contains(&count(*a)));
    let empty = (0..=110)
        .find(|a| count(*a) == 0)
        .expect("an age nobody has");
    let mut proofs = Vec::new();
    if let Some(age) = big {
        let r = run(
            &f,
            &format!("SELECT COUNT(*) FROM patients WHERE age = {age}"),
            None,
        )
        .await;
        assert_eq!(r["status"], "completed", "{r}");
        assert_eq!(value(&r), count(age) as i64);
        assert_eq!(r["proof_artifacts"]["release"]["mode"], "exact");
        assert_eq!(r["epsilon_consumed"], 0.0);
        proofs.push(r["proof_artifacts"].clone());
    }
    for age in small.into_iter().chain([empty]) {
        let r = run(
            &f,
            &format!("SELECT COUNT(*) FROM patients WHERE age = {age}"),
            None,
        )
        .await;
        assert_eq!(r["status"], "completed", "{r}");
        assert_eq!(r["result"]["rows"], json!([]), "suppressed: {r}");
        let why = r["proof_artifacts"]["release"]["suppressed"]
            .as_str()
            .expect("a reason");
        assert!(why.contains("fewer than 5"), "{why}");
        assert!(!why.contains(&count(age).to_string()) || count(age) == 5);
        proofs.push(r["proof_artifacts"].clone());
    }
    // What the node did does not depend on whether the group passed: same operations, same
    // result size.
    for p in &proofs {
        assert_eq!(p["operations"], proofs[0]["operations"], "{p}");
        assert_eq!(p["result_bytes"], proofs[0]["result_bytes"], "{p}");
    }

    // Identifying columns are refused in exact mode: all-distinct ones, and those the owner names.
    assert_eq!(
        refused(&f, "SELECT COUNT(*) FROM patients WHERE id = 17", None).await,
        "identifying_column"
    );
    let (status, _) = node
        .put(
            "/v1/datasets/patients/release",
            &json!({"identifying_columns": ["state"]}),
        )
        .await
        .expect("set identifying");
    assert_eq!(status, 200);
    assert_eq!(
        refused(&f, "SELECT COUNT(*) FROM patients WHERE state = 'CA'", None).await,
        "identifying_column"
    );
    f.shutdown().await;
}

async fn concurrent_runs_never_overspend_the_budget(f: &Federation) {
    let node = f.node_admin("hospital-a").expect("node admin");
    // The budget left now covers five more runs of ε = 0.1.
    let already = spent(f).await;
    let (status, body) = node
        .put(
            "/v1/datasets/patients/budget",
            &json!({"epsilon": already + 0.5, "delta": 1e-5}),
        )
        .await
        .expect("budget");
    assert_eq!(status, 200, "{body}");
    // Without a filter the node answers in the clear before encrypting: cheap enough to run
    // many at once. Each asks ε = 0.1; the budget covers five.
    let runs = (0..16).map(|_| {
        let api = f.analyst();
        async move {
            api.run_query(
                DATASET,
                "SELECT COUNT(*) FROM patients",
                "he_backend",
                Some(0.1),
            )
            .await
            .expect("run")
        }
    });
    let out = futures::future::join_all(runs).await;
    let mut completed = 0;
    let mut charged = 0.0;
    for (_, status, r) in &out {
        assert_eq!(*status, 200, "{r}");
        match r["status"].as_str() {
            Some("completed") => {
                completed += 1;
                charged += r["epsilon_consumed"].as_f64().expect("eps");
            }
            Some("failed") => assert_eq!(r["error_code"], "budget_exhausted", "{r}"),
            other => panic!("{other:?}: {r}"),
        }
    }
    let s = spent(f).await - already;
    assert!(s <= 0.5 + 1e-9, "over-spent: {s}");
    assert!((s - charged).abs() < 1e-9, "ledger {s} vs runs {charged}");
    assert!(completed >= 4, "{completed} completed");
}
