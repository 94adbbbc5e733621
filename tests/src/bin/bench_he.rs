//! `bench_he`: he_backend costs on this machine.
//!
//! Run with `cargo run --release -p prism-tests --bin bench_he` (options: `--runs N`, default 3;
//! `--skip-1m`; `--skip-e2e`). It measures
//!
//! * **keys**: generation of the key set at the key holder, the blob sizes a node receives, and
//!   the node's set-up (conformance checks and server-key decompression);
//! * **queries, keys cached**: the whole cryptographic path in one process — the key holder
//!   encodes and encrypts the constants, the node pre-aggregates, evaluates and compresses, the
//!   key holder decompresses and decrypts — for COUNT and SUM with an encrypted equality filter
//!   on a 4-value text column, with range filters (`>=` and `BETWEEN`) on an integer column of 128
//!   distinct values (1k and 1M rows each), and SUM without a filter (1k rows). Every answer is
//!   checked against plaintext;
//! * **end to end**: the same equality COUNT through an in-process federation's API, first with
//!   key generation and transfer, then with keys cached.
//!
//! Medians over `--runs` runs, printed as a markdown table.

use std::time::Instant;

use anyhow::{Context, bail};
use prism_common::he::cipher::read_constant;
use prism_common::he::encode::encode;
use prism_common::he::eval::evaluate;
use prism_common::he::groups::{Limits, prepare};
use prism_common::he::holder::{answer, encrypt_constants};
use prism_common::he::keys::{KeySet, NodeKeys, ServerKeyGuard};
use prism_common::he::{OpCounts, TextDomain};
use prism_common::plan::Table;
use prism_common::schema::{Bounds, ColumnData, ColumnSpec, ColumnType, Dataset, DatasetSchema};
use prism_common::{eval, sql};
use prism_tests::{Federation, FederationSpec};
use serde_json::json;

const CATEGORIES: [&str; 4] = ["c0", "c1", "c2", "c3"];

const QUERIES: [(&str, &str); 5] = [
    (
        "COUNT, =",
        "SELECT COUNT(*) FROM bench WHERE category = 'c2'",
    ),
    (
        "SUM, =",
        "SELECT SUM(amount) FROM bench WHERE category = 'c2'",
    ),
    (
        "COUNT, range",
        "SELECT COUNT(*) FROM bench WHERE age BETWEEN 30 AND 89",
    ),
    (
        "SUM, range",
        "SELECT SUM(amount) FROM bench WHERE age BETWEEN 30 AND 89",
    ),
    ("SUM, no filter", "SELECT SUM(amount) FROM bench"),
];

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs.get(xs.len() / 2).copied().unwrap_or(f64::NAN)
}

fn schema() -> DatasetSchema {
    let col = |name: &str, ty, bounds: Option<(f64, f64)>| ColumnSpec {
        name: name.into(),
        ty,
        bounds: bounds.map(|(min, max)| Bounds { min, max }),
        public_keys: None,
        not_null: false,
        privacy_unit: None,
    };
    let mut category = col("category", ColumnType::Text, None);
    category.public_keys = Some(CATEGORIES.iter().map(|s| s.to_string()).collect());
    DatasetSchema {
        name: "bench".into(),
        columns: vec![
            category,
            col("age", ColumnType::Integer, Some((0.0, 127.0))),
            col("amount", ColumnType::Integer, Some((0.0, 1000.0))),
        ],
    }
}

/// `rows` rows: 4 categories, ages 0..=127 (all 128 values), amounts 0..=1000.
fn dataset(rows: usize) -> Dataset {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let (mut codes, mut age, mut amount) = (vec![], vec![], vec![]);
    for i in 0..rows {
        codes.push(Some((next() % 4) as u32));
        age.push(Some((i % 128) as i64));
        amount.push(Some((next() % 1001) as i64));
    }
    Dataset {
        schema: schema(),
        columns: vec![
            ColumnData::Text {
                dict: CATEGORIES.iter().map(|s| s.to_string()).collect(),
                codes,
            },
            ColumnData::Integer(age),
            ColumnData::Integer(amount),
        ],
        rows,
    }
}

