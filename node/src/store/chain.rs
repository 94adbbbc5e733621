//! The budget ledger bound to the audit chain.
//!
//! Every audit entry that records a change to a dataset's budget (`dataset_imported`,
//! `budget_set`, `budget_charged`, `reservation_released`, ...) carries the ledger as it stands
//! after the change, under `details.ledger`, in exact integer units. The ledger record and its
//! entry commit in one transaction, so in an untouched store a dataset's budget record always
//! equals the `ledger` of the last entry that carries one for it.
//!
//! [`check`] compares the two when the store opens and when the chain is verified. A budget
//! record edited outside the node (spent 2.0 → 1.0 ε in a stopped node's redb file) no longer
//! matches its entry, and the node refuses to serve; editing the entry as well breaks its hash.
//! Open reservations are not part of the binding (they are released at every open, and reserving
//! is not audited), so only the totals and the committed spend are compared.

use std::collections::BTreeMap;

use prism_common::audit::store::AUDIT;
use prism_common::audit::{check_stored, decode_stored};
use redb::{Database, ReadableDatabase, ReadableTable};

use super::ledger::{LEDGER_KEY, snapshot};
use super::{BUDGETS, Budget, StoreError};

/// Checks every dataset's budget record against the last audit entry that records its ledger.
/// Returns how many budgets were checked. A dataset with no such entry (written before entries
/// carried the ledger) is not checked.
pub fn check(db: &Database) -> Result<usize, StoreError> {
    let txn = db.begin_read()?;
    let budgets = txn.open_table(BUDGETS)?;
    let mut pending: BTreeMap<String, Budget> = BTreeMap::new();
    for row in budgets.iter()? {
        let (k, v) = row?;
        let b: Budget = serde_json::from_str(v.value())
            .map_err(|e| StoreError::Corrupt(k.value().to_string(), e.to_string()))?;
        pending.insert(k.value().to_string(), b);
    }
    // Which ledger each dataset binds (its population's, if it has one), read once.
    let mut keys: BTreeMap<String, String> = BTreeMap::new();
    for row in txn.open_table(super::DATASETS)?.iter()? {
        let (k, v) = row?;
        let key = super::ledger::key_of_record(k.value(), Some(v.value()))?;
        keys.insert(k.value().to_string(), key);
    }
    let audit = txn.open_table(AUDIT)?;
    let mut checked = 0;
    for row in audit.iter()?.rev() {
        if pending.is_empty() {
            break;
        }
        let (k, v) = row?;
        let seq = k.value();
        let corrupt = |why: String| {
            StoreError::Audit(prism_common::audit::store::AuditStoreError::Corrupt(
                seq, why,
            ))
        };
        let entry = decode_stored(v.value()).map_err(corrupt)?;
        let Some(recorded) = entry.details.get(LEDGER_KEY) else {
            continue;
        };
        // A dataset in a population binds its population's one ledger.
        let key = keys.get(&entry.target).unwrap_or(&entry.target);
        let Some(budget) = pending.remove(key) else {
            continue;
        };
        // The entry the ledger is compared with must itself be intact.
        check_stored(v.value()).map_err(corrupt)?;
        if *recorded != snapshot(&budget) {
            return Err(StoreError::LedgerMismatch {
                dataset: entry.target,
                seq,
                recorded: recorded.to_string(),
                stored: snapshot(&budget).to_string(),
            });
        }
        checked += 1;
    }
    Ok(checked)
}

