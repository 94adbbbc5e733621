//! The web console end to end: a real headless Chromium (driven over WebDriver by fantoccini
//! through chromedriver) against an in-process federation.
//!
//! The browser is Debian's `chromium` + `chromium-driver` (see `support/browser.rs`: installed
//! with apt-get when missing, else a clear failure).
//!
//! Every expectation compares what the page shows with what the API itself answers for the same
//! request, so the test checks that the console shows the API's words, not strings of its own.
//! Set `PRISM_CONSOLE_SCREENSHOTS=<dir>` to keep PNG screenshots of each screen.

use std::time::{Duration, Instant};

use anyhow::Context;
use fantoccini::Locator;
use prism_common::backend::BackendId;
use prism_node::Policy;
use prism_tests::{Api, Federation, FederationSpec};
use serde_json::{Value, json};

#[path = "support/browser.rs"]
mod browser;

use browser::{Page, Session, WAIT};

/// JSON equality as a browser sees it: numbers by value (JavaScript writes `0.0` as `0`).
fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_json(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w)))
        }
        _ => a == b,
    }
}

/// What the API says about `body` at `POST /api/v1/queries/validate`.
async fn api_validation(api: &Api, body: &Value) -> anyhow::Result<Value> {
    let (status, v) = api.post("/api/v1/queries/validate", body).await?;
    anyhow::ensure!(status == 200, "validate answered {status}: {v}");
    Ok(v)
}

