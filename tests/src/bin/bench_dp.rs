//! `bench_dp`: latency of differentially private queries over a 1M-row `patients` dataset.
//!
//! Run with `cargo run --release -p prism-tests --bin bench_dp` (options: `--rows N`,
//! `--runs N`, `--warmup N`). For each query shape it measures
//!
//! * **node-side**: `prism_common::dp::release` (calibration, `filter_mask`, grouping, exact
//!   aggregates, OpenDP noise, proof) on the in-memory dataset, and separately `dp::estimate`
//!   (calibration alone) and `eval::filter_mask`;
//! * **end to end**: `POST /api/v1/queries` + `POST /api/v1/queries/{id}/execute?wait=true`
//!   against an in-process federation whose one node holds the rows, and execute-only (the
//!   queries created beforehand), with the node's own compute time and the coordinator's
//!   node round trip read from each run.
//!
//! Medians and 95th percentiles (nearest rank) over `--runs` runs after `--warmup` runs,
//! printed as a markdown table.
//!
//! With `--accuracy` (and `--releases N`, default 201) it measures accuracy instead: the median
//! absolute error of each shape's released values against the exact answer over N node-side
//! releases at ε = 1, next to SmartNoise SQL 1.0.10's figures for the same shapes on the same
//! 1M-row data (measured once, recorded in `docs/PERFORMANCE.md`).

use std::time::Instant;

use anyhow::{Context, bail};
use prism_common::dp::{self, DpParams};
use prism_common::{eval, sql};
use prism_node::Policy;
use prism_tests::{Api, Federation, FederationSpec, data};

#[path = "bench_dp/accuracy.rs"]
mod accuracy;
use serde_json::{Value, json};

/// The measured query shapes: (label, SQL).
const SHAPES: [(&str, &str); 5] = [
    ("COUNT(*)", "SELECT COUNT(*) FROM patients"),
    ("SUM(age)", "SELECT SUM(age) FROM patients"),
    ("AVG(age)", "SELECT AVG(age) FROM patients"),
    (
        "COUNT(*) WHERE",
        "SELECT COUNT(*) FROM patients WHERE diagnosis = 'diabetes' AND age >= 50",
    ),
    (
        "GROUP BY state",
        "SELECT state, AVG(age), COUNT(*) FROM patients GROUP BY state",
    ),
];

/// ε per query; δ is only spent by threshold key release, which these shapes do not use.
const EPSILON: f64 = 1.0;
const DELTA: f64 = 1e-7;

struct Options {
    rows: usize,
    runs: usize,
    warmup: usize,
    accuracy: bool,
    releases: usize,
}

