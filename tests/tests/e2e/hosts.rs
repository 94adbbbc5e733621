//! The multi-host fault suite: the real `prism-coordinator` and three real `prism-node` daemons,
//! each a separate process on its own test host (a network namespace on a bridge this test
//! creates), configured from the shipped samples and provisioned as docs/DEPLOYMENT.md says
//! (`tests/src/hosts.rs`). Faults are real: `kill -9`, a partition at the bridge, a CRL, SIGTERM,
//! a WAN through a delay relay. After each, nothing is lost: every run the API accepted ends
//! completed or failed with a reason, and the ε each node charged equals the ε of the answers
//! the coordinator delivered.
//!
//! Needs root and iproute2; where the build found neither (`tests/build.rs`), these tests are
//! ignored. `cargo test --workspace --test e2e -- hosts::`; figures: docs/RELIABILITY.md.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use prism_common::tls::{TlsFiles, TlsMaterial};
use prism_tests::Api;
use prism_tests::hosts::{Bins, HostFederation, HostSpec, set_tls};
use prism_tests::relay::Relay;
use serde_json::{Value, json};

/// A call to a lost party must fail within this (the target is 2 s; the QUIC idle
/// timeout is 1.5 s; the rest is slack for a loaded CI machine).
const FAIL_WITHIN: Duration = Duration::from_millis(2500);
/// How soon after a failed room the surviving parties' reservations must be gone: below the
/// 1.5 s their own dial to a dead peer takes to give up.
const RELEASED_WITHIN: Duration = Duration::from_millis(1200);
const EPSILON: f64 = 0.05;
const ALL: [&str; 3] = ["hospital-a", "hospital-b", "hospital-c"];

/// The daemons this build made, or those in `PRISM_HOST_BINS` (another build's directory, e.g.
/// a release build for the WAN figure in docs/PERFORMANCE.md).
fn bins() -> Bins {
    let sibling = match std::env::var_os("PRISM_HOST_BINS") {
        Some(dir) => Path::new(&dir).join("prism-sim"),
        None => Path::new(env!("CARGO_BIN_EXE_prism-sim")).to_path_buf(),
    };
    Bins::beside(&sibling).expect("binaries")
}

async fn federation() -> HostFederation {
    HostFederation::start(bins(), HostSpec::default())
        .await
        .expect("the federation on its hosts")
}

fn dataset(org: &str) -> String {
    format!("{org}.patients")
}

/// Creates a DP count on `org`'s patients (ε [`EPSILON`]); its query id.
async fn dp_query(api: &Api, org: &str) -> String {
    let (s, q) = api
        .post(
            "/api/v1/queries",
            &json!({"dataset_id": dataset(org), "sql": "SELECT COUNT(*) FROM patients",
                    "backend": "dp_sandbox", "epsilon": EPSILON}),
        )
        .await
        .expect("create query");
    assert_eq!(s, 201, "{q}");
    q["id"].as_str().expect("query id").to_string()
}

/// Creates a DP query on `org`'s patients and executes it; (HTTP status, run). With `wait`,
/// the API waits for the run's end.
async fn dp_run(api: &Api, org: &str, wait: bool) -> (u16, Value) {
    let qid = dp_query(api, org).await;
    let suffix = if wait { "?wait=true" } else { "" };
    api.post(
        &format!("/api/v1/queries/{qid}/execute{suffix}"),
        &json!({}),
    )
    .await
    .expect("execute")
}

/// A data room over `parties` (auto-attested by their nodes), once it is ready.
async fn ready_room(api: &Api, parties: &[&str]) -> String {
    ready_room_at(api, parties, 0.5).await
}

