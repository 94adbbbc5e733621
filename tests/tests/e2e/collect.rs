//! No ε spent without an answer: a DP or HE answer the node charged but the coordinator never
//! recorded — the coordinator stopped, or was killed with `kill -9`, while the answer was on
//! its way — is held by the node and collected when the coordinator is back, so the run
//! completes with it. Invariant checked after every fault: the ε the node charged equals the ε
//! of the runs the coordinator completed, and the node holds nothing more once acknowledged.
//!
//! The node is held between its charge and its answer by the `StallAfterCharge` test seam; the
//! crash is a real `kill -9` of the real `prism-coordinator` binary on the federation's store.

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use prism_common::identity::OrgId;
use prism_node::testing::Fault;
use prism_tests::{Api, Federation, FederationSpec};
use serde_json::{Value, json};

const ORG: &str = "hospital-a";
const DATASET: &str = "hospital-a.patients";
const EPSILON: f64 = 0.1;

fn coordinator_bin() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_prism-sim")).with_file_name("prism-coordinator");
    assert!(
        bin.exists(),
        "{} is missing: run the suite with `cargo test --workspace`, which builds it",
        bin.display()
    );
    bin
}

fn org() -> OrgId {
    OrgId::new(ORG).expect("org")
}

fn set_fault(f: &Federation, fault: Option<Fault>) {
    set_fault_of(f, ORG, fault)
}

fn set_fault_of(f: &Federation, org: &str, fault: Option<Fault>) {
    let node = f.nodes[&OrgId::new(org).expect("org")]
        .handle
        .as_ref()
        .expect("node running");
    node.state.seams.inject_fault(fault);
}

/// ε the node has charged to its dataset.
fn node_spent(f: &Federation) -> f64 {
    node_spent_of(f, ORG)
}

fn node_spent_of(f: &Federation, org: &str) -> f64 {
    let node = f.nodes[&OrgId::new(org).expect("org")]
        .handle
        .as_ref()
        .expect("node running");
    let b = node.state.store.budget("patients").expect("budget");
    prism_node::store::real(b.spent_epsilon)
}

fn node_held(f: &Federation) -> usize {
    node_held_of(f, ORG)
}

fn node_held_of(f: &Federation, org: &str) -> usize {
    let node = f.nodes[&OrgId::new(org).expect("org")]
        .handle
        .as_ref()
        .expect("node running");
    node.state.store.held().expect("held").len()
}

/// Creates a `COUNT(*)` query on `backend` (ε [`EPSILON`]) and starts a run without waiting for
/// it; returns the run id.
async fn start_backend_run(api: &Api, backend: &str) -> String {
    let (s, q) = api
        .post(
            "/api/v1/queries",
            &json!({"dataset_id": DATASET, "sql": "SELECT COUNT(*) FROM patients",
                    "backend": backend, "epsilon": EPSILON}),
        )
        .await
        .expect("create query");
    assert_eq!(s, 201, "{q}");
    let qid = q["id"].as_str().expect("query id");
    let (s, run) = api
        .post(&format!("/api/v1/queries/{qid}/execute"), &json!({}))
        .await
        .expect("execute");
    assert!(s == 201 || s == 202, "{s} {run}");
    run["id"].as_str().expect("run id").to_string()
}

