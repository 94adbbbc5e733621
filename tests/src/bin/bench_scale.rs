//! `bench_scale`: a dataset larger than the node would hold in memory, stored columnar.
//!
//! Run with `cargo run --release -p prism-tests --bin bench_scale` (options: `--rows N`
//! (100 000 000), `--runs N` (3), `--dir D` (where the CSV is written once and reused,
//! default `target/bench-scale`)). It
//!
//! 1. writes `N` synthetic `patients` rows as CSV (`tests/src/data.rs`, in slices of 100 000
//!    rows with their own seeds), unless the file exists;
//! 2. starts an in-process federation (coordinator + one node over QUIC) and uploads the file
//!    through the columnar import (`POST /v1/datasets/upload`, multipart, streamed from the
//!    file), timing it;
//! 3. times each DP query shape of `bench_dp` end to end (create + execute, ε = 1) over the
//!    streamed dataset, with the node's compute time read from each run;
//! 4. reports the process's resident memory (current and peak, `/proc/self/status`): the
//!    coordinator, the node and this client share it, so it bounds the node's.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use prism_node::Policy;
use prism_tests::{Federation, FederationSpec, data};
use serde_json::json;

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

struct Options {
    rows: usize,
    runs: usize,
    dir: PathBuf,
}

fn options() -> anyhow::Result<Options> {
    let mut o = Options {
        rows: 100_000_000,
        runs: 3,
        dir: PathBuf::from("target/bench-scale"),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--rows" => o.rows = value()?.parse()?,
            "--runs" => o.runs = value()?.parse::<usize>()?.max(1),
            "--dir" => o.dir = PathBuf::from(value()?),
            "-h" | "--help" => {
                println!("bench_scale [--rows N (100000000)] [--runs N (3)] [--dir D]");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other}; see --help"),
        }
    }
    Ok(o)
}

/// Resident memory of this process: (current, peak) in MiB.
fn rss() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
            / 1024.0
    };
    (kib("VmRSS:"), kib("VmHWM:"))
}

/// Writes the CSV once: slices of 100 000 rows, each from its own seed, ids running on.
fn write_csv(o: &Options) -> anyhow::Result<PathBuf> {
    let path = o.dir.join(format!("patients-{}.csv", o.rows));
    if path.is_file() {
        return Ok(path);
    }
    std::fs::create_dir_all(&o.dir)?;
    let t = Instant::now();
    let tmp = path.with_extension("csv.tmp");
    let mut w = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&tmp)?);
    w.write_all(b"id,age,diagnosis,treatment_cost,state\n")?;
    let mut done = 0usize;
    for slice in 0.. {
        let n = (o.rows - done).min(100_000);
        if n == 0 {
            break;
        }
        for p in data::patients(slice, 0, n) {
            writeln!(
                w,
                "{},{},{},{:.2},{}",
                p.id + done as i64,
                p.age,
                p.diagnosis,
                p.treatment_cost,
                p.state
            )?;
        }
        done += n;
    }
    w.flush()?;
    drop(w);
    std::fs::rename(&tmp, &path)?;
    eprintln!(
        "wrote {} rows of CSV in {:.1} s",
        o.rows,
        t.elapsed().as_secs_f64()
    );
    Ok(path)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let o = options()?;
    let csv = write_csv(&o)?;
    let bytes = std::fs::metadata(&csv)?.len();
    let f = Federation::start(FederationSpec {
        orgs: vec!["hospital-a".into()],
        rows_per_org: 0,
        policy: Policy {
            max_epsilon_per_query: 10.0,
            ..Default::default()
        },
        ..Default::default()
    })
    .await?;
    let node = f.node_admin("hospital-a")?;
    let (rss0, _) = rss();

    let t = Instant::now();
    let file = tokio::fs::File::open(&csv).await?;
    let declaration = json!({"name": "patients", "columns": data::patient_columns(),
                             "budget": {"epsilon": 1e6, "delta": 0.5}});
    let (status, b) = node
        .upload(
            "/v1/datasets/upload",
            &declaration,
            reqwest::Body::from(file),
        )
        .await?;
    let import_s = t.elapsed().as_secs_f64();
    if status != 201 {
        bail!("the columnar import was refused: {status} {b}");
    }
    let (rss_import, peak_import) = rss();
    eprintln!(
        "imported {} rows ({:.0} MB of CSV) in {import_s:.1} s: {:.2} M rows/s; RSS {rss_import:.0} MiB (peak {peak_import:.0})",
        b["rows"],
        bytes as f64 / 1e6,
        o.rows as f64 / import_s / 1e6
    );
    f.wait_for_datasets(1).await?;

    let api = f.analyst();
    let mut table = Vec::new();
    for (label, sql) in SHAPES {
        let (mut wall, mut compute) = (Vec::new(), Vec::new());
        for _ in 0..o.runs {
            let t = Instant::now();
            let (_, s, run) = api
                .run_query("hospital-a.patients", sql, "dp_sandbox", Some(1.0))
                .await?;
            if s != 200 || run["status"] != "completed" {
                bail!("{label}: {s} {run}");
            }
            wall.push(t.elapsed().as_secs_f64() * 1000.0);
            compute.push(
                run["proof_artifacts"]["node_compute_ms"]
                    .as_f64()
                    .unwrap_or(f64::NAN),
            );
        }
        let (now, peak) = rss();
        eprintln!(
            "{label}: {:.0} ms end to end (node {:.0} ms); RSS {now:.0} MiB (peak {peak:.0})",
            median(wall.clone()),
            median(compute.clone())
        );
        table.push((label, median(wall), median(compute), now));
    }
    f.shutdown().await;
    let (_, peak) = rss();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "\n{} rows ({:.1} GB of CSV), {cpus} CPUs, median of {} runs, ε = 1.\n",
        o.rows,
        bytes as f64 / 1e9,
        o.runs
    );
    println!(
        "columnar import: {import_s:.1} s, {:.2} M rows/s (target ≥ 1); process RSS {rss0:.0} MiB before, {rss_import:.0} MiB after\n",
        o.rows as f64 / import_s / 1e6
    );
    println!("| query | end to end (ms) | node compute (ms) | process RSS after (MiB) |");
    println!("|---|---|---|---|");
    for (label, wall, compute, now) in table {
        println!("| {label} | {wall:.0} | {compute:.0} | {now:.0} |");
    }
    println!("\npeak process RSS over the whole run: {peak:.0} MiB (target < 1024)");
    Ok(())
}
