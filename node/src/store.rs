//! The node's redb store: datasets, their column data, the budget ledger and the audit log.
//!
//! Every change that must survive a crash is committed (with its audit entry, in the same
//! transaction) before the caller acknowledges it. redb serialises write transactions, which is
//! what makes budget reservations safe under any number of concurrent queries.

use std::collections::HashMap;
use std::path::Path;

use prism_common::audit::store::{self as audit, AuditStoreError};
use prism_common::release::DatasetRelease;
use prism_common::schema::{ColumnData, Dataset, DatasetSchema};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

/// name → JSON [`DatasetMeta`].
const DATASETS: TableDefinition<&str, &str> = TableDefinition::new("datasets");
/// name → postcard-encoded `Vec<ColumnData>`.
const COLUMNS: TableDefinition<&str, &[u8]> = TableDefinition::new("columns");
/// name → JSON [`Budget`].
const BUDGETS: TableDefinition<&str, &str> = TableDefinition::new("budgets");
/// name → JSON [`DatasetRelease`]: the owner's per-dataset release settings.
const RELEASE: TableDefinition<&str, &str> = TableDefinition::new("dataset_release");
/// reservation id → JSON [`Reservation`].
const RESERVATIONS: TableDefinition<&str, &str> = TableDefinition::new("reservations");

/// Errors of the node store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// redb failed.
    #[error("store: {0}")]
    Db(#[from] redb::Error),
    /// A record did not decode.
    #[error("store record {0} is corrupt: {1}")]
    Corrupt(String, String),
    /// The audit log failed.
    #[error(transparent)]
    Audit(#[from] AuditStoreError),
    /// No such dataset.
    #[error("dataset {0} does not exist on this node")]
    UnknownDataset(String),
    /// The dataset exists and replacing was not asked for.
    #[error(
        "dataset {0} already exists; import with replace to load new data (its budget ledger is kept)"
    )]
    DatasetExists(String),
    /// Not enough budget left.
    #[error(
        "dataset {dataset}: privacy budget exhausted: this query needs ε={need_epsilon} δ={need_delta}, \
         {remaining_epsilon} ε and {remaining_delta} δ remain of {total_epsilon} ε; ask the data owner to raise the budget"
    )]
    BudgetExhausted {
        /// Dataset.
        dataset: String,
        /// ε asked.
        need_epsilon: f64,
        /// δ asked.
        need_delta: f64,
        /// ε left (total − spent − reserved).
        remaining_epsilon: f64,
        /// δ left.
        remaining_delta: f64,
        /// Total ε.
        total_epsilon: f64,
    },
    /// A budget value is not acceptable.
    #[error("invalid budget: {0}")]
    InvalidBudget(String),
    /// No such open reservation.
    #[error("reservation {0} is not open")]
    UnknownReservation(String),
}

prism_common::from_redb_errors!(StoreError, StoreError::Db);

/// What the node keeps about a dataset besides its columns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetMeta {
    /// Schema as declared.
    pub schema: DatasetSchema,
    /// Row count.
    pub rows: u64,
    /// When it was (last) imported.
    pub imported_at: String,
}

/// Privacy amounts are kept in integer pico-units (10⁻¹² ε or δ) so that the ledger's
/// arithmetic is exact under any number of charges: charges round up, totals round down.
pub const UNITS_PER_ONE: f64 = 1e12;

/// Largest total a budget may have (in ε or δ).
pub const MAX_TOTAL: f64 = 1e6;

/// Units for a charge (rounded up: never under-count).
pub fn units_up(x: f64) -> u64 {
    (x.max(0.0) * UNITS_PER_ONE).ceil() as u64
}

/// Units for a total (rounded down: never over-grant).
pub fn units_down(x: f64) -> u64 {
    (x.max(0.0) * UNITS_PER_ONE).floor() as u64
}

/// Units back to a number.
pub fn real(units: u64) -> f64 {
    units as f64 / UNITS_PER_ONE
}