async fn wait_until(what: &str, within: Duration, mut ok: impl AsyncFnMut() -> bool) {
    let started = Instant::now();
    while !ok().await {
        assert!(started.elapsed() < within, "{what} within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn run(api: &Api, id: &str) -> Value {
    let (s, r) = api.get(&format!("/api/v1/runs/{id}")).await.expect("run");
    assert_eq!(s, 200, "{r}");
    r
}

/// ε of the completed runs, as the coordinator reports them.
async fn delivered_epsilon(api: &Api) -> f64 {
    let (s, runs) = api.get("/api/v1/runs").await.expect("runs");
    assert_eq!(s, 200, "{runs}");
    runs.as_array()
        .expect("run list")
        .iter()
        .filter(|r| r["status"] == "completed")
        .map(|r| r["epsilon_consumed"].as_f64().unwrap_or(0.0))
        .sum()
}

async fn assert_reconciled(f: &Federation, api: &Api) {
    let spent = node_spent(f);
    let delivered = delivered_epsilon(api).await;
    assert!(
        (spent - delivered).abs() < 1e-9,
        "the node charged ε {spent}, the coordinator delivered answers worth ε {delivered}"
    );
    // Acknowledged: the node forgets what it held.
    wait_until(
        "the node forgets acknowledged answers",
        Duration::from_secs(10),
        async || node_held(f) == 0,
    )
    .await;
}

/// Waits for run `id` to complete with a collected answer after `after`.
async fn collected(api: &Api, id: &str, after: &str) -> Value {
    let mut last = Value::Null;
    wait_until(
        "the held answer is collected",
        Duration::from_secs(30),
        async || {
            last = run(api, id).await;
            last["status"] == "completed"
        },
    )
    .await;
    assert_eq!(
        last["proof_artifacts"]["collected"]["after"], after,
        "{last}"
    );
    assert!(last["result"]["rows"][0][0].is_number(), "{last}");
    assert_eq!(last["epsilon_consumed"], EPSILON, "{last}");
    last
}

struct Daemon {
    child: Child,
    http: SocketAddr,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_logging(mut cmd: Command, field: &str) -> Daemon {
    let mut child = cmd
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    let field = field.to_string();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
            if let Some(h) = v["fields"][field.as_str()].as_str() {
                let _ = tx.send(h.parse::<SocketAddr>().expect("addr"));
            }
        }
    });
    let http = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the daemon did not log its address");
    Daemon { child, http }
}

