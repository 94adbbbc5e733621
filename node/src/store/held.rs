//! Charged answers the coordinator has not acknowledged yet.
//!
//! A DP or HE answer, or a `dp` room's partial sum (held under the execution's id), is charged
//! before it leaves the node; if the coordinator crashes or the link drops before the
//! coordinator records it, the ε would be spent with no answer delivered. So the charge and a
//! copy of the answer are committed in one transaction ([`Store::settle_holding`]), and the
//! copy stays until the coordinator acknowledges the run (`Request::Acknowledge`). A
//! coordinator that lost an answer collects it again (`Request::Collect`). What is held is
//! bounded: at most [`MAX_HELD`] answers for at most [`HOLD_FOR`]; an answer dropped before it
//! was acknowledged is audited (`held_answer_dropped`), so the owner sees every charge whose
//! answer may never have reached anyone.

use prism_common::audit::store as audit;
use prism_common::wire::HeldAnswer;
use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

use super::{Store, StoreError, json, parse};

/// run id → JSON [`Held`].
pub(crate) const HELD: TableDefinition<&str, &str> = TableDefinition::new("held_answers");

/// Most answers held at once; the oldest goes first.
pub const MAX_HELD: u64 = 1024;
/// How long an unacknowledged answer is held.
pub const HOLD_FOR: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// One held answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Held {
    /// The answer as sent.
    pub answer: HeldAnswer,
    /// The dataset charged.
    pub dataset: String,
    /// When it was charged (milliseconds since the Unix epoch).
    pub held_at_ms: u64,
}

/// Milliseconds since the Unix epoch (the clock held answers are stamped with).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Inserts `held` in `txn` and drops the oldest answers beyond [`MAX_HELD`], audited.
pub(crate) fn insert(txn: &redb::WriteTransaction, held: &Held) -> Result<(), StoreError> {
    let mut t = txn.open_table(HELD)?;
    t.insert(held.answer.run_id.as_str(), json(held).as_str())?;
    if t.len()? > MAX_HELD {
        let mut all = Vec::new();
        for row in t.iter()? {
            let (k, v) = row?;
            let h: Held = parse(k.value(), v.value())?;
            all.push(h);
        }
        all.sort_by_key(|h| h.held_at_ms);
        let excess = usize::try_from(t.len()? - MAX_HELD).unwrap_or(usize::MAX);
        for h in all.into_iter().take(excess) {
            t.remove(h.answer.run_id.as_str())?;
            audit::append(
                txn,
                "node",
                "held_answer_dropped",
                &h.dataset,
                serde_json::json!({"run_id": h.answer.run_id, "epsilon": h.answer.epsilon_spent(),
                                   "reason": format!("more than {MAX_HELD} answers unacknowledged")}),
            )?;
        }
    }
    Ok(())
}

impl Store {
    /// Every held answer, oldest first.
    pub fn held(&self) -> Result<Vec<Held>, StoreError> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(HELD)?;
        let mut out = Vec::new();
        for row in t.iter()? {
            let (k, v) = row?;
            out.push(parse::<Held>(k.value(), v.value())?);
        }
        out.sort_by_key(|h| h.held_at_ms);
        Ok(out)
    }

    /// The held answers of `run_ids` (those still held).
    pub fn held_answers(&self, run_ids: &[String]) -> Result<Vec<HeldAnswer>, StoreError> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(HELD)?;
        let mut out = Vec::new();
        for id in run_ids {
            if let Some(v) = t.get(id.as_str())? {
                out.push(parse::<Held>(id, v.value())?.answer);
            }
        }
        Ok(out)
    }

    /// Forgets the held answers of `run_ids` (the coordinator recorded them); returns how many
    /// were held. Not fsynced: an acknowledgement lost in a crash only makes the node announce
    /// the answer again, and the coordinator acknowledges it again.
    pub fn acknowledge(&self, run_ids: &[String]) -> Result<usize, StoreError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(redb::Durability::None)
            .map_err(redb::Error::from)?;
        let mut n = 0;
        {
            let mut t = txn.open_table(HELD)?;
            for id in run_ids {
                if t.remove(id.as_str())?.is_some() {
                    n += 1;
                }
            }
        }
        txn.commit()?;
        Ok(n)
    }

    /// Drops answers held longer than [`HOLD_FOR`], audited; returns those still held, oldest
    /// first.
    pub fn expire_held(&self, now_ms: u64) -> Result<Vec<Held>, StoreError> {
        let cutoff = now_ms.saturating_sub(u64::try_from(HOLD_FOR.as_millis()).unwrap_or(0));
        let (old, kept): (Vec<Held>, Vec<Held>) = self
            .held()?
            .into_iter()
            .partition(|h| h.held_at_ms < cutoff);
        if old.is_empty() {
            return Ok(kept);
        }
        let txn = self.db.begin_write()?;
        {
            let mut t = txn.open_table(HELD)?;
            for h in &old {
                t.remove(h.answer.run_id.as_str())?;
                audit::append(
                    &txn,
                    "node",
                    "held_answer_dropped",
                    &h.dataset,
                    serde_json::json!({"run_id": h.answer.run_id, "epsilon": h.answer.epsilon_spent(),
                                       "reason": format!("not acknowledged within {} h", HOLD_FOR.as_secs() / 3600)}),
                )?;
            }
        }
        txn.commit()?;
        Ok(kept)
    }
}
