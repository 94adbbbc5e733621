//! he_backend end to end through a real federation, in the owner's opt-in exact mode: exact
//! answers, what the node received (no constant), one key transfer per node that survives
//! restarts, and refusals.

use prism_common::identity::OrgId;
use prism_common::wire::HeRequest;
use prism_common::wire::{self, Request, Response};
use prism_tests::data::{self, Patient};
use prism_tests::{Federation, FederationSpec};
use serde_json::{Value, json};

const DATASET: &str = "hospital-a.patients";
const ROWS: usize = 120;

/// The owner opted in to exact he_backend answers (the default is dp: see tests/privacy.rs),
/// so answers can be checked against the plaintext; groups under 2 rows are suppressed.
fn spec() -> FederationSpec {
    let mut policy = prism_node::Policy::default();
    policy.release.he_backend = prism_common::release::ReleaseMode::Exact;
    policy.min_group_size = 2;
    FederationSpec {
        orgs: vec!["hospital-a".into()],
        rows_per_org: ROWS,
        policy,
        ..Default::default()
    }
}

fn patients() -> Vec<Patient> {
    data::patients(FederationSpec::default().seed, 0, ROWS)
}

/// Runs an he_backend query; returns the run (which must have completed) and its single row.
async fn run(f: &Federation, sql: &str) -> (Value, Vec<Value>) {
    let (_, status, run) = f
        .analyst()
        .run_query(DATASET, sql, "he_backend", None)
        .await
        .expect("run");
    assert_eq!(status, 200, "{sql}: {run}");
    assert_eq!(run["status"], "completed", "{sql}: {run}");
    let row = run["result"]["rows"][0]
        .as_array()
        .cloned()
        .expect("one row");
    (run, row)
}

/// Runs a query expected to fail; returns the error code.
async fn failing(f: &Federation, sql: &str) -> String {
    let (_, status, body) = f
        .analyst()
        .run_query(DATASET, sql, "he_backend", None)
        .await
        .expect("run");
    if status != 200 {
        return body["error"]["code"].as_str().unwrap_or("?").to_string();
    }
    assert_eq!(body["status"], "failed", "{sql}: {body}");
    body["error_code"].as_str().unwrap_or("?").to_string()
}

