//! The audit chain verifies from the bytes it stored: awkward floats, every JSON type, random
//! details, legacy entries; and any changed byte is detected.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use redb::{ReadableDatabase, ReadableTable};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::store::{AUDIT, append, list, verify};
use super::*;

/// Floats that do not print and parse back to the same text with serde_json's default parser,
/// or that sit at the edges of f64.
const AWKWARD: &[f64] = &[
    9.974115000000001,
    1e-7,
    5e-324,
    2.2250738585072014e-308,
    2.225073858507201e-308,
    f64::MIN_POSITIVE,
    f64::MAX,
    f64::MIN,
    f64::EPSILON,
    0.1 + 0.2,
    1.0 / 3.0,
    -0.0,
    123456789.12345679,
    4.35,
    0.30000000000000004,
    1.7976931348623157e308,
    9007199254740993.0,
];

fn temp_db() -> (tempfile::TempDir, redb::Database) {
    let dir = tempfile::tempdir().expect("tmp");
    let db = redb::Database::create(dir.path().join("audit.redb")).expect("db");
    (dir, db)
}

fn append_all(db: &redb::Database, details: impl IntoIterator<Item = Value>) {
    let txn = db.begin_write().expect("write");
    for (i, d) in details.into_iter().enumerate() {
        append(&txn, "alice", "query_executed", &format!("r{i}"), d).expect("append");
    }
    txn.commit().expect("commit");
}

fn stored_rows(db: &redb::Database) -> Vec<(u64, String)> {
    let txn = db.begin_read().expect("read");
    let table = txn.open_table(AUDIT).expect("table");
    table
        .iter()
        .expect("iter")
        .map(|r| {
            let (k, v) = r.expect("row");
            (k.value(), v.value().to_owned())
        })
        .collect()
}

fn verify_rows(rows: &[(u64, String)]) -> Result<u64, AuditError> {
    verify_stored(rows.iter().map(|(k, v)| (*k, v.as_str())))
}

#[test]
fn awkward_floats_verify() {
    let (_d, db) = temp_db();
    let details: Vec<Value> = AWKWARD
        .iter()
        .map(|&x| json!({"execution_time_ms": x, "epsilon": x, "list": [x, -x]}))
        .collect();
    append_all(&db, details);
    assert_eq!(verify(&db).expect("verifies"), AWKWARD.len() as u64);
    // The listing still reads them, in order.
    let listed = list(&db, 0, 1000).expect("list");
    assert_eq!(listed.len(), AWKWARD.len());
    assert_eq!(listed[0].target, "r0");
}

#[test]
fn every_detail_type_verifies() {
    let (_d, db) = temp_db();
    let details = vec![
        Value::Null,
        json!(true),
        json!(false),
        json!(0),
        json!(-1),
        json!(u64::MAX),
        json!(i64::MIN),
        json!(1.5),
        json!(""),
        json!("text with \"quotes\", \\ backslashes, \n newlines, \u{0} nul, \u{1f} unit sep"),
        json!("unicode: é, ü, 漢字, 🦀, \u{2028}\u{2029}"),
        json!([]),
        json!({}),
        json!([1, "two", 3.0, null, [4, [5.5, {"six": 6}]], {"seven": [7e-7]}]),
        json!({"z": 1, "a": 2, "nested": {"m": [true, false, null], "f": 9.974115000000001}}),
        json!({"spent": {"epsilon": 0.30000000000000004, "delta": 1e-5}, "remaining": 4.7}),
    ];
    let n = details.len() as u64;
    append_all(&db, details);
    assert_eq!(verify(&db).expect("verifies"), n);
}

fn random_string(rng: &mut ChaCha8Rng) -> String {
    let len = rng.random_range(0..12);
    (0..len)
        .map(|_| match rng.random_range(0..4) {
            0 => char::from(rng.random_range(0u8..0x20)),
            1 => char::from(rng.random_range(0x20u8..0x7f)),
            2 => ['"', '\\', '/', '\u{7f}'][rng.random_range(0..4)],
            _ => char::from_u32(rng.random_range(0xa0..0x2_0000)).unwrap_or('?'),
        })
        .collect()
}

fn random_float(rng: &mut ChaCha8Rng) -> f64 {
    loop {
        let x = match rng.random_range(0..3) {
            0 => f64::from_bits(rng.random()),
            1 => rng.random::<f64>() * 10f64.powi(rng.random_range(-12..12)),
            _ => AWKWARD[rng.random_range(0..AWKWARD.len())],
        };
        if x.is_finite() {
            return x;
        }
    }
}

fn random_value(rng: &mut ChaCha8Rng, depth: u32) -> Value {
    let pick = if depth >= 3 {
        rng.random_range(0..6)
    } else {
        rng.random_range(0..8)
    };
    match pick {
        0 => Value::Null,
        1 => json!(rng.random::<bool>()),
        2 => json!(rng.random::<i64>()),
        3 => json!(rng.random::<u64>()),
        4 => json!(random_float(rng)),
        5 => json!(random_string(rng)),
        6 => Value::Array(
            (0..rng.random_range(0..5))
                .map(|_| random_value(rng, depth + 1))
                .collect(),
        ),
        _ => Value::Object(
            (0..rng.random_range(0..5))
                .map(|_| (random_string(rng), random_value(rng, depth + 1)))
                .collect(),
        ),
    }
}

#[test]
fn ten_thousand_random_entries_verify() {
    let (_d, db) = temp_db();
    let mut rng = ChaCha8Rng::seed_from_u64(0x5eed);
    let details: Vec<Value> = (0..10_000).map(|_| random_value(&mut rng, 0)).collect();
    append_all(&db, details);
    assert_eq!(verify(&db).expect("verifies"), 10_000);
    assert_eq!(list(&db, 0, 20_000).expect("list").len(), 10_000);
}