/// [`ready_room`] charging each party `epsilon`.
async fn ready_room_at(api: &Api, parties: &[&str], epsilon: f64) -> String {
    let (s, room) = api
        .post(
            "/api/v1/data_rooms",
            &json!({"name": "hosts", "query_text": "SELECT COUNT(*) FROM patients",
                    "participants": parties, "epsilon": epsilon}),
        )
        .await
        .expect("create room");
    assert_eq!(s, 201, "{room}");
    let id = room["id"].as_str().expect("room id").to_string();
    let started = Instant::now();
    loop {
        let (_, r) = api
            .get(&format!("/api/v1/data_rooms/{id}"))
            .await
            .expect("room");
        if r["status"] == "ready" {
            return id;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "room {id} never became ready: {r}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Executes a room and waits for its end; (time taken, room).
async fn execute_room(api: &Api, id: &str) -> (Duration, Value) {
    let started = Instant::now();
    let (s, room) = api
        .post(
            &format!("/api/v1/data_rooms/{id}/execute?wait=true"),
            &json!({}),
        )
        .await
        .expect("execute room");
    let took = started.elapsed();
    assert_eq!(s, 200, "{room}");
    (took, room)
}

/// ε of the completed runs per dataset, from the coordinator, for the runs of `queries`
/// (query id → dataset).
async fn delivered(api: &Api, queries: &HashMap<String, String>) -> HashMap<String, f64> {
    let (s, runs) = api.get("/api/v1/runs").await.expect("runs");
    assert_eq!(s, 200, "{runs}");
    let mut out = HashMap::new();
    for r in runs.as_array().expect("run list") {
        if r["status"] != "completed" {
            continue;
        }
        if let Some(ds) = r["query_id"].as_str().and_then(|q| queries.get(q)) {
            *out.entry(ds.clone()).or_insert(0.0) += r["epsilon_consumed"].as_f64().unwrap_or(0.0);
        }
    }
    out
}

fn assert_audit_chains(f: &HostFederation, coordinator: &Value) {
    assert_eq!(
        coordinator["valid"], true,
        "coordinator chain: {coordinator}"
    );
    for org in ALL {
        let v: Value = serde_json::from_str(
            &f.node_cli(org, &["audit", "--verify"])
                .expect("node audit verify"),
        )
        .expect("json");
        assert_eq!(v["valid"], true, "{org}'s chain: {v}");
    }
}

async fn coordinator_chain(api: &Api) -> Value {
    let (s, v) = api.get("/api/v1/audit/verify").await.expect("verify");
    assert_eq!(s, 200, "{v}");
    v
}

#[cfg_attr(prism_no_netns, ignore = "needs root and iproute2 (ip netns)")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_room_fails_it_naming_the_party_and_a_retry_succeeds() {
    let mut f = federation().await;
    let api = f.analyst();
    let id = ready_room(&api, &ALL).await;
    let before: Vec<_> = ["hospital-a", "hospital-b"]
        .iter()
        .map(|o| f.budget(o).expect("budget"))
        .collect();

    f.kill_node("hospital-c");
    let (took, room) = execute_room(&api, &id).await;
    eprintln!(
        "room with a killed party failed after {took:?}: {}",
        room["error_message"]
    );
    assert_eq!(room["status"], "failed", "{room}");
    assert_eq!(room["error_code"], "party_offline", "{room}");
    assert!(
        room["result"].is_null(),
        "nothing partial is released: {room}"
    );
    let msg = room["error_message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("hospital-c"),
        "the failure names the party: {msg}"
    );
    assert!(took < FAIL_WITHIN, "the room took {took:?} to fail");
    // The parties still up charge nothing, and the reservation each made for the room is
    // released as soon as the coordinator ends the execution (it stops their request streams),
    // not when their own dial to the dead party gives up (the idle timeout, 1.5 s).
    let failed_at = Instant::now();
    for (org, b) in ["hospital-a", "hospital-b"].iter().zip(&before) {
        let mut now = (-1.0, -1.0);
        let released = f
            .wait(
                "the reservation is released",
                Duration::from_secs(10),
                async || {
                    now = f.budget(org).expect("budget");
                    now == *b
                },
            )
            .await;
        assert!(
            released.is_ok(),
            "{org}'s budget (spent, reserved) after the failed room: {now:?}, before {b:?}"
        );
    }
    let released_after = failed_at.elapsed();
    eprintln!("reservations released {released_after:?} after the room failed");
    assert!(
        released_after < RELEASED_WITHIN,
        "the reservations were released {released_after:?} after the room failed"
    );

    f.start_node("hospital-c").await.expect("restart c");
    let (_, room) = execute_room(&api, &id).await;
    assert_eq!(room["status"], "completed", "the retry: {room}");
    let total = room["result"]["rows"][0][0].as_f64().expect("a count");
    let ci = room["proof_artifacts"]["dp"]["noise"][0]["ci95_half_width"]
        .as_f64()
        .expect("an interval");
    assert!((total - 600.0).abs() <= 3.0 * ci, "{total} vs 600 ± {ci}");
}

const CONCURRENT: usize = 50;

#[cfg_attr(prism_no_netns, ignore = "needs root and iproute2 (ip netns)")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_during_50_concurrent_queries_never_under_counts() {
    let mut f = federation().await;
    let org = "hospital-b";
    let qid = dp_query(&f.analyst(), org).await;
    let queries = HashMap::from([(qid.clone(), dataset(org))]);

    // 10 analysts' sessions, 5 executions each, one after another: executions are in flight,
    // and more keep coming, when the node dies.
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let (api, qid) = (f.analyst(), qid.clone());
            tokio::spawn(async move {
                let mut out = Vec::new();
                for _ in 0..CONCURRENT / 10 {
                    let (s, r) = api
                        .post(
                            &format!("/api/v1/queries/{qid}/execute?wait=true"),
                            &json!({}),
                        )
                        .await
                        .expect("execute");
                    out.push((s, r));
                }
                out
            })
        })
        .collect();
    let api = f.analyst();
    let started = Instant::now();
    while delivered(&api, &queries)
        .await
        .get(&dataset(org))
        .copied()
        .unwrap_or(0.0)
        < 3.0 * EPSILON - 1e-9
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no query completed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (spent_at_kill, _) = f.budget(org).expect("budget");
    f.kill_node(org);
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.extend(t.await.expect("task"));
    }
    let failed: Vec<_> = outcomes
        .iter()
        .filter(|(_, r)| r["status"] == "failed")
        .collect();
    assert!(
        !failed.is_empty(),
        "the kill came after every query completed"
    );
    for (s, r) in &failed {
        assert_eq!(*s, 200, "{r}");
        assert!(
            r["error_code"].is_string() && r["error_message"].is_string(),
            "a failed run says why: {r}"
        );
    }

    // Restarted: no reservation survives the kill, and nothing charged was forgotten.
    f.start_node(org).await.expect("restart");
    let (spent, reserved) = f.budget(org).expect("budget");
    assert_eq!(reserved, 0.0, "reservations are released at restart");
    assert!(
        spent >= spent_at_kill - 1e-9,
        "the ledger never under-counts: {spent} < {spent_at_kill}"
    );
    // Every answer it charged reaches its run: at once, or collected after the restart.
    let mut last = (0.0, 0.0);
    let settled = f
        .wait(
            "ε charged = ε delivered",
            Duration::from_secs(30),
            async || {
                let charged = f.budget(org).map(|b| b.0).unwrap_or(-1.0);
                let got = delivered(&api, &queries)
                    .await
                    .get(&dataset(org))
                    .copied()
                    .unwrap_or(0.0);
                last = (charged, got);
                (charged - got).abs() < 1e-9
            },
        )
        .await;
    assert!(
        settled.is_ok(),
        "charged {} vs delivered {}\n{}",
        last.0,
        last.1,
        f.logs()
    );
    eprintln!(
        "node kill -9 during {CONCURRENT} queries: {} completed, {} failed; ε charged {} = delivered {}",
        CONCURRENT - failed.len(),
        failed.len(),
        last.0,
        last.1
    );
}

