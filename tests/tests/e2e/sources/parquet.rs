//! A Parquet file source through a real node: registered from a file the test writes, queried
//! with DP through the coordinator (the answer within the proof's noise of the exact value),
//! refreshed when the file is rewritten, and a removed file keeps the previous data in service
//! with `last_error` set, charging nothing for the failed re-read.

use std::path::Path;
use std::sync::Arc;

use arrow_array::{
    Array, ArrayRef, BooleanArray, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use prism_tests::Federation;
use serde_json::{Value, json};

use super::{
    ORG, a_removed_file_keeps_the_previous_rows, bound, catalog_rows, columns, dp_run, he_refused,
    ledger, num, one_node, refresh_reads, refused_with, statistic,
};

pub(super) const STATES: [&str; 4] = ["CA", "NY", "TX", "WA"];

/// `visits` rows `from..to` as a Snappy-compressed Parquet file: `age` is `i % 80` (inside the
/// declared bounds, so nothing is clamped), `state` cycles through [`STATES`], and a `note`
/// column the declaration does not name is never read.
fn write_visits(path: &Path, from: usize, to: usize) {
    let ids = from..to;
    fn col(a: impl Array + 'static) -> ArrayRef {
        Arc::new(a)
    }
    let batch = RecordBatch::try_from_iter([
        (
            "id",
            col(Int64Array::from_iter_values(ids.clone().map(|i| i as i64))),
        ),
        (
            "age",
            col(Int32Array::from_iter_values(
                ids.clone().map(|i| (i % 80) as i32),
            )),
        ),
        (
            "state",
            col(StringArray::from_iter_values(
                ids.clone().map(|i| STATES[i % 4]),
            )),
        ),
        (
            "city",
            col(StringArray::from_iter_values(
                ids.clone().map(|_| "Springfield"),
            )),
        ),
        (
            "cost",
            col(Float64Array::from_iter_values(
                ids.clone().map(|i| (i % 900) as f64 + 0.5),
            )),
        ),
        (
            "smoker",
            col(BooleanArray::from_iter(
                ids.clone().map(|i| Some(i % 2 == 0)),
            )),
        ),
        (
            "note",
            col(StringArray::from_iter_values(ids.map(|_| "free text"))),
        ),
    ])
    .expect("batch");
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(1024))
        .build();
    let file = std::fs::File::create(path).expect("create");
    let mut w = ArrowWriter::try_new(file, batch.schema(), Some(props)).expect("writer");
    w.write(&batch).expect("write");
    w.close().expect("close");
}

/// The exact `COUNT(*)` and `SUM(age)` of `rows` rows where `state = 'TX'`.
fn exact_tx(rows: usize) -> (f64, f64) {
    let tx: Vec<usize> = (0..rows).filter(|i| STATES[i % 4] == "TX").collect();
    (tx.len() as f64, tx.iter().map(|i| (i % 80) as f64).sum())
}

const SQL: &str = "SELECT COUNT(*) AS n, SUM(age) AS s FROM visits WHERE state = 'TX'";

/// The DP answer to [`SQL`], checked against the exact values of `rows` rows with the noise
/// scales its proof states.
pub(super) async fn check_answer(api: &prism_tests::Api, rows: usize) {
    let run = dp_run(api, "hospital-a.visits", SQL, 1.0).await;
    let (n, s) = exact_tx(rows);
    let got = &run["result"]["rows"][0];
    for (i, (col, want)) in [("n", n), ("s", s)].into_iter().enumerate() {
        let scale = num(&statistic(&run, col)["noise_scale"]);
        assert!(scale > 0.0, "{col}: no noise claimed: {run}");
        let b = bound(scale, 1.0);
        assert!(
            (num(&got[i]) - want).abs() <= b,
            "{col}: {} vs exact {want} (±{b}, {rows} rows): {run}",
            got[i]
        );
    }
}

