//! A party that goes silent — killed, or cut off by the network — is noticed within the QUIC
//! idle timeout, and calls to it fail fast with an error that says so; it comes back by itself.
//!
//! The node reaches the coordinator through a UDP relay the test cuts: no close, no reset,
//! packets simply stop, which is what the coordinator sees of a `kill -9` or a partition.

use std::time::{Duration, Instant};

use prism_tests::relay::Relay;
use prism_tests::{Api, Federation, FederationSpec};
use serde_json::json;

/// A call to a silent party must fail within this (the target is 2 s; the idle
/// timeout is 1.5 s; the rest is slack for a loaded CI machine).
const FAIL_WITHIN: Duration = Duration::from_millis(2500);

async fn federation_with_c_behind_a_relay() -> (Federation, Relay) {
    let mut f = Federation::start(FederationSpec {
        rows_per_org: 200,
        ..Default::default()
    })
    .await
    .expect("federation");
    let quic = f.coordinator.as_ref().expect("coordinator").quic_addr;
    let relay = Relay::start(quic).await.expect("relay");
    f.reroute_node("hospital-c", relay.addr)
        .await
        .expect("reroute");
    (f, relay)
}

async fn node_connected(f: &Federation, org: &str) -> bool {
    let (_, h) = f
        .node_admin(org)
        .expect("node")
        .get("/healthz")
        .await
        .expect("healthz");
    h["connected"] == true
}

/// Whether the coordinator lists the organization's node as connected.
async fn coordinator_sees(f: &Federation, org: &str) -> bool {
    let (_, orgs) = f.admin().get("/api/v1/organizations").await.expect("orgs");
    orgs.as_array()
        .is_some_and(|a| a.iter().any(|o| o["id"] == org && o["connected"] == true))
}

