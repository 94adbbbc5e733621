//! Differential privacy end to end, through the coordinator's API and the node's admin API:
//! every refusal names its reason and charges nothing; the showcase GROUP BY releases what its
//! proof says; threshold key release costs δ; the estimate is what the run is charged.

use prism_tests::data::{self, STATES};
use prism_tests::{Api, Federation, FederationSpec};
use serde_json::{Value, json};

const DATASET: &str = "hospital-a.patients";
const SHOWCASE: &str =
    "SELECT state, AVG(age), COUNT(*) FROM patients GROUP BY state HAVING COUNT(*) >= 25";

/// One node, 2000 patients.
fn one_node() -> FederationSpec {
    FederationSpec {
        orgs: vec!["hospital-a".into()],
        rows_per_org: 2_000,
        ..Default::default()
    }
}

/// The node's ledger for `patients`.
async fn ledger(node: &Api) -> Value {
    let (s, b) = node
        .get("/v1/datasets/patients/budget")
        .await
        .expect("budget request");
    assert_eq!(s, 200, "{b}");
    b
}

/// Equal up to JSON float round-tripping (serde_json's default float parsing is best-effort
/// in the last bit, and values cross several JSON encodings between the node and the test).
fn same(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= 4.0 * f64::EPSILON * a.abs().max(b.abs())
}

fn num(v: &Value, what: &str) -> f64 {
    v.as_f64()
        .unwrap_or_else(|| panic!("{what} is not a number: {v}"))
}

/// Nothing was charged since `before`, and nothing is held by a reservation.
async fn assert_uncharged(node: &Api, before: &Value, context: &str) {
    let after = ledger(node).await;
    assert_eq!(
        after["spent_epsilon"], before["spent_epsilon"],
        "{context}: ε was charged: {before} → {after}"
    );
    assert_eq!(
        after["spent_delta"], before["spent_delta"],
        "{context}: δ was charged: {before} → {after}"
    );
    assert_eq!(after["reserved_epsilon"], 0.0, "{context}: {after}");
    assert_eq!(after["reserved_delta"], 0.0, "{context}: {after}");
}

/// `POST /api/v1/queries` with an explicit body; returns (status, body).
async fn create(api: &Api, body: Value) -> (u16, Value) {
    api.post("/api/v1/queries", &body).await.expect("create")
}

/// Asserts a 422 refusal with `code` whose message contains every one of `needles`.
fn assert_refused(status: u16, body: &Value, code: &str, needles: &[&str]) {
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    let msg = body["error"]["message"].as_str().expect("message");
    for n in needles {
        assert!(
            msg.to_lowercase().contains(&n.to_lowercase()),
            "message {msg:?} should mention {n:?}"
        );
    }
}

/// The coordinator created no query (refusals happen before anything is saved).
async fn assert_no_queries(f: &Federation) {
    let (_, q) = f.admin().get("/api/v1/queries").await.expect("queries");
    assert_eq!(q.as_array().map(Vec::len), Some(0), "{q}");
}

