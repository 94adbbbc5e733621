//! What may leave a node through a data room: under the default policy every total carries each
//! party's own DP noise, charged to its own ledger; exact totals only where the owner opted
//! in, and then without identifying columns, within the key limit and never auto-attested.
//! The attacks of issue #11 (the `GROUP BY id` dump, the `age = 107` count) as analysts would
//! try them.

use std::time::Duration;

use prism_common::identity::OrgId;
use prism_common::release::{ReleaseMode, ReleaseModes};
use prism_node::Policy;
use prism_tests::{Api, Federation, FederationSpec, data};
use serde_json::{Value, json};

fn orgs() -> Vec<String> {
    (0..3).map(|i| format!("org-{i:02}")).collect()
}

fn exact_policy() -> Policy {
    Policy {
        release: ReleaseModes {
            mpc_backend: ReleaseMode::Exact,
            ..Default::default()
        },
        ..Default::default()
    }
}

async fn start(policy: Policy) -> Federation {
    Federation::start(FederationSpec {
        orgs: orgs(),
        rows_per_org: 300,
        policy,
        ..Default::default()
    })
    .await
    .expect("federation")
}

async fn create(api: &Api, body: Value) -> Value {
    let (s, room) = api.post("/api/v1/data_rooms", &body).await.expect("create");
    assert_eq!(s, 201, "{room}");
    room
}