/// After the link is healed: both ends see the node connected again, by themselves.
async fn wait_reconnected(f: &Federation, org: &str) {
    let healed = Instant::now();
    while !(node_connected(f, org).await && coordinator_sees(f, org).await) {
        assert!(
            healed.elapsed() < Duration::from_secs(15),
            "{org} did not reconnect"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_node_fails_dp_queries_within_two_seconds_and_reconnects_by_itself() {
    let (f, relay) = federation_with_c_behind_a_relay().await;
    let api = f.analyst();
    let node = f.node_admin("hospital-c").expect("node");
    let (s, ready) = f.admin().get("/readyz").await.expect("readyz");
    assert_eq!(s, 200, "the coordinator is ready: {ready}");
    assert_eq!(ready["checks"]["quic_listening"], true, "{ready}");
    let (s, ready) = node.get("/readyz").await.expect("readyz");
    assert_eq!(s, 200, "the connected node is ready: {ready}");
    let sql = "SELECT COUNT(*) FROM patients";
    let (_, s, ok) = api
        .run_query("hospital-c.patients", sql, "dp_sandbox", Some(0.1))
        .await
        .expect("run");
    assert_eq!((s, &ok["status"]), (200, &json!("completed")), "{ok}");

    relay.cut(true);
    let cut_at = Instant::now();
    let (_, _, failed) = api
        .run_query("hospital-c.patients", sql, "dp_sandbox", Some(0.1))
        .await
        .expect("run");
    let took = cut_at.elapsed();
    eprintln!(
        "DP query to a cut-off node failed after {took:?}: {}",
        failed["error_message"]
    );
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(failed["error_code"], "node_unavailable", "{failed}");
    let msg = failed["error_message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("hospital-c") && (msg.contains("unreachable") || msg.contains("offline")),
        "the error must say the node is unreachable: {msg}"
    );
    assert!(took < FAIL_WITHIN, "the query took {took:?} to fail");
    assert_eq!(failed["epsilon_consumed"], 0.0, "{failed}");

    // The coordinator lists it disconnected, and the node knows it too.
    assert!(!coordinator_sees(&f, "hospital-c").await);
    let mut node_knows = false;
    while cut_at.elapsed() < FAIL_WITHIN {
        if !node_connected(&f, "hospital-c").await {
            node_knows = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        node_knows,
        "the node still says connected after {FAIL_WITHIN:?}"
    );
    // Alive, but not ready: what compose and load balancers must see.
    let (s, health) = node.get("/healthz").await.expect("healthz");
    assert_eq!(s, 200, "liveness stays 200: {health}");
    let (s, ready) = node.get("/readyz").await.expect("readyz");
    assert_eq!(s, 503, "a cut-off node is not ready: {ready}");
    assert_eq!(ready["ready"], false, "{ready}");
    assert_eq!(ready["checks"]["coordinator_connected"], false, "{ready}");
    assert_eq!(ready["checks"]["store"], true, "{ready}");

    // Healed, it reconnects without help and answers again.
    relay.cut(false);
    wait_reconnected(&f, "hospital-c").await;
    let (s, ready) = node.get("/readyz").await.expect("readyz");
    assert_eq!(s, 200, "ready again once reconnected: {ready}");
    let (_, _, again) = api
        .run_query("hospital-c.patients", sql, "dp_sandbox", Some(0.1))
        .await
        .expect("run");
    assert_eq!(again["status"], "completed", "{again}");
    f.shutdown().await;
}

async fn attest(f: &Federation, id: &str, org: &str) {
    let node = f.node_admin(org).expect("node");
    for _ in 0..200 {
        let (s, _) = node
            .post(&format!("/v1/invitations/{id}/attest"), &json!({}))
            .await
            .expect("attest");
        if s == 200 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{org} never received the invitation of room {id}");
}

async fn ready_room(f: &Federation, api: &Api) -> String {
    let orgs = ["hospital-a", "hospital-b", "hospital-c"];
    let (s, room) = api
        .post(
            "/api/v1/data_rooms",
            &json!({"name": "cut", "query_text": "SELECT COUNT(*) FROM patients", "participants": orgs,
                     "epsilon": 0.5}),
        )
        .await
        .expect("create");
    assert_eq!(s, 201, "{room}");
    let id = room["id"].as_str().expect("id").to_string();
    for org in orgs {
        attest(f, &id, org).await;
    }
    for _ in 0..200 {
        let (_, r) = api
            .get(&format!("/api/v1/data_rooms/{id}"))
            .await
            .expect("room");
        if r["status"] == "ready" {
            return id;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("room {id} never became ready");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_with_a_cut_off_party_fails_within_two_seconds_naming_it() {
    let (f, relay) = federation_with_c_behind_a_relay().await;
    let api = f.analyst();
    let id = ready_room(&f, &api).await;

    relay.cut(true);
    let cut_at = Instant::now();
    let (s, room) = api
        .post(
            &format!("/api/v1/data_rooms/{id}/execute?wait=true"),
            &json!({}),
        )
        .await
        .expect("execute");
    let took = cut_at.elapsed();
    eprintln!(
        "room with a cut-off party failed after {took:?}: {}",
        room["error_message"]
    );
    assert_eq!(s, 200, "{room}");
    assert_eq!(room["status"], "failed", "{room}");
    assert!(room["result"].is_null(), "nothing partial is released");
    assert_eq!(room["error_code"], "party_offline", "{room}");
    let msg = room["error_message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("hospital-c"),
        "the failure must name the party: {msg}"
    );
    assert!(took < FAIL_WITHIN, "the room took {took:?} to fail");

    // Back on the network, the same room executes.
    relay.cut(false);
    wait_reconnected(&f, "hospital-c").await;
    let (s, done) = api
        .post(
            &format!("/api/v1/data_rooms/{id}/execute?wait=true"),
            &json!({}),
        )
        .await
        .expect("execute");
    assert_eq!((s, &done["status"]), (200, &json!("completed")), "{done}");
    // Each party's own noise (dp room): the total is within its interval of the true 600.
    let total = done["result"]["rows"][0][0].as_f64().expect("a count");
    let ci = done["proof_artifacts"]["dp"]["noise"][0]["ci95_half_width"]
        .as_f64()
        .expect("an interval");
    assert!(
        (total - 600.0).abs() <= 3.0 * ci,
        "{total} vs 600 ± {ci}: {done}"
    );
    f.shutdown().await;
}