#[cfg_attr(prism_no_netns, ignore = "needs root and iproute2 (ip netns)")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_coordinator_killed_with_runs_in_flight_loses_nothing() {
    let mut f = federation().await;
    let api = f.analyst();
    // 30 runs accepted across the three datasets, started without waiting, in bursts; the
    // coordinator dies during the burst.
    let mut queries = HashMap::new();
    let mut ids = Vec::new();
    let mut burst = Vec::new();
    for i in 0..30 {
        let org = ALL[i % 3];
        let qid = dp_query(&api, org).await;
        queries.insert(qid.clone(), dataset(org));
        burst.push(qid);
    }
    let execs: Vec<_> = burst
        .into_iter()
        .map(|qid| {
            let api = f.analyst();
            tokio::spawn(async move {
                api.post(&format!("/api/v1/queries/{qid}/execute"), &json!({}))
                    .await
            })
        })
        .collect();
    // Kill once the first runs exist: the rest are in flight or not yet accepted.
    f.wait("runs are accepted", Duration::from_secs(30), async || {
        matches!(api.get("/api/v1/runs").await, Ok((200, v)) if v.as_array().is_some_and(|a| a.len() >= 5))
    })
    .await
    .expect("runs");
    f.kill_coordinator();
    for e in execs {
        if let Ok(Ok((s, r))) = e.await
            && (s == 201 || s == 202)
        {
            ids.push(r["id"].as_str().expect("run id").to_string());
        }
    }
    assert!(!ids.is_empty(), "the API accepted runs before the kill");

    f.start_coordinator().await.expect("restart");
    for org in ALL {
        f.wait_ready(org, Duration::from_secs(30))
            .await
            .expect("reconnected");
    }
    // Every run the API acknowledged ends completed, or failed with a reason.
    let mut runs = HashMap::new();
    f.wait(
        "every accepted run ends",
        Duration::from_secs(30),
        async || {
            runs.clear();
            for id in &ids {
                if let Ok((200, r)) = api.get(&format!("/api/v1/runs/{id}")).await {
                    runs.insert(id.clone(), r);
                }
            }
            runs.len() == ids.len()
                && runs
                    .values()
                    .all(|r| r["status"] == "completed" || r["status"] == "failed")
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}: {runs:?}"));
    for r in runs.values().filter(|r| r["status"] == "failed") {
        assert!(r["error_code"].is_string(), "a failed run says why: {r}");
    }
    let completed = runs.values().filter(|r| r["status"] == "completed").count();
    let collected = runs
        .values()
        .filter(|r| r["proof_artifacts"]["collected"].is_object())
        .count();

    // ε charged on each node = ε of the answers the coordinator delivered.
    let mut last = HashMap::new();
    let ok = f
        .wait(
            "ε charged = ε delivered on every node",
            Duration::from_secs(30),
            async || {
                let got = delivered(&api, &queries).await;
                last.clear();
                ALL.iter().all(|org| {
                    let charged = f.budget(org).map(|b| b.0).unwrap_or(-1.0);
                    let d = got.get(&dataset(org)).copied().unwrap_or(0.0);
                    last.insert(*org, (charged, d));
                    (charged - d).abs() < 1e-9
                })
            },
        )
        .await;
    assert!(
        ok.is_ok(),
        "(charged, delivered) per node: {last:?}\n{}",
        f.logs()
    );
    assert_audit_chains(&f, &coordinator_chain(&f.admin()).await);
    eprintln!(
        "coordinator kill -9: {} runs accepted, {completed} completed ({collected} collected after the restart), {} failed with a reason; ε reconciled on 3 nodes: {last:?}",
        ids.len(),
        ids.len() - completed
    );
}

