//! `bench_mpc`: execute → result latency of attested MPC data rooms.
//!
//! Run with `cargo run --release -p prism-tests --bin bench_mpc` (options: `--runs N`, default 10).
//! For 3, 10 and 25 parties and 1, 1 000 and 10 000 declared group keys it starts an in-process
//! federation (each party a real node with its own redb file and QUIC endpoints on loopback),
//! opens a room, has every party attest, then times `POST /api/v1/data_rooms/{id}/execute?wait=true`
//! over `--runs` executions: the whole protocol — dispatch, local aggregation, signature checks,
//! share exchange over mutual TLS, partial sums, reconstruction — in a `dp` room (the default:
//! every party noises its own vector, ε = 0.1 each). Prints a markdown table.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use prism_common::schema::{ColumnSpec, ColumnType};
use prism_tests::{Federation, FederationSpec};
use serde_json::json;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

async fn bench(
    parties: usize,
    keys: usize,
    runs: usize,
    rows: usize,
) -> anyhow::Result<(f64, f64, f64)> {
    let orgs: Vec<String> = (0..parties).map(|i| format!("party-{i:02}")).collect();
    let f = Federation::start(FederationSpec {
        orgs: orgs.clone(),
        rows_per_org: 0,
        ..Default::default()
    })
    .await?;
    // Each party holds `rows` rows whose `bucket` spreads over the declared keys.
    let columns = vec![
        ColumnSpec {
            name: "bucket".into(),
            ty: ColumnType::Integer,
            bounds: None,
            public_keys: None,
            not_null: false,
            privacy_unit: None,
        },
        ColumnSpec {
            name: "amount".into(),
            ty: ColumnType::Integer,
            // Rooms are dp by default: each party clamps to and calibrates from these bounds.
            bounds: Some(prism_common::schema::Bounds {
                min: 0.0,
                max: 100.0,
            }),
            public_keys: None,
            not_null: false,
            privacy_unit: None,
        },
    ];
    for (p, org) in orgs.iter().enumerate() {
        let mut csv = String::from("bucket,amount\n");
        for r in 0..rows {
            csv.push_str(&format!("{},{}\n", (r * 7 + p) % keys, r % 100));
        }
        let (s, body) = f
            .node_admin(org)?
            .post(
                "/v1/datasets",
                &json!({"name": "ledger", "columns": columns, "csv": csv}),
            )
            .await?;
        if s != 201 {
            bail!("import into {org}: {s} {body}");
        }
    }
    f.wait_for_datasets(parties).await?;
    let (sql, group_keys) = if keys == 1 {
        (
            "SELECT COUNT(*), SUM(amount) FROM ledger".to_string(),
            json!({}),
        )
    } else {
        (
            "SELECT bucket, COUNT(*), SUM(amount) FROM ledger GROUP BY bucket".to_string(),
            json!({"bucket": (0..keys).map(|k| k.to_string()).collect::<Vec<_>>()}),
        )
    };
    let api = f.analyst();
    let mut times = Vec::new();
    let mut first = 0.0;
    // A room executes once: each measured execution gets its own attested room.
    for i in 0..runs + 1 {
        let id = ready_room(&f, &api, &sql, &group_keys, &orgs).await?;
        let t = Instant::now();
        let (s, r) = api
            .post(
                &format!("/api/v1/data_rooms/{id}/execute?wait=true"),
                &json!({}),
            )
            .await?;
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        if s != 200 || r["status"] != "completed" {
            bail!("execution failed: {s} {}", r["error_message"]);
        }
        // dp rooms (the default) suppress keys whose noisy row count is below 10.
        let released = r["result"]["rows"].as_array().map_or(0, Vec::len);
        let suppressed = r["proof_artifacts"]["suppressed_groups"]
            .as_u64()
            .unwrap_or(0) as usize;
        if released + suppressed != keys {
            bail!("wrong row count");
        }
        if i > 0 {
            times.push(ms);
        } else {
            first = ms; // the first execution dials the peers; later ones reuse the connections
        }
    }
    f.shutdown().await;
    times.sort_by(f64::total_cmp);
    Ok((first, percentile(&times, 50.0), percentile(&times, 95.0)))
}

async fn ready_room(
    f: &Federation,
    api: &prism_tests::Api,
    sql: &str,
    group_keys: &serde_json::Value,
    orgs: &[String],
) -> anyhow::Result<String> {
    let (s, room) = api
        .post("/api/v1/data_rooms", &json!({"name": "bench", "query_text": sql, "participants": orgs, "group_keys": group_keys, "epsilon": 0.1}))
        .await?;
    if s != 201 {
        bail!("create room: {s} {room}");
    }
    let id = room["id"].as_str().context("room id")?.to_string();
    for org in orgs {
        let node = f.node_admin(org)?;
        let mut done = false;
        for _ in 0..400 {
            let (s, _) = node
                .post(&format!("/v1/invitations/{id}/attest"), &json!({}))
                .await?;
            if s == 200 {
                done = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if !done {
            bail!("{org} never got the invitation");
        }
    }
    for _ in 0..1000 {
        let (_, r) = api.get(&format!("/api/v1/data_rooms/{id}")).await?;
        if r["status"] == "ready" {
            return Ok(id);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    bail!("room {id} never became ready")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let runs = args
        .iter()
        .position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    println!("| parties | group keys | first execution ms | median ms | p95 ms |");
    println!("|---:|---:|---:|---:|---:|");
    for parties in [3, 10, 25] {
        for keys in [1, 1_000, 10_000] {
            let (first, median, p95) = bench(parties, keys, runs, 2_000).await?;
            println!("| {parties} | {keys} | {first:.1} | {median:.1} | {p95:.1} |");
        }
    }
    Ok(())
}
