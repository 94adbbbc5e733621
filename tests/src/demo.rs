//! The demo flow (the seed plan's walk-through), driven through the real admin API.
//!
//! Each step states the outcome it expects; the demo succeeds only if every step had it.

use std::time::Instant;

use anyhow::Context;
use serde_json::{Value, json};

use crate::federation::{Api, Federation};
use crate::progress::Progress;

/// What a step expects.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Expect {
    /// The run completes with a result.
    Completed,
    /// The run fails / is refused with this error code.
    Refused(&'static str),
}

/// One line of the demo's table.
#[derive(Debug, Clone)]
pub struct Step {
    /// Backend id.
    pub backend: String,
    /// SQL.
    pub query: String,
    /// Final status (`completed`, `failed`, or an HTTP refusal).
    pub status: String,
    /// Result or error, shortened.
    pub result: String,
    /// ε charged.
    pub epsilon: f64,
    /// Wall time of create + execute, ms.
    pub time_ms: f64,
    /// Whether the outcome was the expected one.
    pub ok: bool,
    /// The full run (or error) body.
    pub body: Value,
}

fn short(v: &Value, n: usize) -> String {
    let s = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if s.chars().count() > n {
        format!("{}…", s.chars().take(n).collect::<String>())
    } else {
        s
    }
}

fn result_text(run: &Value) -> String {
    crate::scenario::report::table_text(&run["result"])
}

/// Runs one query step.
pub async fn step(
    f: &Federation,
    dataset: &str,
    sql: &str,
    backend: &str,
    epsilon: Option<f64>,
    expect: Expect,
) -> anyhow::Result<Step> {
    let api = f.analyst();
    let t = Instant::now();
    let task = f.progress.spinner(&format!("{backend}: {sql}"));
    if backend == "he_backend" {
        task.say("the coordinator generates the TFHE key set on the first HE query");
    }
    let (_query, status, body) = api.run_query(dataset, sql, backend, epsilon).await?;
    let time_ms = t.elapsed().as_secs_f64() * 1000.0;
    let (st, result, code) = if status == 200 {
        let st = body["status"].as_str().unwrap_or("?").to_string();
        let code = body["error_code"].as_str().map(String::from);
        let result = if st == "completed" {
            result_text(&body)
        } else {
            short(&body["error_message"], 90)
        };
        (st, result, code)
    } else {
        let code = body["error"]["code"].as_str().map(String::from);
        (
            format!("http {status}"),
            short(&body["error"]["message"], 90),
            code,
        )
    };
    let ok = match expect {
        Expect::Completed => st == "completed",
        Expect::Refused(c) => code.as_deref() == Some(c),
    };
    task.finish(&st);
    Ok(Step {
        backend: backend.into(),
        query: sql.into(),
        status: st,
        result,
        epsilon: body["epsilon_consumed"].as_f64().unwrap_or(0.0),
        time_ms,
        ok,
        body,
    })
}

/// The demo's steps.
pub async fn run(f: &Federation) -> anyhow::Result<Vec<Step>> {
    let first = f.orgs().first().cloned().context("no organizations")?;
    let ds = &format!("{first}.patients");
    let mut steps = Vec::new();
    steps.push(
        step(
            f,
            ds,
            "SELECT COUNT(*) FROM patients",
            "dp_sandbox",
            Some(0.5),
            Expect::Completed,
        )
        .await?,
    );
    steps.push(
        step(
            f,
            ds,
            "SELECT SUM(age) FROM patients",
            "dp_sandbox",
            Some(0.5),
            Expect::Completed,
        )
        .await?,
    );
    steps.push(
        step(
            f,
            ds,
            "SELECT state, AVG(age), COUNT(*) FROM patients GROUP BY state HAVING COUNT(*) >= 25",
            "dp_sandbox",
            Some(0.6),
            Expect::Completed,
        )
        .await?,
    );
    steps.push(
        step(
            f,
            ds,
            "SELECT COUNT(*) FROM patients WHERE diagnosis = 'diabetes' AND age >= 50",
            "dp_sandbox",
            Some(0.5),
            Expect::Completed,
        )
        .await?,
    );
    // HE with an encrypted filter constant, released under the node's default dp mode: the node
    // adds OpenDP noise to the encrypted sum; the answer must sit within a few half-widths of
    // the plaintext truth (the proof states the 95% one).
    let mut he = step(
        f,
        ds,
        "SELECT SUM(age) FROM patients WHERE diagnosis = 'diabetes'",
        "he_backend",
        Some(0.8),
        Expect::Completed,
    )
    .await?;
    let want: i64 = f
        .patients_of(&first)
        .into_iter()
        .filter(|p| p.diagnosis == "diabetes")
        .map(|p| p.age)
        .sum();
    let release = &he.body["proof_artifacts"]["release"];
    let got = he.body["result"]["rows"][0][0].as_i64();
    let column = he.body["result"]["columns"][0].as_str().unwrap_or_default();
    let ci = release["ci95_half_width"][column].as_f64();
    let within = match (got, ci) {
        (Some(g), Some(c)) => ((g - want).abs() as f64) <= 3.0 * c,
        _ => false,
    };
    he.ok &= release["mode"] == "dp" && within;
    he.result = format!(
        "{} ± {} (95%, ε={}; plaintext {want})",
        he.result,
        ci.map_or("?".into(), |c| format!("{c:.0}")),
        he.body["epsilon_consumed"]
    );
    steps.push(he);
    steps.push(room_step(f).await?);
    steps.push(
        step(
            f,
            ds,
            "SELECT COUNT(*) FROM patients",
            "enclave_backend",
            None,
            Expect::Refused("backend_not_implemented"),
        )
        .await?,
    );
    steps.push(
        step(
            f,
            ds,
            "SELECT name FROM patients",
            "dp_sandbox",
            None,
            Expect::Refused("unknown_column"),
        )
        .await?,
    );
    Ok(steps)
}

