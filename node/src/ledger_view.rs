//! A dataset's budget over time, read back from the node's audit log, and the log itself newest
//! first with the owner's filters.
//!
//! The ledger keeps only totals; every change to it (`budget_charged`, `budget_set`) is an audit
//! entry committed in the same transaction, so the log replays the ledger's history exactly.
//! Pure functions over entries, plus the two store reads that feed them.

use prism_common::audit::AuditEntry;
use prism_common::audit::store::AUDIT;
use redb::ReadableDatabase;
use serde_json::{Value, json};

use crate::store::StoreError;

/// The points of `dataset`'s spend over time: one per charge or new total, oldest first, with
/// the ε spent so far and the total in force. `current_total` is the ledger's total now (the
/// total before the first `budget_set` is that entry's `before`; with none, the current one).
pub fn history(entries: &[AuditEntry], dataset: &str, current_total: f64) -> Vec<Value> {
    let mine = entries.iter().filter(|e| e.target == dataset);
    let first_total = mine
        .clone()
        .find(|e| e.action == "budget_set")
        .and_then(|e| e.details["before"]["total_epsilon"].as_f64())
        .unwrap_or(current_total);
    let (mut spent, mut total) = (0.0_f64, first_total);
    let mut out = Vec::new();
    for e in mine {
        let epsilon = match e.action.as_str() {
            "budget_charged" => e.details["epsilon"].as_f64().unwrap_or(0.0),
            "budget_set" => {
                total = e.details["after"]["total_epsilon"]
                    .as_f64()
                    .unwrap_or(total);
                0.0
            }
            _ => continue,
        };
        spent += epsilon;
        out.push(json!({
            "seq": e.seq, "at": e.at, "action": e.action, "epsilon": epsilon,
            "spent_epsilon": spent, "total_epsilon": total,
            "run_id": e.details.get("run_id"), "room_id": e.details.get("room_id"),
            "backend": e.details.get("backend"), "query": e.details.get("query"),
            "requested_by": e.details.get("requested_by"),
        }));
    }
    out
}

/// What the owner filters the activity log by; empty fields match everything.
#[derive(Debug, Default)]
pub struct Filter {
    /// Exact action (`budget_charged`, `room_attested`, ...).
    pub action: Option<String>,
    /// Exact target (a dataset, a room id).
    pub target: Option<String>,
    /// Text anywhere in the entry (case-insensitive): a user, a query, a run id.
    pub q: Option<String>,
}

impl Filter {
    /// Whether `e` passes.
    pub fn matches(&self, e: &AuditEntry) -> bool {
        fn set(f: &Option<String>) -> Option<&str> {
            f.as_deref().filter(|s| !s.trim().is_empty())
        }
        set(&self.action).is_none_or(|a| e.action == a)
            && set(&self.target).is_none_or(|t| e.target == t)
            && set(&self.q).is_none_or(|q| {
                let q = q.trim().to_lowercase();
                [&e.actor, &e.action, &e.target]
                    .iter()
                    .any(|s| s.to_lowercase().contains(&q))
                    || e.details.to_string().to_lowercase().contains(&q)
            })
    }
}

/// Every audit entry, oldest first.
pub fn all_entries(db: &redb::Database) -> Result<Vec<AuditEntry>, StoreError> {
    Ok(prism_common::audit::store::list(db, 0, usize::MAX)?)
}

/// Up to `limit` entries with `seq < before` that pass `filter`, newest first.
pub fn newest_first(
    db: &redb::Database,
    filter: &Filter,
    before: Option<u64>,
    limit: usize,
) -> Result<Vec<AuditEntry>, StoreError> {
    let txn = db.begin_read()?;
    let table = txn.open_table(AUDIT)?;
    let mut out = Vec::new();
    for row in table.range(..before.unwrap_or(u64::MAX))?.rev() {
        let (k, v) = row?;
        let e = prism_common::audit::decode_stored(v.value())
            .map_err(|why| StoreError::Corrupt(format!("audit entry {}", k.value()), why))?;
        if filter.matches(&e) {
            out.push(e);
            if out.len() >= limit {
                break;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: u64, action: &str, target: &str, details: Value) -> AuditEntry {
        AuditEntry {
            seq,
            at: format!("2026-01-01T00:00:{seq:02}Z"),
            actor: "node".into(),
            action: action.into(),
            target: target.into(),
            details,
            prev_hash: String::new(),
            hash: String::new(),
        }
    }

    #[test]
    fn replays_spend_and_totals_and_filters() {
        let log = vec![
            entry(1, "dataset_imported", "patients", json!({})),
            entry(
                2,
                "budget_charged",
                "patients",
                json!({"epsilon": 0.5, "query": "SELECT 1"}),
            ),
            entry(3, "budget_charged", "other", json!({"epsilon": 9.0})),
            entry(
                4,
                "budget_set",
                "patients",
                json!({"before": {"total_epsilon": 10.0}, "after": {"total_epsilon": 4.0}}),
            ),
            entry(
                5,
                "reservation_released",
                "patients",
                json!({"epsilon": 0.0}),
            ),
            entry(6, "budget_charged", "patients", json!({"epsilon": 0.25})),
        ];
        let h = history(&log, "patients", 4.0);
        let spent: Vec<f64> = h
            .iter()
            .filter_map(|p| p["spent_epsilon"].as_f64())
            .collect();
        let total: Vec<f64> = h
            .iter()
            .filter_map(|p| p["total_epsilon"].as_f64())
            .collect();
        assert_eq!(spent, vec![0.5, 0.5, 0.75]);
        assert_eq!(total, vec![10.0, 4.0, 4.0]);
        assert_eq!(h[0]["query"], "SELECT 1");

        let f = Filter {
            q: Some("select".into()),
            ..Filter::default()
        };
        assert_eq!(log.iter().filter(|e| f.matches(e)).count(), 1);
        let f = Filter {
            action: Some("budget_charged".into()),
            target: Some("patients".into()),
            q: Some(" ".into()),
        };
        assert_eq!(log.iter().filter(|e| f.matches(e)).count(), 2);
    }
}