/// A dataset's privacy budget ledger, in pico-units (see [`UNITS_PER_ONE`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Budget {
    /// Total ε the owner allows.
    pub total_epsilon: u64,
    /// Total δ the owner allows.
    pub total_delta: u64,
    /// ε committed by completed releases.
    pub spent_epsilon: u64,
    /// δ committed by completed releases.
    pub spent_delta: u64,
    /// ε held by open reservations.
    pub reserved_epsilon: u64,
    /// δ held by open reservations.
    pub reserved_delta: u64,
}

impl Budget {
    /// A fresh budget.
    pub fn new(total_epsilon: f64, total_delta: f64) -> Self {
        Budget {
            total_epsilon: units_down(total_epsilon),
            total_delta: units_down(total_delta),
            spent_epsilon: 0,
            spent_delta: 0,
            reserved_epsilon: 0,
            reserved_delta: 0,
        }
    }

    /// ε units still available.
    pub fn remaining_epsilon_units(&self) -> u64 {
        self.total_epsilon
            .saturating_sub(self.spent_epsilon)
            .saturating_sub(self.reserved_epsilon)
    }

    /// δ units still available.
    pub fn remaining_delta_units(&self) -> u64 {
        self.total_delta
            .saturating_sub(self.spent_delta)
            .saturating_sub(self.reserved_delta)
    }

    /// ε still available.
    pub fn remaining_epsilon(&self) -> f64 {
        real(self.remaining_epsilon_units())
    }

    /// δ still available.
    pub fn remaining_delta(&self) -> f64 {
        real(self.remaining_delta_units())
    }

    /// The ledger as numbers, for APIs.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "total_epsilon": real(self.total_epsilon), "total_delta": real(self.total_delta),
            "spent_epsilon": real(self.spent_epsilon), "spent_delta": real(self.spent_delta),
            "reserved_epsilon": real(self.reserved_epsilon), "reserved_delta": real(self.reserved_delta),
            "remaining_epsilon": self.remaining_epsilon(), "remaining_delta": self.remaining_delta(),
        })
    }
}

/// Checks a budget total given by an owner.
pub fn check_total(epsilon: f64, delta: f64) -> Result<(), StoreError> {
    if epsilon.is_finite()
        && (0.0..=MAX_TOTAL).contains(&epsilon)
        && delta.is_finite()
        && (0.0..1.0).contains(&delta)
    {
        Ok(())
    } else {
        Err(StoreError::InvalidBudget(format!(
            "epsilon must be a number in [0, {MAX_TOTAL}] and delta in [0, 1); got ε={epsilon} δ={delta}"
        )))
    }
}

/// An open reservation against a dataset's budget.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reservation {
    /// Reservation id.
    pub id: String,
    /// Dataset.
    pub dataset: String,
    /// ε units held.
    pub epsilon: u64,
    /// δ units held.
    pub delta: u64,
    /// The coordinator's run id.
    pub run_id: String,
}

/// The node store.
pub struct Store {
    db: Database,
}

fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn json<T: Serialize>(v: &T) -> String {
    // Our own plain structs always serialise.
    serde_json::to_string(v).unwrap_or_default()
}

fn parse<T: for<'de> Deserialize<'de>>(key: &str, s: &str) -> Result<T, StoreError> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(key.to_string(), e.to_string()))
}

/// Whether a dataset name is acceptable (it becomes a SQL table name and part of an id).
pub fn valid_dataset_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

impl Store {
    /// Opens (or creates) the store and settles reservations left open by a crash.
    ///
    /// A reservation is only ever open while its release is being computed: the node commits
    /// the charge *before* the answer is written to the network. So an open reservation after
    /// a restart proves its answer never left the node, and it is released (and audited).
    pub fn open(path: &Path) -> Result<(Self, Vec<Reservation>), StoreError> {
        let db = Database::create(path)?;
        let txn = db.begin_write()?;
        {
            txn.open_table(DATASETS)?;
            txn.open_table(COLUMNS)?;
            txn.open_table(BUDGETS)?;
            txn.open_table(RESERVATIONS)?;
            txn.open_table(RELEASE)?;
            txn.open_table(audit::AUDIT)?;
            txn.open_table(crate::rooms::INVITATIONS)?;
        }
        txn.commit()?;
        let store = Store { db };
        let open = store.open_reservations()?;
        for r in &open {
            store.settle(
                &r.id,
                None,
                "node restarted before the release was computed; no answer left the node",
                serde_json::Value::Null,
            )?;
        }
        Ok((store, open))
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

    /// The underlying database (for the audit log).
    pub fn db(&self) -> &Database {
        &self.db
    }

    /// Open reservations.
    pub fn open_reservations(&self) -> Result<Vec<Reservation>, StoreError> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(RESERVATIONS)?;
        let mut out = Vec::new();
        for row in t.iter()? {
            let (k, v) = row?;
            out.push(parse(k.value(), v.value())?);
        }
        Ok(out)
    }