#[cfg_attr(prism_no_netns, ignore = "needs root and iproute2 (ip netns)")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_partitioned_for_30s_fails_fast_and_comes_back_by_itself() {
    let f = federation().await;
    let api = f.analyst();
    let org = "hospital-c";
    let room = ready_room(&api, &ALL).await;
    let (spent_before, _) = f.budget(org).expect("budget");

    f.net.partition(f.host_of(org), true).expect("cut");
    let cut = Instant::now();
    let started = Instant::now();
    let (s, run) = dp_run(&api, org, true).await;
    let took = started.elapsed();
    eprintln!(
        "DP query to the partitioned node failed after {took:?}: {}",
        run["error_message"]
    );
    assert_eq!((s, &run["status"]), (200, &json!("failed")), "{run}");
    assert_eq!(run["error_code"], "node_unavailable", "{run}");
    let msg = run["error_message"].as_str().unwrap_or_default();
    assert!(
        (msg.contains("offline") || msg.contains("unreachable")) && msg.contains(org),
        "{msg}"
    );
    assert!(took < FAIL_WITHIN, "the query took {took:?} to fail");

    // The node knows it is cut off: not ready.
    f.wait("the node reports not ready", FAIL_WITHIN, async || {
        f.node_ready(org) == Some(false)
    })
    .await
    .expect("readyz 503");

    let (took, r) = execute_room(&api, &room).await;
    assert_eq!(r["error_code"], "party_offline", "{r}");
    assert!(took < FAIL_WITHIN, "the room took {took:?} to fail");

    // Until the 30 s are up: the others answer, the cut-off party keeps failing fast.
    let mut probes = 0;
    while cut.elapsed() < Duration::from_secs(30) {
        let (_, r) = dp_run(&api, "hospital-a", true).await;
        assert_eq!(r["status"], "completed", "{r}");
        let t = Instant::now();
        let (_, r) = dp_run(&api, org, true).await;
        assert_eq!(r["error_code"], "node_unavailable", "{r}");
        assert!(t.elapsed() < FAIL_WITHIN, "{:?}", t.elapsed());
        probes += 1;
        tokio::time::sleep(Duration::from_secs(4)).await;
    }

    f.net.partition(f.host_of(org), false).expect("heal");
    let healed = Instant::now();
    f.wait_ready(org, Duration::from_secs(20))
        .await
        .expect("reconnects by itself");
    let back = healed.elapsed();
    let (_, r) = dp_run(&api, org, true).await;
    assert_eq!(r["status"], "completed", "{r}");
    let (_, r) = execute_room(&api, &room).await;
    assert_eq!(r["status"], "completed", "{r}");
    // Charged: the one DP answer and the room, nothing for the failed runs.
    let (spent, reserved) = f.budget(org).expect("budget");
    assert_eq!(reserved, 0.0);
    assert!(
        (spent - spent_before - EPSILON - 0.5).abs() < 1e-9,
        "{org} charged {} for one DP answer (ε {EPSILON}) and one room (ε 0.5)",
        spent - spent_before
    );
    eprintln!("30 s partition: {probes} probes failed fast; reconnected {back:?} after healing");
}