fn node_state(f: &Federation) -> &prism_node::NodeState {
    &f.nodes
        .values()
        .next()
        .expect("node")
        .handle
        .as_ref()
        .expect("running")
        .state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_filters_give_exact_answers_and_the_node_never_sees_a_constant() {
    let f = Federation::start(spec()).await.expect("federation");
    node_state(&f).seams.start_recording_he();
    let rows = patients();
    let diabetic: Vec<i64> = rows
        .iter()
        .filter(|p| p.diagnosis == "diabetes")
        .map(|p| p.age)
        .collect();

    // First run: the key set is generated and installed on the node.
    let (first, row) = run(
        &f,
        "SELECT SUM(age) FROM patients WHERE diagnosis = 'diabetes'",
    )
    .await;
    assert_eq!(row, vec![json!(diabetic.iter().sum::<i64>())]);
    let proof = &first["proof_artifacts"];
    assert_eq!(proof["backend"], "he_backend");
    assert!(
        proof["key_id"]
            .as_str()
            .is_some_and(|k| k.starts_with("tfhe-"))
    );
    assert!(
        proof["scheme"]["compute"]
            .as_str()
            .is_some_and(|p| p.contains("TUNIFORM_2M128"))
    );
    assert!(
        proof["key_transfer"]["server_key_bytes"]
            .as_u64()
            .unwrap_or(0)
            > 1_000_000
    );
    assert_eq!(proof["homomorphic_evaluation"], true);
    // An equality on a small text domain runs as one encrypted table lookup (or, per distinct
    // value, comparisons and a dot product): either way encrypted operations ran.
    let ops = &proof["operations"];
    assert!(
        ops["table_lookups"].as_u64().unwrap_or(0) + ops["comparisons"].as_u64().unwrap_or(0) >= 1,
        "{proof}"
    );
    assert!(proof["encrypted_operations"].as_u64().unwrap_or(0) >= 1);
    for phase in [
        "encrypt_constants",
        "node_evaluation",
        "decryption",
        "key_transfer",
    ] {
        assert!(
            proof["timings_ms"][phase].as_f64().is_some(),
            "{phase}: {proof}"
        );
    }

    // The same query with another constant: the node gets the same frame and same-sized blobs.
    let (second, row) = run(
        &f,
        "SELECT SUM(age) FROM patients WHERE diagnosis = 'asthma'",
    )
    .await;
    let asthma: i64 = rows
        .iter()
        .filter(|p| p.diagnosis == "asthma")
        .map(|p| p.age)
        .sum();
    assert_eq!(row, vec![json!(asthma)]);
    assert!(
        second["proof_artifacts"]["key_transfer"].is_null(),
        "keys are cached"
    );
    assert_eq!(second["proof_artifacts"]["key_id"], proof["key_id"]);

    let got = node_state(&f).seams.take_he();
    let evaluations: Vec<_> = got
        .iter()
        .filter_map(|r| match serde_json::from_slice::<HeRequest>(&r.frame) {
            Ok(HeRequest::Evaluate { query, .. }) => Some((query, &r.blobs)),
            _ => None,
        })
        .collect();
    assert_eq!(
        evaluations.len(),
        3,
        "one refused (unknown key), two answered"
    );
    let (q0, b0) = &evaluations[0];
    for (q, b) in &evaluations {
        assert_eq!(q, q0, "the shape does not depend on the constant");
        let lens: Vec<usize> = b.iter().map(Vec::len).collect();
        assert_eq!(lens, b0.iter().map(Vec::len).collect::<Vec<_>>());
    }
    for r in &got {
        for bytes in std::iter::once(&r.frame).chain(&r.blobs) {
            for secret in [&b"diabetes"[..], b"asthma"] {
                assert!(
                    !bytes.windows(secret.len()).any(|w| w == secret),
                    "the node received {:?} in clear",
                    String::from_utf8_lossy(secret)
                );
            }
        }
        let text = String::from_utf8_lossy(&r.frame);
        for key in ["\"value\"", "\"low\"", "\"high\"", "diagnosis ="] {
            assert!(!text.contains(key), "{key} in {text}");
        }
    }

    // More aggregates and predicates, against plaintext.
    let sel: Vec<&Patient> = rows
        .iter()
        .filter(|p| ["asthma", "copd"].contains(&p.diagnosis))
        .collect();
    let (_, row) = run(
        &f,
        "SELECT COUNT(*), AVG(age), MIN(age), MAX(age), SUM(age * 2) FROM patients WHERE diagnosis IN ('asthma', 'copd')",
    )
    .await;
    let ages: Vec<i64> = sel.iter().map(|p| p.age).collect();
    assert_eq!(row[0], json!(ages.len()));
    let avg = ages.iter().sum::<i64>() as f64 / ages.len() as f64;
    assert!((row[1].as_f64().expect("avg") - avg).abs() < 1e-9);
    assert_eq!(row[2], json!(ages.iter().min()));
    assert_eq!(row[3], json!(ages.iter().max()));
    assert_eq!(row[4], json!(2 * ages.iter().sum::<i64>()));

    let (_, row) = run(
        &f,
        "SELECT COUNT(*) FROM patients WHERE age >= 60 AND diagnosis <> 'healthy'",
    )
    .await;
    let want = rows
        .iter()
        .filter(|p| p.age >= 60 && p.diagnosis != "healthy")
        .count();
    assert_eq!(row, vec![json!(want)]);

    // No constant: no homomorphic evaluation, the exact result encrypted under the public key.
    let (plain, row) = run(&f, "SELECT COUNT(*), SUM(age) FROM patients").await;
    let total: i64 = rows.iter().map(|p| p.age).sum();
    assert_eq!(row, vec![json!(ROWS), json!(total)]);
    assert_eq!(plain["proof_artifacts"]["homomorphic_evaluation"], false);
    assert!(
        plain["proof_artifacts"]["note"]
            .as_str()
            .is_some_and(|n| n.contains("no homomorphic evaluation"))
    );
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_queries_and_policy_limits_are_refused_with_a_reason() {
    let mut s = spec();
    s.policy.he_max_distinct_values = 4;
    let f = Federation::start(s).await.expect("federation");
    // At validation: constructs HE does not evaluate.
    for (sql, needle) in [
        (
            "SELECT COUNT(*) FROM patients WHERE diagnosis = 'copd' OR age > 3",
            "or",
        ),
        ("SELECT COUNT(*) FROM patients WHERE NOT age > 3", "not"),
        (
            "SELECT state, COUNT(*) FROM patients GROUP BY state",
            "group by",
        ),
    ] {
        let (_, status, body) = f
            .analyst()
            .run_query(DATASET, sql, "he_backend", None)
            .await
            .expect("run");
        assert_eq!(status, 422, "{sql}: {body}");
        assert_eq!(body["error"]["code"], "backend_unsupported", "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(needle)),
            "{body}"
        );
    }
    // At run time, before any key is made: columns HE cannot aggregate.
    assert_eq!(
        failing(&f, "SELECT SUM(id) FROM patients").await,
        "he_column_refused"
    );
    assert_eq!(
        failing(&f, "SELECT AVG(treatment_cost) FROM patients").await,
        "he_column_refused"
    );
    // On the node: six diagnoses, the policy allows four.
    assert_eq!(
        failing(&f, "SELECT COUNT(*) FROM patients WHERE diagnosis = 'copd'").await,
        "policy_violation"
    );
    // The node audited its refusal against the dataset, before it answered.
    let node = f.node_admin("hospital-a").expect("node admin");
    let (_, audit) = node.get("/v1/audit").await.expect("audit");
    assert!(
        audit.as_array().expect("entries").iter().any(|e| {
            e["action"] == "query_refused"
                && e["target"] == "patients"
                && e["details"]["backend"] == "he_backend"
                && e["details"]["code"] == "policy_violation"
        }),
        "{audit}"
    );
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_sent_once_and_survive_restarts_and_bad_key_blobs_are_refused() {
    let mut f = Federation::start(spec()).await.expect("federation");
    let sql = "SELECT COUNT(*) FROM patients WHERE diagnosis = 'cancer'";
    let want = json!(
        patients()
            .iter()
            .filter(|p| p.diagnosis == "cancer")
            .count()
    );
    let (first, row) = run(&f, sql).await;
    assert_eq!(row, vec![want.clone()]);
    let key_id = first["proof_artifacts"]["key_id"].clone();
    assert!(first["proof_artifacts"]["key_transfer"].is_object());

    // Both restart: the coordinator reloads its key set, the node its cached copy.
    f.stop_node("hospital-a").await.expect("stop node");
    f.restart_node("hospital-a").await.expect("restart node");
    f.stop_coordinator().await;
    f.restart_coordinator().await.expect("restart coordinator");
    let (again, row) = run(&f, sql).await;
    assert_eq!(row, vec![want]);
    let proof = &again["proof_artifacts"];
    assert_eq!(
        proof["key_id"], key_id,
        "the key id survives a coordinator restart"
    );
    assert!(
        proof["key_transfer"].is_null(),
        "the node kept the keys: {proof}"
    );
    assert_eq!(proof["key_set"]["loaded_from_store"], true);
    assert!(proof["timings_ms"]["node_key_load"].as_f64().unwrap_or(0.0) > 0.0);

    // A raw key installation with a malformed blob, then with an oversized one.
    let coordinator = f.coordinator.as_ref().expect("coordinator");
    let org = OrgId::new("hospital-a").expect("org");
    for (public_key, announce) in [(b"not a key".to_vec(), None), (vec![], Some(u64::MAX / 2))] {
        let (mut send, mut recv) = coordinator.state.nodes.open(&org).await.expect("stream");
        let req = Request::He(HeRequest::InstallKeys {
            key_id: "tfhe-00".into(),
        });
        wire::write_msg(&mut send, &req).await.expect("frame");
        match announce {
            None => {
                wire::write_bytes(&mut send, &public_key).await.expect("pk");
                wire::write_bytes(&mut send, b"nor this").await.expect("sk");
            }
            Some(len) => send.write_all(&len.to_be_bytes()).await.expect("length"),
        }
        let _ = send.finish();
        let resp: Response = wire::read_msg(&mut recv, 1 << 20).await.expect("answer");
        let Response::Refused(e) = resp else {
            panic!("a bad key blob was accepted: {resp:?}")
        };
        assert_eq!(e.code, "he_malformed_blob", "{e:?}");
    }
    f.shutdown().await;
}

/// A coordinator with `he_keys_at_start` (the daemon's default) has its key set generated and
/// installed on each HE node before any query: the first HE query of the federation waits for
/// neither key generation nor the ~100 MB transfer, and a node that reconnects holding the keys
/// (it says so in its Hello) is sent nothing again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_he_query_waits_for_neither_key_generation_nor_the_key_transfer() {
    let mut f = Federation::start(spec()).await.expect("federation");
    let started = std::time::Instant::now();
    f.prepare_he().await.expect("prepare");
    let prepared = started.elapsed();
    let sql = "SELECT COUNT(*) FROM patients WHERE diagnosis = 'cancer'";
    let want = json!(
        patients()
            .iter()
            .filter(|p| p.diagnosis == "cancer")
            .count()
    );
    let t = std::time::Instant::now();
    let (first, row) = run(&f, sql).await;
    let took = t.elapsed();
    assert_eq!(row, vec![want.clone()]);
    let proof = &first["proof_artifacts"];
    assert_eq!(proof["key_set"]["generated_this_run"], false, "{proof}");
    assert!(
        proof["key_transfer"].is_null(),
        "the keys were installed ahead of the query: {proof}"
    );
    eprintln!("key set prepared and installed in {prepared:?}; first HE query {took:?}");

    // The node restarts with the keys in its store and says so: nothing is sent again.
    f.stop_node("hospital-a").await.expect("stop node");
    f.restart_node("hospital-a").await.expect("restart node");
    f.prepare_he().await.expect("prepare");
    let (again, row) = run(&f, sql).await;
    assert_eq!(row, vec![want]);
    assert!(
        again["proof_artifacts"]["key_transfer"].is_null(),
        "{}",
        again["proof_artifacts"]
    );
    f.shutdown().await;
}

/// An HE evaluation that outlasts its run's deadline is stopped on the node, which releases its
/// reservation and says `deadline_exceeded` (the issue saw `node_unavailable` while the node
/// computed on for 73 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_he_evaluation_stops_on_the_node_at_its_deadline_and_charges_nothing() {
    // The default release mode (dp): the evaluation's ε is reserved before any encrypted work.
    let mut f = Federation::start(FederationSpec {
        orgs: vec!["hospital-a".into()],
        rows_per_org: ROWS,
        ..Default::default()
    })
    .await
    .expect("federation");
    // Keys generated and installed under the default deadline.
    let (_, status, first) = f
        .analyst()
        .run_query(
            DATASET,
            "SELECT COUNT(*) FROM patients",
            "he_backend",
            Some(0.5),
        )
        .await
        .expect("run");
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["status"], "completed", "{first}");
    let spent = |f: &Federation| {
        let b = node_state(f).store.budget("patients").expect("budget");
        (b.spent_epsilon, b.reserved_epsilon)
    };
    let before = spent(&f);

    // An 8 s run deadline: a two-filter evaluation takes far longer. The run is followed while it
    // runs: the node's progress reports show on it.
    f.coordinator_config.run_timeout_secs = 8;
    f.stop_coordinator().await;
    f.restart_coordinator().await.expect("restart");
    // The key set loaded before the run, as `he_keys_at_start` does: loading it back from the
    // store must not eat the 8 s.
    f.prepare_he().await.expect("prepare");
    let started = std::time::Instant::now();
    let api = f.analyst();
    let id = start_two_filter_run(&api).await;
    let mut progress = Vec::new();
    let run = loop {
        let (_, r) = api.get(&format!("/api/v1/runs/{id}")).await.expect("run");
        if r["status"] == "completed" || r["status"] == "failed" {
            break r;
        }
        if let Some(steps) = r["progress"]["encrypted_steps"].as_u64() {
            assert_eq!(r["progress"]["rows"], ROWS as u64, "{r}");
            progress.push(steps);
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "{r}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let status = 200;
    assert!(
        !progress.is_empty(),
        "no progress report while the node evaluated: {run}"
    );
    assert!(
        progress.windows(2).all(|w| w[0] <= w[1]),
        "progress only grows: {progress:?}"
    );
    let took = started.elapsed();
    assert_eq!(status, 200, "{run}");
    assert_eq!(run["status"], "failed", "{run}");
    assert_eq!(run["error_code"], "deadline_exceeded", "{run}");
    // The node's own words: it stopped the work, not the coordinator that gave up waiting.
    let message = run["error_message"].as_str().unwrap_or_default();
    assert!(message.contains("was stopped after"), "{run}");
    // Loose: one encrypted step (a lookup, a comparison) cannot be interrupted and takes
    // seconds on a loaded 2-core machine; the node's message above is what proves it stopped.
    assert!(
        took < std::time::Duration::from_secs(30),
        "failed after {took:?}"
    );
    assert_eq!(spent(&f), before, "nothing charged, nothing left reserved");
    f.shutdown().await;
}

/// A coordinator that goes away during an HE evaluation cannot receive its answer: the node
/// stops the evaluation and charges nothing (before, it computed on, charged the run's ε and
/// then failed to deliver it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_he_evaluation_stops_and_charges_nothing_when_the_coordinator_goes() {
    let mut f = Federation::start(FederationSpec {
        orgs: vec!["hospital-a".into()],
        rows_per_org: ROWS,
        ..Default::default()
    })
    .await
    .expect("federation");
    f.prepare_he().await.expect("prepare");
    let spent = |f: &Federation| {
        let b = node_state(f).store.budget("patients").expect("budget");
        (b.spent_epsilon, b.reserved_epsilon)
    };
    let before = spent(&f);
    // Two filters: an evaluation of a minute or more in this build.
    let api = f.analyst();
    let id = start_two_filter_run(&api).await;
    // Wait until the node evaluates under encryption (its ε reserved), then stop the coordinator.
    let started = std::time::Instant::now();
    loop {
        let (_, r) = api.get(&format!("/api/v1/runs/{id}")).await.expect("run");
        if r["progress"]["encrypted_steps"]
            .as_u64()
            .is_some_and(|s| s > 0)
        {
            break;
        }
        assert!(r["status"] == "running" || r["status"] == "pending", "{r}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(120),
            "no progress: {r}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        spent(&f).1 > before.1,
        "the run's ε is reserved while it evaluates"
    );
    f.stop_coordinator().await;
    let stopped = std::time::Instant::now();
    // Loose: one encrypted step cannot be interrupted and takes seconds under load.
    while spent(&f).1 != before.1 {
        assert!(
            stopped.elapsed() < std::time::Duration::from_secs(45),
            "the evaluation went on after the coordinator left: {:?}",
            spent(&f)
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    eprintln!(
        "the node stopped the evaluation {:?} after the coordinator left",
        stopped.elapsed()
    );
    assert_eq!(spent(&f), before, "nothing charged, nothing left reserved");
    f.shutdown().await;
}

/// Starts (without waiting for it) a two-filter HE COUNT at ε 0.5, a long evaluation; returns
/// the run id.
async fn start_two_filter_run(api: &prism_tests::Api) -> String {
    let sql =
        "SELECT COUNT(*) FROM patients WHERE age BETWEEN 30 AND 60 AND diagnosis = 'diabetes'";
    let (s, q) = api
        .post(
            "/api/v1/queries",
            &json!({"dataset_id": DATASET, "sql": sql, "backend": "he_backend", "epsilon": 0.5}),
        )
        .await
        .expect("query");
    assert_eq!(s, 201, "{q}");
    let (s, run) = api
        .post(
            &format!("/api/v1/queries/{}/execute", q["id"].as_str().expect("id")),
            &json!({}),
        )
        .await
        .expect("execute");
    assert!(s == 201 || s == 202, "{run}");
    run["id"].as_str().expect("run id").to_string()
}