/// Attests on `org`'s node once the invitation arrived; returns the node's answer.
async fn attest(f: &Federation, id: &str, org: &str) -> (u16, Value) {
    let node = f.node_admin(org).expect("node");
    for _ in 0..200 {
        let (s, _) = node
            .get(&format!("/v1/invitations/{id}"))
            .await
            .expect("invitation");
        if s == 200 {
            return node
                .post(&format!("/v1/invitations/{id}/attest"), &json!({}))
                .await
                .expect("attest");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{org} never received the invitation of room {id}");
}

/// The node refused to attest, for `code`.
fn refused(status: u16, err: &Value, code: &str) {
    assert_eq!(status, 409, "{err}");
    let msg = err["error"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.ends_with(&format!("({code})")),
        "expected {code}: {err}"
    );
}

async fn attest_all(f: &Federation, id: &str) {
    for org in orgs() {
        let (s, body) = attest(f, id, &org).await;
        assert_eq!(s, 200, "{org}: {body}");
    }
}

async fn wait_room(api: &Api, id: &str, status: &str) -> Value {
    for _ in 0..400 {
        let (_, r) = api
            .get(&format!("/api/v1/data_rooms/{id}"))
            .await
            .expect("room");
        if r["status"] == status {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("room {id} never reached {status}");
}

async fn execute(api: &Api, id: &str) -> Value {
    let (s, done) = api
        .post(
            &format!("/api/v1/data_rooms/{id}/execute?wait=true"),
            &json!({}),
        )
        .await
        .expect("execute");
    assert_eq!(s, 200, "{done}");
    done
}

async fn budget(f: &Federation, org: &str) -> (f64, f64) {
    let (_, b) = f
        .node_admin(org)
        .expect("node")
        .get("/v1/datasets/patients/budget")
        .await
        .expect("budget");
    (
        b["spent_epsilon"].as_f64().expect("spent"),
        b["reserved_epsilon"].as_f64().expect("reserved"),
    )
}

/// Re-imports org-00's patients with one 107-year-old (the only one in the federation).
async fn with_one_centenarian(f: &Federation) {
    let mut rows = data::patients(f.seed, 0, f.rows_per_org);
    rows[0].age = 107;
    let (s, body) = f
        .node_admin("org-00")
        .expect("node")
        .post(
            "/v1/datasets",
            &json!({"name": "patients", "columns": data::patient_columns(),
                    "csv": data::to_csv(&rows), "replace": true}),
        )
        .await
        .expect("import");
    assert_eq!(s, 201, "{body}");
}

/// Waits until the coordinator's catalog publishes `exact` for a dataset's mpc_backend.
async fn wait_exact_in_catalog(api: &Api, dataset: &str) {
    for _ in 0..200 {
        let (_, all) = api.get("/api/v1/datasets").await.expect("datasets");
        if all.as_array().is_some_and(|a| {
            a.iter()
                .any(|d| d["id"] == dataset && d["release"]["mpc_backend"] == "exact")
        }) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the catalog never showed {dataset} as exact");
}

const DUMP: &str = "SELECT id, SUM(treatment_cost), SUM(age) FROM patients GROUP BY id";

fn id_keys(n: usize) -> Value {
    json!({"id": (1..=n).map(|i| i.to_string()).collect::<Vec<_>>()})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_the_default_policy_the_group_by_id_dump_and_the_single_patient_count_leak_nothing_exact()
 {
    let f = start(Policy::default()).await;
    let api = f.analyst();
    // Exact is not on offer: the owners did not opt in.
    let (s, err) = api
        .post(
            "/api/v1/data_rooms",
            &json!({"name": "dump", "query_text": DUMP, "participants": orgs(),
                    "group_keys": id_keys(300), "release": "exact"}),
        )
        .await
        .expect("create");
    assert_eq!(s, 422, "{err}");
    assert_eq!(err["error"]["code"], "release_mode", "{err}");
    // Nor is a dp room without an ε for every party.
    let (s, err) = api
        .post(
            "/api/v1/data_rooms",
            &json!({"name": "dump", "query_text": DUMP, "participants": orgs(), "group_keys": id_keys(300)}),
        )
        .await
        .expect("create");
    assert_eq!(s, 422, "{err}");
    assert_eq!(err["error"]["code"], "epsilon_required", "{err}");
    for bad in [
        json!({"epsilon": -1.0}),
        json!({"epsilon": 0.5, "participant_epsilon": {"org-99": 0.5}}),
    ] {
        let mut body = json!({"name": "bad", "query_text": "SELECT COUNT(*) FROM patients",
                              "participants": orgs()});
        for (k, v) in bad.as_object().expect("object") {
            body[k] = v.clone();
        }
        let (s, err) = api.post("/api/v1/data_rooms", &body).await.expect("create");
        assert_eq!(s, 422, "{err}");
        assert_eq!(err["error"]["code"], "invalid_epsilon", "{err}");
    }

    // The dump as a dp room: 300 keys, released only with noise.
    let room = create(
        &api,
        json!({"name": "dump", "query_text": DUMP, "participants": orgs(),
               "group_keys": id_keys(300), "epsilon": 1.0}),
    )
    .await;
    let id = room["id"].as_str().expect("id").to_string();
    attest_all(&f, &id).await;
    wait_room(&api, &id, "ready").await;
    let done = execute(&api, &id).await;
    assert_eq!(done["status"], "completed", "{done}");
    // The exact per-id rows the attack was after.
    let mut truth = std::collections::BTreeMap::<i64, (i64, i64)>::new();
    for i in 0..3 {
        for p in data::patients(f.seed, i, f.rows_per_org) {
            let e = truth.entry(p.id).or_default();
            e.0 += (p.treatment_cost * 100.0).round() as i64;
            e.1 += p.age;
        }
    }
    let rows = done["result"]["rows"].as_array().expect("rows");
    for r in rows {
        let key: i64 = r[0].as_str().and_then(|k| k.parse().ok()).expect("key");
        let (cents, age) = truth[&key];
        let cost = r[1].as_f64().expect("cost");
        let exact = ((cost * 100.0).round() as i64, r[2].as_i64());
        assert_ne!(
            exact,
            (cents, Some(age)),
            "id {key} released exactly: {r:?}"
        );
    }
    // Three rows per id: nearly every group is below the minimum group size and held back.
    let suppressed = done["proof_artifacts"]["suppressed_groups"]
        .as_u64()
        .expect("suppressed");
    assert_eq!(
        suppressed as usize + rows.len(),
        300,
        "{}",
        done["proof_artifacts"]
    );
    assert!(suppressed >= 150, "{suppressed} of 300 groups suppressed");
    let dp = &done["proof_artifacts"]["dp"];
    assert_eq!(dp["parties"].as_array().map(Vec::len), Some(3), "{dp}");

    // `WHERE age = 107` over one patient: never an exact 1.
    with_one_centenarian(&f).await;
    f.wait_for_datasets(3).await.expect("catalog");
    let room = create(
        &api,
        json!({"name": "one", "query_text": "SELECT COUNT(*) FROM patients WHERE age = 107",
               "participants": orgs(), "epsilon": 0.5}),
    )
    .await;
    let id = room["id"].as_str().expect("id").to_string();
    attest_all(&f, &id).await;
    wait_room(&api, &id, "ready").await;
    let done = execute(&api, &id).await;
    assert_eq!(done["status"], "completed", "{done}");
    let rows = done["result"]["rows"].as_array().expect("rows");
    assert!(rows.iter().all(|r| r[0] != json!(1)), "{done}");
    if rows.is_empty() {
        assert_eq!(done["proof_artifacts"]["suppressed_groups"], 1, "{done}");
    }
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dp_room_charges_each_party_its_own_epsilon_and_a_failed_one_charges_nothing() {
    let mut f = start(Policy::default()).await;
    let api = f.analyst();
    let eps = [("org-00", 0.2), ("org-01", 0.3), ("org-02", 0.4)];
    let per_party: serde_json::Map<String, Value> =
        eps.iter().map(|(o, e)| (o.to_string(), json!(e))).collect();

    // Over the node's max_epsilon_per_query (1.0): the node will not attest.
    let room = create(
        &api,
        json!({"name": "greedy", "query_text": "SELECT COUNT(*) FROM patients",
               "participants": orgs(), "epsilon": 1.5}),
    )
    .await;
    let (s, err) = attest(&f, room["id"].as_str().expect("id"), "org-00").await;
    refused(s, &err, "epsilon_exceeds_policy");

    let room = create(
        &api,
        json!({"name": "costs", "query_text": "SELECT state, COUNT(*), SUM(treatment_cost) FROM patients GROUP BY state",
               "participants": orgs(), "participant_epsilon": per_party, "deadline_ms": 1500}),
    )
    .await;
    let id = room["id"].as_str().expect("id").to_string();
    attest_all(&f, &id).await;
    wait_room(&api, &id, "ready").await;

    // org-02 stalls before its shares leave: the room fails, nobody's partial sum left.
    let victim = f
        .nodes
        .get(&OrgId::new("org-02").expect("org"))
        .expect("node");
    victim
        .handle
        .as_ref()
        .expect("running")
        .state
        .seams
        .inject_fault(Some(prism_node::testing::Fault::StallBeforeShares));
    let failed = execute(&api, &id).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert!(failed["result"].is_null());
    // Nobody is charged. A party whose exchange waits out its own deadline (it never receives
    // org-02's shares) releases its reservation then, which may be a moment after the
    // coordinator reported the room failed: wait for the release, never for a charge.
    for (org, _) in &eps[..2] {
        let started = std::time::Instant::now();
        loop {
            let (spent, reserved) = budget(&f, org).await;
            assert_eq!(spent, 0.0, "{org} was charged for a failed room");
            if reserved == 0.0 {
                break;
            }
            assert!(
                started.elapsed() < std::time::Duration::from_secs(5),
                "{org} still holds {reserved} reserved for a failed room"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    f.stop_node("org-02").await.expect("stop");
    f.restart_node("org-02").await.expect("restart");
    assert_eq!(budget(&f, "org-02").await, (0.0, 0.0));

    // Executed again: each party is charged exactly its own ε, nothing stays reserved.
    let done = execute(&api, &id).await;
    assert_eq!(done["status"], "completed", "{done}");
    for (org, e) in eps {
        let (spent, reserved) = budget(&f, org).await;
        assert!(
            (spent - e).abs() < 1e-9,
            "{org} spent {spent}, its ε is {e}"
        );
        assert_eq!(reserved, 0.0, "{org}");
    }
    let parties = done["proof_artifacts"]["dp"]["parties"]
        .as_array()
        .expect("parties");
    for (org, e) in eps {
        let p = parties
            .iter()
            .find(|p| p["organization"] == org)
            .expect("party");
        assert_eq!(p["epsilon"], json!(e), "{p}");
    }
    // Every released count is within the claimed interval of the truth.
    let noise = done["proof_artifacts"]["dp"]["noise"]
        .as_array()
        .expect("noise");
    let half = noise
        .iter()
        .find(|n| n["component"] == "count")
        .and_then(|n| n["ci95_half_width"].as_f64())
        .expect("count interval");
    let mut truth = std::collections::BTreeMap::<&str, i64>::new();
    for i in 0..3 {
        for p in data::patients(f.seed, i, f.rows_per_org) {
            *truth.entry(p.state).or_default() += 1;
        }
    }
    for r in done["result"]["rows"].as_array().expect("rows") {
        let n = r[1].as_f64().expect("count");
        let want = truth[r[0].as_str().expect("state")] as f64;
        assert!((n - want).abs() <= half, "{r:?} vs {want} ± {half}");
    }

    // A party whose budget cannot cover its ε refuses.
    let (s, b) = f
        .node_admin("org-01")
        .expect("node")
        .put(
            "/v1/datasets/patients/budget",
            &json!({"epsilon": 0.35, "delta": 0.0}),
        )
        .await
        .expect("budget");
    assert_eq!(s, 200, "{b}");
    let room = create(
        &api,
        json!({"name": "again", "query_text": "SELECT COUNT(*) FROM patients",
               "participants": orgs(), "epsilon": 0.1}),
    )
    .await;
    let (s, err) = attest(&f, room["id"].as_str().expect("id"), "org-01").await;
    refused(s, &err, "budget_exhausted");

    // Attested while the budget covered it, refused at execution once it no longer does: the
    // room fails and nobody is charged (the others roll back when org-01's shares never come).
    let room = create(
        &api,
        json!({"name": "late", "query_text": "SELECT COUNT(*) FROM patients",
               "participants": orgs(), "epsilon": 0.04, "deadline_ms": 1000}),
    )
    .await;
    let id = room["id"].as_str().expect("id").to_string();
    attest_all(&f, &id).await;
    wait_room(&api, &id, "ready").await;
    let (s, b) = f
        .node_admin("org-01")
        .expect("node")
        .put(
            "/v1/datasets/patients/budget",
            &json!({"epsilon": 0.30001, "delta": 0.0}),
        )
        .await
        .expect("budget");
    assert_eq!(s, 200, "{b}");
    let failed = execute(&api, &id).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert!(
        failed["error_message"]
            .as_str()
            .is_some_and(|m| m.contains("org-01") && m.contains("budget_exhausted")),
        "{failed}"
    );
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    for (org, e) in eps {
        let (spent, reserved) = budget(&f, org).await;
        assert!(
            (spent - e).abs() < 1e-9,
            "{org} spent {spent} after a failed room"
        );
        assert_eq!(reserved, 0.0, "{org}");
    }
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_rooms_refuse_identifying_columns_and_too_many_keys_and_suppress_small_groups() {
    let f = start(exact_policy()).await;
    let api = f.analyst();
    // 300 keys: over max_group_keys (64).
    let room = create(
        &api,
        json!({"name": "dump", "query_text": DUMP, "participants": orgs(),
               "group_keys": id_keys(300), "release": "exact"}),
    )
    .await;
    let (s, err) = attest(&f, room["id"].as_str().expect("id"), "org-00").await;
    refused(s, &err, "too_many_group_keys");
    // 50 keys, but id is all-distinct on every node: identifying.
    let room = create(
        &api,
        json!({"name": "dump", "query_text": DUMP, "participants": orgs(),
               "group_keys": id_keys(50), "release": "exact"}),
    )
    .await;
    let (s, err) = attest(&f, room["id"].as_str().expect("id"), "org-00").await;
    refused(s, &err, "identifying_column");
    let room = create(
        &api,
        json!({"name": "one", "query_text": "SELECT COUNT(*) FROM patients WHERE id = 7",
               "participants": orgs(), "release": "exact"}),
    )
    .await;
    let (s, err) = attest(&f, room["id"].as_str().expect("id"), "org-01").await;
    refused(s, &err, "identifying_column");

    // The node decides, not the catalog the room was checked against: an owner who switched
    // its dataset back to dp refuses the exact room it was invited to, and a column the owner
    // names identifying is refused too.
    let room = create(
        &api,
        json!({"name": "states", "query_text": "SELECT diagnosis, COUNT(*) FROM patients GROUP BY diagnosis",
               "participants": orgs(), "release": "exact"}),
    )
    .await;
    let id = room["id"].as_str().expect("id").to_string();
    let set = |org: &'static str, body: Value| {
        let node = f.node_admin(org).expect("node");
        async move {
            let (s, b) = node
                .put("/v1/datasets/patients/release", &body)
                .await
                .expect("release");
            assert_eq!(s, 200, "{b}");
        }
    };
    set("org-02", json!({"mpc_backend": "dp"})).await;
    set("org-01", json!({"identifying_columns": ["diagnosis"]})).await;
    let (s, err) = attest(&f, &id, "org-02").await;
    refused(s, &err, "release_mode");
    let (s, err) = attest(&f, &id, "org-01").await;
    refused(s, &err, "identifying_column");
    let (s, _) = attest(&f, &id, "org-00").await;
    assert_eq!(s, 200);
    set("org-02", json!({"mpc_backend": "policy"})).await;
    wait_exact_in_catalog(&api, "org-02.patients").await;

    // The single 107-year-old: counted exactly, and suppressed (coordinator-enforced).
    with_one_centenarian(&f).await;
    f.wait_for_datasets(3).await.expect("catalog");
    let room = create(
        &api,
        json!({"name": "one", "query_text": "SELECT COUNT(*) FROM patients WHERE age = 107",
               "participants": orgs(), "release": "exact"}),
    )
    .await;
    let id = room["id"].as_str().expect("id").to_string();
    attest_all(&f, &id).await;
    wait_room(&api, &id, "ready").await;
    let done = execute(&api, &id).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["result"]["rows"], json!([]), "{done}");
    assert_eq!(done["proof_artifacts"]["suppressed_groups"], 1, "{done}");
    assert_eq!(done["proof_artifacts"]["release"], "exact");
    // Exact rooms spend no budget.
    for org in orgs() {
        assert_eq!(budget(&f, &org).await.0, 0.0, "{org}");
    }
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_attest_takes_dp_rooms_but_never_an_exact_one() {
    let f = start(Policy {
        auto_attest: true,
        ..exact_policy()
    })
    .await;
    let api = f.analyst();
    let sql = "SELECT diagnosis, COUNT(*) FROM patients GROUP BY diagnosis";
    let exact = create(
        &api,
        json!({"name": "exact", "query_text": sql, "participants": orgs(), "release": "exact"}),
    )
    .await;
    let dp = create(
        &api,
        json!({"name": "dp", "query_text": sql, "participants": orgs(), "epsilon": 0.25}),
    )
    .await;
    // A node in exact mode may take part in a dp room: auto-attested, it becomes ready.
    let dp_id = dp["id"].as_str().expect("id");
    wait_room(&api, dp_id, "ready").await;
    let exact_id = exact["id"].as_str().expect("id");
    for org in orgs() {
        let node = f.node_admin(&org).expect("node");
        let (s, inv) = node
            .get(&format!("/v1/invitations/{exact_id}"))
            .await
            .expect("invitation");
        assert_eq!(s, 200, "{inv}");
        assert_eq!(
            inv["status"], "pending",
            "{org} auto-attested an exact room: {inv}"
        );
    }
    let (_, r) = api
        .get(&format!("/api/v1/data_rooms/{exact_id}"))
        .await
        .expect("room");
    assert_eq!(r["status"], "pending", "{r}");
    // The owner's own decision still can.
    attest_all(&f, exact_id).await;
    let ready = wait_room(&api, exact_id, "ready").await;
    assert_eq!(ready["manifest"]["params"]["release"], "exact");
    f.shutdown().await;
}

/// A party whose share its peers refuse (here: one element short) fails the room at once with
/// the refusal's reason, on whichever side sees it first — not after the room's deadline — and
/// no party is charged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_share_fails_the_room_at_once_with_the_reason_and_charges_nobody() {
    let f = start(Policy::default()).await;
    let api = f.analyst();
    let room = create(
        &api,
        json!({"name": "short", "query_text": "SELECT COUNT(*) FROM patients",
               "participants": orgs(), "epsilon": 0.3, "deadline_ms": 30000}),
    )
    .await;
    let id = room["id"].as_str().expect("id").to_string();
    attest_all(&f, &id).await;
    wait_room(&api, &id, "ready").await;
    f.nodes
        .get(&OrgId::new("org-01").expect("org"))
        .expect("node")
        .handle
        .as_ref()
        .expect("running")
        .state
        .seams
        .inject_fault(Some(prism_node::testing::Fault::ShortShares));
    let started = std::time::Instant::now();
    let failed = execute(&api, &id).await;
    let took = started.elapsed();
    assert_eq!(failed["status"], "failed", "{failed}");
    assert!(failed["result"].is_null(), "{failed}");
    let msg = failed["error_message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("does not fit room") && msg.contains("org-01"),
        "the failure gives the refusal and whose share it was: {msg}"
    );
    // Loose, but far below the 30 s deadline the refusing parties would otherwise wait out.
    assert!(
        took < Duration::from_secs(10),
        "the room failed after {took:?}"
    );
    for org in orgs() {
        let mut now = (-1.0, -1.0);
        for _ in 0..50 {
            now = budget(&f, &org).await;
            if now == (0.0, 0.0) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(now, (0.0, 0.0), "{org} was charged for a failed room");
    }
    f.shutdown().await;
}

/// `visits`: 200 patients with 5 visits each, `patient_id` the privacy unit (at most 3 rows).
async fn import_visits(f: &Federation, org: &str) {
    let mut csv = String::from("patient_id,age\n");
    for p in 0..200 {
        for v in 0..5 {
            csv.push_str(&format!("{p},{}\n", 20 + (p + v) % 60));
        }
    }
    let columns = json!([
        {"name": "patient_id", "type": "integer", "privacy_unit": {"max_rows": 3}},
        {"name": "age", "type": "integer", "bounds": {"min": 0, "max": 110}, "not_null": true},
    ]);
    let (s, b) = f
        .node_admin(org)
        .expect("node")
        .post(
            "/v1/datasets",
            &json!({"name": "visits", "columns": columns, "csv": csv}),
        )
        .await
        .expect("import");
    assert_eq!(s, 201, "{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dp_room_over_a_privacy_unit_bounds_each_unit_and_calibrates_to_one() {
    let f = start(Policy::default()).await;
    for org in orgs() {
        import_visits(&f, &org).await;
    }
    f.wait_for_datasets(6).await.expect("catalog");
    let api = f.analyst();
    let room = create(
        &api,
        json!({"name": "visits", "query_text": "SELECT COUNT(*), SUM(age) FROM visits",
               "participants": orgs(), "epsilon": 0.5}),
    )
    .await;
    let id = room["id"].as_str().expect("id").to_string();
    attest_all(&f, &id).await;
    wait_room(&api, &id, "ready").await;
    let done = execute(&api, &id).await;
    assert_eq!(done["status"], "completed", "{done}");

    // Every party bounded its patients to 3 visits and calibrated to one patient: its
    // sensitivities are 3 rows' worth (count 3; sum 3 × 110).
    let dp = &done["proof_artifacts"]["dp"];
    for p in dp["parties"].as_array().expect("parties") {
        assert_eq!(
            p["privacy_unit"], "unit: patient_id, max_rows 3, max_groups 1",
            "{p}"
        );
        let sens: Vec<f64> = p["scales"]
            .as_array()
            .expect("scales")
            .iter()
            .map(|s| s["sensitivity"].as_f64().expect("sensitivity"))
            .collect();
        assert_eq!(sens, vec![3.0, 330.0], "{p}");
    }
    // The total counts 3 × 600 kept visits (not the 3 000 rows), within the claimed interval;
    // the sum likewise (each patient keeps its first 3 visits).
    let half = |component: &str| {
        dp["noise"]
            .as_array()
            .expect("noise")
            .iter()
            .find(|n| n["component"] == component)
            .and_then(|n| n["ci95_half_width"].as_f64())
            .unwrap_or_else(|| panic!("no {component} interval: {dp}"))
    };
    let kept_sum: i64 = (0..200)
        .map(|p| (0..3).map(|v| 20 + (p + v) % 60).sum::<i64>())
        .sum();
    let row = &done["result"]["rows"][0];
    let (n, s) = (
        row[0].as_f64().expect("count"),
        row[1].as_f64().expect("sum"),
    );
    assert!(
        (n - 1_800.0).abs() <= 3.0 * half("count"),
        "{n} vs 1800: {done}"
    );
    let want = 3.0 * kept_sum as f64;
    assert!(
        (s - want).abs() <= 3.0 * half("sum_age"),
        "{s} vs {want}: {done}"
    );
    f.shutdown().await;
}