fn spent(ledger: &Value) -> f64 {
    num(&ledger["spent_epsilon"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parquet_file_source_is_read_in_place_and_a_removed_file_keeps_the_previous_data() {
    let f = Federation::start(one_node()).await.expect("federation");
    let node = f.node_admin(ORG).expect("node");
    let api = f.analyst();
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("visits.parquet");
    write_visits(&path, 0, 3_000);

    // The declaration is the authority: a column the file lacks is refused, naming the columns
    // the file has; a file that is not Parquet is refused, naming it.
    let mut bad = columns();
    bad.as_array_mut()
        .expect("columns")
        .push(json!({"name": "zip", "type": "text"}));
    let source = json!({"kind": "parquet", "path": path});
    let (s, b) = node
        .post(
            "/v1/sources",
            &json!({"name": "visits", "columns": bad, "source": source}),
        )
        .await
        .expect("register");
    refused_with(
        s,
        &b,
        422,
        "source_missing_column",
        "id, age, state, city, cost, smoker, note",
    );
    let not_parquet = dir.path().join("visits-copy.parquet");
    std::fs::write(&not_parquet, "id,age\n1,2\n").expect("write");
    let (s, b) = node
        .post(
            "/v1/sources",
            &json!({"name": "visits", "columns": columns(),
                    "source": {"kind": "parquet", "path": not_parquet}}),
        )
        .await
        .expect("register");
    refused_with(s, &b, 422, "invalid_source", "not a readable Parquet file");

    let (s, b) = node
        .post(
            "/v1/sources",
            &json!({"name": "visits", "columns": columns(), "source": source}),
        )
        .await
        .expect("register");
    assert_eq!(
        (s, &b["rows"], &b["source"]),
        (201, &json!(3000), &json!("parquet")),
        "{b}"
    );
    let ds = "hospital-a.visits";
    catalog_rows(&f, ds, 3_000).await;
    let start = spent(&ledger(&node, "visits").await);
    check_answer(&api, 3_000).await;

    // The file is rewritten: refresh re-reads it; the row count and the answer follow.
    write_visits(&path, 0, 4_500);
    refresh_reads(&f, &node, 4_500).await;
    check_answer(&api, 4_500).await;

    // The file is removed: refresh fails naming it and charges nothing; the previous rows stay
    // in service, the error is on the source and in the audit log.
    std::fs::remove_file(&path).expect("remove");
    let before = ledger(&node, "visits").await;
    assert!(
        (spent(&before) - start - 2.0).abs() < 1e-9,
        "two queries of ε = 1: {before}"
    );
    a_removed_file_keeps_the_previous_rows(&node, "parquet", "visits.parquet", 4_500).await;
    catalog_rows(&f, ds, 4_500).await;
    check_answer(&api, 4_500).await;
    let after = ledger(&node, "visits").await;
    assert!(
        (spent(&after) - spent(&before) - 1.0).abs() < 1e-9,
        "the query on the previous data charges its ε and nothing more: {after}"
    );
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_of_parquet_files_is_one_dataset() {
    let f = Federation::start(one_node()).await.expect("federation");
    let node = f.node_admin(ORG).expect("node");
    let api = f.analyst();
    let dir = tempfile::tempdir().expect("tmp");
    // The parts of one export; a stray file beside them is not read.
    write_visits(&dir.path().join("part-0.parquet"), 0, 2_000);
    write_visits(&dir.path().join("part-1.parquet"), 2_000, 3_500);
    std::fs::write(dir.path().join("_SUCCESS"), "").expect("write");
    let (s, b) = node
        .post(
            "/v1/sources",
            &json!({"name": "visits", "columns": columns(),
                    "source": {"kind": "parquet", "path": dir.path()}}),
        )
        .await
        .expect("register");
    assert_eq!((s, &b["rows"]), (201, &json!(3500)), "{b}");
    catalog_rows(&f, "hospital-a.visits", 3_500).await;
    check_answer(&api, 3_500).await;
    f.shutdown().await;
}

/// The exact `COUNT(*)` and `AVG(cost)` per state of rows `0..rows` with `age >= 30`.
pub(super) fn exact_by_state(rows: usize) -> Vec<(f64, f64)> {
    STATES
        .iter()
        .map(|st| {
            let costs: Vec<f64> = (0..rows)
                .filter(|i| STATES[i % 4] == *st && i % 80 >= 30)
                .map(|i| (i % 900) as f64 + 0.5)
                .collect();
            let n = costs.len() as f64;
            (n, costs.iter().sum::<f64>() / n)
        })
        .collect()
}

/// A grouped DP query over the `visits` rows of [`write_visits`].
pub(super) const GROUPED: &str =
    "SELECT state, COUNT(*) AS n, AVG(cost) AS a FROM visits WHERE age >= 30 GROUP BY state";

/// The DP answer to [`GROUPED`] over rows `0..rows`: every state within its claimed noise of
/// the exact answer.
pub(super) async fn check_grouped(api: &prism_tests::Api, rows: usize) {
    let run = dp_run(api, "hospital-a.visits", GROUPED, 1.0).await;
    let want = exact_by_state(rows);
    let got = run["result"]["rows"].as_array().expect("rows").clone();
    assert_eq!(got.len(), 4, "{run}");
    let scale = num(&statistic(&run, "n")["noise_scale"]);
    // AVG's first-order half-width, from its proof's sum and count components: (A_sum +
    // |avg − center| · A_count) / n, center 2500; three of them is beyond 99.9 %.
    let parts = statistic(&run, "a")["components"]
        .as_array()
        .expect("parts")
        .clone();
    let (a_sum, a_count) = (
        num(&parts[0]["ci95_half_width"]),
        num(&parts[1]["ci95_half_width"]),
    );
    for (row, (n, a)) in got.iter().zip(want) {
        assert!(
            (num(&row[1]) - n).abs() <= bound(scale, 1.0),
            "n: {row:?} vs {n}: {run}"
        );
        let tol = 3.0 * (a_sum + (a - 2500.0).abs() * a_count) / n;
        assert!(
            (num(&row[2]) - a).abs() <= tol,
            "avg: {row:?} vs {a} (±{tol}): {run}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_parquet_source_is_scanned_in_place_for_every_query() {
    let mut f = Federation::start(one_node()).await.expect("federation");
    let node = f.node_admin(ORG).expect("node");
    let api = f.analyst();
    let dir = tempfile::tempdir().expect("tmp");
    // 200k rows in two files: several chunks of the scan, rows of one state in both files.
    write_visits(&dir.path().join("part-0.parquet"), 0, 120_000);
    write_visits(&dir.path().join("part-1.parquet"), 120_000, 200_000);
    let source = json!({"kind": "parquet", "path": dir.path(), "streamed": true});
    let (s, b) = node
        .post(
            "/v1/sources",
            &json!({"name": "visits", "columns": columns(), "source": source}),
        )
        .await
        .expect("register");
    assert_eq!((s, &b["rows"]), (201, &json!(200_000)), "{b}");
    let ds = "hospital-a.visits";
    catalog_rows(&f, ds, 200_000).await;
    let (_, list) = node.get("/v1/datasets").await.expect("list");
    assert_eq!(list[0]["source"]["streamed"], json!(true), "{list}");

    // A grouped DP query: every state within its claimed noise of the exact answer.
    check_grouped(&api, 200_000).await;
    check_answer(&api, 200_000).await;

    // HE evaluates encrypted constants on every row: refused, saying why and what serves.
    let text = he_refused(&api, ds).await;
    assert!(
        text.contains("streamed parquet source") && text.contains("without streamed"),
        "{text}"
    );

    // The node restarts: the source is served again, without holding its rows.
    f.stop_node(ORG).await.expect("stop");
    f.restart_node(ORG).await.expect("restart");
    let node = f.node_admin(ORG).expect("node");
    catalog_rows(&f, ds, 200_000).await;
    check_grouped(&api, 200_000).await;

    // A file is removed: the files no longer hold the rows the catalog publishes, so the
    // query fails, saying to refresh, and nothing is charged; a refresh re-reads them.
    let before = ledger(&node, "visits").await;
    std::fs::remove_file(dir.path().join("part-1.parquet")).expect("remove");
    let (_, s, run) = api
        .run_query(ds, GROUPED, "dp_sandbox", Some(1.0))
        .await
        .expect("run");
    assert_eq!((s, &run["status"]), (200, &json!("failed")), "{run}");
    assert_eq!(run["error_code"], "source_unavailable", "{run}");
    let msg = run["error_message"].as_str().expect("message");
    assert!(
        msg.contains("120000 rows, 200000") && msg.contains("refresh"),
        "{msg}"
    );
    assert_eq!(
        ledger(&node, "visits").await,
        before,
        "a failed scan charged"
    );
    refresh_reads(&f, &node, 120_000).await;
    check_answer(&api, 120_000).await;

    // The directory is removed: the query fails naming it, and nothing is charged.
    std::fs::remove_file(dir.path().join("part-0.parquet")).expect("remove");
    let before = ledger(&node, "visits").await;
    let (_, s, run) = api
        .run_query(ds, GROUPED, "dp_sandbox", Some(1.0))
        .await
        .expect("run");
    assert_eq!(
        (s, &run["status"], &run["error_code"]),
        (200, &json!("failed"), &json!("source_unavailable")),
        "{run}"
    );
    assert_eq!(
        ledger(&node, "visits").await,
        before,
        "a failed scan charged"
    );
    f.shutdown().await;
}