fn options() -> anyhow::Result<Options> {
    let mut o = Options {
        rows: 1_000_000,
        runs: 30,
        warmup: 5,
        accuracy: false,
        releases: 201,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || -> anyhow::Result<usize> {
            let v = args.next().with_context(|| format!("{a} needs a value"))?;
            v.parse().with_context(|| format!("{a} {v}"))
        };
        match a.as_str() {
            "--rows" => o.rows = value()?,
            "--runs" => o.runs = value()?.max(1),
            "--warmup" => o.warmup = value()?,
            "--accuracy" => o.accuracy = true,
            "--releases" => o.releases = value()?.max(1),
            "-h" | "--help" => {
                println!(
                    "bench_dp [--rows N (1000000)] [--runs N (30)] [--warmup N (5)] [--accuracy [--releases N (201)]]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other}; see --help"),
        }
    }
    Ok(o)
}

/// Median and 95th percentile (nearest rank) of milliseconds.
#[derive(Clone, Copy, Default)]
struct Summary {
    median: f64,
    p95: f64,
}

fn summarize(mut ms: Vec<f64>) -> Summary {
    if ms.is_empty() {
        return Summary::default();
    }
    ms.sort_by(f64::total_cmp);
    let n = ms.len();
    let median = if n % 2 == 1 {
        ms[n / 2]
    } else {
        (ms[n / 2 - 1] + ms[n / 2]) / 2.0
    };
    let rank = ((0.95 * n as f64).ceil() as usize).clamp(1, n);
    Summary {
        median,
        p95: ms[rank - 1],
    }
}

fn elapsed_ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

/// Times `f` `warmup + runs` times and summarizes the last `runs`.
fn time<T>(o: &Options, mut f: impl FnMut() -> anyhow::Result<T>) -> anyhow::Result<Summary> {
    for _ in 0..o.warmup {
        f()?;
    }
    let mut ms = Vec::with_capacity(o.runs);
    for _ in 0..o.runs {
        let t = Instant::now();
        std::hint::black_box(f()?);
        ms.push(elapsed_ms(t));
    }
    Ok(summarize(ms))
}

#[derive(Default)]
struct Row {
    release: Summary,
    estimate: Summary,
    filter: Summary,
    create_execute: Summary,
    create: Summary,
    execute: Summary,
    node_compute: Summary,
    node_round_trip: Summary,
}

fn node_side(
    o: &Options,
    ds: &prism_common::schema::Dataset,
    policy: &Policy,
) -> anyhow::Result<Vec<Row>> {
    let params = DpParams {
        epsilon: EPSILON,
        delta: DELTA,
    };
    let policy = policy.dp();
    let mut rows = Vec::new();
    for (label, q) in SHAPES {
        let plan = sql::plan_query(q, &ds.schema).with_context(|| format!("planning {label}"))?;
        let release = time(o, || {
            dp::release(&plan, ds, &params, &policy).with_context(|| format!("releasing {label}"))
        })?;
        let estimate = time(o, || {
            dp::estimate(&plan, &ds.schema, &params, &policy)
                .with_context(|| format!("estimating {label}"))
        })?;
        let filter = time(o, || {
            eval::filter_mask(plan.filter.as_ref(), ds)
                .with_context(|| format!("filtering {label}"))
        })?;
        eprintln!(
            "node-side {label}: release {:.2} ms (p95 {:.2}), estimate {:.3} ms, filter {:.2} ms",
            release.median, release.p95, estimate.median, filter.median
        );
        rows.push(Row {
            release,
            estimate,
            filter,
            ..Default::default()
        });
    }
    Ok(rows)
}

/// Imports the rows through the node's admin API, as a data owner would.
async fn load(node: &Api, csv: &str) -> anyhow::Result<()> {
    let body = json!({"name": "patients", "columns": data::patient_columns(), "csv": csv});
    let t = Instant::now();
    let (status, answer) = node.post("/v1/datasets", &body).await?;
    if status != 201 {
        bail!(
            "the node admin API refused the {} MB import ({status}: {}); raise the node's max_import_mib",
            csv.len() / 1_000_000,
            answer.to_string().chars().take(200).collect::<String>()
        );
    }
    eprintln!(
        "imported through the node admin API in {:.0} ms",
        elapsed_ms(t)
    );
    Ok(())
}

async fn post_ok(api: &Api, path: &str, body: &Value, want: u16) -> anyhow::Result<Value> {
    let (status, v) = api.post(path, body).await?;
    if status != want {
        bail!("POST {path}: {status} {v}");
    }
    Ok(v)
}

async fn create(api: &Api, q: &str) -> anyhow::Result<String> {
    let body =
        json!({"dataset_id": "hospital-a.patients", "sql": q, "epsilon": EPSILON, "delta": DELTA});
    let v = post_ok(api, "/api/v1/queries", &body, 201).await?;
    v["id"]
        .as_str()
        .map(str::to_string)
        .with_context(|| format!("no query id in {v}"))
}

/// Executes a query and waits; returns (node compute ms, coordinator's node round trip ms).
async fn execute(api: &Api, id: &str) -> anyhow::Result<(f64, f64)> {
    let run = post_ok(
        api,
        &format!("/api/v1/queries/{id}/execute?wait=true"),
        &json!({}),
        200,
    )
    .await?;
    if run["status"] != "completed" {
        bail!("run did not complete: {run}");
    }
    let compute = run["proof_artifacts"]["node_compute_ms"]
        .as_f64()
        .unwrap_or(f64::NAN);
    let trip = run["execution_time_ms"].as_f64().unwrap_or(f64::NAN);
    Ok((compute, trip))
}

async fn end_to_end(o: &Options, api: &Api, rows: &mut [Row]) -> anyhow::Result<()> {
    for ((label, q), row) in SHAPES.iter().zip(rows.iter_mut()) {
        for _ in 0..o.warmup {
            let id = create(api, q).await?;
            execute(api, &id).await?;
        }
        let (mut total, mut created, mut compute, mut trip) = (vec![], vec![], vec![], vec![]);
        for _ in 0..o.runs {
            let t = Instant::now();
            let id = create(api, q).await?;
            created.push(elapsed_ms(t));
            let (c, r) = execute(api, &id).await?;
            total.push(elapsed_ms(t));
            compute.push(c);
            trip.push(r);
        }
        // Execute only: the queries exist already.
        let mut ids = Vec::with_capacity(o.runs + o.warmup);
        for _ in 0..o.runs + o.warmup {
            ids.push(create(api, q).await?);
        }
        let mut exec = Vec::with_capacity(o.runs);
        for (i, id) in ids.iter().enumerate() {
            let t = Instant::now();
            let (c, r) = execute(api, id).await?;
            if i >= o.warmup {
                exec.push(elapsed_ms(t));
                compute.push(c);
                trip.push(r);
            }
        }
        row.create_execute = summarize(total);
        row.create = summarize(created);
        row.execute = summarize(exec);
        row.node_compute = summarize(compute);
        row.node_round_trip = summarize(trip);
        eprintln!(
            "end to end {label}: create+execute {:.2} ms (p95 {:.2}), execute {:.2} ms (p95 {:.2})",
            row.create_execute.median, row.create_execute.p95, row.execute.median, row.execute.p95
        );
    }
    Ok(())
}

fn print_table(o: &Options, rows: &[Row]) {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "\n{} rows, {} runs after {} warm-up runs, ε = {EPSILON}, {cpus} CPUs; dataset imported through the node admin API (POST /v1/datasets).",
        o.rows, o.runs, o.warmup
    );
    println!("All times in ms, median / p95.\n");
    println!(
        "| query | node-side `dp::release` | of which `filter_mask` | `dp::estimate` | end to end: create + execute | execute only | create only | node compute (in run) | coordinator → node round trip | target node-side | target e2e (< 2× node-side) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let pair = |s: Summary| format!("{:.2} / {:.2}", s.median, s.p95);
    for ((label, _), r) in SHAPES.iter().zip(rows) {
        let limit = if label.starts_with("COUNT(*)") && !label.contains("WHERE") {
            5.0
        } else {
            40.0
        };
        let node_ok = r.release.median < limit;
        let e2e_ok = r.create_execute.median < 2.0 * r.release.median;
        let exec_ok = r.execute.median < 2.0 * r.release.median;
        println!(
            "| {label} | {} | {} | {} | {} | {} | {} | {} | {} | < {limit} ms: {} | create+execute {}, execute-only {} |",
            pair(r.release),
            pair(r.filter),
            pair(r.estimate),
            pair(r.create_execute),
            pair(r.execute),
            pair(r.create),
            pair(r.node_compute),
            pair(r.node_round_trip),
            if node_ok { "met" } else { "MISSED" },
            if e2e_ok { "met" } else { "MISSED" },
            if exec_ok { "met" } else { "MISSED" },
        );
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let o = options()?;
    let t = Instant::now();
    let patients = data::patients(7, 0, o.rows);
    let csv = data::to_csv(&patients);
    drop(patients);
    let ds = prism_node::import::parse_csv("patients", data::patient_columns(), &csv)?;
    eprintln!(
        "generated and parsed {} rows ({} MB of CSV) in {:.0} ms",
        ds.rows,
        csv.len() / 1_000_000,
        elapsed_ms(t)
    );
    let policy = Policy {
        max_epsilon_per_query: 10.0,
        ..Default::default()
    };
    if o.accuracy {
        let patients = data::patients(7, 0, o.rows);
        return accuracy::run(&o, &ds, &patients, &policy.dp());
    }

    let mut rows = node_side(&o, &ds, &policy)?;

    let f = Federation::start(FederationSpec {
        orgs: vec!["hospital-a".into()],
        rows_per_org: 0,
        policy,
        ..Default::default()
    })
    .await?;
    let node = f.node_admin("hospital-a")?;
    drop(ds);
    load(&node, &csv).await?;
    drop(csv);
    f.wait_for_datasets(1).await?;
    let (status, b) = node
        .put(
            "/v1/datasets/patients/budget",
            &json!({"epsilon": 1e6, "delta": 0.5}),
        )
        .await?;
    if status != 200 {
        bail!("raising the budget: {status} {b}");
    }
    let api = f.analyst();
    let outcome = end_to_end(&o, &api, &mut rows).await;
    f.shutdown().await;
    outcome?;
    print_table(&o, &rows);
    Ok(())
}
