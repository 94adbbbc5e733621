//! Observability end to end: the OpenAPI document describes exactly the routes the coordinator
//! serves, and `/metrics` on the coordinator and on the nodes moves with real queries.

use std::collections::BTreeMap;

use prism_node::Policy;
use prism_tests::{Api, Federation, FederationSpec};
use serde_json::{Value, json};

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// The samples of an OpenMetrics text, by series (`name{labels}`); `# ` lines skipped.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// GETs a `/metrics` page with `token` and parses it.
async fn scrape(url: &str, token: &str) -> BTreeMap<String, f64> {
    let resp = reqwest::Client::new()
        .get(format!("{url}/metrics"))
        .bearer_auth(token)
        .send()
        .await
        .expect("scrape");
    assert_eq!(resp.status(), 200, "{url}/metrics");
    let ty = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(ty.starts_with("application/openmetrics-text"), "{ty}");
    let text = resp.text().await.expect("body");
    assert!(text.ends_with("# EOF\n"), "{text}");
    samples(&text)
}

fn value(m: &BTreeMap<String, f64>, series: &str) -> f64 {
    m.get(series).copied().unwrap_or(0.0)
}

/// Every operation in `/api/v1/openapi.json` is served by the router (not its fallback, not a
/// 405), and on every documented path the methods the document leaves out are refused with 405:
/// the router has no method the document hides. That the router has no path the document
/// hides is structural (one `routes!` list builds both; see `api::routes` and the unit test
/// that no module registers a plain axum route).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_lists_exactly_the_served_routes() {
    let f = Federation::start(FederationSpec {
        rows_per_org: 0,
        ..Default::default()
    })
    .await
    .expect("federation");
    let resp = reqwest::get(format!("{}/api/v1/openapi.json", f.api_url()))
        .await
        .expect("openapi.json");
    assert_eq!(resp.status(), 200);
    let doc: Value = resp.json().await.expect("JSON");
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "{doc}"
    );
    let paths = doc["paths"].as_object().expect("paths");
    // The routes this issue added are there, at the paths clients use.
    for p in [
        "/api/v1/openapi.json",
        "/metrics",
        "/",
        "/api/v1/queries/validate",
    ] {
        assert!(paths.contains_key(p), "{p} missing from {:?}", paths.keys());
    }
    let http = reqwest::Client::new();
    let mut operations = 0;
    for (path, item) in paths {
        // Path parameters get a value no store holds: handlers answer their own 404s.
        let concrete = path
            .split('/')
            .map(|seg| {
                if seg.starts_with('{') {
                    "no-such-id"
                } else {
                    seg
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        let concrete = if concrete.is_empty() {
            "/".into()
        } else {
            concrete
        };
        for method in METHODS {
            let req = http
                .request(
                    method.to_uppercase().parse().expect("method"),
                    format!("{}{concrete}", f.api_url()),
                )
                .bearer_auth(&f.admin_token)
                .json(&json!({}));
            let resp = req.send().await.expect("request");
            let status = resp.status().as_u16();
            let body = resp.text().await.unwrap_or_default();
            let documented = item.get(method).is_some();
            if documented {
                operations += 1;
                let fallback =
                    status == 404 && (body.is_empty() || body.contains("\"code\":\"not_found\""));
                assert!(
                    status != 405 && !fallback,
                    "{} {path} is documented but not served: {status} {body}",
                    method.to_uppercase()
                );
                assert!(
                    item[method]["responses"]
                        .as_object()
                        .is_some_and(|r| !r.is_empty()),
                    "{method} {path} documents no response"
                );
            } else {
                assert_eq!(
                    status,
                    405,
                    "{} {path} is served but not documented: {body}",
                    method.to_uppercase()
                );
            }
        }
    }
    assert!(operations >= 25, "only {operations} operations documented");
    f.shutdown().await;
}

/// A completed DP query, a budget refusal, the enclave refusal, an MPC room and a query on an
/// offline node each move the counters that describe them, on the coordinator and the node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_runs_refusals_budget_rooms_and_peer_failures() {
    let mut f = Federation::start(FederationSpec {
        rows_per_org: 300,
        policy: Policy {
            auto_attest: true,
            ..Policy::default()
        },
        ..Default::default()
    })
    .await
    .expect("federation");
    let url = f.api_url();

    // Unauthenticated scrapes are refused on both daemons.
    for target in [url.clone(), f.node_admin("hospital-a").expect("node").url] {
        let resp = reqwest::get(format!("{target}/metrics"))
            .await
            .expect("scrape");
        assert_eq!(resp.status(), 401, "{target}/metrics without a token");
    }
    let before = scrape(&url, &f.analyst_token).await;
    let node_a: Api = f.node_admin("hospital-a").expect("node");
    let node_before = scrape(&node_a.url, &node_a.token).await;

    let (s, b) = node_a
        .put(
            "/v1/datasets/patients/budget",
            &json!({"epsilon": 0.7, "delta": 0.0}),
        )
        .await
        .expect("budget");
    assert_eq!(s, 200, "{b}");
    let api = f.analyst();
    let sql = "SELECT COUNT(*) FROM patients";
    let (_, _, done) = api
        .run_query("hospital-a.patients", sql, "dp_sandbox", Some(0.5))
        .await
        .expect("run");
    assert_eq!(done["status"], "completed", "{done}");
    let spent = done["epsilon_consumed"].as_f64().expect("ε");
    let (_, _, refused) = api
        .run_query("hospital-a.patients", sql, "dp_sandbox", Some(0.5))
        .await
        .expect("run");
    assert_eq!(refused["error_code"], "budget_exhausted", "{refused}");
    let (_, s, enclave) = api
        .run_query("hospital-a.patients", sql, "enclave_backend", None)
        .await
        .expect("run");
    assert_eq!(s, 501, "{enclave}");
    // A dp room (the default): each hospital spends 0.1 of its own budget.
    let (_, _, room) = api
        .run_query("hospital-a.patients", sql, "mpc_backend", Some(0.1))
        .await
        .expect("run");
    assert_eq!(room["status"], "completed", "{room}");
    f.stop_node("hospital-c").await.expect("stop");
    let (_, _, offline) = api
        .run_query("hospital-c.patients", sql, "dp_sandbox", Some(0.1))
        .await
        .expect("run");
    assert_eq!(offline["error_code"], "node_unavailable", "{offline}");

    let after = scrape(&url, &f.analyst_token).await;
    let moved = |series: &str| value(&after, series) - value(&before, series);
    let runs = |backend: &str, outcome: &str| {
        moved(&format!(
            r#"prism_coordinator_runs_total{{backend="{backend}",outcome="{outcome}"}}"#
        ))
    };
    assert_eq!(runs("dp_sandbox", "completed"), 1.0, "{after:#?}");
    assert_eq!(runs("dp_sandbox", "refused"), 1.0, "{after:#?}");
    assert_eq!(runs("dp_sandbox", "failed"), 1.0, "{after:#?}");
    assert_eq!(runs("enclave_backend", "refused"), 1.0, "{after:#?}");
    assert_eq!(runs("mpc_backend", "completed"), 1.0, "{after:#?}");
    assert_eq!(
        moved(r#"prism_coordinator_refusals_total{backend="dp_sandbox",code="budget_exhausted"}"#),
        1.0
    );
    assert_eq!(
        moved(
            r#"prism_coordinator_refusals_total{backend="enclave_backend",code="backend_not_implemented"}"#
        ),
        1.0
    );
    let eps =
        moved(r#"prism_coordinator_budget_epsilon_spent_total{dataset="hospital-a.patients"}"#);
    assert!(
        (eps - spent - 0.1).abs() < 1e-9,
        "{eps} vs {spent} + the room's 0.1"
    );
    assert_eq!(
        moved(r#"prism_coordinator_room_execution_seconds_count{outcome="completed"}"#),
        1.0
    );
    assert!(moved(r#"prism_coordinator_room_execution_seconds_sum{outcome="completed"}"#) > 0.0);
    // Two calls to the offline node failed: validation's estimate and the execution.
    assert_eq!(
        moved(r#"prism_coordinator_peer_failures_total{peer="hospital-c"}"#),
        2.0
    );

    // The node counts what it answered: one release and its share of the room (both charged
    // to its own ledger), one budget refusal.
    let node_after = scrape(&node_a.url, &node_a.token).await;
    let moved = |series: &str| value(&node_after, series) - value(&node_before, series);
    assert_eq!(
        moved(r#"prism_node_runs_total{backend="dp_sandbox",outcome="completed"}"#),
        1.0,
        "{node_after:#?}"
    );
    assert_eq!(
        moved(r#"prism_node_refusals_total{backend="dp_sandbox",code="budget_exhausted"}"#),
        1.0
    );
    let eps = moved(r#"prism_node_budget_epsilon_spent_total{dataset="patients"}"#);
    assert!(
        (eps - spent - 0.1).abs() < 1e-9,
        "{eps} vs {spent} + the room's 0.1"
    );
    assert_eq!(
        moved(r#"prism_node_runs_total{backend="mpc_backend",outcome="completed"}"#),
        1.0
    );
    assert_eq!(
        moved(r#"prism_node_room_execution_seconds_count{outcome="completed"}"#),
        1.0
    );
    f.shutdown().await;
}