/// `PATCH` on the node admin API (the harness client has no PATCH).
async fn patch(node: &Api, path: &str, body: &Value) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .patch(format!("{}{path}", node.url))
        .bearer_auth(&node.token)
        .json(body)
        .send()
        .await
        .expect("patch");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sum_avg_min_max_without_declared_bounds_are_refused_with_how_to_declare_them() {
    let f = Federation::start(one_node()).await.expect("federation");
    let node = f.node_admin("hospital-a").expect("node");
    let api = f.analyst();
    let before = ledger(&node).await;
    for agg in ["SUM", "AVG", "MIN", "MAX"] {
        let sql = format!("SELECT {agg}(id) FROM patients");
        let (s, body) = create(
            &api,
            json!({"dataset_id": DATASET, "sql": sql, "epsilon": 0.5}),
        )
        .await;
        assert_refused(
            s,
            &body,
            "missing_bounds",
            &[
                "column id",
                "no declared bounds",
                "declare",
                "--min",
                "--max",
            ],
        );
        let (s, v) = api
            .post(
                "/api/v1/queries/validate",
                &json!({"dataset_id": DATASET, "sql": sql}),
            )
            .await
            .expect("validate");
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["valid"], false, "{v}");
        assert_eq!(v["errors"][0]["code"], "missing_bounds", "{v}");
        assert_uncharged(&node, &before, &sql).await;
    }
    // COUNT(id) needs no bounds.
    let (s, v) = api
        .post(
            "/api/v1/queries/validate",
            &json!({"dataset_id": DATASET, "sql": "SELECT COUNT(id) FROM patients"}),
        )
        .await
        .expect("validate");
    assert_eq!((s, &v["valid"]), (200, &json!(true)), "{v}");
    assert_no_queries(&f).await;

    // Doing what the message says fixes it: the owner declares bounds (audited on the node).
    let (s, schema) = patch(
        &node,
        "/v1/datasets/patients/columns/id",
        &json!({"bounds": {"min": 0, "max": 5000}}),
    )
    .await;
    assert_eq!(s, 200, "{schema}");
    let (s, v) = api
        .post(
            "/api/v1/queries/validate",
            &json!({"dataset_id": DATASET, "sql": "SELECT SUM(id) FROM patients"}),
        )
        .await
        .expect("validate");
    assert_eq!(s, 200);
    assert_eq!(v["valid"], true, "{v}");
    let (_, audit) = node.get("/v1/audit").await.expect("audit");
    assert!(
        audit
            .as_array()
            .expect("entries")
            .iter()
            .any(|e| e["action"] == "dataset_schema_updated"),
        "{audit}"
    );
    assert_uncharged(&node, &before, "after declaring bounds").await;
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_text_column_in_sum_is_refused_by_the_planner() {
    let f = Federation::start(one_node()).await.expect("federation");
    let node = f.node_admin("hospital-a").expect("node");
    let api = f.analyst();
    let before = ledger(&node).await;
    for (sql, column) in [
        ("SELECT SUM(diagnosis) FROM patients", "diagnosis"),
        (
            "SELECT state, SUM(state) FROM patients GROUP BY state",
            "state",
        ),
    ] {
        let (s, body) = create(&api, json!({"dataset_id": DATASET, "sql": sql})).await;
        assert_refused(
            s,
            &body,
            "sql_type_error",
            &[column, "text column", "integer or float"],
        );
        assert_uncharged(&node, &before, sql).await;
    }
    assert_no_queries(&f).await;
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn epsilon_must_be_positive_and_within_the_node_policy_limit() {
    let f = Federation::start(one_node()).await.expect("federation");
    let node = f.node_admin("hospital-a").expect("node");
    let api = f.analyst();
    let before = ledger(&node).await;
    let sql = "SELECT COUNT(*) FROM patients";
    // NaN and ±∞ have no JSON spelling; 0 and negatives are refused by the coordinator.
    for eps in [0.0, -0.0, -1.0, -1e300] {
        let (s, body) = create(
            &api,
            json!({"dataset_id": DATASET, "sql": sql, "epsilon": eps}),
        )
        .await;
        assert_refused(s, &body, "invalid_epsilon", &["epsilon", "> 0"]);
        assert_uncharged(&node, &before, &format!("ε = {eps}")).await;
    }
    // Over the node's max_epsilon_per_query (default 1.0): the node refuses, naming the limit.
    for eps in [1.000_001, 5.0, 1e300] {
        let (s, body) = create(
            &api,
            json!({"dataset_id": DATASET, "sql": sql, "epsilon": eps}),
        )
        .await;
        assert_refused(
            s,
            &body,
            "policy_violation",
            &["epsilon", &format!("{eps}"), "per-query limit of 1"],
        );
        let (_, v) = api
            .post(
                "/api/v1/queries/validate",
                &json!({"dataset_id": DATASET, "sql": sql, "epsilon": eps}),
            )
            .await
            .expect("validate");
        assert_eq!(v["valid"], false, "{v}");
        assert_eq!(v["errors"][0]["code"], "policy_violation", "{v}");
        assert_uncharged(&node, &before, &format!("ε = {eps}")).await;
    }
    // Exactly the limit is allowed.
    let (s, v) = api
        .post(
            "/api/v1/queries/validate",
            &json!({"dataset_id": DATASET, "sql": sql, "epsilon": 1.0}),
        )
        .await
        .expect("validate");
    assert_eq!((s, &v["valid"]), (200, &json!(true)), "{v}");
    assert_no_queries(&f).await;
    assert_uncharged(&node, &before, "validate").await;
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_budget_refuses_with_the_remainder_and_charges_nothing() {
    let f = Federation::start(one_node()).await.expect("federation");
    let node = f.node_admin("hospital-a").expect("node");
    let (s, b) = node
        .put(
            "/v1/datasets/patients/budget",
            &json!({"epsilon": 0.7, "delta": 0.0}),
        )
        .await
        .expect("set budget");
    assert_eq!(s, 200, "{b}");
    let api = f.analyst();
    let sql = "SELECT COUNT(*) FROM patients";
    let (_, s, first) = api
        .run_query(DATASET, sql, "dp_sandbox", Some(0.5))
        .await
        .expect("run");
    assert_eq!((s, &first["status"]), (200, &json!("completed")), "{first}");
    let before = ledger(&node).await;
    let remaining = num(&before["remaining_epsilon"], "remaining_epsilon");
    assert!((remaining - 0.2).abs() < 1e-9, "{before}");

    let (query, s, run) = api
        .run_query(DATASET, sql, "dp_sandbox", Some(0.5))
        .await
        .expect("run");
    // The query is valid (the estimate does not reserve); the node refuses at execution.
    assert!(query["id"].is_string(), "{query}");
    assert_eq!(s, 200, "{run}");
    assert_eq!(run["status"], "failed", "{run}");
    assert_eq!(run["error_code"], "budget_exhausted", "{run}");
    let msg = run["error_message"].as_str().expect("message");
    assert!(
        msg.contains("budget exhausted")
            && msg.contains(&format!("{remaining} ε"))
            && msg.contains("remain")
            && msg.contains("raise the budget"),
        "{msg}"
    );
    assert!(run["result"].is_null(), "{run}");
    assert_eq!(run["epsilon_consumed"], 0.0, "{run}");
    let refusal = &run["proof_artifacts"]["refusal"];
    assert_eq!(
        num(&refusal["remaining_epsilon"], "remaining_epsilon"),
        remaining,
        "{run}"
    );
    assert_eq!(
        num(&refusal["total_epsilon"], "total_epsilon"),
        0.7,
        "{run}"
    );
    assert_uncharged(&node, &before, "exhausted").await;
    // The node audited the refusal with its code.
    let (_, audit) = node.get("/v1/audit").await.expect("audit");
    assert!(
        audit.as_array().expect("entries").iter().any(|e| {
            e["action"] == "query_refused"
                && e["details"]["code"] == "budget_exhausted"
                && e["details"]["run_id"] == run["id"]
        }),
        "{audit}"
    );
    // What does fit still runs: 0.2 remain.
    let (_, _, small) = api
        .run_query(DATASET, sql, "dp_sandbox", Some(0.2))
        .await
        .expect("run");
    assert_eq!(small["status"], "completed", "{small}");
    let after = ledger(&node).await;
    assert!(
        num(&after["remaining_epsilon"], "remaining") < 1e-9,
        "{after}"
    );
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_column_the_node_policy_does_not_allow_to_aggregate_is_a_policy_violation() {
    let f = Federation::start(FederationSpec {
        policy: prism_node::Policy {
            aggregatable_columns: vec!["age".into()],
            ..Default::default()
        },
        ..one_node()
    })
    .await
    .expect("federation");
    let node = f.node_admin("hospital-a").expect("node");
    let api = f.analyst();
    let before = ledger(&node).await;
    for (sql, column) in [
        ("SELECT SUM(treatment_cost) FROM patients", "treatment_cost"),
        (
            "SELECT state, AVG(treatment_cost) FROM patients GROUP BY state",
            "treatment_cost",
        ),
        ("SELECT COUNT(id) FROM patients", "id"),
    ] {
        let (s, body) = create(&api, json!({"dataset_id": DATASET, "sql": sql})).await;
        assert_refused(
            s,
            &body,
            "policy_violation",
            &[
                "hospital-a",
                "policy",
                &format!("column {column} may not be aggregated"),
            ],
        );
        assert_uncharged(&node, &before, sql).await;
    }
    assert_no_queries(&f).await;
    // The allowed column, and COUNT(*), still run.
    let (_, _, run) = api
        .run_query(
            DATASET,
            "SELECT AVG(age), COUNT(*) FROM patients",
            "dp_sandbox",
            Some(0.5),
        )
        .await
        .expect("run");
    assert_eq!(run["status"], "completed", "{run}");
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_showcase_group_by_releases_states_with_a_complete_proof() {
    let f = Federation::start(one_node()).await.expect("federation");
    let node = f.node_admin("hospital-a").expect("node");
    let api = f.analyst();
    let (_, s, run) = api
        .run_query(DATASET, SHOWCASE, "dp_sandbox", Some(1.0))
        .await
        .expect("run");
    assert_eq!((s, &run["status"]), (200, &json!("completed")), "{run}");

    // The exact answer, to judge the noisy one.
    let rows = data::patients(FederationSpec::default().seed, 0, 2_000);
    let exact = |state: &str| {
        let ages: Vec<i64> = rows
            .iter()
            .filter(|p| p.state == state)
            .map(|p| p.age)
            .collect();
        (ages.len() as f64, ages.iter().sum::<i64>() as f64)
    };

    let release = &run["proof_artifacts"]["release"];
    let result = &run["result"];
    assert_eq!(result["columns"].as_array().map(Vec::len), Some(3), "{run}");
    assert_eq!(result["columns"][0], "state");
    let table = result["rows"].as_array().expect("rows");
    assert!(!table.is_empty(), "{run}");
    let mut seen = Vec::new();
    for row in table {
        let state = row[0].as_str().expect("state key");
        assert!(STATES.contains(&state), "unknown key {state}");
        assert!(!seen.contains(&state), "state {state} released twice");
        seen.push(state);
        let avg = num(&row[1], "avg");
        let count = num(&row[2], "count");
        assert!(count >= 25.0, "{state}: released count {count} < 25");
        assert!(
            (0.0..=110.0).contains(&avg),
            "{state}: avg {avg} outside the bounds"
        );
        let (n, sum) = exact(state);
        assert!(
            (count - n).abs() < 60.0,
            "{state}: noisy count {count} vs exact {n}"
        );
        if n >= 300.0 {
            let a = sum / n;
            assert!(
                (avg - a).abs() < 10.0,
                "{state}: noisy avg {avg} vs exact {a}"
            );
        }
    }
    let mut sorted = seen.clone();
    sorted.sort_unstable();
    assert_eq!(seen, sorted, "rows are in key order");
    // hospital-a draws 85% of its patients from CA, NY and TX: those are always released.
    for home in ["CA", "NY", "TX"] {
        assert!(seen.contains(&home), "{home} missing from {seen:?}");
    }

    // The proof.
    assert!(
        release["mechanism"]
            .as_str()
            .is_some_and(|m| m.contains("discrete_laplace")),
        "{release}"
    );
    let eps = num(&release["epsilon"], "epsilon");
    assert!(eps > 0.0 && eps <= 1.0, "{release}");
    let consumed = num(&run["epsilon_consumed"], "epsilon_consumed");
    assert!(same(consumed, eps), "run {consumed} vs proof {eps}");
    assert_eq!(release["delta"], 0.0, "public keys cost no δ: {release}");
    assert_eq!(release["epsilon_requested"], 1.0);
    assert!(
        release["composition"]
            .as_str()
            .is_some_and(|c| c.contains("parallel") && c.contains("groups")),
        "{release}"
    );
    assert_eq!(release["key_release"]["mode"], "public_keys", "{release}");
    assert_eq!(release["key_release"]["keys"], STATES.len());
    assert_eq!(release["min_released_count"], 25);
    assert_eq!(release["groups_released"], table.len());
    let stats = release["statistics"].as_array().expect("statistics");
    // AVG(age) and COUNT(*); the COUNT(*) is the gate, so no hidden count.
    assert_eq!(stats.len(), 2, "{release}");
    let mut eps_sum = 0.0;
    for st in stats {
        assert_eq!(st["hidden"], false, "{st}");
        assert!(
            st["mechanism"]
                .as_str()
                .is_some_and(|m| m.contains("discrete_laplace")),
            "{st}"
        );
        let e = num(&st["epsilon"], "statistic epsilon");
        assert!(e > 0.0, "{st}");
        eps_sum += e;
        assert!(num(&st["noise_scale"], "noise_scale") > 0.0, "{st}");
        assert!(num(&st["sensitivity"], "sensitivity") > 0.0, "{st}");
        // Every noise addition has its 95% half-width.
        let comps = st["components"].as_array().expect("components");
        assert!(!comps.is_empty(), "{st}");
        for c in comps {
            assert!(num(&c["ci95_half_width"], "ci95") > 0.0, "{c}");
            assert!(num(&c["noise_scale"], "scale") > 0.0, "{c}");
        }
        assert!(
            st["accuracy"].as_str().is_some_and(|a| !a.is_empty()),
            "{st}"
        );
    }
    assert!(
        (eps_sum - eps).abs() < 1e-12,
        "Σ statistics {eps_sum} vs {eps}"
    );
    let count = stats
        .iter()
        .find(|s| s["aggregate"] == "COUNT(*)")
        .expect("count statistic");
    assert!(num(&count["ci95_half_width"], "ci95") > 0.0, "{count}");
    assert_eq!(num(&count["sensitivity"], "sensitivity"), 1.0);
    let avg = stats
        .iter()
        .find(|s| s["aggregate"] == "AVG(age)")
        .expect("avg statistic");
    assert_eq!(avg["bounds"], json!({"min": 0.0, "max": 110.0}), "{avg}");
    assert_eq!(avg["components"].as_array().map(Vec::len), Some(2), "{avg}");

    // The ledger is charged what the run says, once (groups compose in parallel).
    let b = ledger(&node).await;
    assert!(
        (num(&b["spent_epsilon"], "spent") - eps).abs() < 1e-11,
        "{b}"
    );
    assert_eq!(b["reserved_epsilon"], 0.0);
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_by_without_public_keys_is_released_by_threshold_and_needs_delta() {
    let f = Federation::start(FederationSpec {
        rows_per_org: 0,
        ..one_node()
    })
    .await
    .expect("federation");
    let node = f.node_admin("hospital-a").expect("node");
    // The node admin API cannot remove declared keys (a null public_keys means "unchanged"),
    // so this dataset is imported without keys for diagnosis.
    let mut columns = data::patient_columns();
    for c in columns.iter_mut().filter(|c| c.name == "diagnosis") {
        c.public_keys = None;
    }
    let patients = data::patients(7, 0, 2_000);
    let (s, body) = node
        .post(
            "/v1/datasets",
            &json!({"name": "patients", "columns": columns, "csv": data::to_csv(&patients)}),
        )
        .await
        .expect("import");
    assert_eq!(s, 201, "{body}");
    f.wait_for_datasets(1).await.expect("catalog");
    let api = f.analyst();
    let sql = "SELECT diagnosis, COUNT(*) FROM patients GROUP BY diagnosis";

    // δ = 0: refused, saying how to fix it either way.
    let before = ledger(&node).await;
    let (s, body) = create(
        &api,
        json!({"dataset_id": DATASET, "sql": sql, "epsilon": 0.5, "delta": 0.0}),
    )
    .await;
    assert_refused(
        s,
        &body,
        "delta_required",
        &[
            "diagnosis",
            "no declared public keys",
            "threshold",
            "pass a delta",
            "declare the public keys",
        ],
    );
    assert_uncharged(&node, &before, "delta 0").await;
    assert_no_queries(&f).await;

    // With a δ (here the API's default, 1e-7): released by threshold, δ charged.
    let (s, v) = api
        .post(
            "/api/v1/queries/validate",
            &json!({"dataset_id": DATASET, "sql": sql, "epsilon": 0.5}),
        )
        .await
        .expect("validate");
    assert_eq!((s, &v["valid"]), (200, &json!(true)), "{v}");
    let est_delta = num(&v["estimated_delta"], "estimated_delta");
    assert!(est_delta > 0.0 && est_delta <= 1e-7, "{v}");
    let (_, s, run) = api
        .run_query(DATASET, sql, "dp_sandbox", Some(0.5))
        .await
        .expect("run");
    assert_eq!((s, &run["status"]), (200, &json!("completed")), "{run}");
    let delta = num(&run["delta_consumed"], "delta_consumed");
    assert!(delta > 0.0 && delta <= 1e-7, "{run}");
    assert!(
        same(delta, est_delta),
        "charged δ {delta}, estimated {est_delta}"
    );
    let release = &run["proof_artifacts"]["release"];
    assert_eq!(release["key_release"]["mode"], "threshold", "{release}");
    assert!(
        same(num(&release["key_release"]["delta"], "delta"), delta),
        "{release}"
    );
    let threshold = num(&release["key_release"]["threshold"], "threshold");
    assert!(threshold >= 1.0, "{release}");
    assert!(
        release["mechanism"]
            .as_str()
            .is_some_and(|m| m.starts_with("laplace_threshold")),
        "{release}"
    );
    let rows = run["result"]["rows"].as_array().expect("rows");
    assert!(!rows.is_empty(), "{run}");
    for row in rows {
        let d = row[0].as_str().expect("key");
        let c = num(&row[1], "count");
        assert!(
            patients.iter().any(|p| p.diagnosis == d),
            "released key {d} is not in the data"
        );
        assert!(c >= threshold.max(10.0), "{d}: {c} below the gate");
    }
    let b = ledger(&node).await;
    assert!(
        (num(&b["spent_delta"], "spent_delta") - delta).abs() < 1e-12,
        "the ledger charged δ: {b}"
    );
    assert!(num(&b["spent_delta"], "spent_delta") > 0.0, "{b}");
    assert_eq!(b["reserved_delta"], 0.0);

    // Keys that are declared public release without δ, even when δ = 0 is asked.
    let (s, v) = api
        .post(
            "/api/v1/queries/validate",
            &json!({"dataset_id": DATASET, "sql": "SELECT state, COUNT(*) FROM patients GROUP BY state", "delta": 0.0}),
        )
        .await
        .expect("validate");
    assert_eq!((s, &v["valid"]), (200, &json!(true)), "{v}");
    assert_eq!(v["estimated_delta"], 0.0, "{v}");
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_estimates_on_the_node_exactly_what_the_run_is_charged() {
    let f = Federation::start(one_node()).await.expect("federation");
    let node = f.node_admin("hospital-a").expect("node");
    let api = f.analyst();
    let shapes = [
        ("SELECT COUNT(*) FROM patients", 0.3),
        ("SELECT SUM(age) FROM patients", 0.25),
        ("SELECT AVG(treatment_cost) FROM patients", 0.4),
        ("SELECT MIN(age), MAX(age) FROM patients", 0.7),
        (
            "SELECT COUNT(*) FROM patients WHERE diagnosis = 'diabetes' AND age >= 50",
            0.2,
        ),
        (SHOWCASE, 0.6),
    ];
    let mut charged = 0.0;
    for (sql, eps) in shapes {
        let (s, v) = api
            .post(
                "/api/v1/queries/validate",
                &json!({"dataset_id": DATASET, "sql": sql, "epsilon": eps}),
            )
            .await
            .expect("validate");
        assert_eq!((s, &v["valid"]), (200, &json!(true)), "{sql}: {v}");
        assert_eq!(v["estimate_source"], "node", "{v}");
        assert_eq!(v["organization"], "hospital-a", "{v}");
        let estimated = num(&v["estimated_epsilon"], "estimated_epsilon");
        assert!(estimated > 0.0 && estimated <= eps, "{sql}: {v}");

        let (query, s, run) = api
            .run_query(DATASET, sql, "dp_sandbox", Some(eps))
            .await
            .expect("run");
        assert_eq!(
            (s, &run["status"]),
            (200, &json!("completed")),
            "{sql}: {run}"
        );
        let saved = num(&query["estimated_epsilon"], "query estimate");
        assert!(same(saved, estimated), "{query}");
        let consumed = num(&run["epsilon_consumed"], "epsilon_consumed");
        assert!(
            same(consumed, estimated),
            "{sql}: estimate {estimated}, charged {consumed}"
        );
        let delta = num(&run["delta_consumed"], "delta_consumed");
        let est_delta = num(&v["estimated_delta"], "estimated_delta");
        assert!(same(delta, est_delta), "{sql}: {delta} vs {est_delta}");
        let proof = num(&run["proof_artifacts"]["release"]["epsilon"], "proof ε");
        assert!(same(proof, consumed), "{sql}: proof {proof} vs {consumed}");
        charged += consumed;
    }
    let b = ledger(&node).await;
    // The ledger rounds each charge up to a pico-unit.
    let spent = num(&b["spent_epsilon"], "spent");
    assert!(
        spent >= charged - 1e-12 && spent - charged < 1e-11,
        "ledger {spent} vs runs {charged}"
    );
    assert_eq!(b["reserved_epsilon"], 0.0);
    f.shutdown().await;
}
