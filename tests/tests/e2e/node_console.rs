//! The data owner's node console end to end: a real headless Chromium against the admin listener
//! of a node in an in-process federation (real QUIC, real redb, real OpenDP).
//!
//! The owner attests one data room and declines another from the Requests tab, sees what changed
//! when a room's manifest is re-sent, reads the budget a DP query spent (table and chart) and
//! sets a new total, and finds the query and its requester in the Activity log, whose chain it
//! verifies. A second session at a 390 px phone viewport checks that no tab scrolls sideways.
//! Every expectation compares the page with what the node's admin API (or the coordinator's)
//! answers. Set `PRISM_CONSOLE_SCREENSHOTS=<dir>` to keep screenshots.

use std::time::{Duration, Instant};

use anyhow::Context;
use prism_common::backend::BackendId;
use prism_node::Policy;
use prism_tests::{Api, Federation, FederationSpec};
use serde_json::{Value, json};

use crate::browser::{Page, Session, WAIT};

const OWNER: &str = "hospital-a";
const DP_SQL: &str = "SELECT COUNT(*) FROM patients WHERE age >= 40";

/// Polls `f` until it returns `Some`, for at most [`WAIT`].
async fn eventually<T, F: std::future::Future<Output = anyhow::Result<Option<T>>>>(
    what: &str,
    mut f: impl FnMut() -> F,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = f().await? {
            return Ok(v);
        }
        anyhow::ensure!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Creates a room over both hospitals' patients; returns its id once `OWNER`'s node holds the
/// invitation.
async fn open_room(analyst: &Api, node: &Api, sql: &str) -> anyhow::Result<String> {
    let (status, room) = analyst
        .post(
            "/api/v1/data_rooms",
            &json!({"name": "cross-hospital", "query_text": sql, "backend": "mpc_backend",
                    "participants": ["hospital-a", "hospital-b"], "epsilon": 0.5}),
        )
        .await?;
    anyhow::ensure!(status == 201, "creating a room answered {status}: {room}");
    let id = room["id"].as_str().context("room id")?.to_string();
    eventually("the invitation to reach the node", || async {
        let (s, _) = node.get(&format!("/v1/requests/{id}")).await?;
        Ok((s == 200).then_some(()))
    })
    .await?;
    Ok(id)
}

/// The number in the element `css` shows.
async fn number(page: &Page, css: &str) -> anyhow::Result<f64> {
    let t = page
        .visible_text(css)
        .await?
        .with_context(|| format!("{css} is not shown"))?;
    t.parse().with_context(|| format!("{css} shows {t:?}"))
}

async fn requests_tab(f: &Federation, page: &Page, node: &Api, user: &Api) -> anyhow::Result<()> {
    let yes = open_room(user, node, "SELECT COUNT(*) FROM patients WHERE age >= 65").await?;
    let no = open_room(
        user,
        node,
        "SELECT diagnosis, COUNT(*) FROM patients GROUP BY diagnosis",
    )
    .await?;
    page.c.goto(&format!("{}/", node.url)).await?;
    page.wait_text("#signin-panel h1", "the sign-in form", |t| {
        t.contains("Sign in")
    })
    .await?;
    page.sign_in(&node.token).await?;
    page.wait_text("#node-org", "the node's organization", |t| t == OWNER)
        .await?;
    // The badge counts what the API says is pending.
    let (_, all) = node.get("/v1/requests").await?;
    assert_eq!(all["pending"], 2, "{all}");
    page.wait_text("#pending-badge", "the pending badge", |t| t == "2")
        .await?;

    // Each invitation shows the manifest's query, this node's ε and the participants.
    let (_, inv) = node.get(&format!("/v1/invitations/{yes}")).await?;
    let card = format!("#requests-list .request[data-room-id='{yes}']");
    page.wait_count(&format!("{card}[data-status='pending']"), 1)
        .await?;
    let query = page.visible_text(&format!("{card} .sql")).await?;
    assert_eq!(query.as_deref(), inv["manifest"]["query_text"].as_str());
    assert_eq!(number(page, &format!("{card} dd.epsilon")).await?, 0.5);
    let parts = page
        .visible_text(&format!("{card} dd.participants"))
        .await?;
    assert_eq!(parts.as_deref(), Some("hospital-a, hospital-b"));
    let by = page
        .visible_text(&format!("{card} dd.requested-by"))
        .await?;
    assert_eq!(by.as_deref(), Some("dr-okafor (hospital-b)"));
    let keys = page.visible_text(&format!("{card} dd.group-keys")).await?;
    assert_eq!(keys.as_deref(), Some("1 (no GROUP BY)"));
    let grouped = format!("#requests-list .request[data-room-id='{no}'] dd.group-keys");
    let (_, r) = node.get(&format!("/v1/requests/{no}")).await?;
    let shown = page.visible_text(&grouped).await?.context("group keys")?;
    assert!(
        shown.starts_with(&format!("{} — diagnosis: ", r["key_count"])),
        "{shown} vs {r}"
    );
    page.shot("node-01-requests").await;

    // Attest the first from the page: the node signs, the coordinator records it.
    page.click(&format!("{card} button.attest")).await?;
    page.wait_count(
        &format!("{card}[data-status='attested'] button.withdraw"),
        1,
    )
    .await?;
    let (_, inv) = node.get(&format!("/v1/invitations/{yes}")).await?;
    assert_eq!(inv["status"], "attested", "{inv}");
    // The room's creator reads the coordinator's record of it.
    let analyst = user;
    eventually("the coordinator to record the attestation", || async {
        let (_, room) = analyst.get(&format!("/api/v1/data_rooms/{yes}")).await?;
        Ok(participant(&room, OWNER)
            .is_some_and(|p| p["status"] == "attested")
            .then_some(()))
    })
    .await?;

    // Decline the second with a reason: the node and the coordinator keep the owner's words.
    let reason = "Diagnoses are not shared outside the hospital";
    let card = format!("#requests-list .request[data-room-id='{no}']");
    page.type_into(&format!("{card} input.decline-reason"), reason)
        .await?;
    page.click(&format!("{card} button.decline")).await?;
    page.wait_text(
        &format!("{card}[data-status='declined'] dd.reason"),
        "the reason",
        |t| t == reason,
    )
    .await?;
    let (_, inv) = node.get(&format!("/v1/invitations/{no}")).await?;
    assert_eq!(
        (&inv["status"], &inv["reason"]),
        (&json!("declined"), &json!(reason))
    );
    eventually("the coordinator to record the decline", || async {
        let (_, room) = analyst.get(&format!("/api/v1/data_rooms/{no}")).await?;
        Ok(participant(&room, OWNER)
            .is_some_and(|p| p["status"] == "declined" && p["reason"] == reason)
            .then_some(()))
    })
    .await?;
    page.wait_count("#pending-badge[hidden]", 1).await?;
    page.shot("node-02-decided").await;

    // A room re-sent with another manifest (as a coordinator that changed it would): the card
    // shows exactly what changed. Sent through the node's own invitation handler.
    let state = f
        .nodes
        .get(&prism_common::identity::OrgId::new(OWNER)?)
        .and_then(|s| s.handle.as_ref())
        .map(|h| h.state.clone())
        .context("the owner's node")?;
    let mut manifest: prism_common::room::Manifest =
        serde_json::from_value(inv["manifest"].clone())?;
    manifest.room_id = open_room(user, node, "SELECT COUNT(*) FROM patients").await?;
    for p in &mut manifest.params.epsilon {
        p.epsilon = 2.0;
    }
    let (s, m) = (state.clone(), manifest.clone());
    tokio::task::spawn_blocking(move || prism_node::mpc::invitations::invite(&s, m, None))
        .await?
        .map_err(|e| anyhow::anyhow!("{}", e.message))?;
    page.click("#refresh-requests").await?;
    let card = format!(
        "#requests-list .request[data-room-id='{}']",
        manifest.room_id
    );
    page.wait_count(&format!("{card} table.changes tr[data-field='epsilon']"), 1)
        .await?;
    let (_, r) = node
        .get(&format!("/v1/requests/{}", manifest.room_id))
        .await?;
    let fields: Vec<&str> = r["changes"]
        .as_array()
        .context("changes")?
        .iter()
        .filter_map(|c| c["field"].as_str())
        .collect();
    let shown = page
        .count(&format!("{card} table.changes tbody tr"))
        .await?;
    assert_eq!(shown, fields.len(), "{fields:?}");
    assert!(
        fields.contains(&"query") && fields.contains(&"epsilon"),
        "{fields:?}"
    );
    assert_eq!(number(page, &format!("{card} dd.epsilon")).await?, 2.0);
    page.shot("node-03-changed").await;
    Ok(())
}

fn participant<'a>(room: &'a Value, org: &str) -> Option<&'a Value> {
    room["participants"]
        .as_array()?
        .iter()
        .find(|p| p["organization"] == org)
}

