//! The hash-chained audit log entry format, shared by node and coordinator.
//!
//! Each entry carries the SHA-256 of the previous entry; the entry's own hash covers its
//! sequence number, time, actor, action, target, details and the previous hash. Rewriting or
//! dropping any entry breaks every hash after it, which [`verify_stored`] detects.
//!
//! The hash covers bytes, not values. An entry is encoded once, when it is written, as the
//! *canonical text* `[seq, at, actor, action, target, details, prev_hash]` (compact JSON); that
//! text is hashed and stored as it was written, and verification hashes the stored text again.
//! Nothing is ever re-serialised from parsed values: JSON numbers do not survive a
//! parse → print round trip (`9.974115000000001` can read back as `9.974115`), so a hash over a
//! re-serialisation raises false alarms that depend on which floats a run produced.
//!
//! Two stored forms exist:
//! - **format 2** (written now): `{"format":2,"canonical":"<canonical text>","hash":"<hex>"}`.
//!   The stored text must also be exactly the encoding of its own fields, so any byte changed
//!   anywhere in it is detected, not only in the hashed part.
//! - **legacy** (written before format 2): the whole entry as a JSON object whose hash was
//!   computed over the same canonical text. It is verified from its stored bytes too: the
//!   `details` are taken as the raw JSON text they were written as, never re-printed, so
//!   existing stores keep verifying without a migration.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

/// The previous-hash of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The stored form written by this build.
pub const FORMAT: u32 = 2;

/// One audit entry, as read back for display (API listings, CLIs).
///
/// Its `details` are parsed JSON and may print differently from the text that was hashed
/// (floats); the chain is verified from the stored text, never from this value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Position in the log, from 1.
    pub seq: u64,
    /// RFC 3339 time.
    pub at: String,
    /// Who acted (user, organization, `system`).
    pub actor: String,
    /// What happened (`query_executed`, `budget_set`, ...).
    pub action: String,
    /// What it happened to (a run id, a dataset, ...).
    pub target: String,
    /// Structured detail.
    pub details: serde_json::Value,
    /// Hash of the previous entry.
    pub prev_hash: String,
    /// Hash of this entry.
    pub hash: String,
}

/// Errors verifying a chain.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum AuditError {
    /// An entry's hash or link is wrong, or its stored text does not decode.
    #[error("audit chain broken at entry {seq}: {why}")]
    Broken {
        /// The first bad entry.
        seq: u64,
        /// What is wrong.
        why: String,
    },
}

/// An entry ready to store: its display form and the exact text to write.
#[derive(Debug, Clone)]
pub struct Sealed {
    /// The entry as it will read back.
    pub entry: AuditEntry,
    /// The stored text (format 2); its `canonical` part is what the hash covers.
    pub stored: String,
}

/// The format-2 stored record.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredV2 {
    format: u32,
    canonical: String,
    hash: String,
}