/// Connects to `addr` (a node's peer endpoint) with `org`'s certificate from the CA directory.
async fn peer_handshake(
    f: &HostFederation,
    org: &str,
    addr: SocketAddr,
    name: &str,
) -> Result<(), String> {
    let ca = f.dir.join("ca");
    let tls = TlsMaterial::load(&TlsFiles {
        ca_cert: ca.join("ca.pem"),
        cert: ca.join(format!("{org}.pem")),
        key: ca.join(format!("{org}.key.pem")),
        crl: None,
    })
    .map_err(|e| e.to_string())?;
    let ep = quinn::Endpoint::client(SocketAddr::new(f.net.gateway().into(), 0))
        .map_err(|e| e.to_string())?;
    let cfg = tls.client_config().map_err(|e| e.to_string())?;
    let conn = tokio::time::timeout(
        Duration::from_secs(10),
        ep.connect_with(cfg, addr, name)
            .map_err(|e| e.to_string())?,
    )
    .await
    .map_err(|_| "no handshake within 10 s".to_string())?
    .map_err(|e| e.to_string())?;
    // A server that refuses the client certificate closes right after the handshake.
    match tokio::time::timeout(Duration::from_secs(2), conn.closed()).await {
        Ok(e) => Err(e.to_string()),
        Err(_) => Ok(()),
    }
}