/// The SQL of the demo's data room.
pub const ROOM_SQL: &str = "SELECT state, COUNT(*), AVG(treatment_cost) FROM patients WHERE diagnosis = 'diabetes' GROUP BY state";

/// The ε each hospital of the demo's room spends on its own dataset (0.3, 0.4, 0.5, 0.6, 0.7,
/// then 0.3 again, in the order the organizations were created).
pub fn room_epsilon(orgs: &[String]) -> Vec<(String, f64)> {
    orgs.iter()
        .enumerate()
        .map(|(i, o)| (o.clone(), 0.3 + 0.1 * (i % 5) as f64))
        .collect()
}

/// Who takes part in the demo's room and how to reach them — a federation in this process,
/// or one that `prism-sim serve` describes in its `federation.json`.
pub struct RoomParties {
    /// The analyst's API.
    pub analyst: Api,
    /// Each organization's node admin API, in the order the organizations were created.
    pub nodes: Vec<(String, Api)>,
    /// The plaintext answer of [`ROOM_SQL`] over every party's data ([`room_truth`]).
    pub truth: Value,
    /// Where the room shows its progress.
    pub progress: Progress,
}

impl RoomParties {
    /// Every organization of a federation in this process.
    pub fn of(f: &Federation) -> anyhow::Result<Self> {
        let nodes = f
            .orgs()
            .iter()
            .map(|o| Ok((o.to_string(), f.node_admin(o.as_str())?)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(RoomParties {
            analyst: f.analyst(),
            nodes,
            truth: expected_room_result(f),
            progress: f.progress.clone(),
        })
    }
}

/// An attested three-hospital data room under DP (each hospital adds noise for its own ε):
/// create it, have each hospital's admin attest through its own node, execute it, and check
/// every released count lies within the proof's 95 % interval around the plaintext truth.
pub async fn room_step(f: &Federation) -> anyhow::Result<Step> {
    room_step_with(&RoomParties::of(f)?).await
}

/// [`room_step`] with every organization of `parties`.
pub async fn room_step_with(parties: &RoomParties) -> anyhow::Result<Step> {
    let api = &parties.analyst;
    let t = Instant::now();
    let orgs: Vec<String> = parties.nodes.iter().map(|(o, _)| o.clone()).collect();
    let epsilon = room_epsilon(&orgs);
    let per_party: serde_json::Map<String, Value> =
        epsilon.iter().map(|(o, e)| (o.clone(), json!(e))).collect();
    // The demo's other steps charge the first hospital; its column shows that hospital's ε.
    let own_epsilon = epsilon.first().map_or(0.0, |(_, e)| *e);
    let spent = epsilon
        .iter()
        .map(|(o, e)| format!("{o} {e:.1}"))
        .collect::<Vec<_>>()
        .join(", ");
    let (status, room) = api
        .post(
            "/api/v1/data_rooms",
            &json!({"name": "Diabetes across hospitals", "description": "demo", "query_text": ROOM_SQL,
                    "participants": orgs, "release": "dp", "participant_epsilon": per_party}),
        )
        .await?;
    let fail = |status: String, body: Value| Step {
        backend: "mpc_backend".into(),
        query: ROOM_SQL.into(),
        result: short(&body, 90),
        status,
        epsilon: 0.0,
        time_ms: t.elapsed().as_secs_f64() * 1000.0,
        ok: false,
        body,
    };
    if status != 201 {
        return Ok(fail(format!("http {status}"), room));
    }
    let id = room["id"].as_str().unwrap_or_default().to_string();
    let task = parties.progress.bar(
        orgs.len() as u64,
        &format!("mpc_backend room of {} parties", orgs.len()),
    );
    // Each organization's admin reads the invitation on its own node and attests.
    for (org, node) in &parties.nodes {
        task.say(format!("{org} attests"));
        let mut attested = false;
        for _ in 0..100 {
            let (s, _) = node.get(&format!("/v1/invitations/{id}")).await?;
            if s == 200 {
                let (s, body) = node
                    .post(&format!("/v1/invitations/{id}/attest"), &json!({}))
                    .await?;
                if s != 200 {
                    return Ok(fail(format!("attest http {s}"), body));
                }
                attested = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        if !attested {
            return Ok(fail("no invitation".into(), json!(org)));
        }
        task.inc();
    }
    task.say("executing: the parties exchange shares");
    for _ in 0..100 {
        let (_, r) = api.get(&format!("/api/v1/data_rooms/{id}")).await?;
        if r["status"] == "ready" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (status, body) = api
        .post(
            &format!("/api/v1/data_rooms/{id}/execute?wait=true"),
            &json!({}),
        )
        .await?;
    let time_ms = t.elapsed().as_secs_f64() * 1000.0;
    let st = body["status"].as_str().unwrap_or("?").to_string();
    task.finish(&st);
    let within = st == "completed" && within_interval(&body, &parties.truth);
    Ok(Step {
        backend: "mpc_backend".into(),
        query: ROOM_SQL.into(),
        status: if status == 200 {
            st.clone()
        } else {
            format!("http {status}")
        },
        result: if st == "completed" {
            format!(
                "{} (within 95% CI: {within}; ε per party: {spent})",
                result_text(&body)
            )
        } else {
            short(&body["error_message"], 90)
        },
        epsilon: own_epsilon,
        time_ms,
        ok: within,
        body,
    })
}

/// Whether every released row of a dp room names a state of the truth, has a non-null
/// average, and a count within the proof's 95 % half-width of the true count.
pub fn within_interval(room: &Value, truth: &Value) -> bool {
    let half = room["proof_artifacts"]["dp"]["noise"]
        .as_array()
        .and_then(|a| a.iter().find(|n| n["component"] == "count"))
        .and_then(|n| n["ci95_half_width"].as_f64());
    let (Some(half), Some(rows), Some(want)) = (
        half,
        room["result"]["rows"].as_array(),
        truth["rows"].as_array(),
    ) else {
        return false;
    };
    !rows.is_empty()
        && rows.iter().all(|r| {
            let Some(t) = want.iter().find(|t| t[0] == r[0]) else {
                return false;
            };
            match (r[1].as_f64(), t[1].as_f64()) {
                (Some(n), Some(m)) => (n - m).abs() <= half && !r[2].is_null(),
                _ => false,
            }
        })
}

/// The plaintext answer of [`ROOM_SQL`] over every hospital's generated data (what the room's
/// noisy answer is checked against).
pub fn expected_room_result(f: &Federation) -> Value {
    room_truth(f.orgs().iter().flat_map(|o| f.patients_of(o)))
}

/// The plaintext answer of [`ROOM_SQL`] over `patients`.
pub fn room_truth(patients: impl IntoIterator<Item = crate::data::Patient>) -> Value {
    use std::collections::BTreeMap;
    let mut by_state: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
    for p in patients {
        if p.diagnosis == "diabetes" {
            let e = by_state.entry(p.state).or_default();
            e.0 += 1;
            e.1 += (p.treatment_cost * 100.0).round() as i64;
        }
    }
    let rows: Vec<Value> = crate::data::STATES
        .iter()
        .map(|s| {
            let (n, cents) = by_state.get(s).copied().unwrap_or_default();
            let avg = if n == 0 {
                Value::Null
            } else {
                json!((cents as f64 / 100.0) / n as f64)
            };
            json!([s, n, avg])
        })
        .collect();
    json!({"columns": ["state", "count", "avg_treatment_cost"], "rows": rows})
}

/// Prints the table.
pub fn print(steps: &[Step]) {
    println!(
        "{:<16} {:<58} {:<10} {:<60} {:>6} {:>9}",
        "backend", "query", "status", "result", "ε", "time ms"
    );
    println!("{}", "-".repeat(164));
    for s in steps {
        println!(
            "{:<16} {:<58} {:<10} {:<60} {:>6.3} {:>9.1}{}",
            s.backend,
            short(&json!(s.query), 58),
            s.status,
            short(&json!(s.result), 60),
            s.epsilon,
            s.time_ms,
            if s.ok { "" } else { "   <-- unexpected" }
        );
    }
}