/// The plaintext answer.
fn plaintext(sql: &str, ds: &Dataset) -> anyhow::Result<serde_json::Value> {
    let plan = sql::plan_query(sql, &ds.schema)?;
    let mask = eval::filter_mask(plan.filter.as_ref(), ds)?;
    let agg = plan.aggregates().next().context("an aggregate")?;
    Ok(match &agg.column {
        None => json!(mask.iter().filter(|m| **m).count()),
        Some(c) => {
            let (_, data) = ds.column(c).context("column")?;
            let s: f64 = (0..ds.rows)
                .filter(|i| mask[*i])
                .filter_map(|i| data.number(i))
                .sum();
            json!(s as i64)
        }
    })
}

struct Timing {
    encrypt_ms: f64,
    preaggregate_ms: f64,
    evaluate_ms: f64,
    compress_ms: f64,
    decrypt_ms: f64,
    total_ms: f64,
    ops: OpCounts,
    groups: usize,
    table: Table,
}

fn run_once(sql: &str, ds: &Dataset, holder: &KeySet, node: &NodeKeys) -> anyhow::Result<Timing> {
    let start = Instant::now();
    let plan = sql::plan_query(sql, &ds.schema)?;
    let domains: Vec<TextDomain> = match ds.column("category") {
        Some((s, ColumnData::Text { dict, .. })) => vec![TextDomain::of(s, dict)],
        _ => vec![],
    };
    let t = Instant::now();
    let encoded = encode(&plan, &ds.schema, &domains)?;
    let blobs = encrypt_constants(holder, &encoded)?;
    let encrypt_ms = ms(t);
    let t = Instant::now();
    let limits = Limits {
        max_distinct_values: 256,
        max_groups: 4096,
    };
    let prep = prepare(&encoded.query, ds, &limits)?;
    let preaggregate_ms = ms(t);
    let t = Instant::now();
    let constants = {
        let _key = ServerKeyGuard::set(&node.server_key);
        let bits = encoded.query.constant_bits();
        blobs
            .iter()
            .zip(&bits)
            .map(|(b, w)| read_constant(b, *w))
            .collect::<Result<Vec<_>, _>>()?
    };
    let read_ms = ms(t);
    let out = evaluate(&encoded.query, &prep, &constants, node)?;
    let t = Instant::now();
    let table = answer(holder, &plan, &encoded, &out.blob, &prep.cells, None)?.table;
    let decrypt_ms = ms(t);
    Ok(Timing {
        encrypt_ms,
        preaggregate_ms,
        evaluate_ms: out.evaluate_ms + read_ms,
        compress_ms: out.compress_ms,
        decrypt_ms,
        total_ms: ms(start),
        ops: out.ops,
        groups: prep.groups.len(),
        table,
    })
}