/// Every single-byte change of a stored entry (that leaves valid UTF-8, as the table holds
/// text) is detected, at whichever entry of the chain it is made.
fn assert_every_byte_change_detected(rows: &[(u64, String)]) {
    assert_eq!(verify_rows(rows), Ok(rows.len() as u64));
    let mut tried = 0usize;
    for idx in 0..rows.len() {
        let bytes = rows[idx].1.as_bytes().to_vec();
        for pos in 0..bytes.len() {
            for b in 0..=255u8 {
                if b == bytes[pos] {
                    continue;
                }
                let mut changed = bytes.clone();
                changed[pos] = b;
                let Ok(text) = String::from_utf8(changed) else {
                    continue;
                };
                let mut tampered = rows.to_vec();
                tampered[idx].1 = text;
                tried += 1;
                assert!(
                    verify_rows(&tampered).is_err(),
                    "byte {pos} of entry {} changed to {b:#04x} went unnoticed: {}",
                    rows[idx].0,
                    tampered[idx].1
                );
            }
        }
    }
    assert!(tried > 1000, "only {tried} changes tried");
}

#[test]
fn changing_any_byte_of_a_stored_entry_is_detected() {
    let (_d, db) = temp_db();
    append_all(
        &db,
        [
            json!({"execution_time_ms": 9.974115000000001, "ok": true}),
            json!({"who": "Zoë \"z\" \\ 🦀", "eps": [0.5, 1e-7], "n": null}),
            json!({"epsilon": 5e-324, "rows": 10000}),
        ],
    );
    assert_every_byte_change_detected(&stored_rows(&db));
}

#[test]
fn a_changed_entry_in_the_store_is_reported_at_its_sequence() {
    let (_d, db) = temp_db();
    append_all(&db, (0..5).map(|i| json!({"spent": i as f64 * 0.1})));
    let rows = stored_rows(&db);
    let forged = rows[2].1.replace("0.2", "0.1");
    assert_ne!(forged, rows[2].1);
    let txn = db.begin_write().expect("write");
    txn.open_table(AUDIT)
        .expect("table")
        .insert(3, forged.as_str())
        .expect("insert");
    txn.commit().expect("commit");
    match verify(&db) {
        Err(store::AuditStoreError::Chain(AuditError::Broken { seq: 3, .. })) => {}
        other => panic!("expected a break at entry 3, got {other:?}"),
    }
}

/// The entry format and hash written before format 2, as that code wrote them.
fn legacy_entry(prev: Option<&AuditEntry>, target: &str, details: Value) -> AuditEntry {
    let seq = prev.map_or(1, |p| p.seq + 1);
    let prev_hash = prev.map_or_else(|| GENESIS.to_string(), |p| p.hash.clone());
    let at = "2026-11-20T10:00:00Z".to_string();
    let canonical = json!([
        seq,
        at,
        "system",
        "room_executed",
        target,
        details,
        prev_hash
    ]);
    let hash = hex::encode(Sha256::digest(canonical.to_string().as_bytes()));
    AuditEntry {
        seq,
        at,
        actor: "system".into(),
        action: "room_executed".into(),
        target: target.into(),
        details,
        prev_hash,
        hash,
    }
}

fn legacy_rows() -> Vec<(u64, String)> {
    let mut prev: Option<AuditEntry> = None;
    let mut rows = Vec::new();
    for (i, &x) in AWKWARD.iter().enumerate() {
        let e = legacy_entry(
            prev.as_ref(),
            &format!("room-{i}"),
            json!({"execution_time_ms": x, "label": "é \"q\""}),
        );
        rows.push((e.seq, serde_json::to_string(&e).expect("encode")));
        prev = Some(e);
    }
    rows
}

#[test]
fn legacy_entries_keep_verifying_from_their_stored_bytes() {
    let rows = legacy_rows();
    assert_eq!(verify_rows(&rows), Ok(AWKWARD.len() as u64));
    // The check that raised the false alarm: parse the stored entry, re-serialise, re-hash. It
    // fails on the first entry, whose float does not survive the round trip.
    let parsed: AuditEntry = serde_json::from_str(&rows[0].1).expect("decode");
    let rehashed = json!([
        parsed.seq,
        parsed.at,
        parsed.actor,
        parsed.action,
        parsed.target,
        parsed.details,
        parsed.prev_hash
    ]);
    let reparse_is_exact = parsed.details["execution_time_ms"].as_f64() == Some(AWKWARD[0]);
    assert_eq!(
        hex::encode(Sha256::digest(rehashed.to_string().as_bytes())) == parsed.hash,
        reparse_is_exact,
        "re-hashing a re-serialisation agrees exactly when the float round-trips"
    );
}

#[test]
fn a_legacy_chain_continues_in_format_2() {
    let (_d, db) = temp_db();
    let rows = legacy_rows();
    {
        let txn = db.begin_write().expect("write");
        {
            let mut t = txn.open_table(AUDIT).expect("table");
            for (k, v) in &rows {
                t.insert(*k, v.as_str()).expect("insert");
            }
        }
        txn.commit().expect("commit");
    }
    append_all(&db, [json!({"execution_time_ms": 9.974115000000001})]);
    let all = stored_rows(&db);
    assert!(all.last().expect("last").1.starts_with(r#"{"format":2,"#));
    assert_eq!(verify(&db).expect("verifies"), rows.len() as u64 + 1);
}

#[test]
fn changing_any_byte_of_a_legacy_entry_is_detected() {
    assert_every_byte_change_detected(&legacy_rows()[..2]);
}
