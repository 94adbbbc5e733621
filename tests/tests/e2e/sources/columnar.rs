//! The columnar import through a real node: a CSV upload streamed into Parquet beside the
//! node's store and served as a streamed source (answers within the proof's noise of the exact
//! values, also after a restart); a bad row, a broken upload or a wrong part order imports
//! nothing and leaves no file; a replacement removes the old files.

use std::path::{Path, PathBuf};

use futures::StreamExt;
use prism_tests::Federation;
use serde_json::{Value, json};

use super::parquet::{STATES, check_answer, check_grouped};
use super::{ORG, catalog_rows, columns, ledger, one_node, refused_with};

/// The `visits` CSV rows `0..rows` with the values of `parquet::write_visits`, as a stream of
/// chunks of about 64 KiB; row `bad` (if any) has an age that is not an integer.
fn visits_csv(rows: usize, bad: Option<usize>) -> reqwest::Body {
    let header = futures::stream::once(async {
        Ok::<_, std::io::Error>(b"id,age,state,city,cost,smoker\n".to_vec())
    });
    let body = futures::stream::iter((0..rows).step_by(2_000)).map(move |from| {
        let mut s = String::new();
        for i in from..(from + 2_000).min(rows) {
            let age = if Some(i) == bad {
                "forty".to_string()
            } else {
                (i % 80).to_string()
            };
            s.push_str(&format!(
                "{i},{age},{},Springfield,{}.5,{}\n",
                STATES[i % 4],
                i % 900,
                i % 2 == 0
            ));
        }
        Ok(s.into_bytes())
    });
    reqwest::Body::wrap_stream(header.chain(body))
}

fn declaration(replace: bool) -> Value {
    json!({"name": "visits", "columns": columns(), "replace": replace})
}

/// The node's columnar directory for `visits`, and what it holds.
fn stored(dir: &Path) -> Vec<PathBuf> {
    let root = dir.join(format!("{ORG}.columnar")).join("visits");
    let mut out: Vec<PathBuf> = std::fs::read_dir(&root)
        .map(|d| d.map(|e| e.expect("entry").path()).collect())
        .unwrap_or_default();
    out.sort();
    out
}

/// Waits (up to 10 s) until the columnar directory holds `want`: a dropped request's parser
/// cleans up on its own thread, after the request is gone.
async fn settled(dir: &Path, want: &[PathBuf], what: &str) {
    for _ in 0..200 {
        if stored(dir) == want {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(stored(dir), want, "{what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_columnar_import_streams_the_upload_into_parquet_and_queries_scan_it() {
    let mut f = Federation::start(one_node()).await.expect("federation");
    let node = f.node_admin(ORG).expect("node");
    let api = f.analyst();
    let ds = "hospital-a.visits";

    let (s, b) = node
        .upload(
            "/v1/datasets/upload",
            &declaration(false),
            visits_csv(150_000, None),
        )
        .await
        .expect("upload");
    assert_eq!(
        (s, &b["rows"], &b["storage"]),
        (201, &json!(150_000), &json!("columnar")),
        "{b}"
    );
    catalog_rows(&f, ds, 150_000).await;
    let files = stored(&f.dir);
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].join("part-00000.parquet").is_file(), "{files:?}");
    let (_, list) = node.get("/v1/datasets").await.expect("list");
    assert_eq!(
        (&list[0]["source"]["kind"], &list[0]["source"]["streamed"]),
        (&json!("parquet"), &json!(true)),
        "{list}"
    );
    check_grouped(&api, 150_000).await;
    check_answer(&api, 150_000).await;
    let spent = ledger(&node, "visits").await;

    // A bad row far into the upload: refused with its line, nothing imported, no file left.
    let (s, b) = node
        .upload(
            "/v1/datasets/upload",
            &declaration(true),
            visits_csv(120_000, Some(100_000)),
        )
        .await
        .expect("upload");
    refused_with(s, &b, 422, "invalid_csv", "line 100002");
    assert_eq!(stored(&f.dir), files, "a refused upload left files");

    // An upload that breaks off: nothing imported, no file left.
    let broken = futures::stream::iter(0..40).map(|i| {
        if i < 39 {
            Ok::<_, std::io::Error>(if i == 0 {
                b"id,age,state,city,cost,smoker\n".to_vec()
            } else {
                b"1,30,CA,Springfield,2.5,true\n".repeat(1_000)
            })
        } else {
            Err(std::io::Error::other("the client went away"))
        }
    });
    let r = node
        .upload(
            "/v1/datasets/upload",
            &declaration(true),
            reqwest::Body::wrap_stream(broken),
        )
        .await;
    if let Ok((s, b)) = &r {
        assert!(*s == 400 || *s == 422, "{s} {b}");
    }
    // The request was dropped mid-body: the parser sees the upload end without its end and
    // removes what it wrote, shortly after.
    settled(&f.dir, &files, "a broken upload left files").await;
    // The parts in the wrong order, a dataset that exists without replace: refused at once.
    let form = reqwest::Client::new()
        .post(format!("{}/v1/datasets/upload", node.url))
        .bearer_auth(&node.token)
        .multipart(
            reqwest::multipart::Form::new()
                .text("csv", "id\n1\n")
                .text("declaration", declaration(true).to_string()),
        )
        .send()
        .await
        .expect("send");
    assert_eq!(form.status().as_u16(), 400);
    let (s, b) = node
        .upload(
            "/v1/datasets/upload",
            &declaration(false),
            visits_csv(10, None),
        )
        .await
        .expect("upload");
    refused_with(s, &b, 409, "dataset_exists", "replace");
    catalog_rows(&f, ds, 150_000).await;
    settled(&f.dir, &files, "a refused upload left files").await;
    assert_eq!(
        ledger(&node, "visits").await,
        spent,
        "a refused upload charged"
    );

    // A replacement: the new rows serve, the old files are gone, the ledger is kept.
    let (s, b) = node
        .upload(
            "/v1/datasets/upload",
            &declaration(true),
            visits_csv(60_000, None),
        )
        .await
        .expect("upload");
    assert_eq!((s, &b["rows"]), (201, &json!(60_000)), "{b}");
    catalog_rows(&f, ds, 60_000).await;
    let now = stored(&f.dir);
    assert!(now.len() == 1 && now != files, "{now:?} after {files:?}");
    assert_eq!(
        ledger(&node, "visits").await["spent_epsilon"],
        spent["spent_epsilon"]
    );

    // The node restarts after a crash left an unfinished upload and a published copy it never
    // registered: both are removed, and the dataset is served again from its files.
    f.stop_node(ORG).await.expect("stop");
    let root = now[0].parent().expect("root").to_path_buf();
    for stale in [".upload-crashed", "published-unregistered"] {
        std::fs::create_dir_all(root.join(stale)).expect("stale");
        std::fs::write(root.join(stale).join("part-00000.parquet"), b"x").expect("stale");
    }
    f.restart_node(ORG).await.expect("restart");
    assert_eq!(stored(&f.dir), now, "the restart kept stale copies");
    catalog_rows(&f, ds, 60_000).await;
    check_grouped(&api, 60_000).await;
    f.shutdown().await;
}
