//! End to end through a real federation: the demo flow, API errors, durability, budgets.

use prism_tests::demo;
use prism_tests::{Federation, FederationSpec};
use serde_json::json;

fn small() -> FederationSpec {
    FederationSpec {
        rows_per_org: 2_000,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_flow_has_every_expected_outcome_and_real_dp_answers() {
    let f = Federation::start(small()).await.expect("federation");
    let steps = demo::run(&f).await.expect("demo");
    for s in &steps {
        assert!(
            s.ok,
            "unexpected outcome for {} {}: {} {}",
            s.backend, s.query, s.status, s.body
        );
    }
    // The COUNT(*) is noisy but close: 2000 rows, ε = 0.5 → discrete Laplace scale 2.
    let count = steps[0].body["result"]["rows"][0][0]
        .as_f64()
        .expect("count");
    assert!(
        (count - 2000.0).abs() < 60.0,
        "noisy count {count} is implausibly far from 2000"
    );
    assert!(
        (steps[0].epsilon - 0.5).abs() < 1e-9 || steps[0].epsilon < 0.5,
        "charged {}",
        steps[0].epsilon
    );
    assert!(steps[0].epsilon > 0.0);
    // The run carries the proof from the node that holds the data.
    assert_eq!(
        steps[0].body["proof_artifacts"]["organization"],
        "hospital-a"
    );
    assert!(steps[0].body["proof_artifacts"]["release"].is_object());
    // The enclave refusal is structured.
    let enclave = &steps[6].body["error"];
    assert_eq!(enclave["details"]["refusal"]["status"], "not_implemented");
    assert!(
        enclave["details"]["refusal"]["alternatives"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
    );
    // The node's budget ledger shows what the runs were charged.
    let (_, b) = f
        .node_admin("hospital-a")
        .expect("node")
        .get("/v1/datasets/patients/budget")
        .await
        .expect("budget");
    let charged: f64 = steps.iter().map(|s| s.epsilon).sum();
    assert!(
        (b["spent_epsilon"].as_f64().expect("spent") - charged).abs() < 1e-6,
        "ledger {b} vs runs {charged}"
    );
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_refuses_bad_input_with_the_right_status_and_changes_nothing() {
    let f = Federation::start(small()).await.expect("federation");
    let analyst = f.analyst();
    let admin = f.admin();

    let anonymous = prism_tests::Api::new(f.api_url(), "");
    let (s, body) = anonymous.get("/api/v1/datasets").await.expect("req");
    assert_eq!(s, 401, "{body}");
    assert_eq!(body["error"]["code"], "unauthorized");
    let (s, _) = prism_tests::Api::new(f.api_url(), "prism_not-a-token")
        .get("/api/v1/datasets")
        .await
        .expect("req");
    assert_eq!(s, 401);

    let (s, body) = analyst.get("/api/v1/audit").await.expect("req");
    assert_eq!(s, 403, "{body}");
    assert_eq!(body["error"]["code"], "forbidden");

    let (s, body) = analyst
        .post(
            "/api/v1/queries",
            &json!({"dataset_id": "hospital-z.patients", "sql": "SELECT COUNT(*) FROM patients"}),
        )
        .await
        .expect("req");
    assert_eq!(s, 404, "{body}");
    assert_eq!(body["error"]["code"], "unknown_dataset");

    let (s, body) = analyst
        .post(
            "/api/v1/queries",
            &json!({"dataset_id": "hospital-a.patients", "sql": "SELEC COUNT(*) FROM patients"}),
        )
        .await
        .expect("req");
    assert_eq!(s, 422, "{body}");
    assert_eq!(body["error"]["code"], "sql_parse_error");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.to_lowercase().contains("selec")),
        "{body}"
    );

    let (s, body) = analyst
        .post(
            "/api/v1/queries",
            &json!({"dataset_id": "hospital-a.patients", "sql": "SELECT * FROM patients"}),
        )
        .await
        .expect("req");
    assert_eq!(s, 422, "{body}");
    assert_eq!(body["error"]["code"], "sql_unsupported");

    let (s, body) = analyst
        .post("/api/v1/queries", &json!({"dataset_id": "hospital-a.patients", "sql": "SELECT COUNT(*) FROM patients", "epsilon": -1.0}))
        .await
        .expect("req");
    assert_eq!(s, 422, "{body}");

    let (s, body) = analyst
        .post("/api/v1/queries", &json!({"dataset_id": "hospital-a.patients", "sql": "SELECT COUNT(*) FROM patients", "backend": "quantum"}))
        .await
        .expect("req");
    assert_eq!(s, 422, "{body}");
    assert_eq!(body["error"]["code"], "unknown_backend");

    // Validate names the problem and gives the node's estimate when valid.
    let (s, v) = analyst
        .post("/api/v1/queries/validate", &json!({"dataset_id": "hospital-a.patients", "sql": "SELECT SUM(age) FROM patients", "epsilon": 0.3}))
        .await
        .expect("req");
    assert_eq!(s, 200);
    assert_eq!(v["valid"], true, "{v}");
    assert!(
        v["estimated_epsilon"]
            .as_f64()
            .is_some_and(|e| e > 0.0 && e <= 0.3 + 1e-12),
        "{v}"
    );
    assert_eq!(v["estimate_source"], "node");
    let (_, v) = analyst
        .post("/api/v1/queries/validate", &json!({"dataset_id": "hospital-a.patients", "sql": "SELECT SUM(diagnosis) FROM patients"}))
        .await
        .expect("req");
    assert_eq!(v["valid"], false);
    assert!(
        v["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("diagnosis")),
        "{v}"
    );

    let (s, _) = analyst
        .get("/api/v1/queries/does-not-exist")
        .await
        .expect("req");
    assert_eq!(s, 404);
    let (s, _) = analyst
        .get("/api/v1/runs/does-not-exist")
        .await
        .expect("req");
    assert_eq!(s, 404);

    // Nothing was created or charged by any of that.
    let (_, queries) = admin.get("/api/v1/queries").await.expect("req");
    assert_eq!(queries.as_array().map(Vec::len), Some(0));
    let (_, b) = f
        .node_admin("hospital-a")
        .expect("node")
        .get("/v1/datasets/patients/budget")
        .await
        .expect("budget");
    assert_eq!(b["spent_epsilon"], 0.0);

    // The audit chain verifies.
    let (s, v) = admin.get("/api/v1/audit/verify").await.expect("req");
    assert_eq!(s, 200);
    assert_eq!(v["valid"], true, "{v}");
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_with_a_bad_row_is_refused_whole_and_names_the_line() {
    let f = Federation::start(FederationSpec {
        rows_per_org: 0,
        orgs: vec!["hospital-a".into()],
        ..Default::default()
    })
    .await
    .expect("federation");
    let node = f.node_admin("hospital-a").expect("node");
    let csv = "id,age,diagnosis,treatment_cost,state\n1,40,asthma,100.5,CA\n2,forty,asthma,10,NY\n3,50,copd,9,TX\n";
    let (s, body) = node
        .post("/v1/datasets", &json!({"name": "patients", "columns": prism_tests::data::patient_columns(), "csv": csv}))
        .await
        .expect("req");
    assert_eq!(s, 422, "{body}");
    let msg = body["error"]["message"].as_str().expect("message");
    assert!(msg.contains("line 3") && msg.contains("age"), "{msg}");
    let (_, list) = node.get("/v1/datasets").await.expect("req");
    assert_eq!(
        list.as_array().map(Vec::len),
        Some(0),
        "nothing may be imported: {list}"
    );
    let (s, _) = prism_tests::Api::new(node.url.clone(), "wrong")
        .get("/v1/datasets")
        .await
        .expect("req");
    assert_eq!(s, 401);
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_budget_refuses_with_the_remainder_and_charges_nothing() {
    let f = Federation::start(small()).await.expect("federation");
    let node = f.node_admin("hospital-b").expect("node");
    let (s, b) = node
        .put(
            "/v1/datasets/patients/budget",
            &json!({"epsilon": 1.0, "delta": 0.0}),
        )
        .await
        .expect("req");
    assert_eq!(s, 200, "{b}");
    let api = f.analyst();
    for _ in 0..2 {
        let (_, s, run) = api
            .run_query(
                "hospital-b.patients",
                "SELECT COUNT(*) FROM patients",
                "dp_sandbox",
                Some(0.5),
            )
            .await
            .expect("run");
        assert_eq!(
            (s, run["status"].as_str()),
            (200, Some("completed")),
            "{run}"
        );
    }
    let (_, s, run) = api
        .run_query(
            "hospital-b.patients",
            "SELECT COUNT(*) FROM patients",
            "dp_sandbox",
            Some(0.5),
        )
        .await
        .expect("run");
    assert_eq!(s, 200);
    assert_eq!(run["status"], "failed", "{run}");
    assert_eq!(run["error_code"], "budget_exhausted");
    assert!(
        run["error_message"]
            .as_str()
            .is_some_and(|m| m.contains("remain")),
        "{run}"
    );
    assert!(run["result"].is_null());
    let (_, b) = node.get("/v1/datasets/patients/budget").await.expect("req");
    assert!(
        (b["spent_epsilon"].as_f64().expect("spent") - 1.0).abs() < 1e-9,
        "{b}"
    );
    assert_eq!(b["reserved_epsilon"], 0.0);
    // The owner raises the budget (audited on the node) and queries run again.
    let (s, _) = node
        .put(
            "/v1/datasets/patients/budget",
            &json!({"epsilon": 2.0, "delta": 0.0}),
        )
        .await
        .expect("req");
    assert_eq!(s, 200);
    let (_, _, run) = api
        .run_query(
            "hospital-b.patients",
            "SELECT COUNT(*) FROM patients",
            "dp_sandbox",
            Some(0.5),
        )
        .await
        .expect("run");
    assert_eq!(run["status"], "completed");
    let (_, audit) = node.get("/v1/audit").await.expect("req");
    assert!(
        audit
            .as_array()
            .expect("entries")
            .iter()
            .any(|e| e["action"] == "budget_set")
    );
    let (_, v) = node.get("/v1/audit/verify").await.expect("req");
    assert_eq!(v["valid"], true);
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_queries_never_overspend_the_budget() {
    let f = Federation::start(FederationSpec {
        rows_per_org: 300,
        orgs: vec!["hospital-a".into()],
        ..Default::default()
    })
    .await
    .expect("federation");
    let node = f.node_admin("hospital-a").expect("node");
    node.put(
        "/v1/datasets/patients/budget",
        &json!({"epsilon": 2.0, "delta": 0.0}),
    )
    .await
    .expect("req");
    let api = f.analyst();
    let mut ids = Vec::new();
    for _ in 0..200 {
        let (s, q) = api
            .post("/api/v1/queries", &json!({"dataset_id": "hospital-a.patients", "sql": "SELECT COUNT(*) FROM patients", "epsilon": 0.1}))
            .await
            .expect("req");
        assert_eq!(s, 201, "{q}");
        ids.push(q["id"].as_str().expect("id").to_string());
    }
    let runs = futures_join(ids.iter().map(|id| {
        let api = api.clone();
        let id = id.clone();
        async move {
            api.post(
                &format!("/api/v1/queries/{id}/execute?wait=true"),
                &json!({}),
            )
            .await
        }
    }))
    .await;
    let mut completed = 0;
    for r in runs {
        let (s, run) = r.expect("req");
        assert_eq!(s, 200, "{run}");
        match run["status"].as_str() {
            Some("completed") => completed += 1,
            Some("failed") => assert_eq!(run["error_code"], "budget_exhausted", "{run}"),
            other => panic!("unexpected status {other:?}"),
        }
    }
    let (_, b) = node.get("/v1/datasets/patients/budget").await.expect("req");
    let spent = b["spent_epsilon"].as_f64().expect("spent");
    assert!(spent <= 2.0 + 1e-12, "overspent: {b}");
    assert_eq!(completed, 20, "0.1 × 20 = 2.0 exactly fits; {b}");
    assert_eq!(b["reserved_epsilon"], 0.0);
    f.shutdown().await;
}

async fn futures_join<F: std::future::Future + Send + 'static>(
    futs: impl Iterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.expect("join"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_and_datasets_survive_restarts_and_in_flight_runs_fail_with_a_reason() {
    let mut f = Federation::start(small()).await.expect("federation");
    let api = f.analyst();
    let (_, _, done) = api
        .run_query(
            "hospital-a.patients",
            "SELECT COUNT(*) FROM patients",
            "dp_sandbox",
            Some(0.2),
        )
        .await
        .expect("run");
    assert_eq!(done["status"], "completed");
    let done_id = done["id"].as_str().expect("id").to_string();

    // Fault injection: a run the coordinator had sent when it stopped.
    let mut stuck: prism_coordinator::model::RunRecord =
        serde_json::from_value(done.clone()).expect("run");
    stuck.id = "in-flight-run".into();
    stuck.status = prism_coordinator::model::RunStatus::Running;
    stuck.result = None;
    let store = f
        .coordinator
        .as_ref()
        .expect("coordinator")
        .state
        .store
        .clone();
    store
        .put(prism_coordinator::store::RUNS, &stuck.id, &stuck, None)
        .expect("inject");
    drop(store);

    f.stop_coordinator().await;
    f.restart_coordinator().await.expect("restart");
    let api = f.analyst();
    let (s, run) = api
        .get(&format!("/api/v1/runs/{done_id}"))
        .await
        .expect("req");
    assert_eq!(s, 200);
    assert_eq!(
        run, done,
        "an acknowledged run must survive a restart unchanged"
    );
    // A clean stop fails what is still open itself (a crash leaves it to the next start,
    // `coordinator_restarted`); either way it is never left running.
    let (_, run) = api.get("/api/v1/runs/in-flight-run").await.expect("req");
    assert_eq!(run["status"], "failed", "{run}");
    assert_eq!(run["error_code"], "coordinator_stopped");
    assert!(
        run["error_message"]
            .as_str()
            .is_some_and(|m| m.contains("execute the query again"))
    );

    // Node restart: datasets and the ledger come back from its redb file.
    let node = f.node_admin("hospital-a").expect("node");
    let (_, before) = node.get("/v1/datasets").await.expect("req");
    f.stop_node("hospital-a").await.expect("stop");
    let (_, _, offline) = api
        .run_query(
            "hospital-a.patients",
            "SELECT COUNT(*) FROM patients",
            "dp_sandbox",
            Some(0.2),
        )
        .await
        .expect("run");
    assert_eq!(offline["status"], "failed");
    assert_eq!(offline["error_code"], "node_unavailable");
    assert!(
        offline["error_message"]
            .as_str()
            .is_some_and(|m| m.contains("hospital-a")),
        "{offline}"
    );
    f.restart_node("hospital-a").await.expect("restart node");
    let node = f.node_admin("hospital-a").expect("node");
    let (_, after) = node.get("/v1/datasets").await.expect("req");
    assert_eq!(before, after);
    let (_, _, again) = api
        .run_query(
            "hospital-a.patients",
            "SELECT COUNT(*) FROM patients",
            "dp_sandbox",
            Some(0.2),
        )
        .await
        .expect("run");
    assert_eq!(again["status"], "completed", "{again}");
    f.shutdown().await;
}
