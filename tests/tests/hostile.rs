//! Hostile input through the real API: queries built to exhaust the planner's stack, literals
//! that cannot be stored, records that do not decode, and users reaching across organizations.
//! Each test reproduces an attack that once crashed, corrupted or leaked, and checks the
//! federation still answers afterwards.

use prism_tests::{Federation, FederationSpec};
use serde_json::{Value, json};

fn small() -> FederationSpec {
    FederationSpec {
        rows_per_org: 300,
        ..Default::default()
    }
}

fn chain(term: &str, sep: &str, n: usize) -> String {
    vec![term; n].join(sep)
}

/// The coordinator is alive and still plans and answers an ordinary query.
async fn still_answers(f: &Federation) {
    let (s, h) = f.admin().get("/healthz").await.expect("health");
    assert_eq!((s, &h["status"]), (200, &json!("ok")), "{h}");
    let (s, v) = f
        .analyst()
        .post(
            "/api/v1/queries/validate",
            &json!({"dataset_id": "hospital-a.patients", "sql": "SELECT COUNT(*) FROM patients WHERE age > 30"}),
        )
        .await
        .expect("validate");
    assert_eq!((s, &v["valid"]), (200, &json!(true)), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_and_deep_queries_get_a_clear_422_and_the_coordinator_survives() {
    let f = Federation::start(small()).await.expect("federation");
    let analyst = f.analyst();
    let participants = json!(["hospital-a", "hospital-b"]);
    let attacks = [
        format!(
            "SELECT COUNT(*) FROM patients WHERE {}",
            chain("age > 1", " AND ", 4000)
        ),
        format!(
            "SELECT COUNT(*) FROM patients WHERE {}",
            chain("age > 1", " OR ", 4000)
        ),
        format!(
            "SELECT COUNT(*) FROM patients WHERE age{} > 5",
            " + 1".repeat(4000)
        ),
        format!("SELECT SUM({}) FROM patients", chain("age", " + ", 4000)),
        format!(
            "SELECT COUNT(*) FROM patients WHERE {}",
            chain("age > 1", " AND ", 1000)
        ),
        format!(
            "SELECT COUNT(*) FROM patients WHERE {}",
            chain("age > 1", " OR ", 2000)
        ),
        format!(
            "SELECT COUNT(*) FROM patients WHERE {}",
            chain("age > 1", " AND ", 3000)
        ),
        format!(
            "SELECT COUNT(*) FROM patients WHERE {}",
            chain("age > 1", " AND ", 100)
        ),
    ];
    for sql in &attacks {
        let head = &sql[..50];
        for backend in ["dp_sandbox", "he_backend"] {
            let body = json!({"dataset_id": "hospital-a.patients", "sql": sql, "backend": backend});
            let (s, v) = analyst
                .post("/api/v1/queries/validate", &body)
                .await
                .expect("validate answers");
            assert_eq!(s, 200, "{head}: {v}");
            assert_eq!(v["valid"], false, "{head}: {v}");
            assert_eq!(v["errors"][0]["code"], "query_too_complex", "{head}: {v}");
            let (s, v) = analyst
                .post("/api/v1/queries", &body)
                .await
                .expect("create answers");
            assert_eq!(s, 422, "{head}: {v}");
            assert_eq!(v["error"]["code"], "query_too_complex", "{head}: {v}");
            let message = v["error"]["message"].as_str().unwrap_or_default();
            assert!(message.starts_with("query too complex"), "{message}");
        }
        let (s, v) = analyst
            .post(
                "/api/v1/data_rooms",
                &json!({"name": "deep", "query_text": sql, "participants": participants}),
            )
            .await
            .expect("room answers");
        assert_eq!(s, 422, "{head}: {v}");
        assert_eq!(v["error"]["code"], "query_too_complex", "{head}: {v}");
    }
    still_answers(&f).await;

    // The deepest filter the planner accepts travels to the node (the DP estimate), is
    // stored, and lists again.
    let deepest = format!(
        "SELECT COUNT(*) FROM patients WHERE {}",
        chain("age > 1", " AND ", prism_common::sql::MAX_FILTER_DEPTH + 1)
    );
    let body = json!({"dataset_id": "hospital-a.patients", "sql": deepest});
    let (s, v) = analyst
        .post("/api/v1/queries/validate", &body)
        .await
        .expect("validate");
    assert_eq!(
        (s, &v["valid"], &v["estimate_source"]),
        (200, &json!(true), &json!("node")),
        "{v}"
    );
    let (s, q) = analyst
        .post("/api/v1/queries", &body)
        .await
        .expect("create");
    assert_eq!(s, 201, "{q}");
    let (s, list) = analyst.get("/api/v1/queries").await.expect("list");
    assert_eq!(s, 200, "{list}");
    assert!(has_id(&list, &q["id"]), "{list}");
    let room = json!({"name": "deepest", "query_text": deepest, "participants": participants});
    let (s, r) = analyst
        .post("/api/v1/data_rooms", &room)
        .await
        .expect("room");
    assert_eq!(s, 201, "{r}");
    let (s, rooms) = analyst.get("/api/v1/data_rooms").await.expect("rooms");
    assert_eq!(s, 200, "{rooms}");
    assert!(has_id(&rooms, &r["id"]), "{rooms}");
    f.shutdown().await;
}

fn has_id(list: &Value, id: &Value) -> bool {
    list.as_array()
        .is_some_and(|a| a.iter().any(|x| &x["id"] == id))
}