async fn datasets_tab(page: &Page, node: &Api, run: &Value) -> anyhow::Result<()> {
    page.click("#tab-datasets").await?;
    let card = "#datasets-list .dataset[data-dataset='patients']";
    page.wait_count(&format!("{card} figure.chart svg"), 1)
        .await?;
    let (_, budget) = node.get("/v1/datasets/patients/budget").await?;
    let spent = budget["spent_epsilon"].as_f64().context("spent")?;
    let charged = run["epsilon_consumed"].as_f64().context("run ε")?;
    assert!(
        charged > 0.0 && (spent - charged).abs() < 1e-9,
        "{budget} vs {run}"
    );
    let shown = number(page, &format!("{card} table.budget tr.spent td.epsilon")).await?;
    assert!((shown - spent).abs() < 1e-6, "{shown} vs {spent}");
    let left = number(
        page,
        &format!("{card} table.budget tr.remaining td.epsilon"),
    )
    .await?;
    let remaining = budget["remaining_epsilon"].as_f64().context("remaining")?;
    assert!((left - remaining).abs() < 1e-6, "{left} vs {remaining}");
    // The chart replays the ledger: its last point is what the ledger says is spent.
    let (_, history) = node.get("/v1/datasets/patients/history").await?;
    let points = history["points"].as_array().context("points")?;
    let chart = page
        .c
        .execute(
            "const f = document.querySelector(arguments[0]);
             return [Number(f.dataset.points), Number(f.dataset.lastSpent)];",
            vec![json!(format!("{card} figure.chart"))],
        )
        .await?;
    assert_eq!(chart[0].as_u64(), Some(points.len() as u64), "{history}");
    assert!(
        (chart[1].as_f64().unwrap_or(-1.0) - spent).abs() < 1e-9,
        "{chart}"
    );
    page.shot("node-04-budget").await;

    // The owner raises the total from the page.
    page.type_into(&format!("{card} input.budget-epsilon"), "12.5")
        .await?;
    page.click(&format!("{card} button.set-budget")).await?;
    page.wait_text("#datasets-note", "the confirmation", |t| t.contains("set"))
        .await?;
    let (_, budget) = node.get("/v1/datasets/patients/budget").await?;
    assert_eq!(budget["total_epsilon"], 12.5, "{budget}");
    let total = number(page, &format!("{card} table.budget tr.total td.epsilon")).await?;
    assert_eq!(total, 12.5);
    // A total below what is spent is the node's refusal, in its words.
    let (status, refusal) = node
        .put(
            "/v1/datasets/patients/budget",
            &json!({"epsilon": 0.0, "delta": 1e-5}),
        )
        .await?;
    assert_eq!(status, 422, "{refusal}");
    let message = refusal["error"]["message"].as_str().context("message")?;
    page.type_into(&format!("{card} input.budget-epsilon"), "0")
        .await?;
    page.click(&format!("{card} button.set-budget")).await?;
    page.wait_text(&format!("{card} .dataset-error"), "the refusal", |t| {
        t == message
    })
    .await?;
    Ok(())
}

