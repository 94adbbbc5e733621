//! Hostile input through the real API: queries built to exhaust the planner's stack, literals
//! that cannot be stored, records that do not decode, and users reaching across organizations.
//! Each test reproduces an attack that once crashed, corrupted or leaked, and checks the
//! federation still answers afterwards.

use prism_tests::{Api, Federation, FederationSpec};
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
                &json!({"name": "deep", "query_text": sql, "participants": participants, "epsilon": 0.5}),
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
    let room = json!({"name": "deepest", "query_text": deepest, "participants": participants, "epsilon": 0.5});
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

fn store(f: &Federation) -> std::sync::Arc<prism_coordinator::store::Store> {
    f.coordinator
        .as_ref()
        .expect("coordinator running")
        .state
        .store
        .clone()
}

/// A listing answers 200 with the good records, and reports (and, to admins, names) the
/// corrupt one.
async fn lists_despite_corruption(api: &Api, path: &str, good: &Value, admin: bool) {
    let (s, h, list) = api.get_full(path).await.expect("list");
    assert_eq!(s, 200, "{path}: {list}");
    assert!(has_id(&list, good), "{path}: {list}");
    let header = |name: &str| {
        h.get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    assert_eq!(
        header("x-prism-skipped-records").as_deref(),
        Some("1"),
        "{path}"
    );
    let ids = header("x-prism-skipped-ids");
    assert_eq!(ids.as_deref(), admin.then_some("poison"), "{path}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unstorable_literals_are_refused_and_a_corrupt_record_does_not_break_listings() {
    let mut f = Federation::start(small()).await.expect("federation");
    let (analyst, admin) = (f.analyst(), f.admin());
    let sql = "SELECT COUNT(*) FROM patients WHERE age > 1e999";
    for backend in ["he_backend", "mpc_backend", "dp_sandbox"] {
        let body = json!({"dataset_id": "hospital-a.patients", "sql": sql, "backend": backend});
        let (s, v) = analyst
            .post("/api/v1/queries", &body)
            .await
            .expect("create");
        assert_eq!(s, 422, "{backend}: {v}");
        assert_eq!(v["error"]["code"], "sql_type_error", "{v}");
        let message = v["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("1e999") && message.contains("out of range"),
            "{v}"
        );
    }
    let room = json!({"name": "inf", "query_text": sql, "participants": ["hospital-a", "hospital-b"], "epsilon": 0.5});
    let (s, v) = analyst
        .post("/api/v1/data_rooms", &room)
        .await
        .expect("room");
    assert_eq!(
        (s, &v["error"]["code"]),
        (422, &json!("sql_type_error")),
        "{v}"
    );

    // Good records of every kind, then a corrupt one beside each (as a store written by an
    // older build, or a disk fault, could hold).
    let (q, s, run) = analyst
        .run_query(
            "hospital-a.patients",
            "SELECT COUNT(*) FROM patients",
            "dp_sandbox",
            None,
        )
        .await
        .expect("run");
    assert_eq!(s, 200, "{run}");
    let room = json!({"name": "ok", "query_text": "SELECT COUNT(*) FROM patients", "participants": ["hospital-a", "hospital-b"], "epsilon": 0.5});
    let (s, room) = analyst
        .post("/api/v1/data_rooms", &room)
        .await
        .expect("room");
    assert_eq!(s, 201, "{room}");
    let poison =
        r#"{"id":"poison","plan":{"filter":{"compare":{"column":"age","op":"Gt","value":null}}}}"#;
    let tables = [
        (
            "/api/v1/queries",
            prism_coordinator::store::QUERIES.name(),
            &q["id"],
        ),
        (
            "/api/v1/runs",
            prism_coordinator::store::RUNS.name(),
            &run["id"],
        ),
        (
            "/api/v1/data_rooms",
            prism_coordinator::store::ROOMS.name(),
            &room["id"],
        ),
    ];
    for (_, table, _) in &tables {
        store(&f).put_raw(table, "poison", poison).expect("poison");
    }
    for (path, _, good) in &tables {
        lists_despite_corruption(&analyst, path, good, false).await;
        lists_despite_corruption(&admin, path, good, true).await;
    }
    // A restart (which fails unfinished runs and resumes rooms) does not trip over it either.
    f.stop_coordinator().await;
    f.restart_coordinator().await.expect("restart");
    let (analyst, admin) = (f.analyst(), f.admin());
    for (path, _, good) in &tables {
        lists_despite_corruption(&admin, path, good, true).await;
        let (s, v) = analyst
            .delete(&format!("{path}/poison"))
            .await
            .expect("delete");
        assert_eq!(
            (s, &v["error"]["code"]),
            (403, &json!("forbidden")),
            "{path}: {v}"
        );
        let (s, v) = admin
            .delete(&format!("{path}/poison"))
            .await
            .expect("delete");
        assert_eq!(s, 204, "{path}: {v}");
        let (s, v) = admin
            .delete(&format!("{path}/poison"))
            .await
            .expect("delete");
        assert_eq!(s, 404, "{path}: {v}");
        let (s, h, list) = admin.get_full(path).await.expect("list");
        assert_eq!(s, 200, "{list}");
        assert!(h.get("x-prism-skipped-records").is_none(), "{path}");
        assert!(has_id(&list, good), "{path}: {list}");
    }
    let (_, audit) = admin.get("/api/v1/audit?limit=1000").await.expect("audit");
    let deleted = audit.as_array().map(|a| {
        a.iter()
            .filter(|e| {
                e["action"]
                    .as_str()
                    .is_some_and(|x| x.ends_with("_deleted"))
            })
            .count()
    });
    assert_eq!(deleted, Some(3), "{audit}");
    f.shutdown().await;
}

fn has_id(list: &Value, id: &Value) -> bool {
    list.as_array()
        .is_some_and(|a| a.iter().any(|x| &x["id"] == id))
}

fn api(f: &Federation, token: &str) -> Api {
    Api::new(f.api_url(), token)
}

/// An analyst of `org`, created by the admin through the API.
async fn member(f: &Federation, name: &str, org: &str) -> Api {
    let (s, v) = f
        .admin()
        .post(
            "/api/v1/users",
            &json!({"name": name, "role": "analyst", "organization": org}),
        )
        .await
        .expect("create user");
    assert_eq!(s, 201, "{v}");
    api(f, v["token"].as_str().expect("token"))
}

async fn spent(f: &Federation, org: &str) -> f64 {
    let (_, b) = f
        .node_admin(org)
        .expect("node")
        .get("/v1/datasets/patients/budget")
        .await
        .expect("budget");
    b["spent_epsilon"].as_f64().expect("spent")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_and_runs_are_scoped_to_their_organization() {
    let f = Federation::start(small()).await.expect("federation");
    let alice = member(&f, "alice", "hospital-a").await;
    let carol = member(&f, "carol", "hospital-a").await;
    let bob = member(&f, "bob", "hospital-b").await;
    let loner = f.analyst(); // no organization
    let (q, s, run) = alice
        .run_query(
            "hospital-a.patients",
            "SELECT COUNT(*) FROM patients",
            "dp_sandbox",
            None,
        )
        .await
        .expect("run");
    assert_eq!(s, 200, "{run}");
    let (qid, rid) = (
        q["id"].as_str().expect("id"),
        run["id"].as_str().expect("id"),
    );
    let before = spent(&f, "hospital-a").await;

    for outsider in [&bob, &loner] {
        let (s, v) = outsider
            .get(&format!("/api/v1/runs/{rid}"))
            .await
            .expect("run");
        assert_eq!(
            (s, &v["error"]["code"]),
            (404, &json!("unknown_run")),
            "{v}"
        );
        assert!(
            v.get("result").is_none() && !v.to_string().contains("\"rows\""),
            "{v}"
        );
        let (s, v) = outsider
            .get(&format!("/api/v1/queries/{qid}"))
            .await
            .expect("query");
        assert_eq!(
            (s, &v["error"]["code"]),
            (404, &json!("unknown_query")),
            "{v}"
        );
        let (s, v) = outsider
            .post(
                &format!("/api/v1/queries/{qid}/execute?wait=true"),
                &json!({}),
            )
            .await
            .expect("execute");
        assert_eq!(
            (s, &v["error"]["code"]),
            (404, &json!("unknown_query")),
            "{v}"
        );
        let (_, runs) = outsider.get("/api/v1/runs").await.expect("runs");
        assert!(!has_id(&runs, &run["id"]), "{runs}");
        let (_, queries) = outsider.get("/api/v1/queries").await.expect("queries");
        assert!(!has_id(&queries, &q["id"]), "{queries}");
    }
    // A foreign id answers exactly like one that does not exist.
    let (_, foreign) = bob.get(&format!("/api/v1/runs/{rid}")).await.expect("run");
    let missing_id = "00000000-0000-4000-8000-000000000000";
    let (_, missing) = bob
        .get(&format!("/api/v1/runs/{missing_id}"))
        .await
        .expect("run");
    assert_eq!(
        foreign["error"]["message"]
            .as_str()
            .map(|m| m.replace(rid, "ID")),
        missing["error"]["message"]
            .as_str()
            .map(|m| m.replace(missing_id, "ID")),
    );
    assert_eq!(
        spent(&f, "hospital-a").await,
        before,
        "bob spent hospital-a's budget"
    );

    // The organization and admins see and run it.
    for insider in [&alice, &carol, &f.admin()] {
        let (s, v) = insider
            .get(&format!("/api/v1/runs/{rid}"))
            .await
            .expect("run");
        assert_eq!(s, 200, "{v}");
        assert!(v["result"]["rows"].is_array(), "{v}");
        let (_, runs) = insider.get("/api/v1/runs").await.expect("runs");
        assert!(has_id(&runs, &run["id"]), "{runs}");
        let (_, queries) = insider.get("/api/v1/queries").await.expect("queries");
        assert!(has_id(&queries, &q["id"]), "{queries}");
    }
    let (s, again) = carol
        .post(
            &format!("/api/v1/queries/{qid}/execute?wait=true"),
            &json!({}),
        )
        .await
        .expect("execute");
    assert_eq!((s, &again["status"]), (200, &json!("completed")), "{again}");
    // Bob's own work is his organization's, not alice's.
    let (bq, s, brun) = bob
        .run_query(
            "hospital-b.patients",
            "SELECT COUNT(*) FROM patients",
            "dp_sandbox",
            None,
        )
        .await
        .expect("run");
    assert_eq!(s, 200, "{brun}");
    let (_, runs) = alice.get("/api/v1/runs").await.expect("runs");
    assert!(!has_id(&runs, &brun["id"]), "{runs}");
    let (_, queries) = alice.get("/api/v1/queries").await.expect("queries");
    assert!(!has_id(&queries, &bq["id"]), "{queries}");
    assert_eq!(bq["organization"], "hospital-b", "{bq}");
    f.shutdown().await;
}

/// A raw request and what must come back: method, path, content type, body, status, code.
type RawCase<'a> = (
    reqwest::Method,
    &'a str,
    Option<&'a str>,
    Vec<u8>,
    u16,
    &'a str,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_is_json_and_bad_parameters_are_named() {
    let f = Federation::start(small()).await.expect("federation");
    let (analyst, admin) = (f.analyst(), f.admin());
    let good = br#"{"dataset_id": "hospital-a.patients", "sql": "SELECT COUNT(*) FROM patients"}"#;
    let big = vec![b' '; 3 << 20];
    let cases: Vec<RawCase> = vec![
        (
            reqwest::Method::POST,
            "/api/v1/queries",
            Some("application/json"),
            b"{not json".to_vec(),
            400,
            "invalid_json",
        ),
        (
            reqwest::Method::POST,
            "/api/v1/queries",
            None,
            good.to_vec(),
            415,
            "unsupported_media_type",
        ),
        (
            reqwest::Method::POST,
            "/api/v1/queries",
            Some("text/plain"),
            good.to_vec(),
            415,
            "unsupported_media_type",
        ),
        (
            reqwest::Method::POST,
            "/api/v1/queries",
            Some("application/json"),
            br#"{"sql": 5}"#.to_vec(),
            422,
            "invalid_body",
        ),
        (
            reqwest::Method::POST,
            "/api/v1/queries",
            Some("application/json"),
            big,
            413,
            "payload_too_large",
        ),
        (
            reqwest::Method::PUT,
            "/api/v1/queries",
            Some("application/json"),
            good.to_vec(),
            405,
            "method_not_allowed",
        ),
        (
            reqwest::Method::GET,
            "/api/v1/nope",
            None,
            vec![],
            404,
            "not_found",
        ),
    ];
    for (method, path, ct, body, status, code) in cases {
        let (s, h, v) = analyst
            .raw(method.clone(), path, ct, body)
            .await
            .expect("request");
        assert_eq!(s, status, "{method} {path} {ct:?}: {v}");
        assert_eq!(
            h.get("content-type").and_then(|v| v.to_str().ok()),
            Some("application/json"),
            "{method} {path}"
        );
        assert_eq!(v["error"]["code"], code, "{method} {path}: {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{v}"
        );
        if status == 405 {
            assert!(h.get("allow").is_some(), "405 keeps its Allow header");
        }
    }

    // ε so small the noise scale overflows is named as such, not an internal DP failure.
    let body = json!({"dataset_id": "hospital-a.patients", "sql": "SELECT COUNT(*) FROM patients", "epsilon": 5e-324});
    let (s, v) = analyst
        .post("/api/v1/queries", &body)
        .await
        .expect("create");
    assert_eq!(
        (s, &v["error"]["code"]),
        (422, &json!("invalid_epsilon")),
        "{v}"
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("epsilon")),
        "{v}"
    );

    // Users only for member organizations, and with a name.
    for (body, code) in [
        (
            json!({"name": "zed", "role": "analyst", "organization": "hospital-z"}),
            "unknown_organization",
        ),
        (json!({"name": "", "role": "analyst"}), "invalid_user"),
        (
            json!({"name": "   ", "role": "analyst", "organization": "hospital-a"}),
            "invalid_user",
        ),
    ] {
        let (s, v) = admin.post("/api/v1/users", &body).await.expect("user");
        assert_eq!((s, &v["error"]["code"]), (422, &json!(code)), "{body}: {v}");
    }

    // A weight whose weighted sum cannot be exact in 64 bits is refused at validation, before
    // any encrypted work.
    let body = json!({"dataset_id": "hospital-a.patients", "sql": "SELECT SUM(age * 9223372036854775807) FROM patients", "backend": "he_backend"});
    let (s, v) = analyst
        .post("/api/v1/queries", &body)
        .await
        .expect("create");
    assert_eq!(
        (s, &v["error"]["code"]),
        (422, &json!("backend_unsupported")),
        "{v}"
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("weight of at most")),
        "{v}"
    );
    let body = json!({"dataset_id": "hospital-a.patients", "sql": "SELECT SUM(age * 3) FROM patients", "backend": "he_backend"});
    let (s, v) = analyst
        .post("/api/v1/queries/validate", &body)
        .await
        .expect("validate");
    assert_eq!((s, &v["valid"]), (200, &json!(true)), "{v}");
    still_answers(&f).await;
    f.shutdown().await;
}
