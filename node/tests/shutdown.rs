//! The real `prism-node` binary stops cleanly on SIGTERM and SIGINT: exit status 0 within
//! seconds, its coordinator connection closed with a code so the coordinator lists it
//! disconnected at once (not after an idle timeout), and its store closed and flushed.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use prism_common::identity::OrgId;
use prism_common::tls::TlsFiles;
use tokio_util::sync::CancellationToken;

const BIN: &str = env!("CARGO_BIN_EXE_prism-node");

struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn files(certs: &Path, stem: &str) -> TlsFiles {
    TlsFiles {
        ca_cert: certs.join("ca.pem"),
        cert: certs.join(format!("{stem}.pem")),
        key: certs.join(format!("{stem}.key.pem")),
        crl: None,
    }
}

async fn coordinator(dir: &Path, org: &OrgId) -> prism_coordinator::CoordinatorHandle {
    let certs = dir.join("certs");
    prism_coordinator::certs_cmd::init(&certs, std::slice::from_ref(org), 2).expect("certs");
    let config = prism_coordinator::CoordinatorConfig {
        data_path: dir.join("coordinator.redb"),
        quic_listen: "127.0.0.1:0".parse().expect("addr"),
        http_listen: "127.0.0.1:0".parse().expect("addr"),
        tls: files(&certs, "coordinator"),
        organizations: vec![org.clone()],
        max_frame: prism_common::wire::DEFAULT_MAX_FRAME,
        run_timeout_secs: 10,
        he_keys_at_start: false,
        idle_timeout_ms: prism_common::tls::default_idle_timeout_ms(),
    };
    prism_coordinator::start(config, CancellationToken::new())
        .await
        .expect("coordinator")
}

fn node_config(dir: &Path, org: &OrgId, quic: std::net::SocketAddr) -> std::path::PathBuf {
    let c = dir.join("certs");
    let path = dir.join("node.toml");
    let toml = format!(
        r#"org = "{org}"
data_path = "{data}"
coordinator_addr = "{quic}"
admin_token = "test-token-not-secret"

[tls]
ca_cert = "{c}/ca.pem"
cert = "{c}/{org}.pem"
key = "{c}/{org}.key.pem"
"#,
        data = dir.join("node.redb").display(),
        c = c.display(),
    );
    std::fs::write(&path, toml).expect("config");
    path
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args(["-s", sig, &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(ok.success());
}

async fn stops_cleanly_on(sig: &str) {
    let dir = tempfile::tempdir().expect("tmp");
    let org = OrgId::new("hospital-a").expect("org");
    let coord = coordinator(dir.path(), &org).await;
    let config = node_config(dir.path(), &org, coord.quic_addr);
    let mut node = Process(
        Command::new(BIN)
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn"),
    );
    let started = Instant::now();
    while coord.state.nodes.info(&org).is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the node never connected"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    signal(&node.0, sig);
    let sent = Instant::now();
    let status = loop {
        if let Some(s) = node.0.try_wait().expect("wait") {
            break s;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(8),
            "{sig}: the node did not exit"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status.code(), Some(0), "{sig}: {status:?}");
    eprintln!("{sig}: exited 0 after {:?}", sent.elapsed());

    // Closed with a code: the coordinator drops it at once, well before its idle timeout.
    let exited = Instant::now();
    while coord.state.nodes.info(&org).is_some() {
        assert!(
            exited.elapsed() < prism_common::tls::IDLE_TIMEOUT / 3,
            "the coordinator still lists the node {:?} after it exited",
            exited.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // The store was closed and flushed: it opens at once.
    prism_node::store::Store::open(&dir.path().join("node.redb"))
        .expect("the node's store opens after a clean stop");
    coord.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_the_coordinator_link_and_exits_zero() {
    stops_cleanly_on("TERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_does_the_same() {
    stops_cleanly_on("INT").await;
}
