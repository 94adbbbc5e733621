//! Privacy units end to end: an owner declares `patient_id` as the privacy unit at import
//! through the node admin API; the catalog shows it; a DP query through the coordinator is
//! bounded to `max_rows` rows per patient and calibrated to one patient, as its proof says (on
//! dp_sandbox and on he_backend's dp release);
//! malformed declarations are refused at import.

use prism_tests::{Federation, FederationSpec};
use serde_json::{Value, json};

/// 200 patients with 5 visits each: `patient_id,age`.
fn visits_csv() -> String {
    let mut csv = String::from("patient_id,age\n");
    for p in 0..200 {
        for v in 0..5 {
            csv.push_str(&format!("{p},{}\n", 20 + (p + v) % 60));
        }
    }
    csv
}

fn columns(unit: Value) -> Value {
    json!([
        {"name": "patient_id", "type": "integer", "privacy_unit": unit},
        {"name": "age", "type": "integer", "bounds": {"min": 0, "max": 110}, "not_null": true},
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_privacy_unit_bounds_contributions_and_scales_the_noise() {
    let f = Federation::start(FederationSpec {
        orgs: vec!["hospital-a".into()],
        rows_per_org: 0,
        ..Default::default()
    })
    .await
    .expect("federation");
    let node = f.node_admin("hospital-a").expect("node");

    // Refused declarations: two unit columns, a zero bound, a null unit.
    let two = json!([
        {"name": "patient_id", "type": "integer", "privacy_unit": {"max_rows": 3}},
        {"name": "age", "type": "integer", "privacy_unit": {"max_rows": 3}},
    ]);
    let bad = [
        (two, visits_csv()),
        (columns(json!({"max_rows": 0})), visits_csv()),
        (
            columns(json!({"max_rows": 3})),
            "patient_id,age\n,40\n".to_string(),
        ),
    ];
    for (cols, csv) in bad {
        let (s, body) = node
            .post(
                "/v1/datasets",
                &json!({"name": "visits", "columns": cols, "csv": csv}),
            )
            .await
            .expect("import");
        assert!((400..500).contains(&s), "{s} {body}");
        assert!(body["error"]["message"].is_string(), "{body}");
    }

    let (s, body) = node
        .post(
            "/v1/datasets",
            &json!({"name": "visits", "columns": columns(json!({"max_rows": 3})), "csv": visits_csv()}),
        )
        .await
        .expect("import");
    assert_eq!(s, 201, "{body}");
    f.wait_for_datasets(1).await.expect("catalog");
    let (_, catalog) = f.admin().get("/api/v1/datasets").await.expect("catalog");
    let text = catalog.to_string();
    assert!(
        text.contains("privacy_unit") && text.contains("max_rows"),
        "{catalog}"
    );

    let api = f.analyst();
    let (_, s, run) = api
        .run_query(
            "hospital-a.visits",
            "SELECT COUNT(*) FROM visits",
            "dp_sandbox",
            Some(0.5),
        )
        .await
        .expect("run");
    assert_eq!((s, &run["status"]), (200, &json!("completed")), "{run}");
    let release = &run["proof_artifacts"]["release"];
    assert_eq!(
        release["privacy_unit"], "unit: patient_id, max_rows 3, max_groups 1",
        "{release}"
    );
    assert!(
        release["neighbouring"]
            .as_str()
            .is_some_and(|n| n.contains("privacy unit")),
        "{release}"
    );
    let st = &release["statistics"][0];
    assert_eq!(st["sensitivity"], 3.0, "{st}");
    // Row-level scale at ε = 0.5 is 2; one patient is 3 rows: 6.
    let scale = st["noise_scale"].as_f64().expect("scale");
    assert!((scale - 6.0).abs() < 1e-6, "{st}");
    // 200 patients × 3 kept rows = 600 (not the 1000 rows of the file), within 20 scales.
    let n = run["result"]["rows"][0][0].as_f64().expect("count");
    assert!((n - 600.0).abs() < 20.0 * scale, "{run}");

    // he_backend's dp release: the node evaluates over each patient's first 3 visits and
    // calibrates every cell to one patient (sensitivity 3 for the count).
    let (_, s, run) = api
        .run_query(
            "hospital-a.visits",
            "SELECT COUNT(*) FROM visits",
            "he_backend",
            Some(0.5),
        )
        .await
        .expect("he run");
    assert_eq!((s, &run["status"]), (200, &json!("completed")), "{run}");
    let release = &run["proof_artifacts"]["release"];
    assert_eq!(release["mode"], "dp", "{release}");
    let cell = &release["noise"][0];
    assert_eq!(cell["sensitivity"], 3, "{release}");
    let scale = cell["noise_scale"].as_f64().expect("scale");
    let n = run["result"]["rows"][0][0].as_f64().expect("count");
    assert!(
        (n - 600.0).abs() < 20.0 * scale,
        "{n} vs 600 kept visits: {run}"
    );
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datasets_of_one_population_share_its_one_budget() {
    let f = Federation::start(FederationSpec {
        orgs: vec!["hospital-a".into()],
        rows_per_org: 0,
        ..Default::default()
    })
    .await
    .expect("federation");
    let node = f.node_admin("hospital-a").expect("node");
    // Visits and claims of the same 200 patients: one budget of ε = 1 for both.
    for (name, budget) in [("visits", 1.0), ("claims", 50.0)] {
        let (s, body) = node
            .post(
                "/v1/datasets",
                &json!({"name": name, "columns": columns(json!({"max_rows": 3})),
                        "csv": visits_csv(), "population": "clinic",
                        "budget": {"epsilon": budget, "delta": 1e-6}}),
            )
            .await
            .expect("import");
        assert_eq!(s, 201, "{body}");
    }
    f.wait_for_datasets(2).await.expect("catalog");
    let api = f.analyst();
    let (_, s, run) = api
        .run_query(
            "hospital-a.visits",
            "SELECT COUNT(*) FROM visits",
            "dp_sandbox",
            Some(0.6),
        )
        .await
        .expect("run");
    assert_eq!((s, &run["status"]), (200, &json!("completed")), "{run}");
    // The claims of the same patients draw on what is left: 0.4.
    let (q, s, run) = api
        .run_query(
            "hospital-a.claims",
            "SELECT COUNT(*) FROM claims",
            "dp_sandbox",
            Some(0.6),
        )
        .await
        .expect("run");
    let text = format!("{q} {run}");
    assert!(
        run["status"] != "completed" && text.contains("budget"),
        "{s} {text}"
    );
    let (_, b) = node
        .get("/v1/datasets/claims/budget")
        .await
        .expect("budget");
    assert_eq!(
        (b["spent_epsilon"].as_f64(), b["total_epsilon"].as_f64()),
        (Some(0.6), Some(1.0)),
        "{b}"
    );
    let (_, list) = node.get("/v1/datasets").await.expect("list");
    for d in list.as_array().expect("datasets") {
        assert_eq!(d["population"], "clinic", "{d}");
    }
    f.shutdown().await;
}