#[cfg_attr(prism_no_netns, ignore = "needs root and iproute2 (ip netns)")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_node_is_refused_by_the_coordinator_and_its_peers_and_leaves_the_catalog() {
    let mut f = federation().await;
    let revoked = "hospital-c";
    // The runbook of docs/DEPLOYMENT.md section 7.
    let ca = f.dir.join("ca");
    let out = std::process::Command::new(&f.bins.coordinator)
        .args(["certs", "revoke", "--dir"])
        .arg(&ca)
        .args(["--orgs", revoked])
        .output()
        .expect("certs revoke");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let crl = ca.join("crl.pem").to_string_lossy().into_owned();
    f.edit_coordinator_config(|c| {
        set_tls(c, "crl", crl.clone());
        c.insert(
            "organizations".into(),
            toml::Value::Array(vec!["hospital-a".into(), "hospital-b".into()]),
        );
    })
    .expect("coordinator config");
    for org in ALL {
        f.edit_node_config(org, |n| set_tls(n, "crl", crl.clone()))
            .expect("node config");
    }
    for org in ALL {
        let status = f.stop_node(org, "TERM").expect("stop node");
        assert!(status.success(), "{org}: {status}");
    }
    assert!(f.stop_coordinator("TERM").expect("stop").success());
    f.start_coordinator().await.expect("coordinator");
    for org in ["hospital-a", "hospital-b"] {
        f.start_node(org).await.expect("member node");
    }
    // The revoked node starts (its own files are intact) but the coordinator refuses it: it
    // never becomes ready, and the coordinator does not list it.
    f.spawn_node(revoked).expect("spawn");
    let admin = f.admin();
    let listed = async || match admin.get("/api/v1/organizations").await {
        Ok((200, v)) => v
            .as_array()
            .is_some_and(|a| a.iter().any(|o| o["id"] == revoked)),
        _ => true,
    };
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_ne!(f.node_ready(revoked), Some(true), "{}", f.logs());
    assert!(
        !listed().await,
        "the coordinator lists the revoked organization"
    );

    let api = f.analyst();
    let (_, ds) = api.get("/api/v1/datasets").await.expect("datasets");
    let names: Vec<_> = ds
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|d| d["id"].as_str())
        .collect();
    assert!(
        !names.iter().any(|n| n.starts_with(revoked)),
        "the revoked organization's dataset left the catalog: {names:?}"
    );
    assert_eq!(names.len(), 2, "{names:?}");
    let (s, r) = api
        .post(
            "/api/v1/queries",
            &json!({"dataset_id": dataset(revoked), "sql": "SELECT COUNT(*) FROM patients",
                    "backend": "dp_sandbox", "epsilon": EPSILON}),
        )
        .await
        .expect("query");
    assert!(
        s == 404 || s == 422,
        "a query on the revoked dataset: {s} {r}"
    );

    // Peers refuse it too; a member's certificate still gets through.
    let a = f.peer_addr("hospital-a");
    let refused = peer_handshake(&f, revoked, a, "hospital-a.org.prism")
        .await
        .expect_err("hospital-a's peer endpoint accepted a revoked certificate");
    eprintln!("revoked certificate at a peer: {refused}");
    peer_handshake(&f, "hospital-b", a, "hospital-a.org.prism")
        .await
        .expect("a member's certificate");
    // And the federation goes on without it.
    let (_, r) = dp_run(&api, "hospital-a", true).await;
    assert_eq!(r["status"], "completed", "{r}");
}