/// A legacy stored record, with `details` kept as the raw text it was written as.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredLegacy<'a> {
    seq: u64,
    at: String,
    actor: String,
    action: String,
    target: String,
    #[serde(borrow)]
    details: &'a RawValue,
    prev_hash: String,
    hash: String,
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A string as compact JSON (serde_json's own escaping, as the canonical text uses).
fn json_str(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

/// The parts of a stored entry the chain checks, taken from its stored bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    /// Its sequence number.
    pub seq: u64,
    /// The hash it links to.
    pub prev_hash: String,
    /// Its own hash, recomputed from the stored bytes and equal to the recorded one.
    pub hash: String,
}

impl AuditEntry {
    /// Seals the entry that follows `prev` (its sequence number and hash), or the first one.
    pub fn seal(
        prev: Option<(u64, &str)>,
        actor: &str,
        action: &str,
        target: &str,
        details: serde_json::Value,
    ) -> Sealed {
        let seq = prev.map_or(1, |(s, _)| s + 1);
        let prev_hash = prev.map_or_else(|| GENESIS.to_string(), |(_, h)| h.to_string());
        let at = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        // Written once; hashed and stored exactly as written.
        let canonical =
            serde_json::json!([seq, at, actor, action, target, details, prev_hash]).to_string();
        let hash = sha256_hex(canonical.as_bytes());
        let stored = serde_json::to_string(&StoredV2 {
            format: FORMAT,
            canonical,
            hash: hash.clone(),
        })
        .unwrap_or_default();
        Sealed {
            entry: AuditEntry {
                seq,
                at,
                actor: actor.into(),
                action: action.into(),
                target: target.into(),
                details,
                prev_hash,
                hash,
            },
            stored,
        }
    }
}

/// Decodes a stored entry (either form) for display. Does not check its hash.
pub fn decode_stored(text: &str) -> Result<AuditEntry, String> {
    if let Ok(v2) = serde_json::from_str::<StoredV2>(text) {
        if v2.format != FORMAT {
            return Err(format!("unknown stored format {}", v2.format));
        }
        let parts: (
            u64,
            String,
            String,
            String,
            String,
            serde_json::Value,
            String,
        ) = serde_json::from_str(&v2.canonical).map_err(|e| format!("canonical text: {e}"))?;
        let (seq, at, actor, action, target, details, prev_hash) = parts;
        return Ok(AuditEntry {
            seq,
            at,
            actor,
            action,
            target,
            details,
            prev_hash,
            hash: v2.hash,
        });
    }
    serde_json::from_str::<AuditEntry>(text).map_err(|e| e.to_string())
}

/// Checks one stored entry against its own bytes: its hash is recomputed over the stored
/// canonical text, and the stored text must be exactly the encoding of its parts.
pub fn check_stored(text: &str) -> Result<Checked, String> {
    if text.starts_with(r#"{"format":"#) {
        let v2: StoredV2 = serde_json::from_str(text).map_err(|e| format!("undecodable: {e}"))?;
        if v2.format != FORMAT {
            return Err(format!("unknown stored format {}", v2.format));
        }
        if serde_json::to_string(&v2).ok().as_deref() != Some(text) {
            return Err("stored text is not the encoding of its contents".into());
        }
        if sha256_hex(v2.canonical.as_bytes()) != v2.hash {
            return Err("entry hash does not match its contents".into());
        }
        let parts: (u64, String, String, String, String, &RawValue, String) =
            serde_json::from_str(&v2.canonical).map_err(|e| format!("canonical text: {e}"))?;
        return Ok(Checked {
            seq: parts.0,
            prev_hash: parts.6,
            hash: v2.hash,
        });
    }
    let old: StoredLegacy<'_> =
        serde_json::from_str(text).map_err(|e| format!("undecodable: {e}"))?;
    let details = old.details.get();
    // The legacy writer serialised the entry struct field by field, compactly.
    let rebuilt = format!(
        r#"{{"seq":{},"at":{},"actor":{},"action":{},"target":{},"details":{},"prev_hash":{},"hash":{}}}"#,
        old.seq,
        json_str(&old.at),
        json_str(&old.actor),
        json_str(&old.action),
        json_str(&old.target),
        details,
        json_str(&old.prev_hash),
        json_str(&old.hash),
    );
    if rebuilt != text {
        return Err("stored text is not the encoding of its contents".into());
    }
    // The legacy hash covered the canonical array with the details as they were printed.
    let canonical = format!(
        "[{},{},{},{},{},{},{}]",
        old.seq,
        json_str(&old.at),
        json_str(&old.actor),
        json_str(&old.action),
        json_str(&old.target),
        details,
        json_str(&old.prev_hash),
    );
    if sha256_hex(canonical.as_bytes()) != old.hash {
        return Err("entry hash does not match its contents".into());
    }
    Ok(Checked {
        seq: old.seq,
        prev_hash: old.prev_hash,
        hash: old.hash,
    })
}

/// Verifies a whole chain of stored entries `(key, stored text)`, in key order from the first.
pub fn verify_stored<'a>(
    rows: impl IntoIterator<Item = (u64, &'a str)>,
) -> Result<u64, AuditError> {
    let mut prev_hash = GENESIS.to_string();
    let mut expected = 1;
    for (key, text) in rows {
        let broken = |why: String| AuditError::Broken { seq: key, why };
        if key != expected {
            return Err(broken(format!("expected sequence {expected}")));
        }
        let c = check_stored(text).map_err(broken)?;
        if c.seq != key {
            return Err(broken(format!("stored under key {key} but says {}", c.seq)));
        }
        if c.prev_hash != prev_hash {
            return Err(broken("previous-hash link does not match".into()));
        }
        prev_hash = c.hash;
        expected += 1;
    }
    Ok(expected - 1)
}

/// Storing the chain in a redb table (node and coordinator share this layout).
pub mod store {
    use redb::{ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

    use super::{AuditEntry, AuditError, check_stored, decode_stored, verify_stored};

    /// seq → the entry's stored text (see the module's header for its two forms).
    pub const AUDIT: TableDefinition<u64, &str> = TableDefinition::new("audit");

    /// Errors reading or writing the audit table.
    #[derive(Debug, thiserror::Error)]
    pub enum AuditStoreError {
        /// The store failed.
        #[error("audit store: {0}")]
        Store(#[from] redb::Error),
        /// An entry did not decode.
        #[error("audit entry {0} is corrupt: {1}")]
        Corrupt(u64, String),
        /// The chain is broken.
        #[error(transparent)]
        Chain(#[from] AuditError),
    }

    /// Appends an entry inside the caller's write transaction, so the audit entry commits (or
    /// not) together with the change it records.
    pub fn append(
        txn: &WriteTransaction,
        actor: &str,
        action: &str,
        target: &str,
        details: serde_json::Value,
    ) -> Result<AuditEntry, AuditStoreError> {
        let mut table = txn.open_table(AUDIT).map_err(redb::Error::from)?;
        let prev = match table.last().map_err(redb::Error::from)? {
            Some((k, v)) => {
                let c = check_stored(v.value())
                    .map_err(|why| AuditStoreError::Corrupt(k.value(), why))?;
                Some((c.seq, c.hash))
            }
            None => None,
        };
        let sealed = AuditEntry::seal(
            prev.as_ref().map(|(s, h)| (*s, h.as_str())),
            actor,
            action,
            target,
            details,
        );
        table
            .insert(sealed.entry.seq, sealed.stored.as_str())
            .map_err(redb::Error::from)?;
        Ok(sealed.entry)
    }

    /// Entries with `seq > after`, oldest first, at most `limit`.
    pub fn list(
        db: &redb::Database,
        after: u64,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, AuditStoreError> {
        let txn = db.begin_read().map_err(redb::Error::from)?;
        let table = txn.open_table(AUDIT).map_err(redb::Error::from)?;
        let mut out = Vec::new();
        for row in table
            .range(after.saturating_add(1)..)
            .map_err(redb::Error::from)?
            .take(limit)
        {
            let (k, v) = row.map_err(redb::Error::from)?;
            out.push(
                decode_stored(v.value()).map_err(|why| AuditStoreError::Corrupt(k.value(), why))?,
            );
        }
        Ok(out)
    }

    /// Verifies the whole stored chain from its stored bytes; returns the number of entries.
    pub fn verify(db: &redb::Database) -> Result<u64, AuditStoreError> {
        let txn = db.begin_read().map_err(redb::Error::from)?;
        let table = txn.open_table(AUDIT).map_err(redb::Error::from)?;
        let mut rows = Vec::new();
        for row in table.iter().map_err(redb::Error::from)? {
            let (k, v) = row.map_err(redb::Error::from)?;
            rows.push((k.value(), v.value().to_owned()));
        }
        Ok(verify_stored(rows.iter().map(|(k, v)| (*k, v.as_str())))?)
    }
}

#[cfg(test)]
mod tests;
