//! The coordinator's redb store: users, catalog, queries, runs, rooms, the HE key holder's
//! key sets and the audit log. Every table is declared in [`tables`], tied to its record type;
//! restart recovery is [`recovery`].
//!
//! Records are JSON values in string-keyed tables. A record and the audit entry about it are
//! written in one transaction, and every acknowledged change is committed first. A record is
//! decoded again before it is written, so nothing is stored that cannot be read back; a record
//! that still fails to decode (a store from an older build, a disk fault) is skipped and
//! reported by listings, never fatal to them, and an admin can delete it.

use std::path::Path;

use prism_common::audit::store::{self as audit, AuditStoreError};
use prism_common::identity::OrgId;
use prism_common::schema::CatalogEntry;
use redb::{Database, ReadableDatabase, ReadableTable};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use crate::model::{DatasetRecord, Role, User, now};

mod he_keys;
pub mod recovery;
pub mod tables;

pub use recovery::Recovered;
pub use tables::{DATASETS, HE_PENDING, QUERIES, ROOMS, RUNS, Table, USERS};

/// Errors of the coordinator store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// redb failed.
    #[error("store: {0}")]
    Db(#[from] redb::Error),
    /// A record did not decode.
    #[error("store record {0} is corrupt: {1}")]
    Corrupt(String, String),
    /// A record would not read back as written, so it was not stored.
    #[error("record {0} was not stored: it would not read back ({1})")]
    Unencodable(String, String),
    /// The audit log failed.
    #[error(transparent)]
    Audit(#[from] AuditStoreError),
}

prism_common::from_redb_errors!(StoreError, StoreError::Db);

/// An audit entry to write with a change.
pub struct Audit<'a> {
    /// Who.
    pub actor: &'a str,
    /// What.
    pub action: &'a str,
    /// To what.
    pub target: &'a str,
    /// Detail.
    pub details: serde_json::Value,
}

/// The coordinator store.
pub struct Store {
    db: Database,
}

fn decode<T: DeserializeOwned>(key: &str, s: &str) -> Result<T, StoreError> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(key.to_string(), e.to_string()))
}

/// Encodes a record, checking that it decodes again (JSON has no NaN or infinity, for one).
fn encode<T: Serialize + DeserializeOwned>(key: &str, v: &T) -> Result<String, StoreError> {
    let unencodable =
        |e: serde_json::Error| StoreError::Unencodable(key.to_string(), e.to_string());
    let text = serde_json::to_string(v).map_err(unencodable)?;
    serde_json::from_str::<T>(&text).map_err(unencodable)?;
    Ok(text)
}

/// A table's records that decode, and the keys of those that do not.
#[derive(Debug)]
pub struct Listing<T> {
    /// The records, in key order.
    pub records: Vec<T>,
    /// Keys of records that did not decode (logged; deletable by an admin).
    pub corrupt: Vec<String>,
}

/// SHA-256 of a token, hex.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

impl Store {
    /// Opens (or creates) the store and fails every run and room a previous process left in
    /// flight (see [`recovery`]).
    pub fn open(path: &Path) -> Result<(Self, Recovered), StoreError> {
        let db = Database::create(path)?;
        let txn = db.begin_write()?;
        for t in [
            USERS.def(),
            DATASETS.def(),
            QUERIES.def(),
            RUNS.def(),
            ROOMS.def(),
            HE_PENDING.def(),
        ] {
            txn.open_table(t)?;
        }
        txn.open_table(audit::AUDIT)?;
        txn.commit()?;
        let store = Store { db };
        let recovered = store.recover()?;
        Ok((store, recovered))
    }

