//! The checks of the cargo-fuzz targets in `fuzz/`, one function per target: the targets are
//! thin wrappers over these, and a unit test replays every committed corpus file through them,
//! so a regression on a known input fails the ordinary test suite (the fuzz build is too slow
//! for CI). Each function panics on a violated property, as a fuzz target must.

use std::sync::OnceLock;

use prism_common::plan::Plan;
use prism_common::room::Manifest;
use prism_common::schema::{Bounds, ColumnData, ColumnSpec, ColumnType, DatasetSchema};
use prism_common::sql::{plan_query, table_name};
use prism_common::wire::{
    self, Attestation, ErrorBody, Hello, HelloReply, MpcRequest, MpcResponse, NodeEvent,
    PeerRequest, PeerResponse, Request, Response,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::import::parse_csv;

fn col(name: &str, ty: ColumnType, bounds: Option<(f64, f64)>) -> ColumnSpec {
    ColumnSpec {
        name: name.to_string(),
        ty,
        bounds: bounds.map(|(min, max)| Bounds { min, max }),
        public_keys: None,
        not_null: false,
        privacy_unit: None,
    }
}

/// `sql_plan`: the planner answers any text with a plan or an error, never a panic or a stack
/// overflow, and every plan it accepts survives a JSON round trip unchanged.
pub fn sql_plan(data: &[u8]) {
    let Ok(sql) = std::str::from_utf8(data) else {
        return;
    };
    let mut state = col("state", ColumnType::Text, None);
    state.public_keys = Some(vec!["ca".into(), "ny".into()]);
    let schema = DatasetSchema {
        name: "patients".into(),
        columns: vec![
            col("id", ColumnType::Integer, Some((0.0, 1e6))),
            col("age", ColumnType::Integer, Some((0.0, 120.0))),
            col("diagnosis", ColumnType::Text, None),
            col("cost", ColumnType::Float, Some((0.0, 100_000.0))),
            state,
            col("smoker", ColumnType::Boolean, None),
        ],
    };
    let _ = table_name(sql);
    let Ok(plan) = plan_query(sql, &schema) else {
        return;
    };
    let json = serde_json::to_vec(&plan).expect("an accepted plan encodes");
    let back: Plan = serde_json::from_slice(&json).expect("an accepted plan decodes");
    assert_eq!(back, plan, "plan changed over a JSON round trip: {sql}");
}

/// A small frame limit, so the fuzzer explores the refusal of long frames too.
const MAX: usize = 64 << 10;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
    })
}

fn roundtrip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(msg: &T) {
    let body = serde_json::to_vec(msg).expect("a decoded message encodes");
    let once: T = wire::decode(&body).expect("an encoded message decodes");
    // Floats may move by one ulp on the first parse; from then on the encoding is a fixpoint.
    let body2 = serde_json::to_vec(&once).expect("encodes");
    let twice: T = wire::decode(&body2).expect("decodes");
    assert_eq!(once, twice, "message changed over a JSON round trip");
}

async fn frame<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(data: &[u8]) {
    let mut r = data;
    if let Ok(msg) = wire::read_msg::<_, T>(&mut r, MAX).await {
        roundtrip(&msg);
        // What write_msg frames, read_msg reads back.
        let mut out = Vec::new();
        wire::write_msg(&mut out, &msg).await.expect("write");
        let _: T = wire::read_msg(&mut out.as_slice(), usize::MAX)
            .await
            .expect("a written frame reads back");
    }
}

/// A peer request is a frame and, for a share, a blob of words: read, written and read back.
async fn peer_request(data: &[u8]) {
    let mut r = data;
    if let Ok(req) = wire::read_peer_request(&mut r, MAX).await {
        let mut out = Vec::new();
        wire::write_peer_request(&mut out, &req)
            .await
            .expect("write");
        let back: PeerRequest = wire::read_peer_request(&mut out.as_slice(), usize::MAX)
            .await
            .expect("a written request reads back");
        assert_eq!(back, req);
    }
}