    /// Stores a dataset. A new dataset gets `budget`; a replaced one keeps its ledger.
    pub fn put_dataset(
        &self,
        ds: &Dataset,
        budget: Budget,
        replace: bool,
        actor: &str,
    ) -> Result<DatasetMeta, StoreError> {
        let name = ds.schema.name.as_str();
        let meta = DatasetMeta {
            schema: ds.schema.clone(),
            rows: ds.rows as u64,
            imported_at: now(),
        };
        let blob = postcard::to_stdvec(&ds.columns)
            .map_err(|e| StoreError::Corrupt(name.into(), e.to_string()))?;
        let txn = self.db.begin_write()?;
        {
            let mut datasets = txn.open_table(DATASETS)?;
            let existed = datasets.get(name)?.is_some();
            if existed && !replace {
                return Err(StoreError::DatasetExists(name.into()));
            }
            datasets.insert(name, json(&meta).as_str())?;
            txn.open_table(COLUMNS)?.insert(name, blob.as_slice())?;
            let mut budgets = txn.open_table(BUDGETS)?;
            if budgets.get(name)?.is_none() {
                budgets.insert(name, json(&budget).as_str())?;
            }
            audit::append(
                &txn,
                actor,
                if existed {
                    "dataset_replaced"
                } else {
                    "dataset_imported"
                },
                name,
                serde_json::json!({"rows": ds.rows, "columns": ds.schema.columns}),
            )?;
        }
        txn.commit()?;
        Ok(meta)
    }

    /// Every dataset with its budget.
    pub fn datasets(&self) -> Result<Vec<(DatasetMeta, Budget)>, StoreError> {
        let txn = self.db.begin_read()?;
        let datasets = txn.open_table(DATASETS)?;
        let budgets = txn.open_table(BUDGETS)?;
        let mut out = Vec::new();
        for row in datasets.iter()? {
            let (k, v) = row?;
            let meta: DatasetMeta = parse(k.value(), v.value())?;
            let budget = match budgets.get(k.value())? {
                Some(b) => parse(k.value(), b.value())?,
                None => Budget::new(0.0, 0.0),
            };
            out.push((meta, budget));
        }
        Ok(out)
    }

    /// Loads every dataset's columns into memory.
    pub fn load_all(&self) -> Result<HashMap<String, Dataset>, StoreError> {
        let txn = self.db.begin_read()?;
        let datasets = txn.open_table(DATASETS)?;
        let columns = txn.open_table(COLUMNS)?;
        let mut out = HashMap::new();
        for row in datasets.iter()? {
            let (k, v) = row?;
            let meta: DatasetMeta = parse(k.value(), v.value())?;
            let blob = columns
                .get(k.value())?
                .ok_or_else(|| StoreError::Corrupt(k.value().into(), "no columns".into()))?;
            let cols: Vec<ColumnData> = postcard::from_bytes(blob.value())
                .map_err(|e| StoreError::Corrupt(k.value().into(), e.to_string()))?;
            out.insert(
                k.value().to_string(),
                Dataset {
                    schema: meta.schema,
                    columns: cols,
                    rows: meta.rows as usize,
                },
            );
        }
        Ok(out)
    }