async fn walk_console(f: &Federation, page: &Page) -> anyhow::Result<()> {
    let analyst = f.analyst();
    let url = f.api_url();
    page.c.goto(&format!("{url}/")).await?;
    page.wait_text("#signin-panel h1", "the sign-in form", |t| t == "Sign in")
        .await?;

    // A bad token is refused with the API's own words, and the console stays signed out.
    let bad = "prism_not-a-valid-token";
    let (status, refusal) = Api::new(&url, bad).get("/api/v1/backends").await?;
    assert_eq!(status, 401, "{refusal}");
    let expected = refusal["error"]["message"]
        .as_str()
        .context("401 message")?;
    page.sign_in(bad).await?;
    page.wait_text("#signin-error", "the bad-token refusal", |t| t == expected)
        .await?;
    assert_eq!(page.visible_text("#app").await?, None, "signed in anyway");
    page.shot("01-bad-token").await;

    // The analyst signs in and sees every backend with the registry's status and words.
    page.sign_in(&f.analyst_token).await?;
    let (_, backends) = analyst.get("/api/v1/backends").await?;
    let backends = backends.as_array().context("backends")?.clone();
    assert_eq!(backends.len(), 4);
    page.wait_count("#backends .backend-card", 4).await?;
    for b in &backends {
        let id = b["id"].as_str().context("id")?;
        let card = format!("#backends .backend-card[data-backend='{id}']");
        let status = page.visible_text(&format!("{card} .badge")).await?;
        assert_eq!(status.as_deref(), b["status"].as_str(), "status of {id}");
        let expected = match id {
            "dp_sandbox" | "he_backend" => "functional",
            "mpc_backend" => "semi-honest",
            _ => "not available",
        };
        assert_eq!(status.as_deref(), Some(expected), "{id}");
        for (field, css) in [
            ("description", ".description"),
            ("performance", ".performance"),
            ("privacy_guarantee", ".guarantee"),
        ] {
            let shown = page.visible_text(&format!("{card} {css}")).await?;
            assert_eq!(shown.as_deref(), b[field].as_str(), "{field} of {id}");
        }
    }
    for (id, word) in [
        ("dp_sandbox", "functional"),
        ("enclave_backend", "not available"),
    ] {
        let css = format!("[data-backend='{id}'] .badge");
        assert_eq!(page.visible_text(&css).await?.as_deref(), Some(word));
    }

    // The query form: datasets come from the catalog.
    page.wait_count("#dataset option[value='hospital-a.patients']", 1)
        .await?;
    page.c
        .find(Locator::Css("#dataset"))
        .await?
        .select_by_value("hospital-a.patients")
        .await?;
    page.click("#backends .backend-card[data-backend='dp_sandbox']")
        .await?;

    // Invalid SQL: the API's message, word for word.
    let bad_sql = "SELECT COUNT(*) FROM patients WHERE";
    let v = api_validation(
        &analyst,
        &json!({"dataset_id": "hospital-a.patients", "sql": bad_sql, "backend": "dp_sandbox", "epsilon": 0.5}),
    )
    .await?;
    assert_eq!(v["valid"], false, "{v}");
    let message = v["errors"][0]["message"].as_str().context("message")?;
    page.type_into("#sql", bad_sql).await?;
    page.wait_text(
        "#validation[data-state='invalid'] .message",
        "the invalid-SQL message",
        |t| t == message,
    )
    .await?;
    page.shot("02-invalid-sql").await;

    // Valid SQL: the estimated ε the holding node computes.
    let sql = "SELECT COUNT(*) FROM patients WHERE age >= 50";
    let v = api_validation(
        &analyst,
        &json!({"dataset_id": "hospital-a.patients", "sql": sql, "backend": "dp_sandbox", "epsilon": 0.5}),
    )
    .await?;
    let estimate = v["estimated_epsilon"].as_f64().context("estimate")?;
    assert!(estimate > 0.0, "{v}");
    page.type_into("#sql", sql).await?;
    let shown = page
        .wait_text(
            "#validation[data-state='valid'] #estimated-epsilon",
            "the ε estimate",
            |_| true,
        )
        .await?;
    let shown: f64 = shown.parse().context("estimated ε is a number")?;
    assert!((shown - estimate).abs() < 1e-6, "{shown} vs {estimate}");
    // And the release mode the holding node applies, as the API says it.
    assert_eq!(v["release_mode"], "dp", "{v}");
    page.wait_text(
        "#validation[data-state='valid'] #release-mode[data-mode='dp']",
        "the release mode",
        |t| t.contains("differential-privacy"),
    )
    .await?;

    // Run it: a completed run with a result table and the ε the node charged.
    page.click("#run-query").await?;
    page.wait_count("#last-run .run[data-status='completed']", 1)
        .await?;
    let (_, runs) = analyst.get("/api/v1/runs").await?;
    let run = runs
        .as_array()
        .and_then(|r| r.first())
        .context("the API lists the run")?
        .clone();
    assert_eq!(run["status"], "completed", "{run}");
    let run_id = run["id"].as_str().context("run id")?;
    let card = format!("#last-run .run[data-run-id='{run_id}']");
    assert_eq!(
        page.count(&card).await?,
        1,
        "the console shows the API's run"
    );
    let count: f64 = page
        .visible_text(&format!("{card} table.result tbody td"))
        .await?
        .context("result cell")?
        .parse()
        .context("the count is a number")?;
    assert_eq!(Some(count), run["result"]["rows"][0][0].as_f64());
    let eps: f64 = page
        .visible_text(&format!("{card} .metric.epsilon strong"))
        .await?
        .context("ε consumed")?
        .parse()?;
    assert!(eps > 0.0 && (eps - run["epsilon_consumed"].as_f64().unwrap_or(-1.0)).abs() < 1e-6);
    let time = page
        .visible_text(&format!("{card} .metric.time strong"))
        .await?
        .context("time")?;
    assert!(time.ends_with(" ms"), "{time}");
    // The proof is there, collapsed, and is the API's JSON.
    page.click(&format!("{card} details.proof summary")).await?;
    let proof = page
        .visible_text(&format!("{card} details.proof pre"))
        .await?
        .context("proof")?;
    let proof: Value = serde_json::from_str(&proof).context("the proof is JSON")?;
    assert!(
        same_json(&proof, &run["proof_artifacts"]),
        "the page shows {proof}, the API {}",
        run["proof_artifacts"]
    );
    page.shot("03-completed-run").await;

    // The enclave backend: refused at validation and at execution, with the API's message.
    let enclave = prism_common::backend::ENCLAVE_MESSAGE;
    page.click("#backends .backend-card[data-backend='enclave_backend']")
        .await?;
    page.wait_text(
        "#validation[data-state='invalid'] .message",
        "the enclave refusal at validation",
        |t| t == enclave,
    )
    .await?;
    page.click("#run-query").await?;
    page.wait_text("#run-error", "the enclave refusal at execution", |t| {
        t == enclave
    })
    .await?;
    page.shot("04-enclave").await;

    // Runs: both runs, as the API lists them, the refused one with its error message.
    page.click("#tab-runs").await?;
    let (_, runs) = analyst.get("/api/v1/runs").await?;
    let n = runs.as_array().map_or(0, Vec::len);
    assert_eq!(n, 2, "{runs}");
    page.wait_count("#runs-list .run", n).await?;
    assert_eq!(
        page.count("#runs-list .run[data-status='completed']")
            .await?,
        1
    );
    page.wait_text(
        "#runs-list .run[data-status='failed'] .run-error",
        "the failed run's error",
        |t| t == enclave,
    )
    .await?;
    page.shot("05-runs").await;

    // Data rooms with every participant's standing.
    rooms_in_console(f, page).await?;

    // The audit log is admin-only: the analyst sees the API's 403 message.
    let (status, denied) = analyst.get("/api/v1/audit").await?;
    assert_eq!(status, 403, "{denied}");
    let denied = denied["error"]["message"].as_str().context("403 message")?;
    page.click("#tab-audit").await?;
    page.wait_text("#audit-error", "the audit 403", |t| t == denied)
        .await?;
    page.shot("08-audit-denied").await;

    // An admin sees the log and can verify its chain.
    page.click("#signout").await?;
    page.sign_in(&f.admin_token).await?;
    page.wait_count("#audit-list tbody tr", 1).await?;
    page.click("#verify-audit").await?;
    page.wait_text("#audit-verify", "the chain check", |t| {
        t.starts_with("Hash chain verified")
    })
    .await?;
    page.shot("09-audit-admin").await;

    assert_eq!(
        page.visible_text("#fatal").await?,
        None,
        "the page hit a JS error"
    );
    Ok(())
}