/// The real node binary on the node's store and configuration.
fn serve_node_binary(f: &Federation) -> Daemon {
    let cfg = f.nodes[&org()].config.clone();
    let path = f.dir.join("node-binary.toml");
    std::fs::write(&path, toml::to_string(&cfg).expect("toml")).expect("config");
    let bin = Path::new(env!("CARGO_BIN_EXE_prism-sim")).with_file_name("prism-node");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo test --workspace`",
        bin.display()
    );
    let mut cmd = Command::new(bin);
    cmd.arg("--config").arg(&path);
    spawn_logging(cmd, "admin_addr")
}

/// The real coordinator binary on the federation's store and QUIC port.
fn serve_binary(f: &Federation) -> Daemon {
    let mut cfg = f.coordinator_config.clone();
    cfg.quic_listen = f.nodes[&org()]
        .config
        .coordinator_addr
        .socket_addr()
        .expect("an IP address");
    cfg.http_listen = "127.0.0.1:0".parse().expect("addr");
    let path = f.dir.join("coordinator-binary.toml");
    std::fs::write(&path, toml::to_string(&cfg).expect("toml")).expect("config");
    let mut cmd = Command::new(coordinator_bin());
    cmd.args(["serve", "--config"]).arg(&path);
    spawn_logging(cmd, "http_addr")
}

async fn connected(api: &Api) -> bool {
    all_connected(api, &[ORG]).await
}

async fn all_connected(api: &Api, orgs: &[&str]) -> bool {
    match api.get("/api/v1/organizations").await {
        Ok((200, v)) => orgs.iter().all(|org| {
            v.as_array()
                .is_some_and(|a| a.iter().any(|o| o["id"] == *org && o["connected"] == true))
        }),
        _ => false,
    }
}

/// A federation of one organization with 100 patients.
async fn one_node() -> Federation {
    Federation::start(FederationSpec {
        orgs: vec![ORG.into()],
        rows_per_org: 100,
        ..Default::default()
    })
    .await
    .expect("federation")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_charged_answer_is_collected_after_the_coordinator_stops_or_crashes() {
    let mut f = one_node().await;

    // An ordinary run: delivered, acknowledged, nothing held.
    delivered_at_once(&f, "dp_sandbox").await;

    stop_and_crash_with_a_held_answer(&mut f, "dp_sandbox", Duration::from_secs(20)).await;
    f.shutdown().await;
}

/// An ordinary `COUNT(*)` run of `backend`: it completes, and ε is reconciled at once.
async fn delivered_at_once(f: &Federation, backend: &str) {
    let api = f.analyst();
    let (_, s, r) = api
        .run_query(
            DATASET,
            "SELECT COUNT(*) FROM patients",
            backend,
            Some(EPSILON),
        )
        .await
        .expect("run");
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["status"], "completed", "{r}");
    assert_reconciled(f, &api).await;
}

/// The two faults, on a run of `backend`: (1) a clean stop while the node holds a charged
/// answer — the run fails `coordinator_stopped`, and completes with the answer after the
/// restart; (2) `kill -9` of the real coordinator binary with the answer in flight — the
/// restarted binary keeps the run awaiting collection and completes it when the node is back.
/// ε is reconciled after each. Returns the two collected runs.
async fn stop_and_crash_with_a_held_answer(
    f: &mut Federation,
    backend: &str,
    charge_within: Duration,
) -> [Value; 2] {
    let api = f.analyst();
    set_fault(f, Some(Fault::StallAfterCharge));
    let before = node_spent(f);
    let id = start_backend_run(&api, backend).await;
    wait_until("the node charges the run", charge_within, async || {
        node_spent(f) > before + 0.5 * EPSILON
    })
    .await;
    assert_eq!(
        node_held(f),
        1,
        "the charged answer is held with its charge"
    );
    f.stop_coordinator().await;
    set_fault(f, None);
    f.restart_coordinator().await.expect("restart");
    let api = f.analyst();
    let stopped = collected(&api, &id, "coordinator_stopped").await;
    assert_eq!(stopped["backend_used"], backend, "{stopped}");
    assert_reconciled(f, &api).await;

    f.stop_coordinator().await;
    let daemon = serve_binary(f);
    let api = Api::new(format!("http://{}", daemon.http), f.analyst_token.clone());
    wait_until(
        "the node connects to the binary",
        Duration::from_secs(20),
        async || connected(&api).await,
    )
    .await;
    set_fault(f, Some(Fault::StallAfterCharge));
    let before = node_spent(f);
    let id = start_backend_run(&api, backend).await;
    wait_until("the node charges the run", charge_within, async || {
        node_spent(f) > before + 0.5 * EPSILON
    })
    .await;
    drop(daemon); // SIGKILL
    set_fault(f, None);
    let daemon = serve_binary(f);
    let api = Api::new(format!("http://{}", daemon.http), f.analyst_token.clone());
    let restarted = collected(&api, &id, "coordinator_restarted").await;
    assert_reconciled(f, &api).await;
    drop(daemon);
    [stopped, restarted]
}

const QUERIES: usize = 60;

/// `kill -9` of the real node binary while 60 DP queries run against it: its ledger never
/// under-counts, the reservations open at the kill are released at its restart, and every
/// answer it charged reaches its run — delivered at once, or collected after the restart from
/// the runs that failed `node_unavailable`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_during_concurrent_queries_never_under_counts_and_delivers_what_it_charged() {
    let mut f = one_node().await;
    f.stop_node(ORG).await.expect("stop the in-process node");
    let node = serve_node_binary(&f);
    let api = f.analyst();
    wait_until(
        "the node binary connects",
        Duration::from_secs(20),
        async || connected(&api).await,
    )
    .await;

    // 12 analysts, each sending 5 queries one after another: queries are in flight, and more
    // keep coming, when the node dies.
    let queries = (0..12).map(|_| {
        let api = f.analyst();
        tokio::spawn(async move {
            let mut out = Vec::new();
            for _ in 0..QUERIES / 12 {
                let r = api
                    .run_query(
                        DATASET,
                        "SELECT COUNT(*) FROM patients",
                        "dp_sandbox",
                        Some(EPSILON),
                    )
                    .await
                    .map(|(_, s, r)| (s, r["status"].as_str().unwrap_or("?").to_string()));
                out.push(r);
            }
            out
        })
    });
    let queries: Vec<_> = queries.collect();
    // Kill it while the queries are in flight, once three have completed.
    wait_until(
        "some queries complete",
        Duration::from_secs(30),
        async || delivered_epsilon(&api).await >= 3.0 * EPSILON,
    )
    .await;
    drop(node); // SIGKILL
    let mut outcomes = Vec::new();
    for q in queries {
        for r in q.await.expect("task") {
            outcomes.push(r.expect("api"));
        }
    }
    let failed = outcomes.iter().filter(|(_, s)| s == "failed").count();
    assert!(
        failed > 0,
        "the kill came after every query had completed: {outcomes:?}"
    );

    let node = serve_node_binary(&f);
    wait_until(
        "the node binary reconnects",
        Duration::from_secs(20),
        async || connected(&api).await,
    )
    .await;
    // Let collection and acknowledgement settle, then stop the node cleanly and read its store.
    let node_admin = Api::new(
        format!("http://{}", node.http),
        f.nodes[&org()].admin_token.clone(),
    );
    let spent_now = async || {
        let (_, v) = node_admin.get("/v1/datasets").await.expect("datasets");
        v.as_array()
            .and_then(|a| a.first())
            .map(|d| d["budget"]["spent_epsilon"].as_f64().unwrap_or(-1.0))
            .unwrap_or(-1.0)
    };
    wait_until(
        "every charged answer is delivered",
        Duration::from_secs(30),
        async || {
            let spent = spent_now().await;
            (spent - delivered_epsilon(&api).await).abs() < 1e-9
        },
    )
    .await;
    let status = Command::new("kill")
        .args(["-s", "TERM", &node.child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let mut node = node;
    let _ = node.child.wait();
    let (store, released) =
        prism_node::store::Store::open(&f.nodes[&org()].config.data_path).expect("store");
    assert!(
        released.is_empty(),
        "a clean stop leaves no reservation: {released:?}"
    );
    let b = store.budget("patients").expect("budget");
    assert_eq!(b.reserved_epsilon, 0);
    let spent = prism_node::store::real(b.spent_epsilon);
    let delivered = delivered_epsilon(&api).await;
    assert!(
        (spent - delivered).abs() < 1e-9,
        "the node charged ε {spent}, answers worth ε {delivered} were delivered ({failed} of {QUERIES} runs failed)"
    );
    assert!(store.held().expect("held").is_empty(), "nothing left held");
    eprintln!(
        "node kill -9: {} runs completed at once, {failed} failed, ε charged {spent} = ε delivered {delivered}",
        QUERIES - failed
    );
    drop(store);
    f.shutdown().await;
}

/// The same for an HE answer in the default `dp` release mode: the node charges the evaluation
/// and holds its report and encrypted result; the coordinator keeps the run's encoding (its
/// `he_pending` record) and, after a clean stop or a `kill -9`, decrypts the collected result
/// with its stored key set and completes the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_charged_he_answer_is_collected_after_the_coordinator_stops_or_crashes() {
    let mut f = one_node().await;

    // An ordinary HE run: keys generated and installed, the answer delivered and acknowledged.
    delivered_at_once(&f, "he_backend").await;

    let runs =
        stop_and_crash_with_a_held_answer(&mut f, "he_backend", Duration::from_secs(120)).await;
    // The collected count is the exact count (100) plus the noise the node added.
    for run in runs {
        let n = run["result"]["rows"][0][0].as_f64().expect("count");
        assert!((n - 100.0).abs() < 200.0, "{run}");
    }
    f.shutdown().await;
}

const PARTIES: [&str; 2] = [ORG, "hospital-b"];

/// Opens a `dp` data room of both parties over `COUNT(*)` (ε [`EPSILON`] each) and has both
/// nodes attest it; returns its id once it is ready.
async fn ready_room(f: &Federation, api: &Api, name: &str) -> String {
    let (s, room) = api
        .post(
            "/api/v1/data_rooms",
            &json!({"name": name, "query_text": "SELECT COUNT(*) FROM patients",
                    "participants": PARTIES, "epsilon": EPSILON}),
        )
        .await
        .expect("create room");
    assert_eq!(s, 201, "{room}");
    let id = room["id"].as_str().expect("room id").to_string();
    attest_both(f, &id).await;
    wait_until("the room is ready", Duration::from_secs(10), async || {
        room_of(api, &id).await["status"] == "ready"
    })
    .await;
    id
}

async fn attest_both(f: &Federation, id: &str) {
    for org in PARTIES {
        let node = f.node_admin(org).expect("node");
        let path = format!("/v1/invitations/{id}");
        wait_until(
            "the invitation arrives",
            Duration::from_secs(10),
            async || matches!(node.get(&path).await, Ok((200, _))),
        )
        .await;
        let (s, body) = node
            .post(&format!("{path}/attest"), &json!({}))
            .await
            .expect("attest");
        assert_eq!(s, 200, "{org}: {body}");
    }
}

async fn room_of(api: &Api, id: &str) -> Value {
    let (s, r) = api
        .get(&format!("/api/v1/data_rooms/{id}"))
        .await
        .expect("room");
    assert_eq!(s, 200, "{r}");
    r
}

/// How a held execution starts.
#[derive(Clone, Copy, Debug)]
enum Start {
    /// A room opened and executed through the data-room API.
    Room,
    /// An `mpc_backend` query: it opens a room over both parties, which executes once attested.
    Query,
}

/// Starts an execution with both parties held after their charge, and waits until both have
/// charged (each holds its partial sum); returns the room id and the query's run id.
async fn execute_held(f: &Federation, api: &Api, start: Start) -> (String, Option<String>) {
    let before: Vec<f64> = PARTIES.iter().map(|o| node_spent_of(f, o)).collect();
    for org in PARTIES {
        set_fault_of(f, org, Some(Fault::StallAfterCharge));
    }
    let started = match start {
        Start::Room => {
            let id = ready_room(f, api, "held").await;
            let (s, r) = api
                .post(&format!("/api/v1/data_rooms/{id}/execute"), &json!({}))
                .await
                .expect("execute");
            assert_eq!(s, 202, "{r}");
            (id, None)
        }
        Start::Query => {
            let run_id = start_backend_run(api, "mpc_backend").await;
            let mut room = None;
            wait_until(
                "the query opens its room",
                Duration::from_secs(10),
                async || {
                    room = run(api, &run_id).await["proof_artifacts"]["room_id"]
                        .as_str()
                        .map(str::to_string);
                    room.is_some()
                },
            )
            .await;
            let room = room.expect("room id");
            attest_both(f, &room).await;
            (room, Some(run_id))
        }
    };
    wait_until("both parties charge", Duration::from_secs(20), async || {
        PARTIES
            .iter()
            .zip(&before)
            .all(|(o, b)| node_spent_of(f, o) > b + 0.5 * EPSILON)
    })
    .await;
    for org in PARTIES {
        assert_eq!(
            node_held_of(f, org),
            1,
            "{org} holds its charged partial sum"
        );
    }
    started
}

/// Waits for room `id` to complete with collected partial sums after `after`, and the query run
/// that opened it, if any, with it.
async fn room_collected(api: &Api, (id, run_id): &(String, Option<String>), after: &str) {
    let mut last = Value::Null;
    wait_until(
        "the held partial sums are collected",
        Duration::from_secs(30),
        async || {
            last = room_of(api, id).await;
            last["status"] == "completed"
        },
    )
    .await;
    assert_eq!(
        last["proof_artifacts"]["collected"]["after"], after,
        "{last}"
    );
    // Two parties of 100 patients each, plus both parties' noise.
    let n = last["result"]["rows"][0][0].as_f64().expect("a count");
    assert!((n - 200.0).abs() < 200.0, "{last}");
    assert_eq!(
        last["proof_artifacts"]["dp"]["parties"]
            .as_array()
            .map(Vec::len),
        Some(2),
        "{last}"
    );
    if let Some(run_id) = run_id {
        let mut r = Value::Null;
        wait_until(
            "the query's run completes",
            Duration::from_secs(10),
            async || {
                r = run(api, run_id).await;
                r["status"] == "completed"
            },
        )
        .await;
        assert_eq!(r["epsilon_consumed"], EPSILON, "{r}");
        assert_eq!(r["result"], last["result"], "{r}");
        assert!(r["error_code"].is_null(), "{r}");
        assert_eq!(
            r["proof_artifacts"]["mpc"]["collected"]["after"], after,
            "{r}"
        );
    }
}

/// Every party charged ε for exactly the rooms that completed, and holds nothing once acknowledged.
async fn rooms_reconciled(f: &Federation, api: &Api) {
    let (s, rooms) = api.get("/api/v1/data_rooms").await.expect("rooms");
    assert_eq!(s, 200, "{rooms}");
    let completed = rooms
        .as_array()
        .expect("room list")
        .iter()
        .filter(|r| r["status"] == "completed")
        .count();
    for org in PARTIES {
        let spent = node_spent_of(f, org);
        assert!(
            (spent - completed as f64 * EPSILON).abs() < 1e-9,
            "{org} charged ε {spent} for {completed} completed rooms of ε {EPSILON}"
        );
        wait_until(
            "the parties forget acknowledged partial sums",
            Duration::from_secs(10),
            async || node_held_of(f, org) == 0,
        )
        .await;
    }
}

/// No ε spent without an answer, in a data room: a `dp` room's partial sums, charged by both
/// parties, are held by them when the coordinator stops cleanly, or is killed with `kill -9`,
/// before it combines them; the restarted coordinator collects them and completes the room, and
/// the `mpc_backend` query run that opened it. Each fault on a room executed through the
/// data-room API and on one opened by a query.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dp_rooms_charged_partial_sums_are_collected_after_the_coordinator_stops_or_crashes() {
    let mut f = Federation::start(FederationSpec {
        orgs: PARTIES.iter().map(|o| o.to_string()).collect(),
        rows_per_org: 100,
        ..Default::default()
    })
    .await
    .expect("federation");
    let api = f.analyst();

    // An ordinary execution: completed, acknowledged, nothing held.
    let id = ready_room(&f, &api, "ordinary").await;
    let (s, done) = api
        .post(
            &format!("/api/v1/data_rooms/{id}/execute?wait=true"),
            &json!({}),
        )
        .await
        .expect("execute");
    assert_eq!(s, 200, "{done}");
    assert_eq!(done["status"], "completed", "{done}");
    rooms_reconciled(&f, &api).await;

    for start in [Start::Room, Start::Query] {
        // (1) A clean stop between the parties' charges and the total: the room fails
        // `coordinator_stopped`, and completes with the held partial sums after the restart.
        let api = f.analyst();
        let held = execute_held(&f, &api, start).await;
        f.stop_coordinator().await;
        for org in PARTIES {
            set_fault_of(&f, org, None);
        }
        f.restart_coordinator().await.expect("restart");
        let api = f.analyst();
        room_collected(&api, &held, "coordinator_stopped").await;
        rooms_reconciled(&f, &api).await;

        // (2) `kill -9` of the real coordinator binary in the same place: the restarted binary
        // keeps the room executing, awaiting collection, and completes it when both are back.
        f.stop_coordinator().await;
        let daemon = serve_binary(&f);
        let api = Api::new(format!("http://{}", daemon.http), f.analyst_token.clone());
        wait_until(
            "both nodes connect to the binary",
            Duration::from_secs(20),
            async || all_connected(&api, &PARTIES).await,
        )
        .await;
        let held = execute_held(&f, &api, start).await;
        drop(daemon); // SIGKILL
        for org in PARTIES {
            set_fault_of(&f, org, None);
        }
        let daemon = serve_binary(&f);
        let api = Api::new(format!("http://{}", daemon.http), f.analyst_token.clone());
        room_collected(&api, &held, "coordinator_restarted").await;
        rooms_reconciled(&f, &api).await;
        drop(daemon);
        f.restart_coordinator().await.expect("restart");
    }
    f.shutdown().await;
}
