//! The owner's CLI views against a running node: `status`, `budget-show`, `invitations` print
//! tables by default and the admin API's JSON with `--json`.

use std::process::Command;

use prism_common::certs::FederationCa;
use prism_common::identity::OrgId;
use prism_common::tls::TlsFiles;
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// Runs `prism-node ARGS` against `url`; (exit success, stdout, stderr).
async fn cli(url: &str, token: &str, args: &[&str]) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_prism-node"));
    cmd.args(args).args(["--admin-url", url, "--token", token]);
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("join")
        .expect("run prism-node");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

/// A node (with no coordinator) holding `patients` with a budget of ε = 2; (node, its token,
/// its stop signal).
async fn node_with_patients(
    dir: &std::path::Path,
) -> (prism_node::NodeHandle, String, CancellationToken) {
    let org = OrgId::new("hospital-a").expect("org");
    let ca = FederationCa::generate("test ca", 1).expect("ca");
    let leaf = ca.issue_org(&org, 1).expect("cert");
    let path = |f: &str| dir.join(f);
    std::fs::write(path("ca.pem"), &ca.pem.cert_pem).expect("write");
    std::fs::write(path("node.pem"), &leaf.cert_pem).expect("write");
    std::fs::write(path("node.key.pem"), &leaf.key_pem).expect("write");
    let token = "cli-test-token".to_string();
    let config = prism_node::NodeConfig {
        org,
        data_path: path("node.redb"),
        // Nobody listens there: the node keeps retrying in the background, which is fine.
        coordinator_addr: "127.0.0.1:9".parse().expect("addr"),
        coordinator_name: prism_common::identity::COORDINATOR_NAME.into(),
        peer_listen: "127.0.0.1:0".parse().expect("addr"),
        peer_advertise: None,
        admin_listen: "127.0.0.1:0".parse().expect("addr"),
        admin_token_file: None,
        admin_token: Some(token.clone()),
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
    };
    let shutdown = CancellationToken::new();
    let node = prism_node::start(config, shutdown.clone())
        .await
        .expect("node");
    let url = node.admin_url();
    // Audited changes: an import and a budget.
    let http = reqwest::Client::new();
    let columns = json!([{"name": "age", "type": "integer", "bounds": {"min": 0, "max": 100}}]);
    let resp = http
        .post(format!("{url}/v1/datasets"))
        .bearer_auth(&token)
        .json(&json!({"name": "patients", "columns": columns, "csv": "age\n30\n40\n"}))
        .send()
        .await
        .expect("import");
    assert!(resp.status().is_success(), "{:?}", resp.text().await);
    let resp = http
        .put(format!("{url}/v1/datasets/patients/budget"))
        .bearer_auth(&token)
        .json(&json!({"epsilon": 2.0, "delta": 1e-5}))
        .send()
        .await
        .expect("budget");
    assert!(resp.status().is_success(), "{:?}", resp.text().await);
    (node, token, shutdown)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_views_print_tables_by_default_and_json_on_request() {
    let dir = tempfile::tempdir().expect("dir");
    let (node, token, shutdown) = node_with_patients(dir.path()).await;
    let url = node.admin_url();

    let (ok, out, err) = cli(&url, &token, &["budget-show"]).await;
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "a header and one dataset:\n{out}");
    let head: Vec<&str> = lines[0]
        .split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(head.len(), row.len(), "{out}");
    let cell = |name: &str| row[head.iter().position(|h| *h == name).expect(name)];
    assert_eq!(
        (
            cell("dataset"),
            cell("ε total"),
            cell("ε spent"),
            cell("ε left")
        ),
        ("patients", "2", "0", "2")
    );

    let (ok, out, err) = cli(&url, &token, &["budget-show", "patients", "--json"]).await;
    assert!(ok, "{err}");
    let shown: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    let api: serde_json::Value = reqwest::Client::new()
        .get(format!("{url}/v1/datasets/patients/budget"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("budget")
        .json()
        .await
        .expect("json");
    assert_eq!(shown, json!([{"dataset": "patients", "budget": api}]));
    let (ok, _, err) = cli(&url, &token, &["budget-show", "nope"]).await;
    assert!(!ok && err.contains("dataset nope does not exist"), "{err}");

    let (ok, out, err) = cli(&url, &token, &["status"]).await;
    assert!(ok, "{err}");
    assert!(out.contains("Organization    hospital-a"), "{out}");
    assert!(
        out.contains("(not connected)") && out.contains("Pending rooms   0"),
        "{out}"
    );
    let (ok, out, err) = cli(&url, &token, &["status", "--json"]).await;
    assert!(ok, "{err}");
    let st: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(
        (&st["org"], &st["connected"]),
        (&json!("hospital-a"), &json!(false))
    );

    let (ok, out, err) = cli(&url, &token, &["invitations"]).await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "0 invitation(s), 0 pending");
    let (ok, out, _) = cli(&url, &token, &["invitations", "--json"]).await;
    assert!(ok && serde_json::from_str::<serde_json::Value>(&out).expect("JSON") == json!([]));
    shutdown.cancel();
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_add_and_refresh_register_a_csv_file_in_place() {
    let dir = tempfile::tempdir().expect("dir");
    let (node, token, shutdown) = node_with_patients(dir.path()).await;
    let url = node.admin_url();
    let schema = dir.path().join("visits.schema.toml");
    std::fs::write(
        &schema,
        "[[columns]]\nname = \"age\"\ntype = \"integer\"\nbounds = { min = 0, max = 100 }\n",
    )
    .expect("write");
    let csv = dir.path().join("visits.csv");
    std::fs::write(&csv, "age\n30\n40\n50\n").expect("write");
    let (s, c) = (schema.to_string_lossy(), csv.to_string_lossy());
    let (ok, out, err) = cli(
        &url,
        &token,
        &[
            "source", "add", "--name", "visits", "--schema", &s, "--csv", &c,
        ],
    )
    .await;
    assert!(ok, "{err}");
    assert!(
        out.contains("\"rows\": 3") && out.contains("\"csv\""),
        "{out}"
    );

    std::fs::write(&csv, "age\n30\n40\n50\n60\n").expect("write");
    let (ok, out, err) = cli(&url, &token, &["source", "refresh", "visits"]).await;
    assert!(ok && out.contains("\"rows\": 4"), "{out}{err}");

    // Neither a file nor a database: clap refuses before anything is sent.
    let (ok, _, err) = cli(
        &url,
        &token,
        &["source", "add", "--name", "x", "--schema", &s],
    )
    .await;
    assert!(!ok && err.contains("--csv"), "{err}");
    // The file is gone: the refresh names it and fails; the previous data stays.
    std::fs::remove_file(&csv).expect("remove");
    let (ok, out, err) = cli(&url, &token, &["source", "refresh", "visits"]).await;
    assert!(
        !ok && err.contains("502")
            && out.contains("source_unavailable")
            && out.contains("visits.csv"),
        "{out}{err}"
    );
    let (ok, out, err) = cli(&url, &token, &["datasets"]).await;
    assert!(ok, "{err}");
    let list: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    let visits = list
        .as_array()
        .and_then(|a| a.iter().find(|d| d["name"] == "visits"))
        .expect("visits");
    assert_eq!(
        (&visits["rows"], &visits["source"]["kind"]),
        (&json!(4), &json!("csv"))
    );
    shutdown.cancel();
    node.shutdown().await;
}