/// The data-rooms tab: a room created through the API, shown pending with each participant's
/// standing and no Execute button, then — once both nodes attested — ready with one, and
/// executed from the console.
async fn rooms_in_console(f: &Federation, page: &Page) -> anyhow::Result<()> {
    let analyst = f.analyst();
    page.click("#tab-rooms").await?;
    let (status, room) = analyst
        .post(
            "/api/v1/data_rooms",
            &json!({
                "name": "Diabetes across hospitals",
                "description": "How many patients have diabetes, across two hospitals",
                "query_text": "SELECT COUNT(*) FROM patients WHERE diagnosis = 'diabetes'",
                "backend": "mpc_backend",
                "participants": ["hospital-a", "hospital-b"],
                "epsilon": 0.5,
            }),
        )
        .await?;
    anyhow::ensure!(
        status == 201,
        "creating a data room answered {status}: {room}"
    );
    let id = room["id"].as_str().context("room id")?.to_string();
    let card = format!("#rooms-list .room[data-room-id='{id}']");
    page.click("#refresh-rooms").await?;
    page.wait_count(&card, 1).await?;
    let shown = page.visible_text(&format!("{card} .head .badge")).await?;
    assert_eq!(shown.as_deref(), room["status"].as_str());
    for p in room["participants"].as_array().context("participants")? {
        let org = p["organization"].as_str().context("organization")?;
        let css = format!("{card} tr[data-organization='{org}'] .badge");
        assert_eq!(
            page.visible_text(&css).await?.as_deref(),
            p["status"].as_str(),
            "{org}"
        );
    }
    assert_eq!(room["status"], "pending", "{room}");
    assert_eq!(page.count(&format!("{card} .execute-room")).await?, 0);
    page.shot("06-room-pending").await;

    // Both hospitals attest on their own nodes; the room turns ready and offers Execute.
    for org in ["hospital-a", "hospital-b"] {
        let node = f.node_admin(org)?;
        let path = format!("/v1/invitations/{id}/attest");
        let deadline = Instant::now() + WAIT;
        loop {
            let (s, body) = node.post(&path, &json!({})).await?;
            if s == 200 {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{org} could not attest: {s} {body}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, r) = analyst.get(&format!("/api/v1/data_rooms/{id}")).await?;
        if r["status"] == "ready" {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the room did not become ready: {r}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    page.click("#refresh-rooms").await?;
    page.wait_count(&format!("{card}[data-status='ready'] .execute-room"), 1)
        .await?;
    for org in ["hospital-a", "hospital-b"] {
        let css = format!("{card} tr[data-organization='{org}'] .badge");
        assert_eq!(page.visible_text(&css).await?.as_deref(), Some("attested"));
    }
    page.click(&format!("{card} .execute-room")).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        let st = page
            .c
            .execute(
                "const e = document.querySelector(arguments[0]); return e && e.dataset.status;",
                vec![json!(card)],
            )
            .await?;
        if let Some(s @ ("completed" | "failed")) = st.as_str() {
            break s.to_string();
        }
        anyhow::ensure!(Instant::now() < deadline, "the room did not finish: {st}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let (_, r) = analyst.get(&format!("/api/v1/data_rooms/{id}")).await?;
    assert_eq!(Some(status.as_str()), r["status"].as_str(), "{r}");
    assert_eq!(status, "completed", "{r}");
    let count: f64 = page
        .visible_text(&format!("{card} table.result tbody td"))
        .await?
        .context("room result")?
        .parse()?;
    assert_eq!(Some(count), r["result"]["rows"][0][0].as_f64());
    page.shot("07-room-completed").await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_in_a_real_browser_shows_what_the_api_answers() {
    let policy = Policy {
        backends: vec![
            BackendId::DpSandbox,
            BackendId::HeBackend,
            BackendId::MpcBackend,
        ],
        ..Policy::default()
    };
    let f = Federation::start(FederationSpec {
        rows_per_org: 2_000,
        policy,
        ..Default::default()
    })
    .await
    .expect("federation");
    let session = Session::start(None).await.expect("a browser");
    let outcome = walk_console(&f, &session.page).await;
    f.shutdown().await;
    session.finish(outcome).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_assets_have_content_types_and_a_strict_csp() {
    let f = Federation::start(FederationSpec {
        rows_per_org: 0,
        ..Default::default()
    })
    .await
    .expect("federation");
    let http = reqwest::Client::new();
    for (path, ty) in [
        ("/", "text/html"),
        ("/console.js", "text/javascript"),
        ("/console.css", "text/css"),
        ("/favicon.svg", "image/svg+xml"),
    ] {
        let resp = http
            .get(format!("{}{path}", f.api_url()))
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), 200, "{path}");
        let h = resp.headers();
        let got = h
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        assert!(got.starts_with(ty), "{path}: content-type {got}");
        let csp = h
            .get("content-security-policy")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        assert!(
            csp.contains("default-src 'self'") && !csp.contains("unsafe-inline"),
            "{path}: CSP {csp:?}"
        );
        assert_eq!(
            h.get("x-content-type-options")
                .and_then(|v| v.to_str().ok()),
            Some("nosniff")
        );
    }
    f.shutdown().await;
}
