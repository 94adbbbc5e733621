//! `prism-sim serve` (the real binary) stops cleanly on SIGTERM and SIGINT: exit status 0 within
//! seconds, and every store of the federation closed and flushed.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_prism-sim");

fn stops_cleanly_on(sig: &str) {
    let dir = tempfile::tempdir().expect("tmp");
    let mut child = Command::new(BIN)
        .args(["serve", "--rows", "50", "--dir"])
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn");
    let started = Instant::now();
    while !dir.path().join("federation.json").exists() {
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("the federation did not come up");
        }
        std::thread::sleep(Duration::from_millis(50));
    }

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

    prism_coordinator::store::Store::open(&dir.path().join("coordinator.redb"))
        .expect("the coordinator's store opens after a clean stop");
    for org in ["hospital-a", "hospital-b", "hospital-c"] {
        prism_node::store::Store::open(&dir.path().join(format!("{org}.redb")))
            .unwrap_or_else(|e| panic!("{org}'s store: {e}"));
    }
}

#[test]
fn sim_serve_exits_zero_on_sigterm() {
    stops_cleanly_on("TERM");
}

#[test]
fn sim_serve_exits_zero_on_sigint() {
    stops_cleanly_on("INT");
}