fn main() -> anyhow::Result<()> {
    let mut runs = 3;
    let (mut skip_1m, mut skip_e2e, mut modes_only) = (false, false, false);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--runs" => runs = args.next().context("--runs N")?.parse()?,
            "--skip-1m" => skip_1m = true,
            "--skip-e2e" => skip_e2e = true,
            "--release-modes" => modes_only = true,
            other => bail!(
                "unknown option {other}: use --runs N, --skip-1m, --skip-e2e, --release-modes"
            ),
        }
    }
    if modes_only {
        let holder = KeySet::generate()?;
        let node = NodeKeys::from_blobs(
            &holder.key_id,
            &holder.public_key_bytes,
            &holder.server_key_bytes,
        )?;
        return release_modes(&holder, &node, runs);
    }
    println!("## Keys\n");
    let t = Instant::now();
    let holder = KeySet::generate()?;
    let keygen_ms = ms(t);
    let t = Instant::now();
    let node = NodeKeys::from_blobs(
        &holder.key_id,
        &holder.public_key_bytes,
        &holder.server_key_bytes,
    )?;
    let setup_ms = ms(t);
    println!("| what | value |\n|---|---|");
    println!(
        "| key generation (client, compressed server, compact public key; plus the holder's own decompression) | {keygen_ms:.0} ms |"
    );
    println!(
        "| compact public key | {} bytes |",
        holder.public_key_bytes.len()
    );
    println!(
        "| compressed server key | {} bytes |",
        holder.server_key_bytes.len()
    );
    println!("| node set-up (conformance checks, decompression) | {setup_ms:.0} ms |");

    println!("\n## Queries, keys cached (median of {runs})\n");
    println!(
        "| query | rows | groups | encrypted ops | total ms | holder encrypt | node pre-agg | node eval | node compress | holder decrypt |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let ops_text = |o: &OpCounts| {
        let parts = [
            (o.comparisons, "cmp"),
            (o.boolean_ops, "bool"),
            (o.dot_products, "dot"),
            (o.table_lookups, "lookup"),
            (o.arithmetic, "arith"),
            (o.public_key_encryptions, "pke"),
        ];
        parts
            .iter()
            .filter(|(n, _)| *n > 0)
            .map(|(n, k)| format!("{n} {k}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let sizes: &[usize] = if skip_1m {
        &[1_000]
    } else {
        &[1_000, 1_000_000]
    };
    for &rows in sizes {
        let ds = dataset(rows);
        for (label, sql) in QUERIES {
            if label == "SUM, no filter" && rows != 1_000 {
                continue;
            }
            let want = plaintext(sql, &ds)?;
            let mut timings = Vec::new();
            for _ in 0..runs {
                let t = run_once(sql, &ds, &holder, &node)?;
                let got = t.table.rows.first().and_then(|r| r.first()).cloned();
                if got.as_ref() != Some(&want) {
                    bail!("{sql} on {rows} rows: encrypted answer {got:?}, plaintext {want}");
                }
                timings.push(t);
            }
            let m = |f: fn(&Timing) -> f64| median(timings.iter().map(f).collect());
            let first = &timings[0];
            println!(
                "| {label} | {rows} | {} | {} | {:.0} | {:.1} | {:.1} | {:.0} | {:.0} | {:.0} |",
                first.groups,
                ops_text(&first.ops),
                m(|t| t.total_ms),
                m(|t| t.encrypt_ms),
                m(|t| t.preaggregate_ms),
                m(|t| t.evaluate_ms),
                m(|t| t.compress_ms),
                m(|t| t.decrypt_ms),
            );
        }
    }
    if !skip_e2e {
        end_to_end(runs)?;
    }
    Ok(())
}

/// The node's evaluation of the same query under each release step: none (the bare
/// evaluation), dp (cells widened for noise, noise added under encryption) and exact (one
/// encrypted comparison with k, one selection per cell). Each answer is decrypted.
fn release_modes(holder: &KeySet, node: &NodeKeys, runs: usize) -> anyhow::Result<()> {
    use prism_common::he::eval::{Path, evaluate_released};
    use prism_common::he::release::{HeRelease, Post, calibrate_noise, draw, gate_cell};
    use prism_common::release::ReleaseMode;
    println!("## Release modes: node evaluation, keys cached (median of {runs})\n");
    println!("| query | rows | bare ms | dp ms | dp added | exact (k = 10) ms | exact added |");
    println!("|---|---|---|---|---|---|---|");
    let ds = dataset(1_000);
    for (label, sql) in QUERIES {
        if label.contains("range") {
            continue;
        }
        let plan = sql::plan_query(sql, &ds.schema)?;
        let domains: Vec<TextDomain> = match ds.column("category") {
            Some((s, ColumnData::Text { dict, .. })) => vec![TextDomain::of(s, dict)],
            _ => vec![],
        };
        let encoded = encode(&plan, &ds.schema, &domains)?;
        let blobs = encrypt_constants(holder, &encoded)?;
        let limits = Limits {
            max_distinct_values: 256,
            max_groups: 4096,
        };
        let prep = prepare(&encoded.query, &ds, &limits)?;
        let constants = {
            let _key = ServerKeyGuard::set(&node.server_key);
            let bits = encoded.query.constant_bits();
            blobs
                .iter()
                .zip(&bits)
                .map(|(b, w)| read_constant(b, *w))
                .collect::<Result<Vec<_>, _>>()?
        };
        let gate = gate_cell(&prep.cells)?;
        let mut noisy = prep.clone();
        let noise = calibrate_noise(&mut noisy.cells, &ds, 1.0)?;
        let (mut bare, mut dp, mut exact) = (vec![], vec![], vec![]);
        for _ in 0..runs {
            let t = Instant::now();
            evaluate_released(
                &encoded.query,
                &prep,
                &constants,
                node,
                Path::Auto,
                &Post::None,
            )?;
            bare.push(ms(t));
            let post = Post::Noise(draw(&noise)?);
            let t = Instant::now();
            let out =
                evaluate_released(&encoded.query, &noisy, &constants, node, Path::Auto, &post)?;
            dp.push(ms(t));
            let release = HeRelease {
                mode: ReleaseMode::Dp,
                epsilon: 1.0,
                min_group_size: 10,
                gate,
            };
            answer(
                holder,
                &plan,
                &encoded,
                &out.blob,
                &noisy.cells,
                Some(&release),
            )?;
            let post = Post::Threshold { gate, k: 10 };
            let t = Instant::now();
            let out =
                evaluate_released(&encoded.query, &prep, &constants, node, Path::Auto, &post)?;
            exact.push(ms(t));
            let release = HeRelease {
                mode: ReleaseMode::Exact,
                ..release
            };
            answer(
                holder,
                &plan,
                &encoded,
                &out.blob,
                &prep.cells,
                Some(&release),
            )?;
        }
        let (b, d, e) = (median(bare), median(dp), median(exact));
        println!(
            "| {label} | 1000 | {b:.0} | {d:.0} | {:+.0} ms ({:+.0} %) | {e:.0} | {:+.0} ms |",
            d - b,
            100.0 * (d - b) / b,
            e - b
        );
    }
    Ok(())
}

/// The equality COUNT through a federation's API: the first run generates and installs keys.
fn end_to_end(runs: usize) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let f = Federation::start(FederationSpec {
            orgs: vec!["hospital-a".into()],
            rows_per_org: 1_000,
            ..Default::default()
        })
        .await?;
        println!("\n## End to end through the API (1 node, 1000 patients)\n");
        println!(
            "| run | wall ms | key generation ms | key transfer ms | node eval ms | decrypt ms |"
        );
        println!("|---|---|---|---|---|---|");
        let sql = "SELECT COUNT(*) FROM patients WHERE diagnosis = 'diabetes'";
        for i in 0..=runs {
            let t = Instant::now();
            let (_, status, run) = f
                .analyst()
                .run_query("hospital-a.patients", sql, "he_backend", None)
                .await?;
            let wall = ms(t);
            if status != 200 || run["status"] != "completed" {
                bail!("end-to-end run failed: {run}");
            }
            let tm = &run["proof_artifacts"]["timings_ms"];
            let label = if i == 0 {
                "first (keys generated and sent)"
            } else {
                "keys cached"
            };
            println!(
                "| {label} | {wall:.0} | {} | {} | {:.0} | {:.0} |",
                tm["key_generation"]
                    .as_f64()
                    .map_or("-".into(), |x| format!("{x:.0}")),
                tm["key_transfer"]
                    .as_f64()
                    .map_or("-".into(), |x| format!("{x:.0}")),
                tm["node_evaluation"].as_f64().unwrap_or(f64::NAN),
                tm["decryption"].as_f64().unwrap_or(f64::NAN),
            );
        }
        f.shutdown().await;
        Ok(())
    })
}