#[cfg_attr(prism_no_netns, ignore = "needs root and iproute2 (ip netns)")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_of_every_daemon_and_a_restart_keep_everything_and_both_chains_verify() {
    let mut f = federation().await;
    let api = f.analyst();
    for org in ALL {
        let (_, r) = dp_run(&api, org, true).await;
        assert_eq!(r["status"], "completed", "{r}");
    }
    let room = ready_room(&api, &ALL).await;
    let (_, r) = execute_room(&api, &room).await;
    assert_eq!(r["status"], "completed", "{r}");
    let budgets: Vec<_> = ALL.iter().map(|o| f.budget(o).expect("budget")).collect();
    let (_, runs_before) = api.get("/api/v1/runs").await.expect("runs");
    let (_, rooms_before) = api.get("/api/v1/data_rooms").await.expect("rooms");
    let (_, catalog_before) = api.get("/api/v1/datasets").await.expect("datasets");

    for (i, org) in ALL.iter().enumerate() {
        let signal = if i == 0 { "INT" } else { "TERM" };
        let t = Instant::now();
        let status = f.stop_node(org, signal).expect("stop");
        assert!(status.success(), "{org} after SIG{signal}: {status}");
        eprintln!("{org}: exit 0 {:?} after SIG{signal}", t.elapsed());
        // Stopped: its store file verifies on its own.
        let store = f.dir.join(org).join("node.redb");
        let out = std::process::Command::new(&f.bins.node)
            .args(["audit", "--verify", "--store"])
            .arg(&store)
            .output()
            .expect("verify");
        assert!(
            out.status.success(),
            "{org}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let t = Instant::now();
    let status = f.stop_coordinator("TERM").expect("stop coordinator");
    assert!(status.success(), "coordinator after SIGTERM: {status}");
    eprintln!("coordinator: exit 0 {:?} after SIGTERM", t.elapsed());

    f.start_coordinator().await.expect("coordinator");
    for org in ALL {
        f.start_node(org).await.expect("node");
    }
    let after: Vec<_> = ALL.iter().map(|o| f.budget(o).expect("budget")).collect();
    assert_eq!(
        budgets, after,
        "budgets (spent, reserved) across the restart"
    );
    let (_, runs_after) = api.get("/api/v1/runs").await.expect("runs");
    assert_eq!(runs_before, runs_after, "runs across the restart");
    let (_, rooms_after) = api.get("/api/v1/data_rooms").await.expect("rooms");
    assert_eq!(rooms_before, rooms_after, "rooms across the restart");
    let (_, catalog_after) = api.get("/api/v1/datasets").await.expect("datasets");
    assert_eq!(
        catalog_before.as_array().map(Vec::len),
        catalog_after.as_array().map(Vec::len),
        "{catalog_after}"
    );
    assert_audit_chains(&f, &coordinator_chain(&f.admin()).await);
    let (_, r) = dp_run(&api, "hospital-b", true).await;
    assert_eq!(r["status"], "completed", "after the restart: {r}");
}

/// Median and 90th percentile of `xs`.
fn median_p90(mut xs: Vec<Duration>) -> (Duration, Duration) {
    xs.sort();
    (xs[xs.len() / 2], xs[(xs.len() * 9 / 10).min(xs.len() - 1)])
}

#[cfg_attr(prism_no_netns, ignore = "needs root and iproute2 (ip netns)")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_room_across_a_80ms_rtt_wan() {
    let mut f = federation().await;
    // Every path between hosts goes through a delay relay on the bridge: node → coordinator,
    // and node → node (each node advertises its relay as its peer address).
    let gw = f.net.gateway().into();
    let mut relays = Vec::new();
    for org in ALL {
        let to_coordinator = Relay::start_at(gw, f.quic_addr()).await.expect("relay");
        let to_peer = Relay::start_at(gw, f.peer_addr(org)).await.expect("relay");
        let (c, p) = (to_coordinator.addr.to_string(), to_peer.addr.to_string());
        f.edit_node_config(org, |n| {
            n.insert("coordinator_addr".into(), c.into());
            n.insert("peer_advertise".into(), p.into());
        })
        .expect("config");
        f.stop_node(org, "TERM").expect("stop");
        relays.push(to_coordinator);
        relays.push(to_peer);
    }
    for org in ALL {
        f.start_node(org).await.expect("node behind its relays");
    }
    let api = f.analyst();
    let measure = async |label: &str| {
        // One room to warm the peer connections, then ten (22 rooms of ε 0.05 in all, within
        // each node's budget of 5).
        let warm = ready_room_at(&api, &ALL, 0.05).await;
        execute_room(&api, &warm).await;
        let mut times = Vec::new();
        for _ in 0..10 {
            let id = ready_room_at(&api, &ALL, 0.05).await;
            let (took, room) = execute_room(&api, &id).await;
            assert_eq!(room["status"], "completed", "{room}");
            times.push(took);
        }
        let (median, p90) = median_p90(times);
        eprintln!("data room, 3 parties, {label}: median {median:?}, p90 {p90:?}");
        median
    };
    let lan = measure("no added delay").await;
    for r in &relays {
        r.set_delay(Duration::from_millis(40), Duration::ZERO);
    }
    let wan = measure("40 ms each way (80 ms RTT)").await;
    // The delay is on the path: a room needs the request out, the shares across and the
    // partial sums back, each at least one 40 ms leg (the parties' own work overlaps the legs,
    // so the difference from the LAN time can be smaller).
    assert!(
        wan >= Duration::from_millis(120),
        "the WAN room took {wan:?}, without delay {lan:?}"
    );
    assert!(wan < Duration::from_secs(5), "the WAN room took {wan:?}");
}