/// `wire_frame`: any bytes read as a frame of every message type, or as a blob, give a message
/// or an error, never a panic or an allocation past the limit; a decoded message round-trips.
pub fn wire_frame(data: &[u8]) {
    runtime().block_on(async {
        frame::<Hello>(data).await;
        frame::<HelloReply>(data).await;
        frame::<NodeEvent>(data).await;
        frame::<Attestation>(data).await;
        frame::<MpcRequest>(data).await;
        frame::<MpcResponse>(data).await;
        frame::<Request>(data).await;
        frame::<Response>(data).await;
        peer_request(data).await;
        frame::<PeerResponse>(data).await;
        frame::<ErrorBody>(data).await;
        let mut r = data;
        if let Ok(blob) = wire::read_bytes(&mut r, MAX).await {
            assert!(blob.len() <= MAX);
        }
    });
}

fn len(c: &ColumnData) -> usize {
    match c {
        ColumnData::Integer(v) => v.len(),
        ColumnData::Float(v) => v.len(),
        ColumnData::Boolean(v) => v.len(),
        ColumnData::Text { dict, codes } => {
            assert!(codes.iter().flatten().all(|&c| (c as usize) < dict.len()));
            codes.len()
        }
    }
}

/// `csv_import`: any text, under the sample columns or under a declaration the input carries
/// (JSON before a NUL byte), is imported whole or refused; an accepted dataset has one value
/// per row in every column and text codes inside the dictionary.
pub fn csv_import(data: &[u8]) {
    let (columns, text) = match data.iter().position(|&b| b == 0) {
        Some(i) => match serde_json::from_slice::<Vec<ColumnSpec>>(&data[..i]) {
            Ok(c) => (c, &data[i + 1..]),
            Err(_) => return,
        },
        None => (
            vec![
                col("age", ColumnType::Integer, Some((0.0, 120.0))),
                col("cost", ColumnType::Float, Some((0.0, 1e5))),
                col("state", ColumnType::Text, None),
                col("smoker", ColumnType::Boolean, None),
            ],
            data,
        ),
    };
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    if let Ok(ds) = parse_csv("fuzzed", columns, text) {
        assert!(ds.rows > 0, "an accepted dataset has rows");
        assert_eq!(ds.columns.len(), ds.schema.columns.len());
        assert!(
            ds.columns.iter().all(|c| len(c) == ds.rows),
            "ragged dataset"
        );
    }
}

/// The domain tag that starts a manifest's canonical bytes.
const DOMAIN: &[u8] = b"prism/room-manifest/v1\0";

/// `manifest`: any JSON that decodes as a manifest has canonical bytes that decode back to the
/// same manifest, and every participant computes the sender's hash.
pub fn manifest(data: &[u8]) {
    let Ok(m) = serde_json::from_slice::<Manifest>(data) else {
        return;
    };
    let bytes = m.canonical_bytes();
    assert!(bytes.starts_with(DOMAIN), "domain tag missing");
    let sent: Manifest =
        serde_json::from_slice(&bytes[DOMAIN.len()..]).expect("canonical bytes decode");
    assert_eq!(sent, m, "manifest changed over the wire");
    assert_eq!(
        sent.canonical_bytes(),
        bytes,
        "canonical bytes are not a fixpoint"
    );
    assert_eq!(sent.hash(), m.hash(), "participants disagree on the hash");
}

#[cfg(test)]
mod tests {
    /// A fuzz target's check.
    type Check = fn(&[u8]);

    /// Every target's committed corpus, replayed through its check.
    #[test]
    fn every_committed_corpus_file_passes_its_fuzz_check() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
        let targets: [(&str, Check); 4] = [
            ("sql_plan", super::sql_plan),
            ("wire_frame", super::wire_frame),
            ("csv_import", super::csv_import),
            ("manifest", super::manifest),
        ];
        for (target, check) in targets {
            let dir = root.join(target);
            let mut n = 0;
            for entry in std::fs::read_dir(&dir).expect("corpus directory") {
                let path = entry.expect("corpus entry").path();
                let data = std::fs::read(&path).expect("corpus file");
                let run = std::panic::catch_unwind(|| check(&data));
                assert!(run.is_ok(), "{target}: {} fails its check", path.display());
                n += 1;
            }
            assert!(n > 0, "{target}: empty corpus in {}", dir.display());
        }
    }
}