async fn activity_tab(page: &Page, node: &Api, run: &Value) -> anyhow::Result<()> {
    page.click("#tab-activity").await?;
    let run_id = run["id"].as_str().context("run id")?;
    let (_, log) = node
        .get(&format!("/v1/activity?action=budget_charged&q={run_id}"))
        .await?;
    let entries = log["entries"].as_array().context("entries")?;
    assert_eq!(entries.len(), 1, "{log}");
    let entry = &entries[0];
    assert_eq!(entry["details"]["query"], DP_SQL, "{entry}");
    assert_eq!(
        entry["details"]["requested_by"],
        json!({"user": "dr-okafor", "organization": "hospital-b"})
    );
    // Newest first, as the API orders it.
    let first = page
        .wait_text(
            "#activity-list tbody tr:first-child td.num",
            "the newest entry",
            |_| true,
        )
        .await?;
    let (_, newest) = node.get("/v1/activity?limit=1").await?;
    assert_eq!(first, newest["entries"][0]["seq"].to_string(), "{newest}");
    // Filtered to this run's charge: the query, who asked, ε and the result's shape.
    page.c
        .find(fantoccini::Locator::Css("#filter-action"))
        .await?
        .select_by_value("budget_charged")
        .await?;
    page.type_into("#filter-q", run_id).await?;
    page.click("#apply-filter").await?;
    let row = format!("#activity-list tr[data-seq='{}']", entry["seq"]);
    page.wait_count(&row, 1).await?;
    assert_eq!(page.count("#activity-list tbody tr").await?, 1);
    let q = page.visible_text(&format!("{row} dd.query")).await?;
    assert_eq!(q.as_deref(), Some(DP_SQL));
    let by = page.visible_text(&format!("{row} dd.requested-by")).await?;
    assert_eq!(by.as_deref(), Some("dr-okafor (hospital-b)"));
    let eps = number(page, &format!("{row} dd.epsilon")).await?;
    assert!((eps - run["epsilon_consumed"].as_f64().unwrap_or(-1.0)).abs() < 1e-6);
    // The released table's shape as the node recorded it: one row, one column for a COUNT.
    let result = &entry["details"]["result"];
    let columns: Vec<&str> = result["columns"]
        .as_array()
        .context("columns")?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        (result["rows"].as_u64(), columns.len()),
        (Some(1), 1),
        "{entry}"
    );
    let shape = page.visible_text(&format!("{row} dd.result")).await?;
    let expected = format!("1 row(s) × 1 column(s): {}", columns[0]);
    assert_eq!(shape.as_deref(), Some(expected.as_str()));
    page.shot("node-05-activity").await;

    page.click("#verify-audit").await?;
    let (_, v) = node.get("/v1/audit/verify").await?;
    assert_eq!(v["valid"], true, "{v}");
    let expected = format!(
        "Hash chain verified: {} entries, none altered or missing.",
        v["entries"]
    );
    page.wait_text("#audit-verify", "the chain check", |t| t == expected)
        .await?;
    assert_eq!(page.visible_text("#fatal").await?, None, "a JS error");
    Ok(())
}

