//! The API contract: schemathesis (from PyPI, in a throwaway virtualenv the test creates)
//! generates requests from the OpenAPI document the coordinator serves and checks every answer
//! against it, on a live federation: no 5xx, and every status, content type and body is one the
//! document declares. The deep routes get real ids (a dataset, a query, a run, a data room) so
//! they are exercised past their 404. Bounded: a fixed number of examples per operation and a
//! time budget for the whole run.
//!
//! Needs `python3` with the `venv` module and access to PyPI.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use prism_tests::{Federation, FederationSpec};
use serde_json::{Value, json};

/// The schemathesis release this contract is checked with.
const SCHEMATHESIS: &str = "schemathesis==4.32.5";
/// Examples per operation and phase.
const EXAMPLES: u32 = 25;
/// The whole schemathesis run's time budget.
const MAX_SECONDS: u64 = 150;

/// The checks that make up "answers as documented".
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
                      response_schema_conformance,response_headers_conformance";

fn run(cmd: &mut Command, what: &str) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{what} failed:\n{text}");
    text
}

/// A virtualenv in `dir` with schemathesis installed; returns the `schemathesis` executable.
fn install_schemathesis(dir: &Path) -> std::path::PathBuf {
    let venv = dir.join("venv");
    run(
        Command::new("python3").args(["-m", "venv"]).arg(&venv),
        "python3 -m venv (install python3 and python3-venv)",
    );
    run(
        Command::new(venv.join("bin/pip")).args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            SCHEMATHESIS,
        ]),
        "pip install schemathesis",
    );
    venv.join("bin/schemathesis")
}

/// Ids for the routes with a path parameter, created through the API.
async fn fixtures(f: &Federation) -> Value {
    let analyst = f.analyst();
    let (query, status, run) = analyst
        .run_query(
            "hospital-a.patients",
            "SELECT COUNT(*) FROM patients WHERE age > 30",
            "dp_sandbox",
            Some(0.1),
        )
        .await
        .expect("run a query");
    assert_eq!(status, 200, "{run}");
    let (s, room) = analyst
        .post(
            "/api/v1/data_rooms",
            &json!({
                "name": "contract",
                "query_text": "SELECT COUNT(*) FROM patients",
                "participants": ["hospital-a", "hospital-b"],
                "epsilon": 0.1,
            }),
        )
        .await
        .expect("create a room");
    assert_eq!(s, 201, "{room}");
    json!({
        "dataset": "hospital-a.patients",
        "query": query["id"],
        "run": run["id"],
        "room": room["id"],
    })
}

/// schemathesis.toml: the analyst's token on every request, and a real id per deep route.
fn config(token: &str, ids: &Value) -> String {
    let id = |k: &str| ids[k].as_str().expect("an id").to_string();
    let mut toml = format!(
        "headers = {{ Authorization = \"Bearer {token}\" }}\n\
         [generation]\nmax-examples = {EXAMPLES}\n\n"
    );
    for (path, key) in [
        ("/api/v1/datasets/{id}", "dataset"),
        ("/api/v1/queries/{id}", "query"),
        ("/api/v1/queries/{id}/execute", "query"),
        ("/api/v1/runs/{id}", "run"),
        ("/api/v1/data_rooms/{id}", "room"),
        ("/api/v1/data_rooms/{id}/execute", "room"),
        ("/api/v1/data_rooms/{id}/cancel", "room"),
    ] {
        toml.push_str(&format!(
            "[[operations]]\ninclude-path = \"{path}\"\nparameters = {{ \"path.id\" = \"{}\" }}\n\n",
            id(key)
        ));
    }
    toml
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_served_openapi_document_is_the_contract() {
    let dir = tempfile::tempdir().expect("dir");
    let install = {
        let dir = dir.path().to_path_buf();
        tokio::task::spawn_blocking(move || install_schemathesis(&dir))
    };
    let f = Federation::start(FederationSpec {
        orgs: vec!["hospital-a".into(), "hospital-b".into()],
        rows_per_org: 200,
        ..Default::default()
    })
    .await
    .expect("federation");
    let ids = fixtures(&f).await;
    let schemathesis = install.await.expect("join");
    let cfg = dir.path().join("schemathesis.toml");
    std::fs::write(&cfg, config(&f.analyst().token, &ids)).expect("config");
    let report = dir.path().join("junit.xml");
    let url = f.api_url();
    let started = Instant::now();
    let out = tokio::task::spawn_blocking({
        let report = report.clone();
        move || {
            Command::new(schemathesis)
                .arg("--config-file")
                .arg(&cfg)
                .args([
                    "run",
                    &format!("{url}/api/v1/openapi.json"),
                    "--url",
                    &url,
                    "--checks",
                    CHECKS,
                    "--phases",
                    "examples,coverage,fuzzing",
                    "--max-time",
                    &MAX_SECONDS.to_string(),
                    "--workers",
                    "2",
                    "--seed",
                    "7",
                    "--request-timeout",
                    "30",
                    "--no-color",
                    "--report",
                    "junit",
                    "--report-junit-path",
                ])
                .arg(&report)
                // The console is not part of the API contract (static files).
                .args(["--exclude-tag", "console"])
                .output()
                .expect("run schemathesis")
        }
    })
    .await
    .expect("join");
    let elapsed = started.elapsed();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    println!("{text}");
    println!("schemathesis took {elapsed:?}");
    assert!(
        elapsed < Duration::from_secs(MAX_SECONDS + 60),
        "the run outgrew its budget"
    );
    // Everything generated reached the server and was checked.
    let junit = std::fs::read_to_string(&report).expect("junit report");
    assert!(
        junit.contains("<testcase"),
        "no operation was tested:\n{text}"
    );
    assert!(
        out.status.success() && !junit.contains("<failure") && !junit.contains("<error"),
        "schemathesis found responses that break the document (exit {:?}):\n{text}",
        out.status.code()
    );
    // The federation still answers after the run.
    let (s, h) = f.admin().get("/healthz").await.expect("health");
    assert_eq!(s, 200, "{h}");
    f.shutdown().await;
}