    /// Makes every earlier commit durable, including those written without an `fsync` of
    /// their own: the last store write of a clean shutdown.
    pub fn flush(&self) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(redb::Durability::Immediate)
            .map_err(redb::Error::from)?;
        txn.commit()?;
        Ok(())
    }

    /// Whether the store answers a read (what `/readyz` checks).
    pub fn readable(&self) -> bool {
        self.db.begin_read().is_ok()
    }

    /// The database (audit reads).
    pub fn db(&self) -> &Database {
        &self.db
    }

    /// Removes from the catalog every dataset of an organization that is no longer a member;
    /// returns the removed dataset ids (audited as `catalog_pruned`).
    pub fn prune_catalog(&self, members: &[OrgId]) -> Result<Vec<String>, StoreError> {
        let txn = self.db.begin_write()?;
        let mut removed = Vec::new();
        {
            let mut t = txn.open_table(DATASETS.def())?;
            let stale: Vec<(String, OrgId)> = t
                .iter()?
                .filter_map(|r| r.ok())
                .filter_map(|(k, v)| {
                    let rec: DatasetRecord = decode(k.value(), v.value()).ok()?;
                    (!members.contains(&rec.organization))
                        .then(|| (k.value().to_string(), rec.organization))
                })
                .collect();
            for (k, org) in stale {
                t.remove(k.as_str())?;
                audit::append(
                    &txn,
                    "system",
                    "catalog_pruned",
                    &k,
                    serde_json::json!({"organization": org, "reason": "no longer a member of the federation"}),
                )?;
                removed.push(k);
            }
        }
        txn.commit()?;
        Ok(removed)
    }

    /// Writes a record (and optionally an audit entry) in one durable transaction.
    pub fn put<T: Serialize + DeserializeOwned>(
        &self,
        table: Table<T>,
        key: &str,
        value: &T,
        audit: Option<Audit<'_>>,
    ) -> Result<(), StoreError> {
        self.write(table, key, value, audit, redb::Durability::Immediate)
    }

    /// Like [`Store::put`], without an `fsync` of its own: the write becomes durable with the
    /// next durable commit. For intermediate states whose loss a restart already handles (a
    /// run marked running is failed at open whether or not that mark survived).
    pub fn put_lazy<T: Serialize + DeserializeOwned>(
        &self,
        table: Table<T>,
        key: &str,
        value: &T,
        audit: Option<Audit<'_>>,
    ) -> Result<(), StoreError> {
        self.write(table, key, value, audit, redb::Durability::None)
    }

    fn write<T: Serialize + DeserializeOwned>(
        &self,
        table: Table<T>,
        key: &str,
        value: &T,
        audit: Option<Audit<'_>>,
        durability: redb::Durability,
    ) -> Result<(), StoreError> {
        let text = encode(key, value)?;
        let mut txn = self.db.begin_write()?;
        txn.set_durability(durability).map_err(redb::Error::from)?;
        txn.open_table(table.def())?.insert(key, text.as_str())?;
        if let Some(a) = audit {
            audit::append(&txn, a.actor, a.action, a.target, a.details)?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Reads a record.
    pub fn get<T: DeserializeOwned>(
        &self,
        table: Table<T>,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(table.def())?;
        match t.get(key)? {
            Some(v) => Ok(Some(decode(key, v.value())?)),
            None => Ok(None),
        }
    }

    /// Every record of a table that decodes, in key order; corrupt ones are logged and skipped.
    pub fn list<T: DeserializeOwned>(&self, table: Table<T>) -> Result<Vec<T>, StoreError> {
        Ok(self.listing(table)?.records)
    }

    /// Every record of a table that decodes, with its key, in key order.
    pub fn keyed<T: DeserializeOwned>(
        &self,
        table: Table<T>,
    ) -> Result<Vec<(String, T)>, StoreError> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(table.def())?;
        let mut out = Vec::new();
        for row in t.iter()? {
            let (k, v) = row?;
            if let Ok(r) = decode(k.value(), v.value()) {
                out.push((k.value().to_string(), r));
            }
        }
        Ok(out)
    }

    /// Every record of a table that decodes, and the keys of those that do not (logged).
    pub fn listing<T: DeserializeOwned>(&self, table: Table<T>) -> Result<Listing<T>, StoreError> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(table.def())?;
        let mut out = Listing {
            records: Vec::new(),
            corrupt: Vec::new(),
        };
        for row in t.iter()? {
            let (k, v) = row?;
            match decode(k.value(), v.value()) {
                Ok(r) => out.records.push(r),
                Err(e) => {
                    tracing::error!(table = table.name(), key = k.value(), error = %e, "skipping a corrupt record");
                    out.corrupt.push(k.value().to_string());
                }
            }
        }
        Ok(out)
    }

    /// Deletes a record, whether or not it decodes, with an audit entry. `false` if absent.
    pub fn remove<T>(
        &self,
        table: Table<T>,
        key: &str,
        audit: Audit<'_>,
    ) -> Result<bool, StoreError> {
        let txn = self.db.begin_write()?;
        let existed = txn.open_table(table.def())?.remove(key)?.is_some();
        if existed {
            audit::append(&txn, audit.actor, audit.action, audit.target, audit.details)?;
        }
        txn.commit()?;
        Ok(existed)
    }

    /// Deletes a bookkeeping record that no one audits (a kept HE encoding), without an
    /// `fsync` of its own: one that survives a crash is removed again. `false` if absent.
    pub fn forget<T>(&self, table: Table<T>, key: &str) -> Result<bool, StoreError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(redb::Durability::None)
            .map_err(redb::Error::from)?;
        let existed = txn.open_table(table.def())?.remove(key)?.is_some();
        txn.commit()?;
        Ok(existed)
    }

    /// Writes a raw record value, bypassing the read-back check: only for tests that need a
    /// record an older build or a disk fault could have left (`test-util` builds only).
    #[cfg(any(test, feature = "test-util"))]
    pub fn put_raw(&self, table: &str, key: &str, raw: &str) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        let def: redb::TableDefinition<&str, &str> = redb::TableDefinition::new(table);
        txn.open_table(def)?.insert(key, raw)?;
        txn.commit()?;
        Ok(())
    }

    /// Appends an audit entry on its own.
    pub fn audit(&self, a: Audit<'_>) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        audit::append(&txn, a.actor, a.action, a.target, a.details)?;
        txn.commit()?;
        Ok(())
    }

    /// Creates a user and returns the token, which is shown once and never stored.
    pub fn create_user(
        &self,
        name: &str,
        role: Role,
        organization: Option<OrgId>,
    ) -> Result<(User, String), StoreError> {
        use rand::RngCore;
        let mut raw = [0u8; 32];
        rand::rng().fill_bytes(&mut raw);
        let token = format!("prism_{}", hex::encode(raw));
        let user = User {
            id: uuid::Uuid::new_v4().to_string(),
            name: name.into(),
            role,
            organization,
            created_at: now(),
        };
        self.put(
            USERS,
            &token_hash(&token),
            &user,
            Some(Audit {
                actor: "system",
                action: "user_created",
                target: &user.id,
                details: serde_json::json!({"name": name, "role": role}),
            }),
        )?;
        Ok((user, token))
    }

    /// The user a token belongs to.
    pub fn user_by_token(&self, token: &str) -> Result<Option<User>, StoreError> {
        self.get(USERS, &token_hash(token))
    }

    /// Replaces an organization's catalog with what its node published.
    pub fn replace_catalog(
        &self,
        org: &OrgId,
        entries: &[CatalogEntry],
    ) -> Result<Vec<DatasetRecord>, StoreError> {
        let txn = self.db.begin_write()?;
        let mut out = Vec::new();
        {
            let mut t = txn.open_table(DATASETS.def())?;
            let prefix = format!("{org}.");
            let stale: Vec<String> = t
                .iter()?
                .filter_map(|r| r.ok())
                .map(|(k, _)| k.value().to_string())
                .filter(|k| {
                    k.starts_with(&prefix)
                        && !entries.iter().any(|e| format!("{prefix}{}", e.name) == *k)
                })
                .collect();
            let removed_any = !stale.is_empty();
            for k in stale {
                t.remove(k.as_str())?;
            }
            let mut changed = false;
            for e in entries {
                let rec = DatasetRecord {
                    id: format!("{org}.{}", e.name),
                    organization: org.clone(),
                    name: e.name.clone(),
                    columns: e.columns.clone(),
                    row_count: e.row_count,
                    release: e.release,
                    budget: e.budget,
                    updated_at: now(),
                };
                // A republished budget alone (after every charge) is not a catalog change.
                let before: Option<DatasetRecord> = t
                    .get(rec.id.as_str())?
                    .and_then(|v| serde_json::from_str(v.value()).ok());
                changed |= before.is_none_or(|b| {
                    (&b.columns, b.row_count, b.release)
                        != (&rec.columns, rec.row_count, rec.release)
                });
                t.insert(rec.id.as_str(), encode(&rec.id, &rec)?.as_str())?;
                out.push(rec);
            }
            changed |= removed_any;
            if changed {
                audit::append(
                    &txn,
                    org.as_str(),
                    "catalog_published",
                    org.as_str(),
                    serde_json::json!({"datasets": entries.iter().map(|e| &e.name).collect::<Vec<_>>()}),
                )?;
            }
        }
        txn.commit()?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::QueryRecord;
    use prism_common::backend::BackendId;
    use prism_common::plan::{CmpOp, Literal, Plan, Predicate};

    fn query(value: f64) -> QueryRecord {
        QueryRecord {
            id: "q".into(),
            dataset_id: "hospital-a.patients".into(),
            sql: "SELECT COUNT(*) FROM patients WHERE age > x".into(),
            backend: BackendId::HeBackend,
            epsilon: 0.5,
            delta: 0.0,
            estimated_epsilon: 0.0,
            estimated_delta: 0.0,
            plan: Plan {
                dataset: "patients".into(),
                outputs: vec![],
                filter: Some(Predicate::Compare {
                    column: "age".into(),
                    op: CmpOp::Gt,
                    value: Literal::Float(value),
                }),
                group_by: vec![],
                having_min_count: None,
            },
            created_by: "u".into(),
            organization: None,
            created_at: "2026-01-01T00:00:00Z".into(),
        }
    }

    #[test]
    fn a_record_that_would_not_read_back_is_not_stored() {
        let dir = tempfile::tempdir().expect("dir");
        let (store, _) = Store::open(&dir.path().join("c.redb")).expect("open");
        for bad in [f64::INFINITY, f64::NAN] {
            let e = store
                .put(crate::store::QUERIES, "q", &query(bad), None)
                .expect_err("refused");
            assert!(matches!(e, StoreError::Unencodable(..)), "{e}");
        }
        let none: Option<QueryRecord> = store.get(QUERIES, "q").expect("get");
        assert_eq!(none, None);
        store.put(QUERIES, "q", &query(1.5), None).expect("put");
        assert_eq!(store.get(QUERIES, "q").expect("get"), Some(query(1.5)));
    }

    #[test]
    fn a_corrupt_record_is_skipped_reported_and_deletable() {
        let dir = tempfile::tempdir().expect("dir");
        let (store, _) = Store::open(&dir.path().join("c.redb")).expect("open");
        store.put(QUERIES, "q", &query(1.5), None).expect("put");
        store
            .put_raw(
                QUERIES.name(),
                "poison",
                r#"{"id":"poison","plan":{"value":null}}"#,
            )
            .expect("raw");
        let l: Listing<QueryRecord> = store.listing(QUERIES).expect("listing");
        assert_eq!(l.records, vec![query(1.5)]);
        assert_eq!(l.corrupt, vec!["poison".to_string()]);
        let audit = || Audit {
            actor: "admin",
            action: "query_deleted",
            target: "poison",
            details: serde_json::json!({}),
        };
        assert!(store.remove(QUERIES, "poison", audit()).expect("remove"));
        assert!(!store.remove(QUERIES, "poison", audit()).expect("remove"));
        let l: Listing<QueryRecord> = store.listing(QUERIES).expect("listing");
        assert!(l.corrupt.is_empty());
    }
}
