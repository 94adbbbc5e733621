//! The real `prism-coordinator` binary stops cleanly on SIGTERM and SIGINT: exit status 0 within
//! seconds, every node connection closed with `close::NORMAL`, the run in flight failed with
//! `coordinator_stopped` (not left for the next start to find), and the store flushed.
//!
//! The node here is the test itself: a client with a member's certificate that publishes a
//! catalog and then sits on the request it is sent, so a run is in flight when the signal comes.

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use prism_common::identity::{COORDINATOR_NAME, OrgId};
use prism_common::schema::{Bounds, CatalogEntry, ColumnSpec, ColumnType};
use prism_common::tls::{TlsFiles, TlsMaterial};
use prism_common::wire::{self, Hello, HelloReply, NodeEvent, PROTOCOL_VERSION};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_prism-coordinator");

struct Daemon {
    child: Child,
    http: SocketAddr,
    quic: SocketAddr,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_config(dir: &Path) -> PathBuf {
    let certs = dir.join("certs");
    prism_coordinator::certs_cmd::init(&certs, &[OrgId::new("hospital-a").expect("org")], 2)
        .expect("certs");
    let path = dir.join("coordinator.toml");
    let toml = format!(
        r#"data_path = "{data}"
quic_listen = "127.0.0.1:0"
http_listen = "127.0.0.1:0"
organizations = ["hospital-a"]

[tls]
ca_cert = "{c}/ca.pem"
cert = "{c}/coordinator.pem"
key = "{c}/coordinator.key.pem"
"#,
        data = dir.join("coordinator.redb").display(),
        c = certs.display()
    );
    std::fs::write(&path, toml).expect("config");
    path
}

fn admin_token(config: &Path) -> String {
    let out = Command::new(BIN)
        .args([
            "users", "create", "--name", "ops", "--role", "admin", "--config",
        ])
        .arg(config)
        .output()
        .expect("users create");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .expect("token line")
        .trim()
        .to_string()
}

/// Starts the daemon and reads the addresses it bound from its start-up log line.
fn serve(config: &Path) -> Daemon {
    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
            let f = &v["fields"];
            if let (Some(h), Some(q)) = (f["http_addr"].as_str(), f["quic_addr"].as_str()) {
                let _ = tx.send((h.parse().expect("http"), q.parse().expect("quic")));
            }
        }
    });
    let (http, quic) = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the coordinator did not log its addresses");
    Daemon { child, http, quic }
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args(["-s", sig, &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(ok.success());
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        assert!(
            started.elapsed() < within,
            "the coordinator did not exit within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A node that says hello, publishes one dataset, and answers nothing after that.
/// The connection and its control stream (kept open for the connection's life).
type SilentNode = (quinn::Connection, quinn::SendStream, quinn::RecvStream);

async fn silent_node(dir: &Path, quic: SocketAddr) -> SilentNode {
    let c = dir.join("certs");
    let tls = TlsMaterial::load(&TlsFiles {
        ca_cert: c.join("ca.pem"),
        cert: c.join("hospital-a.pem"),
        key: c.join("hospital-a.key.pem"),
        crl: None,
    })
    .expect("tls");
    let ep = quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("endpoint");
    let conn = ep
        .connect_with(tls.client_config().expect("client"), quic, COORDINATOR_NAME)
        .expect("dial")
        .await
        .expect("connect");
    let (mut send, mut recv) = conn.open_bi().await.expect("control stream");
    let org = OrgId::new("hospital-a").expect("org");
    wire::write_msg(
        &mut send,
        &Hello {
            version: PROTOCOL_VERSION,
            org,
            software: "test".into(),
            peer_addr: None,
            he_keys: None,
        },
    )
    .await
    .expect("hello");
    let reply: HelloReply = wire::read_msg(&mut recv, 1 << 20).await.expect("reply");
    assert!(matches!(reply, HelloReply::Welcome { .. }), "{reply:?}");
    let age = ColumnSpec {
        name: "age".into(),
        ty: ColumnType::Integer,
        bounds: Some(Bounds {
            min: 0.0,
            max: 110.0,
        }),
        public_keys: None,
        not_null: false,
        privacy_unit: None,
    };
    let catalog = NodeEvent::Catalog {
        datasets: vec![CatalogEntry {
            name: "patients".into(),
            columns: vec![age],
            row_count: 1000,
            release: Default::default(),
            budget: None,
        }],
    };
    wire::write_msg(&mut send, &catalog).await.expect("catalog");
    (conn, send, recv)
}

async fn api(
    http: SocketAddr,
    token: &str,
    method: reqwest::Method,
    path: &str,
    body: Value,
) -> (u16, Value) {
    let r = reqwest::Client::new()
        .request(method, format!("http://{http}{path}"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn stops_cleanly_on(sig: &str) {
    let dir = tempfile::tempdir().expect("tmp");
    let config = write_config(dir.path());
    let token = admin_token(&config);
    let mut d = serve(&config);
    let (conn, _ctl_send, _ctl_recv) = silent_node(dir.path(), d.quic).await;

    // A run goes in flight: the node takes the request and never answers.
    let get = reqwest::Method::GET;
    let post = reqwest::Method::POST;
    for _ in 0..100 {
        let (_, ds) = api(d.http, &token, get.clone(), "/api/v1/datasets", json!({})).await;
        if ds.as_array().is_some_and(|a| !a.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (s, q) = api(
        d.http,
        &token,
        post.clone(),
        "/api/v1/queries",
        json!({"dataset_id": "hospital-a.patients", "sql": "SELECT COUNT(*) FROM patients", "epsilon": 0.1}),
    )
    .await;
    assert_eq!(s, 201, "{q}");
    let qid = q["id"].as_str().expect("query id");
    let (s, run) = api(
        d.http,
        &token,
        post,
        &format!("/api/v1/queries/{qid}/execute"),
        json!({}),
    )
    .await;
    assert_eq!(s, 202, "{run}");
    let run_id = run["id"].as_str().expect("run id").to_string();
    // Both halves are kept: dropping the receiving half would stop the coordinator's request
    // stream (STOP_SENDING), and a write still under way would then fail `node_unavailable`.
    let (_request_send, _request_recv) =
        tokio::time::timeout(Duration::from_secs(10), conn.accept_bi())
            .await
            .expect("the run reached the node")
            .expect("stream");

    signal(&d.child, sig);
    let sent = Instant::now();
    let status = tokio::task::block_in_place(|| wait_exit(&mut d.child, Duration::from_secs(8)));
    assert_eq!(status.code(), Some(0), "{sig}: {status:?}");
    eprintln!("{sig}: exited 0 after {:?}", sent.elapsed());

    // The node was told, with a code, not left to time out.
    let closed = tokio::time::timeout(Duration::from_millis(500), conn.closed())
        .await
        .expect("the connection was closed, not left to time out");
    match closed {
        quinn::ConnectionError::ApplicationClosed(c) => {
            assert_eq!(c.error_code, quinn::VarInt::from_u32(wire::close::NORMAL));
            assert_eq!(&c.reason[..], b"coordinator shutting down");
        }
        other => panic!("closed without a code: {other:?}"),
    }

    // The store is closed and flushed; the run says why it ended.
    let (store, restarted) =
        prism_coordinator::store::Store::open(&dir.path().join("coordinator.redb"))
            .expect("the store opens after a clean stop");
    assert!(
        restarted.runs.is_empty() && restarted.rooms.is_empty(),
        "nothing was left in flight: {restarted:?}"
    );
    let run: prism_coordinator::model::RunRecord = store
        .get(prism_coordinator::store::RUNS, &run_id)
        .expect("read")
        .expect("the run is stored");
    assert_eq!(run.status, prism_coordinator::model::RunStatus::Failed);
    assert_eq!(
        run.error_code.as_deref(),
        Some("coordinator_stopped"),
        "{:?}",
        run.error_message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_nodes_fails_the_run_in_flight_and_exits_zero() {
    stops_cleanly_on("TERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_does_the_same() {
    stops_cleanly_on("INT").await;
}
