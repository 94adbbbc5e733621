//! The hash-chained audit log entry format, shared by node and coordinator.
//!
//! Each entry carries the SHA-256 of the previous entry; the entry's own hash covers its
//! sequence number, time, actor, action, target, details and the previous hash. Rewriting or
//! dropping any entry breaks every hash after it, which [`verify_chain`] detects.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The previous-hash of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One audit entry.
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
    /// An entry's hash or link is wrong.
    #[error("audit chain broken at entry {seq}: {why}")]
    Broken {
        /// The first bad entry.
        seq: u64,
        /// What is wrong.
        why: String,
    },
}

fn digest(
    seq: u64,
    at: &str,
    actor: &str,
    action: &str,
    target: &str,
    details: &serde_json::Value,
    prev: &str,
) -> String {
    let canonical = serde_json::json!([seq, at, actor, action, target, details, prev]);
    hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
}

impl AuditEntry {
    /// Builds the entry that follows `prev` (or the first one).
    pub fn next(
        prev: Option<&AuditEntry>,
        actor: &str,
        action: &str,
        target: &str,
        details: serde_json::Value,
    ) -> AuditEntry {
        let seq = prev.map_or(1, |p| p.seq + 1);
        let prev_hash = prev.map_or_else(|| GENESIS.to_string(), |p| p.hash.clone());
        let at = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let hash = digest(seq, &at, actor, action, target, &details, &prev_hash);
        AuditEntry {
            seq,
            at,
            actor: actor.into(),
            action: action.into(),
            target: target.into(),
            details,
            prev_hash,
            hash,
        }
    }

    fn recomputed(&self) -> String {
        digest(
            self.seq,
            &self.at,
            &self.actor,
            &self.action,
            &self.target,
            &self.details,
            &self.prev_hash,
        )
    }
}

/// Verifies a whole chain, in order from the first entry.
pub fn verify_chain<'a>(
    entries: impl IntoIterator<Item = &'a AuditEntry>,
) -> Result<u64, AuditError> {
    let mut prev_hash = GENESIS.to_string();
    let mut expected = 1;
    for e in entries {
        let broken = |why: &str| AuditError::Broken {
            seq: e.seq,
            why: why.into(),
        };
        if e.seq != expected {
            return Err(broken(&format!("expected sequence {expected}")));
        }
        if e.prev_hash != prev_hash {
            return Err(broken("previous-hash link does not match"));
        }
        if e.recomputed() != e.hash {
            return Err(broken("entry hash does not match its contents"));
        }
        prev_hash = e.hash.clone();
        expected += 1;
    }
    Ok(expected - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_verifies_and_detects_tampering() {
        let a = AuditEntry::next(
            None,
            "alice",
            "query_created",
            "q1",
            serde_json::json!({"eps": 0.5}),
        );
        let b = AuditEntry::next(
            Some(&a),
            "alice",
            "query_executed",
            "r1",
            serde_json::json!({}),
        );
        let c = AuditEntry::next(
            Some(&b),
            "bob",
            "budget_set",
            "patients",
            serde_json::json!({"total": 3.0}),
        );
        assert_eq!(verify_chain([&a, &b, &c]), Ok(3));
        let mut forged = b.clone();
        forged.details = serde_json::json!({"eps": 0.0});
        assert!(matches!(
            verify_chain([&a, &forged, &c]),
            Err(AuditError::Broken { seq: 2, .. })
        ));
        assert!(matches!(
            verify_chain([&a, &c]),
            Err(AuditError::Broken { seq: 3, .. })
        ));
    }
}

/// Storing the chain in a redb table (node and coordinator share this layout).
pub mod store {
    use redb::{
        ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction,
    };

    use super::{AuditEntry, AuditError, verify_chain};

    /// seq → JSON-encoded [`AuditEntry`].
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

    fn decode(seq: u64, s: &str) -> Result<AuditEntry, AuditStoreError> {
        serde_json::from_str(s).map_err(|e| AuditStoreError::Corrupt(seq, e.to_string()))
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
            Some((k, v)) => Some(decode(k.value(), v.value())?),
            None => None,
        };
        let entry = AuditEntry::next(prev.as_ref(), actor, action, target, details);
        let json = serde_json::to_string(&entry)
            .map_err(|e| AuditStoreError::Corrupt(entry.seq, e.to_string()))?;
        table
            .insert(entry.seq, json.as_str())
            .map_err(redb::Error::from)?;
        Ok(entry)
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
            out.push(decode(k.value(), v.value())?);
        }
        Ok(out)
    }

    /// Verifies the whole stored chain; returns the number of entries.
    pub fn verify(db: &redb::Database) -> Result<u64, AuditStoreError> {
        let txn = db.begin_read().map_err(redb::Error::from)?;
        let table = txn.open_table(AUDIT).map_err(redb::Error::from)?;
        let mut entries = Vec::with_capacity(table.len().map_err(redb::Error::from)? as usize);
        for row in table.iter().map_err(redb::Error::from)? {
            let (k, v) = row.map_err(redb::Error::from)?;
            entries.push(decode(k.value(), v.value())?);
        }
        Ok(verify_chain(&entries)?)
    }
}
