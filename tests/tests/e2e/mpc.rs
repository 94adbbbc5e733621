//! MPC data rooms end to end: attestations, real shares between nodes, exact totals where the
//! owners opted in, and the failure modes (changed manifest, outsiders, a party that dies).
//! The release policy (dp rooms, exact-mode limits, budgets) is in `mpc_release.rs`.

use std::time::Duration;

use prism_common::identity::OrgId;
use prism_common::release::{ReleaseMode, ReleaseModes};
use prism_common::wire::{MpcResponse, Response};
use prism_tests::{Api, Federation, FederationSpec};
use serde_json::{Value, json};

/// A node policy whose owner opted in to exact mpc_backend totals.
fn exact_policy() -> prism_node::Policy {
    prism_node::Policy {
        release: ReleaseModes {
            mpc_backend: ReleaseMode::Exact,
            ..Default::default()
        },
        ..Default::default()
    }
}

fn orgs(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("org-{i:02}")).collect()
}

async fn wait_room(api: &Api, id: &str, status: &str) -> Value {
    for _ in 0..200 {
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

async fn attest_all(f: &Federation, id: &str, orgs: &[String]) {
    for org in orgs {
        let node = f.node_admin(org).expect("node");
        let mut ok = false;
        for _ in 0..200 {
            let (s, body) = node
                .post(&format!("/v1/invitations/{id}/attest"), &json!({}))
                .await
                .expect("attest");
            if s == 200 {
                assert_eq!(body["status"], "attested");
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert!(ok, "{org} never received the invitation");
    }
}

async fn create_room(api: &Api, sql: &str, participants: &[String]) -> Value {
    let (s, room) = api
        .post(
            "/api/v1/data_rooms",
            &json!({"name": "t", "query_text": sql, "participants": participants, "release": "exact"}),
        )
        .await
        .expect("create");
    assert_eq!(s, 201, "{room}");
    assert_eq!(room["status"], "pending");
    room
}

const SQL: &str = "SELECT state, COUNT(*), SUM(age), AVG(treatment_cost) FROM patients WHERE age >= 40 GROUP BY state";

/// The plaintext answer of `SQL` over the harness's data for `n` organizations.
fn expected(f: &Federation, n: usize) -> Value {
    use std::collections::BTreeMap;
    let mut m: BTreeMap<&str, (i64, i64, i64)> = BTreeMap::new();
    for i in 0..n {
        for p in prism_tests::data::patients(f.seed, i, f.rows_per_org) {
            if p.age >= 40 {
                let e = m.entry(p.state).or_default();
                e.0 += 1;
                e.1 += p.age;
                e.2 += (p.treatment_cost * 100.0).round() as i64;
            }
        }
    }
    let rows: Vec<Value> = prism_tests::data::STATES
        .iter()
        .map(|s| {
            let (n, age, cents) = m.get(s).copied().unwrap_or_default();
            let avg = if n == 0 {
                Value::Null
            } else {
                json!((cents as f64 / 100.0) / n as f64)
            };
            json!([s, n, age, avg])
        })
        .collect();
    json!({"columns": ["state", "count", "sum_age", "avg_treatment_cost"], "rows": rows})
}

async fn exact_room_with(n: usize) {
    let names = orgs(n);
    let f = Federation::start(FederationSpec {
        orgs: names.clone(),
        rows_per_org: 300,
        policy: exact_policy(),
        ..Default::default()
    })
    .await
    .expect("federation");
    let coordinator = f.coordinator.as_ref().expect("coordinator").state.clone();
    coordinator.nodes.record();
    let api = f.analyst();
    let room = create_room(&api, SQL, &names).await;
    let id = room["id"].as_str().expect("id").to_string();
    // Not ready until everyone attests.
    let (s, err) = api
        .post(&format!("/api/v1/data_rooms/{id}/execute"), &json!({}))
        .await
        .expect("exec");
    assert_eq!(s, 409, "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains(&names[0])),
        "{err}"
    );
    attest_all(&f, &id, &names).await;
    let ready = wait_room(&api, &id, "ready").await;
    assert!(
        ready["participants"]
            .as_array()
            .expect("p")
            .iter()
            .all(|p| p["status"] == "attested" && p["signature"].is_string())
    );
    let (s, done) = api
        .post(
            &format!("/api/v1/data_rooms/{id}/execute?wait=true"),
            &json!({}),
        )
        .await
        .expect("exec");
    assert_eq!(s, 200, "{done}");
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["result"], expected(&f, n), "the total must be exact");

    // What the coordinator received: one partial sum per party, none equal to any input.
    let recorded: Vec<(OrgId, Vec<u64>)> = coordinator
        .nodes
        .recorded()
        .into_iter()
        .filter_map(|(o, r)| match r {
            Response::Mpc(MpcResponse::Partial { partial, .. }) => Some((o, partial)),
            _ => None,
        })
        .collect();
    assert_eq!(recorded.len(), n);
    let room: prism_common::room::Manifest =
        serde_json::from_value(done["manifest"].clone()).expect("manifest");
    for (i, org) in names.iter().enumerate() {
        let slot = f
            .nodes
            .get(&OrgId::new(org.as_str()).expect("org"))
            .expect("node");
        let ds = slot
            .handle
            .as_ref()
            .expect("running")
            .state
            .dataset("patients")
            .expect("dataset");
        let input = prism_common::mpc::local_vector(&room.plan, &ds, &room.params).expect("input");
        for (from, partial) in &recorded {
            assert_ne!(
                partial, &input,
                "the coordinator received {org}'s input from {from}"
            );
            // Not even one non-zero input element appears in the clear at its position.
            let leaks = input
                .iter()
                .zip(partial)
                .filter(|(a, b)| a == b && **a != 0)
                .count();
            assert!(
                leaks <= 1,
                "{leaks} input elements of {org} visible in {from}'s partial (i={i})"
            );
        }
    }
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_parties_get_the_exact_total_and_the_coordinator_sees_only_partial_sums() {
    exact_room_with(3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_parties_get_the_exact_total() {
    exact_room_with(10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_changed_after_attestation_is_refused_by_the_nodes() {
    let names = orgs(3);
    let f = Federation::start(FederationSpec {
        orgs: names.clone(),
        rows_per_org: 100,
        policy: exact_policy(),
        ..Default::default()
    })
    .await
    .expect("federation");
    let api = f.analyst();
    let room = create_room(&api, "SELECT COUNT(*) FROM patients", &names).await;
    let id = room["id"].as_str().expect("id").to_string();
    attest_all(&f, &id, &names).await;
    wait_room(&api, &id, "ready").await;
    // Fault injection: the coordinator's copy of the manifest is edited after attestation.
    let state = f.coordinator.as_ref().expect("coordinator").state.clone();
    let mut r = prism_coordinator::rooms::load(&state, &id)
        .expect("load")
        .expect("room");
    r.manifest.query_text = "SELECT COUNT(*) FROM patients WHERE age > 0".into();
    r.manifest.plan = prism_common::sql::plan_query(
        &r.manifest.query_text,
        &prism_common::schema::DatasetSchema {
            name: "patients".into(),
            columns: prism_tests::data::patient_columns(),
        },
    )
    .expect("plan");
    state
        .store
        .put(prism_coordinator::store::ROOMS, &id, &r, None)
        .expect("tamper");
    let (s, done) = api
        .post(
            &format!("/api/v1/data_rooms/{id}/execute?wait=true"),
            &json!({}),
        )
        .await
        .expect("exec");
    assert_eq!(s, 200);
    assert_eq!(done["status"], "failed", "{done}");
    assert!(done["result"].is_null());
    let msg = done["error_message"].as_str().expect("message");
    assert!(msg.contains("manifest_changed"), "{msg}");
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_outside_the_room_cannot_send_shares_and_a_dead_party_fails_the_room_by_name() {
    let names = orgs(3);
    let mut f = Federation::start(FederationSpec {
        orgs: names.clone(),
        rows_per_org: 100,
        policy: exact_policy(),
        ..Default::default()
    })
    .await
    .expect("federation");
    let api = f.analyst();
    let members = names[..2].to_vec();
    let room = create_room(&api, "SELECT COUNT(*) FROM patients", &members).await;
    let id = room["id"].as_str().expect("id").to_string();
    let hash = room["manifest_hash"].as_str().expect("hash").to_string();
    attest_all(&f, &id, &members).await;
    wait_room(&api, &id, "ready").await;

    // org-02 is a federation member with a valid certificate, but not in the room.
    let certs = f.dir.join("certs");
    let read = |n: &str| std::fs::read_to_string(certs.join(n)).expect("cert");
    let tls = prism_common::tls::TlsMaterial::from_pem(
        read("ca.pem").as_bytes(),
        read("org-02.pem").as_bytes(),
        read("org-02.key.pem").as_bytes(),
        None,
    )
    .expect("tls");
    let ep = quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("endpoint");
    let target = f
        .nodes
        .get(&OrgId::new("org-00").expect("org"))
        .expect("node")
        .handle
        .as_ref()
        .expect("running")
        .peer_addr;
    let conn = ep
        .connect_with(
            tls.client_config().expect("cfg"),
            target,
            "org-00.org.prism",
        )
        .expect("dial")
        .await
        .expect("handshake");
    let (mut send, mut recv) = conn.open_bi().await.expect("stream");
    prism_common::wire::write_peer_request(
        &mut send,
        &prism_common::wire::PeerRequest::Share {
            room_id: id.clone(),
            execution_id: "x".into(),
            manifest_hash: hash,
            share: vec![1],
        },
    )
    .await
    .expect("write");
    send.finish().expect("finish");
    let answer: prism_common::wire::PeerResponse = prism_common::wire::read_msg(&mut recv, 1 << 20)
        .await
        .expect("read");
    match answer {
        prism_common::wire::PeerResponse::Refused(e) => {
            assert_eq!(e.code, "not_a_participant");
            assert!(e.message.contains("org-02"), "{}", e.message);
        }
        other => panic!("an outsider's share was not refused: {other:?}"),
    }

    // org-01 stalls after computing, then is killed mid-execution.
    let victim = f
        .nodes
        .get(&OrgId::new("org-01").expect("org"))
        .expect("node");
    victim
        .handle
        .as_ref()
        .expect("running")
        .state
        .seams
        .inject_fault(Some(prism_node::testing::Fault::StallBeforeShares));
    let (s, _) = api
        .post(&format!("/api/v1/data_rooms/{id}/execute"), &json!({}))
        .await
        .expect("exec");
    assert_eq!(s, 202);
    tokio::time::sleep(Duration::from_millis(300)).await;
    f.stop_node("org-01").await.expect("kill");
    let failed = wait_room(&api, &id, "failed").await;
    assert!(
        failed["result"].is_null(),
        "nothing partial may be released: {failed}"
    );
    let msg = failed["error_message"].as_str().expect("message");
    assert!(
        msg.contains("org-01"),
        "the failure must name the dead party: {msg}"
    );

    // It can be retried once the party is back.
    f.restart_node("org-01").await.expect("restart");
    let (s, done) = api
        .post(
            &format!("/api/v1/data_rooms/{id}/execute?wait=true"),
            &json!({}),
        )
        .await
        .expect("exec");
    assert_eq!(s, 200, "{done}");
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["result"]["rows"][0][0], 200);
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mpc_query_opens_a_dp_room_and_completes_when_auto_attested() {
    let policy = prism_node::Policy {
        auto_attest: true,
        ..Default::default()
    };
    let f = Federation::start(FederationSpec {
        rows_per_org: 200,
        policy,
        ..Default::default()
    })
    .await
    .expect("federation");
    let api = f.analyst();
    let (_, s, run) = api
        .run_query(
            "hospital-a.patients",
            "SELECT COUNT(*), SUM(age) FROM patients",
            "mpc_backend",
            Some(0.5),
        )
        .await
        .expect("run");
    assert_eq!(s, 200, "{run}");
    assert_eq!(run["status"], "completed", "{run}");
    // Under the default policy the total is released with every party's noise, within the
    // interval the proof claims.
    let dp = &run["proof_artifacts"]["mpc"]["dp"];
    let half = |c: &str| {
        dp["noise"]
            .as_array()
            .and_then(|a| a.iter().find(|n| n["component"] == c))
            .and_then(|n| n["ci95_half_width"].as_f64())
            .unwrap_or_else(|| panic!("no interval for {c}: {dp}"))
    };
    let count = run["result"]["rows"][0][0].as_f64().expect("count");
    assert!((count - 600.0).abs() <= half("count"), "{run}");
    let total_age: i64 = (0..3)
        .flat_map(|i| prism_tests::data::patients(f.seed, i, 200))
        .map(|p| p.age)
        .sum();
    let sum = run["result"]["rows"][0][1].as_f64().expect("sum");
    assert!((sum - total_age as f64).abs() <= half("sum_age"), "{run}");
    assert_eq!(dp["parties"].as_array().map(Vec::len), Some(3), "{dp}");
    assert_eq!(run["epsilon_consumed"], 0.5);
    assert!(run["proof_artifacts"]["room_id"].is_string());
    for org in ["hospital-a", "hospital-b", "hospital-c"] {
        let node = f.node_admin(org).expect("node");
        let (_, b) = node
            .get("/v1/datasets/patients/budget")
            .await
            .expect("budget");
        let spent = b["spent_epsilon"].as_f64().expect("spent");
        assert!((spent - 0.5).abs() < 1e-9, "{org} spent {spent}");
    }
    f.shutdown().await;
}
