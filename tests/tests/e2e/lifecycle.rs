//! `prism-sim serve` (the real binary) stops cleanly on SIGTERM and SIGINT: exit status 0 within
//! seconds — even with an HE run in flight, whose work cannot be interrupted — and every store
//! of the federation closed and flushed.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use prism_tests::Api;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_prism-sim");

/// Starts an HE run (key generation and encrypted evaluation take a while) without waiting.
fn start_he_run(dir: &std::path::Path) -> String {
    let fed: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("federation.json")).expect("federation.json"),
    )
    .expect("json");
    let api = Api::new(
        fed["api_url"].as_str().expect("url"),
        fed["admin_token"].as_str().expect("token"),
    );
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let (s, q) = api
            .post(
                "/api/v1/queries",
                &json!({"dataset_id": "hospital-a.patients", "backend": "he_backend",
                        "sql": "SELECT SUM(age) FROM patients WHERE diagnosis = 'diabetes'"}),
            )
            .await
            .expect("create");
        assert_eq!(s, 201, "{q}");
        let id = q["id"].as_str().expect("id");
        let (s, run) = api
            .post(&format!("/api/v1/queries/{id}/execute"), &json!({}))
            .await
            .expect("execute");
        assert_eq!(s, 202, "{run}");
        // Let it get going (key generation runs on the blocking pool).
        tokio::time::sleep(Duration::from_millis(500)).await;
        run["id"].as_str().expect("run id").to_string()
    })
}

fn stops_cleanly_on(sig: &str, with_he_run: bool) {
    let dir = tempfile::tempdir().expect("tmp");
    let mut child = Command::new(BIN)
        .args(["serve", "--rows", "50", "--dir"])
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn");
    let started = Instant::now();
    let up = |d: &std::path::Path| {
        std::fs::read_to_string(d.join("federation.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .is_some()
    };
    while !up(dir.path()) {
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("the federation did not come up");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let run = with_he_run.then(|| start_he_run(dir.path()));

    let ok = Command::new("kill")
        .args(["-s", sig, &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(ok.success());
    let sent = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if sent.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("{sig}: prism-sim serve did not exit within 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0), "{sig}: {status:?}");
    eprintln!("{sig}: exited 0 after {:?}", sent.elapsed());

    let (store, restarted) =
        prism_coordinator::store::Store::open(&dir.path().join("coordinator.redb"))
            .expect("the coordinator's store opens after a clean stop");
    if let Some(run) = run {
        assert!(
            restarted.runs.is_empty() && restarted.rooms.is_empty(),
            "a clean stop leaves nothing in flight"
        );
        let run: prism_coordinator::model::RunRecord = store
            .get(prism_coordinator::store::RUNS, &run)
            .expect("read")
            .expect("stored");
        assert_eq!(
            run.status,
            prism_coordinator::model::RunStatus::Failed,
            "{run:?}"
        );
        assert_eq!(run.error_code.as_deref(), Some("coordinator_stopped"));
    }
    for org in ["hospital-a", "hospital-b", "hospital-c"] {
        prism_node::store::Store::open(&dir.path().join(format!("{org}.redb")))
            .unwrap_or_else(|e| panic!("{org}'s store: {e}"));
    }
}

#[test]
fn sim_serve_exits_zero_on_sigterm() {
    stops_cleanly_on("TERM", false);
}

#[test]
fn sim_serve_exits_zero_on_sigint_with_an_he_run_in_flight() {
    stops_cleanly_on("INT", true);
}