/// Measurement (docs/PERFORMANCE.md, "First HE query of a deployed federation"): one node that
/// serves `he_backend`, deployed from the samples, whose coordinator prepares its key set at
/// start and installs it on the node (`he_keys_at_start`, the sample's default). Times the first
/// HE query made as soon as every daemon is ready, and, on a fresh federation, one made 15 s
/// later. Run it with release daemons:
/// `PRISM_HOST_BINS=target/release cargo test --workspace --test e2e -- --ignored hosts::the_first_he_query --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run it on its own, with release daemons"]
async fn the_first_he_query_of_a_deployed_federation() {
    for wait in [Duration::ZERO, Duration::from_secs(15)] {
        let f = HostFederation::start(
            bins(),
            HostSpec {
                orgs: vec!["hospital-a".into()],
                backends: vec!["dp_sandbox".into(), "he_backend".into()],
                ..Default::default()
            },
        )
        .await
        .expect("the federation on its hosts");
        tokio::time::sleep(wait).await;
        let api = f.analyst();
        let mut times = Vec::new();
        let mut transfer = Value::Null;
        for i in 0..3 {
            let started = Instant::now();
            let (_, s, run) = api
                .run_query(
                    &dataset("hospital-a"),
                    "SELECT COUNT(*) FROM patients WHERE diagnosis = 'diabetes'",
                    "he_backend",
                    Some(0.1),
                )
                .await
                .expect("run");
            times.push(started.elapsed());
            assert_eq!((s, &run["status"]), (200, &json!("completed")), "{run}");
            if i == 0 {
                transfer = run["proof_artifacts"]["key_transfer"].clone();
            }
        }
        eprintln!(
            "first HE query {wait:?} after the daemons were ready: {:?} (key transfer in it: {transfer}); the next two: {:?}, {:?}",
            times[0], times[1], times[2]
        );
    }
}