/// Verifies a stopped node's store file without starting the node: the whole audit chain, then
/// the ledger against it. Returns the number of entries and of budgets checked.
pub fn verify_file(path: &std::path::Path) -> Result<(u64, usize), StoreError> {
    let db = Database::open(path)?;
    let entries = prism_common::audit::store::verify(&db)?;
    let budgets = check(&db)?;
    Ok((entries, budgets))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use crate::store::tests::dataset;
    use serde_json::Value;

    /// A store at `path` holding `patients` with a budget of 3 ε.
    fn store_with_patients(path: &std::path::Path) -> Store {
        let (store, _) = Store::open(path).expect("open");
        store
            .put_dataset(&dataset(), Budget::new(3.0, 1e-5), false, "owner")
            .expect("import");
        store
    }

    /// Writes `f(budget)` over the dataset's budget record, as someone editing the file would.
    fn tamper(path: &std::path::Path, f: impl FnOnce(&mut Budget)) {
        let db = Database::open(path).expect("open");
        let txn = db.begin_write().expect("txn");
        {
            let mut t = txn.open_table(BUDGETS).expect("table");
            let mut b: Budget =
                serde_json::from_str(t.get("patients").expect("get").expect("budget").value())
                    .expect("budget");
            f(&mut b);
            t.insert(
                "patients",
                serde_json::to_string(&b).expect("json").as_str(),
            )
            .expect("insert");
        }
        txn.commit().expect("commit");
    }

    #[test]
    fn every_budget_change_is_bound_and_an_edited_ledger_is_refused_at_open() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("n.redb");
        {
            let (store, _) = Store::open(&path).expect("open");
            store
                .put_dataset(&dataset(), Budget::new(3.0, 1e-5), false, "owner")
                .expect("import");
            store
                .set_budget("patients", 4.0, 1e-5, "owner")
                .expect("set");
            let r = store
                .reserve("patients", 2.0, 0.0, "run-1")
                .expect("reserve");
            store
                .settle(&r.id, Some((2.0, 0.0)), "released", Value::Null)
                .expect("settle");
            let r = store
                .reserve("patients", 0.5, 0.0, "run-2")
                .expect("reserve");
            store
                .settle(&r.id, None, "failed", Value::Null)
                .expect("release");
            assert_eq!(check(store.db()).expect("bound"), 1);
            // Every budget-changing entry carries the ledger it left.
            let entries = prism_common::audit::store::list(store.db(), 0, 100).expect("list");
            for action in [
                "dataset_imported",
                "budget_set",
                "budget_charged",
                "reservation_released",
            ] {
                let e = entries.iter().find(|e| e.action == action).expect(action);
                assert!(
                    e.details.get(LEDGER_KEY).is_some(),
                    "{action}: {:?}",
                    e.details
                );
            }
        }
        // Reopening an untouched store works, and the file verifies.
        drop(Store::open(&path).expect("reopen"));
        assert!(verify_file(&path).is_ok());

        // Spent 2.0 → 1.0 ε in the stopped node's file.
        tamper(&path, |b| b.spent_epsilon /= 2);
        let err = Store::open(&path)
            .err()
            .expect("an edited ledger must be refused");
        let msg = err.to_string();
        assert!(
            matches!(err, StoreError::LedgerMismatch { ref dataset, .. } if dataset == "patients"),
            "{msg}"
        );
        assert!(
            msg.contains("patients") && msg.contains("audit entry"),
            "{msg}"
        );
        assert!(
            verify_file(&path).is_err(),
            "verify must fail on an edited ledger"
        );

        // Putting the record back as the chain says restores service.
        tamper(&path, |b| b.spent_epsilon *= 2);
        drop(Store::open(&path).expect("restored"));
    }

    #[test]
    fn an_edited_entry_is_refused_too() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("n.redb");
        drop(store_with_patients(&path));
        // Raise the total in both the record and its entry's text (without re-hashing).
        tamper(&path, |b| b.total_epsilon *= 10);
        let db = Database::open(&path).expect("open");
        let txn = db.begin_write().expect("txn");
        {
            let mut t = txn.open_table(AUDIT).expect("audit");
            let (seq, text) = {
                let (k, v) = t.last().expect("last").expect("an entry");
                (k.value(), v.value().to_string())
            };
            let edited = text.replace("3000000000000", "30000000000000");
            assert_ne!(edited, text);
            t.insert(seq, edited.as_str()).expect("insert");
        }
        txn.commit().expect("commit");
        drop(db);
        let err = Store::open(&path).err().expect("refused");
        assert!(err.to_string().contains("corrupt"), "{err}");
    }
}