/// At a phone's width every tab fits: nothing scrolls sideways.
async fn phone(page: &Page, node: &Api) -> anyhow::Result<()> {
    page.c.goto(&format!("{}/", node.url)).await?;
    page.sign_in(&node.token).await?;
    page.wait_text("#node-org", "the node's organization", |t| t == OWNER)
        .await?;
    for (tab, ready) in [
        ("requests", "#requests-list .request"),
        ("datasets", "#datasets-list .dataset figure.chart svg"),
        ("activity", "#activity-list tbody tr"),
    ] {
        page.click(&format!("#tab-{tab}")).await?;
        page.wait_count(ready, 1).await?;
        let (overflow, width) = page.horizontal_overflow().await?;
        assert_eq!(width, 390.0, "the viewport is a phone's");
        assert!(
            overflow <= 0.0,
            "the {tab} tab scrolls {overflow} px sideways at 390 px"
        );
        page.shot(&format!("node-06-phone-{tab}")).await;
    }
    Ok(())
}

async fn walk(f: &Federation, page: &Page) -> anyhow::Result<()> {
    // A researcher of hospital-b queries hospital-a's patients under DP.
    let (status, created) = f
        .admin()
        .post(
            "/api/v1/users",
            &json!({"name": "dr-okafor", "role": "analyst", "organization": "hospital-b"}),
        )
        .await?;
    anyhow::ensure!(
        status == 201,
        "creating a user answered {status}: {created}"
    );
    let user = Api::new(f.api_url(), created["token"].as_str().context("token")?);
    let (_, status, run) = user
        .run_query("hospital-a.patients", DP_SQL, "dp_sandbox", Some(0.5))
        .await?;
    anyhow::ensure!(
        status == 200 && run["status"] == "completed",
        "{status} {run}"
    );
    let node = f.node_admin(OWNER)?;
    requests_tab(f, page, &node, &user).await?;
    datasets_tab(page, &node, &run).await?;
    activity_tab(page, &node, &run).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_decides_and_audits_from_the_node_console() {
    let f = Federation::start(FederationSpec {
        orgs: vec!["hospital-a".into(), "hospital-b".into()],
        rows_per_org: 500,
        policy: Policy {
            backends: vec![BackendId::DpSandbox, BackendId::MpcBackend],
            ..Policy::default()
        },
        ..Default::default()
    })
    .await
    .expect("federation");
    let session = Session::start(None).await.expect("a browser");
    let outcome = walk(&f, &session.page).await;
    session.finish(outcome).await;
    let node = f.node_admin(OWNER).expect("node");

    let small = Session::start(Some((390, 844)))
        .await
        .expect("a phone-sized browser");
    let outcome = phone(&small.page, &node).await;
    f.shutdown().await;
    small.finish(outcome).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_console_assets_carry_their_types_and_a_strict_csp_and_need_no_token() {
    let f = Federation::start(FederationSpec {
        orgs: vec!["hospital-a".into()],
        rows_per_org: 0,
        ..Default::default()
    })
    .await
    .expect("federation");
    let node = f.node_admin(OWNER).expect("node");
    let http = reqwest::Client::new();
    for (path, ty) in [
        ("/", "text/html"),
        ("/index.html", "text/html"),
        ("/console.js", "text/javascript"),
        ("/console.css", "text/css"),
        ("/favicon.svg", "image/svg+xml"),
    ] {
        let resp = http
            .get(format!("{}{path}", node.url))
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), 200, "{path}");
        let header = |n: &str| {
            resp.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        assert!(header("content-type").starts_with(ty), "{path}");
        let csp = header("content-security-policy");
        assert!(
            csp.contains("connect-src 'self'") && !csp.contains("unsafe"),
            "{path}: {csp}"
        );
        assert_eq!(header("x-frame-options"), "DENY", "{path}");
    }
    // The data behind the page still needs the token.
    let (status, body) = Api::new(&node.url, "wrong")
        .get("/v1/requests")
        .await
        .expect("get");
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "unauthorized");
    f.shutdown().await;
}
