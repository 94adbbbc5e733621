//! The `prism-node` CLI against a real node: `audit --verify` must fail (exit non-zero) when the
//! node's audit chain is broken or its budget ledger was edited, so scripts and cron jobs
//! notice; a node whose ledger was edited while it was stopped refuses to start.

use std::process::Command;

use prism_common::audit::store::AUDIT;
use prism_common::certs::FederationCa;
use prism_common::identity::OrgId;
use prism_common::tls::TlsFiles;
use redb::{ReadableTable, ReadableTableMetadata};
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// Runs `prism-node audit --verify` against `url`; (exit success, stdout).
fn verify(url: &str, token: &str) -> (bool, String) {
    prism_node(&["audit", "--verify", "--admin-url", url, "--token", token])
}

/// Runs `prism-node` with `args`; (exit success, stdout and stderr).
fn prism_node(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_prism-node"))
        .args(args)
        .output()
        .expect("run prism-node");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// A node configuration in `dir` with fresh certificates and the admin token `token`.
fn node_config(dir: &std::path::Path, token: &str) -> prism_node::NodeConfig {
    let org = OrgId::new("hospital-a").expect("org");
    let ca = FederationCa::generate("test ca", 1).expect("ca");
    let leaf = ca.issue_org(&org, 1).expect("cert");
    let path = |f: &str| dir.join(f);
    std::fs::write(path("ca.pem"), &ca.pem.cert_pem).expect("write");
    std::fs::write(path("node.pem"), &leaf.cert_pem).expect("write");
    std::fs::write(path("node.key.pem"), &leaf.key_pem).expect("write");
    prism_node::NodeConfig {
        org,
        data_path: path("node.redb"),
        // Nobody listens there: the node keeps retrying in the background, which is fine.
        coordinator_addr: "127.0.0.1:9".parse().expect("addr"),
        coordinator_name: prism_common::identity::COORDINATOR_NAME.into(),
        peer_listen: "127.0.0.1:0".parse().expect("addr"),
        peer_advertise: None,
        admin_listen: "127.0.0.1:0".parse().expect("addr"),
        admin_token_file: None,
        admin_token: Some(token.to_string()),
        tls: TlsFiles {
            ca_cert: path("ca.pem"),
            cert: path("node.pem"),
            key: path("node.key.pem"),
            crl: None,
        },
        policy: prism_node::Policy::default(),
        max_frame: prism_common::wire::DEFAULT_MAX_FRAME,
        max_import_mib: 8,
        idle_timeout_ms: prism_common::tls::default_idle_timeout_ms(),
    }
}

/// Audited changes through the admin API: an import of `patients` and a budget of 2 ε.
async fn import_with_budget(url: &str, token: &str) {
    let http = reqwest::Client::new();
    let columns = json!([{"name": "age", "type": "integer", "bounds": {"min": 0, "max": 100}}]);
    let resp = http
        .post(format!("{url}/v1/datasets"))
        .bearer_auth(token)
        .json(&json!({"name": "patients", "columns": columns, "csv": "age\n30\n40\n"}))
        .send()
        .await
        .expect("import");
    assert!(resp.status().is_success(), "{:?}", resp.text().await);
    let resp = http
        .put(format!("{url}/v1/datasets/patients/budget"))
        .bearer_auth(token)
        .json(&json!({"epsilon": 2.0, "delta": 1e-5}))
        .send()
        .await
        .expect("budget");
    assert!(resp.status().is_success(), "{:?}", resp.text().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_exits_non_zero_on_a_broken_chain() {
    let dir = tempfile::tempdir().expect("dir");
    let token = "cli-test-token".to_string();
    let config = node_config(dir.path(), &token);
    let shutdown = CancellationToken::new();
    let node = prism_node::start(config, shutdown.clone())
        .await
        .expect("node");
    let url = node.admin_url();
    import_with_budget(&url, &token).await;

    let (ok, out) = tokio::task::spawn_blocking({
        let (url, token) = (url.clone(), token.clone());
        move || verify(&url, &token)
    })
    .await
    .expect("join");
    assert!(ok, "an intact chain verifies: {out}");

    // Edit the first entry in place, as someone with the file could.
    {
        let db = node.state.store.db();
        let txn = db.begin_write().expect("txn");
        {
            let mut t = txn.open_table(AUDIT).expect("table");
            assert!(t.len().expect("len") >= 2, "the node audited the changes");
            let (seq, text) = {
                let (k, v) = t.first().expect("read").expect("an entry");
                (k.value(), v.value().to_string())
            };
            let mut entry: serde_json::Value = serde_json::from_str(&text).expect("entry");
            entry["actor"] = json!("mallory");
            t.insert(seq, entry.to_string().as_str()).expect("tamper");
        }
        txn.commit().expect("commit");
    }
    let (ok, out) = tokio::task::spawn_blocking({
        let (url, token) = (url.clone(), token.clone());
        move || verify(&url, &token)
    })
    .await
    .expect("join");
    assert!(!ok, "a broken chain must fail the command: {out}");
    assert!(out.contains("\"valid\": false"), "{out}");
    shutdown.cancel();
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ledger_edited_while_stopped_is_refused_at_start_and_by_verify() {
    let dir = tempfile::tempdir().expect("dir");
    let token = "cli-test-token".to_string();
    let config = node_config(dir.path(), &token);
    let file = config.data_path.clone();
    let shutdown = CancellationToken::new();
    let node = prism_node::start(config.clone(), shutdown.clone())
        .await
        .expect("node");
    let url = node.admin_url();
    import_with_budget(&url, &token).await;
    // Spend the whole 2 ε, as a release would.
    let store = node.state.store.clone();
    let r = store
        .reserve("patients", 2.0, 0.0, "run-1")
        .expect("reserve");
    store
        .settle(&r.id, Some((2.0, 0.0)), "released", serde_json::Value::Null)
        .expect("charge");
    drop(store);
    let (ok, out) = tokio::task::spawn_blocking({
        let (url, token) = (url.clone(), token.clone());
        move || verify(&url, &token)
    })
    .await
    .expect("join");
    assert!(ok && out.contains("\"budgets_checked\": 1"), "{out}");
    shutdown.cancel();
    node.shutdown().await;

    // The stopped node's file verifies as it is.
    let file_arg = file.to_str().expect("utf-8 path").to_string();
    let (ok, out) = prism_node(&["audit", "--verify", "--store", &file_arg]);
    assert!(ok, "an untouched store verifies: {out}");

    // Spent 2.0 → 1.0 ε in the budget record, as someone with the file could.
    {
        let db = redb::Database::open(&file).expect("open");
        let txn = db.begin_write().expect("txn");
        {
            let budgets: redb::TableDefinition<&str, &str> = redb::TableDefinition::new("budgets");
            let mut t = txn.open_table(budgets).expect("table");
            let text = t
                .get("patients")
                .expect("get")
                .expect("budget")
                .value()
                .to_string();
            let mut b: serde_json::Value = serde_json::from_str(&text).expect("budget");
            assert_eq!(b["spent_epsilon"], json!(2_000_000_000_000u64), "{text}");
            b["spent_epsilon"] = json!(1_000_000_000_000u64);
            t.insert("patients", b.to_string().as_str())
                .expect("tamper");
        }
        txn.commit().expect("commit");
    }
    let (ok, out) = prism_node(&["audit", "--verify", "--store", &file_arg]);
    assert!(!ok, "an edited ledger must fail the command: {out}");
    assert!(
        out.contains("\"valid\": false") && out.contains("does not match"),
        "{out}"
    );

    let err = match prism_node::start(config, CancellationToken::new()).await {
        Ok(_) => panic!("a node with an edited ledger must refuse to start"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains("dataset patients") && err.contains("refuses to serve"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_columnar_streams_a_csv_file_into_a_population() {
    let dir = tempfile::tempdir().expect("dir");
    let token = "cli-test-token".to_string();
    let config = node_config(dir.path(), &token);
    let shutdown = CancellationToken::new();
    let node = prism_node::start(config, shutdown.clone())
        .await
        .expect("node");
    let url = node.admin_url();
    let csv = dir.path().join("visits.csv");
    let mut text = String::from("patient_id,age\n");
    for i in 0..30_000 {
        text.push_str(&format!("{},{}\n", i / 3, i % 90));
    }
    std::fs::write(&csv, text).expect("csv");
    let schema = dir.path().join("visits.schema.toml");
    std::fs::write(
        &schema,
        "[[columns]]\nname = \"patient_id\"\ntype = \"integer\"\nprivacy_unit = { max_rows = 2 }\n\n\
         [[columns]]\nname = \"age\"\ntype = \"integer\"\nbounds = { min = 0, max = 110 }\n",
    )
    .expect("schema");
    let (ok, out) = tokio::task::spawn_blocking({
        let (url, token) = (url.clone(), token.clone());
        let (csv, schema) = (csv.display().to_string(), schema.display().to_string());
        move || {
            prism_node(&[
                "--admin-url",
                &url,
                "--token",
                &token,
                "import",
                "--name",
                "visits",
                "--schema",
                &schema,
                "--csv",
                &csv,
                "--columnar",
                "--population",
                "clinic",
            ])
        }
    })
    .await
    .expect("join");
    assert!(ok, "{out}");
    assert!(
        out.contains("\"rows\": 30000") && out.contains("columnar"),
        "{out}"
    );
    let meta = node.state.store.dataset_meta("visits").expect("meta");
    assert_eq!(meta.population.as_deref(), Some("clinic"));
    assert!(
        node.state.remote("visits").is_some(),
        "served as a streamed source"
    );
    assert!(node.state.dataset("visits").is_none(), "not held in memory");
    shutdown.cancel();
    node.shutdown().await;
}
