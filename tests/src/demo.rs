//! The demo flow (the seed plan's walk-through), driven through the real admin API.
//!
//! Each step states the outcome it expects; the demo succeeds only if every step had it.

use std::time::Instant;

use serde_json::{Value, json};

use crate::federation::Federation;

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
    let Some(rows) = run["result"]["rows"].as_array() else {
        return String::new();
    };
    let cols = run["result"]["columns"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let fmt = |v: &Value| match v.as_f64() {
        Some(x) if v.is_f64() => format!("{x:.2}"),
        _ => short(v, 20),
    };
    if rows.len() == 1 {
        cols.iter()
            .zip(rows[0].as_array().into_iter().flatten())
            .map(|(c, v)| format!("{}={}", short(c, 20), fmt(v)))
            .collect::<Vec<_>>()
            .join(" ")
    } else {
        let first: Vec<String> = rows
            .iter()
            .take(3)
            .map(|r| {
                r.as_array()
                    .into_iter()
                    .flatten()
                    .map(fmt)
                    .collect::<Vec<_>>()
                    .join("/")
            })
            .collect();
        format!("{} groups: {} …", rows.len(), first.join(", "))
    }
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
    let ds = "hospital-a.patients";
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
    steps.push(
        step(
            f,
            ds,
            "SELECT SUM(age) FROM patients WHERE diagnosis = 'diabetes'",
            "he_backend",
            None,
            Expect::Refused("backend_not_served"),
        )
        .await?,
    );
    steps.push(
        step(
            f,
            ds,
            "SELECT COUNT(*) FROM patients",
            "mpc_backend",
            None,
            Expect::Refused("backend_not_served"),
        )
        .await?,
    );
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
