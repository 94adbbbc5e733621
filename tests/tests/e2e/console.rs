//! The web console end to end: a real headless Chromium (driven over WebDriver by fantoccini
//! through chromedriver) against an in-process federation.
//!
//! The browser is Debian's `chromium` + `chromium-driver` (see `browser.rs`: installed
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

use crate::browser::{Page, Session, WAIT};

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

    // The analyst signs in; the header names them and their role as the API knows them.
    page.sign_in(&f.analyst_token).await?;
    let (_, me) = analyst.get("/api/v1/me").await?;
    page.wait_text("#session-user", "the user's name", |t| {
        Some(t) == me["name"].as_str()
    })
    .await?;
    assert_eq!(
        page.visible_text("#session-role").await?.as_deref(),
        me["role"].as_str()
    );
    assert_eq!(me["role"], "analyst", "{me}");
    // The token is kept in the tab's session storage: a reload stays signed in.
    page.c.refresh().await?;
    page.wait_text("#session-user", "the user's name after a reload", |t| {
        Some(t) == me["name"].as_str()
    })
    .await?;

    // Tabs follow the arrow keys.
    page.c
        .find(Locator::Css("#tab-query"))
        .await?
        .send_keys(&fantoccini::key::Key::Right.to_string())
        .await?;
    page.wait_count("#tab-runs[aria-selected='true']", 1)
        .await?;
    page.c
        .find(Locator::Css("#tab-runs"))
        .await?
        .send_keys(&fantoccini::key::Key::Left.to_string())
        .await?;
    page.wait_count("#tab-query[aria-selected='true']", 1)
        .await?;

    // Every backend with the registry's status and words.
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

    // The schema shows the allowed values of public-key columns, and the budget the owner
    // publishes, as the catalog says.
    let (_, ds) = analyst.get("/api/v1/datasets/hospital-a.patients").await?;
    let keys = ds["columns"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "diagnosis"))
        .and_then(|c| c["public_keys"].as_array())
        .context("diagnosis keys")?
        .iter()
        .filter_map(Value::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    page.wait_text(
        "#dataset-columns tr[data-column='diagnosis'] .domain",
        "the diagnosis values",
        |t| t == format!("values: {keys}"),
    )
    .await?;
    let before = ds["budget"]["remaining_epsilon"]
        .as_f64()
        .context("the catalog publishes the budget")?;
    assert_eq!(shown_budget(page).await?, Some(before));

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
    let run = crate::console_runs::latest_run(&analyst).await?;
    assert_eq!(run["status"], "completed", "{run}");
    let run_id = run["id"].as_str().context("run id")?;
    let card = format!("#last-run .run[data-run-id='{run_id}']");
    assert_eq!(
        page.count(&card).await?,
        1,
        "the console shows the API's run"
    );
    let count: f64 = page
        .visible_text(&format!("{card} table.result tbody td .value"))
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
    dp_result_details(f, page, &run, &card, before).await?;

    refusals_at_validation(f, page).await?;

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
    // Filtered by status, as the API's runs say.
    page.c
        .find(Locator::Css("#runs-filter-status"))
        .await?
        .select_by_value("failed")
        .await?;
    page.wait_text("#runs-summary", "the filtered summary", |t| {
        t.starts_with("1 of 2 runs")
    })
    .await?;
    assert_eq!(page.count("#runs-list .run").await?, 1);
    assert_eq!(
        page.count("#runs-list .run[data-status='failed']").await?,
        1
    );
    page.c
        .find(Locator::Css("#runs-filter-status"))
        .await?
        .select_by_value("")
        .await?;
    page.shot("05-runs").await;
    crate::console_runs::spend_history(f, page).await?;

    // Data rooms with every participant's standing.
    rooms_in_console(f, page).await?;
    rooms_that_end_without_running(f, page).await?;
    mpc_query_opens_a_room(f, page).await?;
    narrow_screen(page).await?;

    // The audit log is admin-only: the API refuses the analyst, and the console offers no tab.
    let (status, denied) = analyst.get("/api/v1/audit").await?;
    assert_eq!(status, 403, "{denied}");
    assert_eq!(
        page.visible_text("#tab-audit").await?,
        None,
        "analysts see no audit tab"
    );
    page.shot("08-no-audit-tab").await;

    // Signing out clears the token from the tab's session storage.
    page.click("#signout").await?;
    let kept = page
        .c
        .execute(
            "return sessionStorage.getItem('prism.console.token');",
            vec![],
        )
        .await?;
    assert_eq!(kept, Value::Null, "the token outlived the sign-out");

    // An admin sees the log, newest first, filters it and can verify its chain.
    page.sign_in(&f.admin_token).await?;
    page.wait_text("#session-role", "the admin role", |t| t == "admin")
        .await?;
    crate::console_runs::history_is_per_user(page).await?;
    page.click("#tab-audit").await?;
    page.wait_count("#audit-list tbody tr", 2).await?;
    let seqs = page
        .c
        .execute(
            "return [...document.querySelectorAll('#audit-list tbody tr')].map(r => Number(r.dataset.seq));",
            vec![],
        )
        .await?;
    let seqs: Vec<u64> = serde_json::from_value(seqs)?;
    assert!(
        seqs.windows(2).all(|w| w[0] > w[1]),
        "the audit log is not newest first: {seqs:?}"
    );
    let (_, log) = f.admin().get("/api/v1/audit?limit=1000").await?;
    let declined = log
        .as_array()
        .context("audit")?
        .iter()
        .filter(|e| e["action"] == "room_declined")
        .count();
    assert!(declined >= 1, "no room_declined entry in {log}");
    page.type_into("#audit-filter", "room_declined").await?;
    let deadline = Instant::now() + WAIT;
    while page.count("#audit-list tbody tr").await? != declined {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the audit filter did not narrow to {declined} rows"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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

/// The remaining ε the console shows for the selected dataset, if it shows one.
async fn shown_budget(page: &Page) -> anyhow::Result<Option<f64>> {
    let v = page
        .c
        .execute(
            "const e = document.querySelector('#dataset-budget');
             return e && !e.hidden ? e.dataset.remainingEpsilon || null : null;",
            vec![],
        )
        .await?;
    Ok(v.as_str().and_then(|s| s.parse().ok()))
}

/// What the download link `css` holds (its `data:` URL, decoded).
async fn download(page: &Page, css: &str) -> anyhow::Result<String> {
    let body = page
        .c
        .execute(
            "const a = document.querySelector(arguments[0]);
             return decodeURIComponent(a.getAttribute('href').split(',').slice(1).join(','));",
            vec![json!(css)],
        )
        .await?;
    Ok(body.as_str().context("a download link")?.to_string())
}

/// The DP run's card: the result shows `value ± half-width (95 %)` as the API computes it, the
/// proof panel lists the statistics, the CSV download holds the API's result, and the budget
/// shown drops by what the run charged.
async fn dp_result_details(
    f: &Federation,
    page: &Page,
    run: &Value,
    card: &str,
    before: f64,
) -> anyhow::Result<()> {
    let analyst = f.analyst();
    let hw = run["ci95_half_width"][0]
        .as_f64()
        .context("the API gives the count's interval")?;
    assert!(hw > 0.0, "{run}");
    let cell = format!("{card} table.result tbody td[data-ci95]");
    let shown: f64 = page
        .c
        .execute(
            "return document.querySelector(arguments[0]).dataset.ci95;",
            vec![json!(cell)],
        )
        .await?
        .as_str()
        .context("ci attribute")?
        .parse()?;
    assert!((shown - hw).abs() < 1e-9, "{shown} vs {hw}");
    let text = page
        .visible_text(&format!("{cell} .ci"))
        .await?
        .context("ci text")?;
    assert!(text.starts_with('±') && text.ends_with("(95 %)"), "{text}");
    let stats = run["proof_artifacts"]["release"]["statistics"]
        .as_array()
        .context("statistics")?
        .iter()
        .filter(|s| s["hidden"] != true)
        .count();
    assert_eq!(
        page.count(&format!("{card} .proof-panel table.proof-stats tbody tr"))
            .await?,
        stats
    );
    // The CSV download: the API's columns and values, with the interval column.
    let csv = download(page, &format!("{card} a.download-csv")).await?;
    let csv = csv.as_str();
    let lines: Vec<&str> = csv.lines().collect();
    let col = run["result"]["columns"][0].as_str().context("column")?;
    assert_eq!(lines[0], format!("{col},{col}_ci95_half_width"), "{csv}");
    let cells: Vec<f64> = lines[1]
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .context("numeric CSV row")?;
    assert_eq!(Some(cells[0]), run["result"]["rows"][0][0].as_f64());
    assert!((cells[1] - hw).abs() < 1e-9, "{csv}");
    assert_eq!(lines.len(), 2, "{csv}");
    // The JSON download: the API's table, intervals and proof.
    let body = download(page, &format!("{card} a.download-json")).await?;
    let body: Value = serde_json::from_str(&body).context("the JSON download")?;
    for (field, api) in [
        ("columns", &run["result"]["columns"]),
        ("rows", &run["result"]["rows"]),
        ("ci95_half_width", &run["ci95_half_width"]),
        ("proof_artifacts", &run["proof_artifacts"]),
    ] {
        assert!(
            same_json(&body[field], api),
            "{field}: {} vs {api}",
            body[field]
        );
    }
    // The budget shown drops by what the run charged, as the catalog says.
    let spent = run["epsilon_consumed"].as_f64().context("ε")?;
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, ds) = analyst.get("/api/v1/datasets/hospital-a.patients").await?;
        let api = ds["budget"]["remaining_epsilon"].as_f64();
        let shown = shown_budget(page).await?;
        if api.is_some_and(|a| (a - (before - spent)).abs() < 1e-6) && shown == api {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the budget did not drop by {spent} from {before}: API {api:?}, console {shown:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// What the backend would refuse is refused at validation, in the API's words: a query over the
/// budget the owner publishes (naming the organization to ask) and AVG of a float column
/// under HE.
async fn refusals_at_validation(f: &Federation, page: &Page) -> anyhow::Result<()> {
    let analyst = f.analyst();
    let node = f.node_admin("hospital-a")?;
    let (_, ds) = analyst.get("/api/v1/datasets/hospital-a.patients").await?;
    let spent = ds["budget"]["spent_epsilon"].as_f64().context("spent")?;
    let (s, b) = node
        .put(
            "/v1/datasets/patients/budget",
            &json!({"epsilon": spent + 0.2, "delta": 1e-5}),
        )
        .await?;
    anyhow::ensure!(s == 200, "setting the budget: {s} {b}");
    let sql = "SELECT COUNT(*) FROM patients WHERE age < 30";
    let body = json!({"dataset_id": "hospital-a.patients", "sql": sql, "backend": "dp_sandbox", "epsilon": 0.5});
    let deadline = Instant::now() + WAIT;
    let v = loop {
        let v = api_validation(&analyst, &body).await?;
        if v["valid"] == false {
            break v;
        }
        anyhow::ensure!(Instant::now() < deadline, "validation still passes: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(v["errors"][0]["code"], "budget_exhausted", "{v}");
    let message = v["errors"][0]["message"].as_str().context("message")?;
    assert!(message.contains("organization hospital-a"), "{message}");
    page.click("#backends .backend-card[data-backend='dp_sandbox']")
        .await?;
    page.type_into("#sql", sql).await?;
    page.wait_text(
        "#validation[data-state='invalid'] .message[data-code='budget_exhausted']",
        "the budget refusal",
        |t| t == message,
    )
    .await?;
    page.shot("03b-over-budget").await;
    let (s, b) = node
        .put(
            "/v1/datasets/patients/budget",
            &json!({"epsilon": 10.0, "delta": 1e-5}),
        )
        .await?;
    anyhow::ensure!(s == 200, "restoring the budget: {s} {b}");

    let sql = "SELECT AVG(treatment_cost) FROM patients";
    let v = api_validation(
        &analyst,
        &json!({"dataset_id": "hospital-a.patients", "sql": sql, "backend": "he_backend"}),
    )
    .await?;
    assert_eq!(v["valid"], false, "{v}");
    let message = v["errors"][0]["message"].as_str().context("message")?;
    assert!(message.contains("treatment_cost"), "{message}");
    page.click("#backends .backend-card[data-backend='he_backend']")
        .await?;
    page.type_into("#sql", sql).await?;
    page.wait_text(
        "#validation[data-state='invalid'] .message",
        "the HE refusal",
        |t| t == message,
    )
    .await?;
    Ok(())
}

/// Waits until the API shows room `id` in `status`; returns the room.
async fn wait_room(api: &Api, id: &str, status: &str) -> anyhow::Result<Value> {
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, r) = api.get(&format!("/api/v1/data_rooms/{id}")).await?;
        if r["status"] == status {
            return Ok(r);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "room {id} did not become {status}: {r}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A room a participant declines ends `declined` with its reason; a room cancelled from the
/// console ends `cancelled`.
async fn rooms_that_end_without_running(f: &Federation, page: &Page) -> anyhow::Result<()> {
    let analyst = f.analyst();
    let mut ids = Vec::new();
    for name in ["Declined by B", "Cancelled"] {
        let (status, room) = analyst
            .post(
                "/api/v1/data_rooms",
                &json!({"name": name, "query_text": "SELECT COUNT(*) FROM patients",
                        "participants": ["hospital-a", "hospital-b"], "epsilon": 0.5}),
            )
            .await?;
        anyhow::ensure!(status == 201, "{status} {room}");
        ids.push(room["id"].as_str().context("id")?.to_string());
    }
    let reason = "our ethics board has not approved this study";
    let node = f.node_admin("hospital-b")?;
    let deadline = Instant::now() + WAIT;
    loop {
        let (s, body) = node
            .post(
                &format!("/v1/invitations/{}/decline", ids[0]),
                &json!({"reason": reason}),
            )
            .await?;
        if s == 200 {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "decline: {s} {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let declined = wait_room(&analyst, &ids[0], "declined").await?;
    let message = declined["error_message"].as_str().context("message")?;
    assert!(
        message.contains("hospital-b") && message.contains(reason),
        "{message}"
    );
    page.click("#refresh-rooms").await?;
    let card = format!("#rooms-list .room[data-room-id='{}']", ids[0]);
    page.wait_text(&format!("{card} .head .badge"), "the declined badge", |t| {
        t == "declined"
    })
    .await?;
    assert_eq!(
        page.visible_text(&format!("{card} .room-error-message"))
            .await?
            .as_deref(),
        Some(message)
    );
    assert_eq!(page.count(&format!("{card} .cancel-room")).await?, 0);
    page.shot("07b-room-declined").await;

    let card = format!("#rooms-list .room[data-room-id='{}']", ids[1]);
    page.click(&format!("{card} .cancel-room")).await?;
    page.wait_count(&format!("{card}[data-status='cancelled']"), 1)
        .await?;
    wait_room(&analyst, &ids[1], "cancelled").await?;
    Ok(())
}

/// An `mpc_backend` query from the query form says it opened a room, who must attest, and
/// links to the room.
async fn mpc_query_opens_a_room(f: &Federation, page: &Page) -> anyhow::Result<()> {
    let analyst = f.analyst();
    page.click("#tab-query").await?;
    page.click("#backends .backend-card[data-backend='mpc_backend']")
        .await?;
    page.type_into("#sql", "SELECT COUNT(*) FROM patients WHERE age >= 40")
        .await?;
    page.wait_count("#validation[data-state='valid']", 1)
        .await?;
    page.click("#run-query").await?;
    let waiting = page
        .wait_text(
            "#last-run .room-opened .waiting-for",
            "who must attest",
            |_| true,
        )
        .await?;
    let room_id = page
        .c
        .execute(
            "return document.querySelector('#last-run .room-opened .room-link').dataset.roomId;",
            vec![],
        )
        .await?;
    let room_id = room_id.as_str().context("room link")?.to_string();
    let (_, room) = analyst
        .get(&format!("/api/v1/data_rooms/{room_id}"))
        .await?;
    let expected = room["waiting_for"]
        .as_array()
        .context("waiting_for")?
        .iter()
        .filter_map(Value::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    assert_eq!(waiting, expected, "{room}");
    page.shot("07c-mpc-query-room").await;
    page.click("#last-run .room-opened .room-link").await?;
    page.wait_count(
        &format!("#rooms-list .room.highlight[data-room-id='{room_id}']"),
        1,
    )
    .await?;
    assert_eq!(
        page.visible_text("#panel-rooms h2").await?.as_deref(),
        Some("Data rooms")
    );
    Ok(())
}

/// At 390 px (a phone) no tab scrolls sideways.
async fn narrow_screen(page: &Page) -> anyhow::Result<()> {
    page.c.set_window_size(390, 900).await?;
    for tab in ["query", "runs", "rooms"] {
        page.click(&format!("#tab-{tab}")).await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let v = page
            .c
            .execute(
                "return [document.documentElement.scrollWidth, document.documentElement.clientWidth];",
                vec![],
            )
            .await?;
        let (scroll, width): (u64, u64) = serde_json::from_value(v)?;
        assert!(
            width <= 400,
            "the window is {width} px wide, not a phone's 390"
        );
        page.shot(&format!("10-narrow-{tab}")).await;
        assert!(
            scroll <= width,
            "at {width} px the {tab} tab scrolls sideways ({scroll} px of content)"
        );
    }
    page.c.set_window_size(1280, 1500).await?;
    Ok(())
}

/// The data-rooms tab: a room created in the console's form (participants, query, per-party
/// ε), shown pending with each participant's standing and no Execute button, then — once both
/// nodes attested — ready with one, and executed from the console.
async fn rooms_in_console(f: &Federation, page: &Page) -> anyhow::Result<()> {
    let analyst = f.analyst();
    page.click("#tab-rooms").await?;
    let name = "Diabetes across hospitals";
    page.click("#new-room summary").await?;
    page.wait_count("#room-participants .room-participant", 3)
        .await?;
    page.type_into("#room-name", name).await?;
    page.type_into(
        "#room-description",
        "How many patients have diabetes, across two hospitals",
    )
    .await?;
    page.type_into(
        "#room-sql",
        "SELECT COUNT(*) FROM patients WHERE diagnosis = 'diabetes'",
    )
    .await?;
    for org in ["hospital-a", "hospital-b"] {
        page.click(&format!(".room-participant[value='{org}']"))
            .await?;
    }
    page.type_into(".room-party-epsilon[data-org='hospital-b']", "0.4")
        .await?;
    page.click("#create-room").await?;
    page.wait_count("#rooms-list .room.highlight", 1).await?;
    let (_, rooms) = analyst.get("/api/v1/data_rooms").await?;
    let room = rooms
        .as_array()
        .and_then(|r| r.iter().find(|r| r["name"] == name))
        .context("the API lists the room created in the console")?
        .clone();
    let eps: Vec<(String, f64)> = room["manifest"]["params"]["epsilon"]
        .as_array()
        .context("per-party ε")?
        .iter()
        .map(|p| {
            (
                p["org"].as_str().unwrap_or_default().to_string(),
                p["epsilon"].as_f64().unwrap_or(-1.0),
            )
        })
        .collect();
    assert_eq!(
        eps,
        vec![("hospital-a".into(), 0.5), ("hospital-b".into(), 0.4)],
        "{room}"
    );
    let id = room["id"].as_str().context("room id")?.to_string();
    let card = format!("#rooms-list .room[data-room-id='{id}']");
    page.wait_count(&format!("{card}.highlight"), 1).await?;
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
        .visible_text(&format!("{card} table.result tbody td .value"))
        .await?
        .context("room result")?
        .parse()?;
    assert_eq!(Some(count), r["result"]["rows"][0][0].as_f64());
    // The room's answer carries its interval, as the API computes it.
    let hw = r["ci95_half_width"][0].as_f64().context("room interval")?;
    let shown: f64 = page
        .c
        .execute(
            "return document.querySelector(arguments[0]).dataset.ci95;",
            vec![json!(format!("{card} table.result tbody td[data-ci95]"))],
        )
        .await?
        .as_str()
        .context("room ci attribute")?
        .parse()?;
    assert!((shown - hw).abs() < 1e-9, "{shown} vs {hw}");
    assert_eq!(page.count(&format!("{card} a.download-csv")).await?, 1);
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
        ("/history.js", "text/javascript"),
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
