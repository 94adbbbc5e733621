//! What an analyst sees through the API: the budget each data owner publishes (and validation
//! that refuses what it would not cover, naming whom to ask), intervals on DP answers, rooms
//! that a participant declines, and the admin's user list and revocation.

use std::time::{Duration, Instant};

use anyhow::Context;
use prism_node::Policy;
use prism_tests::{Api, Federation, FederationSpec};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);
const DATASET: &str = "hospital-a.patients";

async fn budget(api: &Api, dataset: &str) -> anyhow::Result<Value> {
    let (status, d) = api.get(&format!("/api/v1/datasets/{dataset}")).await?;
    anyhow::ensure!(status == 200, "{status} {d}");
    Ok(d["budget"].clone())
}

/// Polls until `check` holds for the dataset's published budget.
async fn wait_budget(
    api: &Api,
    dataset: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> anyhow::Result<Value> {
    let deadline = Instant::now() + WAIT;
    loop {
        let b = budget(api, dataset).await?;
        if check(&b) {
            return Ok(b);
        }
        anyhow::ensure!(Instant::now() < deadline, "{what}: the catalog shows {b}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_room(api: &Api, id: &str, status: &str) -> anyhow::Result<Value> {
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, r) = api.get(&format!("/api/v1/data_rooms/{id}")).await?;
        if r["status"] == status {
            return Ok(r);
        }
        anyhow::ensure!(Instant::now() < deadline, "room {id} is not {status}: {r}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_run(api: &Api, id: &str) -> anyhow::Result<Value> {
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, r) = api.get(&format!("/api/v1/runs/{id}")).await?;
        if r["status"] == "completed" || r["status"] == "failed" {
            return Ok(r);
        }
        anyhow::ensure!(Instant::now() < deadline, "run {id} did not end: {r}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn budgets_and_validation(f: &Federation) -> anyhow::Result<()> {
    let analyst = f.analyst();
    let b = budget(&analyst, DATASET).await?;
    let total = b["total_epsilon"].as_f64().context("total ε")?;
    assert_eq!(total, Policy::default().default_budget_epsilon, "{b}");
    assert_eq!(b["remaining_epsilon"].as_f64(), Some(total), "{b}");

    // A DP run: its answer carries the interval of its noise, and the catalog shows the charge.
    let (_, status, run) = analyst
        .run_query(
            DATASET,
            "SELECT COUNT(*) FROM patients WHERE age >= 50",
            "dp_sandbox",
            Some(0.5),
        )
        .await?;
    assert_eq!(status, 200, "{run}");
    assert_eq!(run["status"], "completed", "{run}");
    let hw = run["ci95_half_width"][0].as_f64().context("interval")?;
    let stat = &run["proof_artifacts"]["release"]["statistics"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["hidden"] == false))
        .context("statistic")?
        .clone();
    assert_eq!(stat["ci95_half_width"].as_f64(), Some(hw), "{run}");
    let spent = run["epsilon_consumed"].as_f64().context("ε")?;
    assert!(spent > 0.0);
    wait_budget(&analyst, DATASET, "the charge", |b| {
        b["remaining_epsilon"]
            .as_f64()
            .is_some_and(|r| (r - (total - spent)).abs() < 1e-6)
    })
    .await?;

    // The owner leaves 0.1: a query that needs 0.5 is refused at validation, naming whom to ask.
    let node = f.node_admin("hospital-a")?;
    let (s, body) = node
        .put(
            "/v1/datasets/patients/budget",
            &json!({"epsilon": spent + 0.1, "delta": 1e-5}),
        )
        .await?;
    assert_eq!(s, 200, "{body}");
    wait_budget(&analyst, DATASET, "the new total", |b| {
        b["remaining_epsilon"]
            .as_f64()
            .is_some_and(|r| (r - 0.1).abs() < 1e-6)
    })
    .await?;
    let sql = "SELECT COUNT(*) FROM patients";
    let (_, v) = analyst
        .post(
            "/api/v1/queries/validate",
            &json!({"dataset_id": DATASET, "sql": sql, "epsilon": 0.5}),
        )
        .await?;
    assert_eq!(v["valid"], false, "{v}");
    assert_eq!(v["errors"][0]["code"], "budget_exhausted", "{v}");
    let message = v["errors"][0]["message"].as_str().context("message")?;
    assert!(
        message.contains("ask the data owner of organization hospital-a"),
        "{message}"
    );
    // A smaller query still fits.
    let (_, v) = analyst
        .post(
            "/api/v1/queries/validate",
            &json!({"dataset_id": DATASET, "sql": sql, "epsilon": 0.05}),
        )
        .await?;
    assert_eq!(v["valid"], true, "{v}");
    // Run the big one anyway: the node refuses it, and the run's message names the organization.
    let (_, status, run) = analyst
        .run_query(DATASET, sql, "dp_sandbox", Some(0.5))
        .await?;
    assert_eq!(status, 200, "{run}");
    assert_eq!(run["status"], "failed", "{run}");
    assert_eq!(run["error_code"], "budget_exhausted", "{run}");
    let message = run["error_message"].as_str().context("message")?;
    assert!(message.contains("organization hospital-a"), "{message}");
    Ok(())
}

async fn he_refusals_at_validation(f: &mut Federation) -> anyhow::Result<()> {
    // Whether or not the node is online, AVG of a float column is refused at validation.
    let analyst = f.analyst();
    let body = json!({"dataset_id": "hospital-b.patients", "sql": "SELECT AVG(treatment_cost) FROM patients", "backend": "he_backend"});
    for online in [true, false] {
        if !online {
            f.stop_node("hospital-b").await?;
        }
        let (_, v) = analyst.post("/api/v1/queries/validate", &body).await?;
        assert_eq!(v["valid"], false, "online {online}: {v}");
        let message = v["errors"][0]["message"].as_str().context("message")?;
        assert!(
            message.contains("treatment_cost") && message.contains("integer"),
            "{message}"
        );
    }
    f.restart_node("hospital-b").await?;
    f.wait_connected().await
}

async fn rooms_that_do_not_run(f: &Federation) -> anyhow::Result<()> {
    let analyst = f.analyst();
    // An mpc_backend query opens a room; one participant declines: the room is declined for
    // good, with the reason, and the run fails with it.
    let (status, q) = analyst
        .post(
            "/api/v1/queries",
            &json!({"dataset_id": DATASET, "sql": "SELECT COUNT(*) FROM patients", "backend": "mpc_backend", "epsilon": 0.05}),
        )
        .await?;
    assert_eq!(status, 201, "{q}");
    let (status, run) = analyst
        .post(
            &format!(
                "/api/v1/queries/{}/execute",
                q["id"].as_str().context("id")?
            ),
            &json!({}),
        )
        .await?;
    assert_eq!(status, 202, "{run}");
    let run_id = run["id"].as_str().context("run id")?.to_string();
    let deadline = Instant::now() + WAIT;
    let room_id = loop {
        let (_, r) = analyst.get(&format!("/api/v1/runs/{run_id}")).await?;
        if let Some(id) = r["proof_artifacts"]["room_id"].as_str() {
            break id.to_string();
        }
        anyhow::ensure!(Instant::now() < deadline, "no room: {r}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let reason = "the ethics board has not approved it";
    let node = f.node_admin("hospital-b")?;
    let deadline = Instant::now() + WAIT;
    loop {
        let (s, body) = node
            .post(
                &format!("/v1/invitations/{room_id}/decline"),
                &json!({"reason": reason}),
            )
            .await?;
        if s == 200 {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "decline: {s} {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let room = wait_room(&analyst, &room_id, "declined").await?;
    assert_eq!(room["error_code"], "room_declined", "{room}");
    let message = room["error_message"].as_str().context("message")?;
    assert!(
        message.contains("hospital-b") && message.contains(reason),
        "{message}"
    );
    let run = wait_run(&analyst, &run_id).await?;
    assert_eq!(run["status"], "failed", "{run}");
    assert_eq!(run["error_code"], "room_declined", "{run}");
    // Declined is terminal: attesting now changes nothing, executing and cancelling are refused.
    let node_a = f.node_admin("hospital-a")?;
    let _ = node_a
        .post(&format!("/v1/invitations/{room_id}/attest"), &json!({}))
        .await?;
    let (s, body) = analyst
        .post(&format!("/api/v1/data_rooms/{room_id}/execute"), &json!({}))
        .await?;
    assert_eq!(s, 409, "{body}");
    let (s, body) = analyst
        .post(&format!("/api/v1/data_rooms/{room_id}/cancel"), &json!({}))
        .await?;
    assert_eq!(s, 409, "{body}");
    assert_eq!(body["error"]["code"], "room_not_cancellable", "{body}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, room) = analyst
        .get(&format!("/api/v1/data_rooms/{room_id}"))
        .await?;
    assert_eq!(room["status"], "declined", "{room}");
    Ok(())
}

async fn users(f: &Federation) -> anyhow::Result<()> {
    let admin = f.admin();
    let analyst = f.analyst();
    let (s, me) = analyst.get("/api/v1/me").await?;
    assert_eq!(s, 200, "{me}");
    assert_eq!(
        (me["name"].as_str(), me["role"].as_str()),
        (Some("analyst"), Some("analyst"))
    );
    let (s, body) = analyst.get("/api/v1/users").await?;
    assert_eq!(s, 403, "{body}");
    let (s, list) = admin.get("/api/v1/users").await?;
    assert_eq!(s, 200, "{list}");
    let list = list.as_array().context("users")?;
    let names: Vec<&str> = list.iter().filter_map(|u| u["name"].as_str()).collect();
    assert_eq!(names, ["admin", "analyst"]);
    assert!(
        list.iter().all(|u| u.get("token").is_none()),
        "a listing shows no token"
    );
    let id = |name: &str| {
        list.iter()
            .find(|u| u["name"] == name)
            .and_then(|u| u["id"].as_str())
            .map(str::to_string)
            .context("user id")
    };
    let (s, body) = admin
        .delete(&format!("/api/v1/users/{}", id("admin")?))
        .await?;
    assert_eq!(s, 409, "{body}");
    assert_eq!(body["error"]["code"], "cannot_revoke_self");
    let (s, body) = admin.delete("/api/v1/users/no-such-user").await?;
    assert_eq!(s, 404, "{body}");
    assert_eq!(body["error"]["code"], "unknown_user");
    let (s, body) = admin
        .delete(&format!("/api/v1/users/{}", id("analyst")?))
        .await?;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["revoked"]["name"], "analyst");
    let (s, body) = analyst.get("/api/v1/backends").await?;
    assert_eq!(s, 401, "the revoked token still works: {body}");
    let (_, log) = admin.get("/api/v1/audit?limit=1000").await?;
    assert!(
        log.as_array()
            .is_some_and(|l| l.iter().any(|e| e["action"] == "user_revoked")),
        "no user_revoked entry"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analysts_see_budgets_intervals_and_rooms_that_end() {
    let mut f = Federation::start(FederationSpec {
        rows_per_org: 300,
        ..Default::default()
    })
    .await
    .expect("federation");
    let outcome = async {
        budgets_and_validation(&f).await?;
        he_refusals_at_validation(&mut f).await?;
        rooms_that_do_not_run(&f).await?;
        users(&f).await
    }
    .await;
    f.shutdown().await;
    outcome.expect("analyst workflow");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_who_keeps_the_budget_private_publishes_none() {
    let f = Federation::start(FederationSpec {
        orgs: vec!["hospital-a".into()],
        rows_per_org: 100,
        policy: Policy {
            publish_budget: false,
            ..Policy::default()
        },
        ..Default::default()
    })
    .await
    .expect("federation");
    let outcome = async {
        let analyst = f.analyst();
        assert_eq!(budget(&analyst, DATASET).await?, Value::Null);
        let (_, v) = analyst
            .post(
                "/api/v1/queries/validate",
                &json!({"dataset_id": DATASET, "sql": "SELECT COUNT(*) FROM patients", "epsilon": 0.5}),
            )
            .await?;
        assert_eq!(v["valid"], true, "{v}");
        assert_eq!(v["budget"], Value::Null, "{v}");
        let (_, status, run) = analyst
            .run_query(DATASET, "SELECT COUNT(*) FROM patients", "dp_sandbox", Some(0.5))
            .await?;
        assert_eq!((status, run["status"].as_str()), (200, Some("completed")), "{run}");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(budget(&analyst, DATASET).await?, Value::Null);
        anyhow::Ok(())
    }
    .await;
    f.shutdown().await;
    outcome.expect("private budget");
}