    /// Updates a dataset's schema (declared bounds / public keys), audited.
    pub fn update_schema(
        &self,
        schema: &DatasetSchema,
        actor: &str,
        details: serde_json::Value,
    ) -> Result<(), StoreError> {
        let name = schema.name.as_str();
        let txn = self.db.begin_write()?;
        {
            let mut datasets = txn.open_table(DATASETS)?;
            let mut meta: DatasetMeta = match datasets.get(name)? {
                Some(v) => parse(name, v.value())?,
                None => return Err(StoreError::UnknownDataset(name.into())),
            };
            meta.schema = schema.clone();
            datasets.insert(name, json(&meta).as_str())?;
            audit::append(&txn, actor, "dataset_schema_updated", name, details)?;
        }
        txn.commit()?;
        Ok(())
    }

    /// The owner's release settings for a dataset (empty when none were set).
    pub fn dataset_release(&self, name: &str) -> Result<DatasetRelease, StoreError> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(RELEASE)?;
        match t.get(name)? {
            Some(v) => parse(name, v.value()),
            None => Ok(DatasetRelease::default()),
        }
    }

    /// Replaces the owner's release settings for a dataset, audited with what changed.
    pub fn set_dataset_release(
        &self,
        name: &str,
        release: &DatasetRelease,
        actor: &str,
    ) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        {
            if txn.open_table(DATASETS)?.get(name)?.is_none() {
                return Err(StoreError::UnknownDataset(name.into()));
            }
            let mut t = txn.open_table(RELEASE)?;
            let before: DatasetRelease = match t.get(name)? {
                Some(v) => parse(name, v.value())?,
                None => DatasetRelease::default(),
            };
            t.insert(name, json(release).as_str())?;
            audit::append(
                &txn,
                actor,
                "release_mode_set",
                name,
                serde_json::json!({"before": before, "after": release}),
            )?;
        }
        txn.commit()?;
        Ok(())
    }

    /// A dataset's budget.
    pub fn budget(&self, name: &str) -> Result<Budget, StoreError> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(BUDGETS)?;
        let v = t
            .get(name)?
            .ok_or_else(|| StoreError::UnknownDataset(name.into()))?;
        parse(name, v.value())
    }

    /// Sets a dataset's total budget (the owner's decision), audited. The total may not drop
    /// below what is already spent or reserved.
    pub fn set_budget(
        &self,
        name: &str,
        total_epsilon: f64,
        total_delta: f64,
        actor: &str,
    ) -> Result<Budget, StoreError> {
        check_total(total_epsilon, total_delta)?;
        let (te, td) = (units_down(total_epsilon), units_down(total_delta));
        let txn = self.db.begin_write()?;
        let budget = {
            let mut t = txn.open_table(BUDGETS)?;
            let mut b: Budget = match t.get(name)? {
                Some(v) => parse(name, v.value())?,
                None => return Err(StoreError::UnknownDataset(name.into())),
            };
            if te < b.spent_epsilon + b.reserved_epsilon || td < b.spent_delta + b.reserved_delta {
                return Err(StoreError::InvalidBudget(format!(
                    "dataset {name}: the total cannot drop below what is already spent or reserved (ε {}, δ {})",
                    real(b.spent_epsilon + b.reserved_epsilon),
                    real(b.spent_delta + b.reserved_delta)
                )));
            }
            let before = b.to_json();
            b.total_epsilon = te;
            b.total_delta = td;
            t.insert(name, json(&b).as_str())?;
            audit::append(
                &txn,
                actor,
                "budget_set",
                name,
                serde_json::json!({"before": before, "after": b.to_json()}),
            )?;
            b
        };
        txn.commit()?;
        Ok(budget)
    }

    /// Reserves (ε, δ) against a dataset's budget, atomically, or refuses with the remainder.
    pub fn reserve(
        &self,
        name: &str,
        epsilon: f64,
        delta: f64,
        run_id: &str,
    ) -> Result<Reservation, StoreError> {
        let mut txn = self.db.begin_write()?;
        // Not fsynced on its own: a reservation lost in a crash is released at restart anyway
        // (`Store::open`), and redb serialises write transactions whatever their durability, so
        // concurrent reservations still never over-commit. The charge (`settle`) is durable.
        txn.set_durability(redb::Durability::None)
            .map_err(redb::Error::from)?;
        let res = {
            let mut t = txn.open_table(BUDGETS)?;
            let mut b: Budget = match t.get(name)? {
                Some(v) => parse(name, v.value())?,
                None => return Err(StoreError::UnknownDataset(name.into())),
            };
            let (ne, nd) = (units_up(epsilon), units_up(delta));
            if ne > b.remaining_epsilon_units() || nd > b.remaining_delta_units() {
                return Err(StoreError::BudgetExhausted {
                    dataset: name.into(),
                    need_epsilon: epsilon,
                    need_delta: delta,
                    remaining_epsilon: b.remaining_epsilon(),
                    remaining_delta: b.remaining_delta(),
                    total_epsilon: real(b.total_epsilon),
                });
            }
            b.reserved_epsilon += ne;
            b.reserved_delta += nd;
            t.insert(name, json(&b).as_str())?;
            let res = Reservation {
                id: uuid::Uuid::new_v4().to_string(),
                dataset: name.into(),
                epsilon: ne,
                delta: nd,
                run_id: run_id.into(),
            };
            txn.open_table(RESERVATIONS)?
                .insert(res.id.as_str(), json(&res).as_str())?;
            res
        };
        txn.commit()?;
        Ok(res)
    }

    /// Closes a reservation: `Some((ε, δ))` charges that much (at most what was reserved);
    /// `None` releases it. Audited in the same transaction.
    pub fn settle(
        &self,
        id: &str,
        charge: Option<(f64, f64)>,
        note: &str,
        extra: serde_json::Value,
    ) -> Result<Budget, StoreError> {
        let txn = self.db.begin_write()?;
        let budget = {
            let mut rt = txn.open_table(RESERVATIONS)?;
            let res: Reservation = match rt.remove(id)? {
                Some(v) => parse(id, v.value())?,
                None => return Err(StoreError::UnknownReservation(id.into())),
            };
            let mut bt = txn.open_table(BUDGETS)?;
            let mut b: Budget = match bt.get(res.dataset.as_str())? {
                Some(v) => parse(&res.dataset, v.value())?,
                None => return Err(StoreError::UnknownDataset(res.dataset.clone())),
            };
            b.reserved_epsilon = b.reserved_epsilon.saturating_sub(res.epsilon);
            b.reserved_delta = b.reserved_delta.saturating_sub(res.delta);
            // Never charge more than was reserved: the reservation is the promise.
            let (e, d) = charge.map_or((0, 0), |(e, d)| {
                (units_up(e).min(res.epsilon), units_up(d).min(res.delta))
            });
            b.spent_epsilon += e;
            b.spent_delta += d;
            bt.insert(res.dataset.as_str(), json(&b).as_str())?;
            audit::append(
                &txn,
                "node",
                if charge.is_some() {
                    "budget_charged"
                } else {
                    "reservation_released"
                },
                &res.dataset,
                {
                    let mut details = serde_json::json!({
                        "run_id": res.run_id, "reservation": res.id, "epsilon": real(e),
                        "delta": real(d), "note": note,
                        "remaining_epsilon": b.remaining_epsilon(),
                    });
                    if let (Some(d), serde_json::Value::Object(x)) =
                        (details.as_object_mut(), extra)
                    {
                        d.extend(x);
                    }
                    details
                },
            )?;
            b
        };
        txn.commit()?;
        Ok(budget)
    }

    /// Appends an audit entry on its own.
    pub fn audit(
        &self,
        actor: &str,
        action: &str,
        target: &str,
        details: serde_json::Value,
    ) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        audit::append(&txn, actor, action, target, details)?;
        txn.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prism_common::schema::{ColumnSpec, ColumnType};

    fn dataset() -> Dataset {
        Dataset {
            schema: DatasetSchema {
                name: "patients".into(),
                columns: vec![ColumnSpec {
                    name: "age".into(),
                    ty: ColumnType::Integer,
                    bounds: None,
                    public_keys: None,
                    not_null: false,
                    privacy_unit: None,
                }],
            },
            columns: vec![ColumnData::Integer(vec![Some(1), Some(2)])],
            rows: 2,
        }
    }

    #[test]
    fn concurrent_reservations_never_overspend() {
        let dir = tempfile::tempdir().expect("tmp");
        let (store, _) = Store::open(&dir.path().join("n.redb")).expect("open");
        store
            .put_dataset(&dataset(), Budget::new(5.0, 1e-5), false, "t")
            .expect("put");
        let store = std::sync::Arc::new(store);
        let handles: Vec<_> = (0..200)
            .map(|i| {
                let s = store.clone();
                std::thread::spawn(move || {
                    match s.reserve("patients", 0.1, 0.0, &format!("run{i}")) {
                        Ok(r) => {
                            s.settle(&r.id, Some((0.1, 0.0)), "released", serde_json::Value::Null)
                                .expect("settle");
                            true
                        }
                        Err(StoreError::BudgetExhausted { .. }) => false,
                        Err(e) => panic!("unexpected {e}"),
                    }
                })
            })
            .collect();
        let granted = handles
            .into_iter()
            .map(|h| h.join().expect("join"))
            .filter(|&g| g)
            .count();
        let b = store.budget("patients").expect("budget");
        // Exact: 50 × 0.1 fit in 5.0, the 51st does not.
        assert_eq!(
            granted, 50,
            "granted {granted} × 0.1 against a total of 5.0"
        );
        assert_eq!(b.spent_epsilon, b.total_epsilon);
        assert_eq!(b.reserved_epsilon, 0);
        assert!(matches!(
            store.reserve("patients", 0.1, 0.0, "late"),
            Err(StoreError::BudgetExhausted { .. })
        ));
    }

    #[test]
    fn crash_with_open_reservation_and_committed_charges_survive_reopen() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("n.redb");
        {
            let (store, _) = Store::open(&path).expect("open");
            store
                .put_dataset(&dataset(), Budget::new(1.0, 0.0), false, "t")
                .expect("put");
            let r = store
                .reserve("patients", 0.3, 0.0, "done")
                .expect("reserve");
            store
                .settle(&r.id, Some((0.3, 0.0)), "released", serde_json::Value::Null)
                .expect("settle");
            // Reserved, computing, then the process dies: no settle.
            store
                .reserve("patients", 0.5, 0.0, "in-flight")
                .expect("reserve");
            assert!((store.budget("patients").expect("b").remaining_epsilon() - 0.2).abs() < 1e-12);
        }
        let (store, settled) = Store::open(&path).expect("reopen");
        assert_eq!(settled.len(), 1);
        assert_eq!(settled[0].run_id, "in-flight");
        let b = store.budget("patients").expect("budget");
        // The committed charge stays; the open reservation (whose answer never left) is released.
        assert_eq!(b.spent_epsilon, units_up(0.3));
        assert_eq!(b.reserved_epsilon, 0);
        assert!(store.open_reservations().expect("open").is_empty());
        // imported, charged, released-after-restart.
        assert_eq!(
            prism_common::audit::store::verify(store.db()).expect("chain"),
            3
        );
    }

    #[test]
    fn settle_never_charges_more_than_reserved_and_budget_cannot_drop_below_spent() {
        let dir = tempfile::tempdir().expect("tmp");
        let (store, _) = Store::open(&dir.path().join("n.redb")).expect("open");
        store
            .put_dataset(&dataset(), Budget::new(1.0, 0.0), false, "t")
            .expect("put");
        let r = store.reserve("patients", 0.2, 0.0, "r").expect("reserve");
        let b = store
            .settle(&r.id, Some((0.9, 0.0)), "released", serde_json::Value::Null)
            .expect("settle");
        assert_eq!(b.spent_epsilon, units_up(0.2));
        assert!(matches!(
            store.set_budget("patients", 0.1, 0.0, "owner"),
            Err(StoreError::InvalidBudget(_))
        ));
        assert!(matches!(
            store.set_budget("patients", f64::NAN, 0.0, "owner"),
            Err(StoreError::InvalidBudget(_))
        ));
        assert!(store.set_budget("patients", 2.0, 0.0, "owner").is_ok());
        assert!(matches!(
            store.reserve("nope", 0.1, 0.0, "r"),
            Err(StoreError::UnknownDataset(_))
        ));
    }
}
