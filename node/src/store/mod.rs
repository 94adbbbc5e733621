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

pub mod chain;
mod held;
mod invitations;
mod ledger;
pub mod source_record;

pub use held::{HOLD_FOR, Held, MAX_HELD, now_ms as held_now_ms};
pub use invitations::{Invitation, InvitationStatus, Superseded};
pub use ledger::{
    Budget, MAX_TOTAL, Reservation, UNITS_PER_ONE, check_total, real, units_down, units_up,
};

/// name → JSON [`DatasetMeta`].
const DATASETS: TableDefinition<&str, &str> = TableDefinition::new("datasets");
/// name → postcard-encoded `Vec<ColumnData>`.
const COLUMNS: TableDefinition<&str, &[u8]> = TableDefinition::new("columns");
/// name → JSON [`Budget`].
pub(crate) const BUDGETS: TableDefinition<&str, &str> = TableDefinition::new("budgets");
/// name → JSON [`DatasetRelease`]: the owner's per-dataset release settings.
const RELEASE: TableDefinition<&str, &str> = TableDefinition::new("dataset_release");
/// name → JSON [`source_record::SourceRecord`]: where a registered (not imported) dataset's
/// rows are. Never holds a secret: credentials are named (a file, an environment variable).
const SOURCES: TableDefinition<&str, &str> = TableDefinition::new("sources");
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
    /// A budget record differs from the ledger its last audit entry recorded (`ledger.rs`).
    #[error(
        "dataset {dataset}: the budget ledger {stored} does not match {recorded}, recorded by audit entry {seq}; \
         the store was changed outside the node, so it refuses to serve: restore the file from a backup \
         (`prism-node audit --verify --store <file>` checks one)"
    )]
    LedgerMismatch {
        /// Dataset.
        dataset: String,
        /// The audit entry's sequence number.
        seq: u64,
        /// The ledger the entry recorded.
        recorded: String,
        /// The ledger in the budget record.
        stored: String,
    },
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
    /// The population whose one budget this dataset charges, shared with the other datasets
    /// of the same people (`None`: its own budget). Set when the dataset is created; kept
    /// when it is replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub population: Option<String>,
}

/// The node store.
pub struct Store {
    db: Database,
}

use prism_common::clock::now;

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
            txn.open_table(SOURCES)?;
            txn.open_table(audit::AUDIT)?;
            txn.open_table(invitations::INVITATIONS)?;
            txn.open_table(held::HELD)?;
        }
        txn.commit()?;
        let store = Store { db };
        // Before anything new is audited: a record edited while the node was stopped is
        // refused, not carried into a fresh entry.
        chain::check(&store.db)?;
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

    /// Stores a dataset. A new dataset gets `budget`; a replaced one keeps its ledger.
    pub fn put_dataset(
        &self,
        ds: &Dataset,
        budget: Budget,
        replace: bool,
        actor: &str,
    ) -> Result<DatasetMeta, StoreError> {
        self.put_dataset_in(ds, budget, replace, actor, None)
    }

    /// [`Store::put_dataset`] in a population: a new dataset charges the population's one
    /// budget (created with `budget` by its first dataset); `None` keeps what a replaced
    /// dataset had.
    pub fn put_dataset_in(
        &self,
        ds: &Dataset,
        budget: Budget,
        replace: bool,
        actor: &str,
        population: Option<&str>,
    ) -> Result<DatasetMeta, StoreError> {
        self.put(
            &ds.schema,
            ds.rows as u64,
            Some(ds),
            None,
            budget,
            replace,
            actor,
            population,
        )
    }

    /// Registers (or re-reads) a dataset read from a source: its rows when the node holds them
    /// in memory (a file source), none for a database source, and the source record. A new
    /// dataset gets `budget`; a replaced one keeps its ledger.
    #[allow(clippy::too_many_arguments)]
    pub fn put_source(
        &self,
        schema: &DatasetSchema,
        rows: u64,
        data: Option<&Dataset>,
        source: &source_record::SourceRecord,
        budget: Budget,
        replace: bool,
        actor: &str,
        population: Option<&str>,
    ) -> Result<DatasetMeta, StoreError> {
        self.put(
            schema,
            rows,
            data,
            Some(source),
            budget,
            replace,
            actor,
            population,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn put(
        &self,
        schema: &DatasetSchema,
        rows: u64,
        data: Option<&Dataset>,
        source: Option<&source_record::SourceRecord>,
        budget: Budget,
        replace: bool,
        actor: &str,
        population: Option<&str>,
    ) -> Result<DatasetMeta, StoreError> {
        let name = schema.name.as_str();
        if let Some(p) = population.filter(|p| !valid_dataset_name(p)) {
            return Err(StoreError::InvalidBudget(format!(
                "invalid population name {p:?}: use a lowercase letter then lowercase letters, \
                 digits or '_' (at most 63)"
            )));
        }
        let mut meta = DatasetMeta {
            schema: schema.clone(),
            rows,
            imported_at: now(),
            population: population.map(str::to_string),
        };
        let blob = data
            .map(|ds| postcard::to_stdvec(&ds.columns))
            .transpose()
            .map_err(|e| StoreError::Corrupt(name.into(), e.to_string()))?;
        let txn = self.db.begin_write()?;
        {
            let mut datasets = txn.open_table(DATASETS)?;
            let before: Option<DatasetMeta> = datasets
                .get(name)?
                .map(|v| parse(name, v.value()))
                .transpose()?;
            let existed = before.is_some();
            if existed && !replace {
                return Err(StoreError::DatasetExists(name.into()));
            }
            let had = before.and_then(|b| b.population);
            match (&had, &meta.population) {
                (Some(h), Some(p)) if h != p => {
                    return Err(StoreError::InvalidBudget(format!(
                        "dataset {name} charges the budget of population {h}; a dataset cannot \
                         move to another population"
                    )));
                }
                (Some(_), None) => meta.population = had.clone(),
                (None, Some(p)) if existed => {
                    return Err(StoreError::InvalidBudget(format!(
                        "dataset {name} has its own budget; it cannot join population {p} \
                         (import the data under a new name in the population)"
                    )));
                }
                _ => {}
            }
            datasets.insert(name, json(&meta).as_str())?;
            let mut columns = txn.open_table(COLUMNS)?;
            match &blob {
                Some(blob) => {
                    columns.insert(name, blob.as_slice())?;
                }
                None => {
                    columns.remove(name)?;
                }
            }
            let mut sources = txn.open_table(SOURCES)?;
            match source {
                Some(s) => {
                    sources.insert(name, json(s).as_str())?;
                }
                None => {
                    sources.remove(name)?;
                }
            }
            let mut budgets = txn.open_table(BUDGETS)?;
            let key = ledger::key(name, meta.population.as_deref());
            let ledger = match budgets.get(key.as_str())? {
                Some(v) => parse(&key, v.value())?,
                None => budget,
            };
            budgets.insert(key.as_str(), json(&ledger).as_str())?;
            audit::append(
                &txn,
                actor,
                match (existed, source.is_some()) {
                    (false, false) => "dataset_imported",
                    (true, false) => "dataset_replaced",
                    (false, true) => "source_registered",
                    (true, true) => "source_refreshed",
                },
                name,
                ledger::bind(
                    serde_json::json!({"rows": rows, "columns": schema.columns,
                                       "source": source.map(|s| s.describe()),
                                       "population": meta.population}),
                    &ledger,
                ),
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
            let key = ledger::key(k.value(), meta.population.as_deref());
            let budget = match budgets.get(key.as_str())? {
                Some(b) => parse(&key, b.value())?,
                None => Budget::new(0.0, 0.0),
            };
            out.push((meta, budget));
        }
        Ok(out)
    }

    /// Every registered source, by dataset name.
    pub fn sources(&self) -> Result<HashMap<String, source_record::SourceRecord>, StoreError> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(SOURCES)?;
        let mut out = HashMap::new();
        for row in t.iter()? {
            let (k, v) = row?;
            out.insert(k.value().to_string(), parse(k.value(), v.value())?);
        }
        Ok(out)
    }

    /// What the node keeps about one dataset.
    pub fn dataset_meta(&self, name: &str) -> Result<DatasetMeta, StoreError> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(DATASETS)?;
        let v = t
            .get(name)?
            .ok_or_else(|| StoreError::UnknownDataset(name.into()))?;
        parse(name, v.value())
    }

    /// Records why a source could not be read (the previous data stays).
    pub fn source_failed(&self, name: &str, error: &str) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        {
            let mut t = txn.open_table(SOURCES)?;
            let mut rec: source_record::SourceRecord = match t.get(name)? {
                Some(v) => parse(name, v.value())?,
                None => return Err(StoreError::UnknownDataset(name.into())),
            };
            rec.last_error = Some(error.to_string());
            t.insert(name, json(&rec).as_str())?;
            audit::append(
                &txn,
                "node",
                "source_failed",
                name,
                serde_json::json!({"error": error}),
            )?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Loads into memory the columns of every dataset the node holds rows of (imports and file
    /// sources; a database source has none).
    pub fn load_all(&self) -> Result<HashMap<String, Dataset>, StoreError> {
        let txn = self.db.begin_read()?;
        let datasets = txn.open_table(DATASETS)?;
        let columns = txn.open_table(COLUMNS)?;
        let sources = txn.open_table(SOURCES)?;
        let mut out = HashMap::new();
        for row in datasets.iter()? {
            let (k, v) = row?;
            let meta: DatasetMeta = parse(k.value(), v.value())?;
            if let Some(s) = sources.get(k.value())? {
                let rec: source_record::SourceRecord = parse(k.value(), s.value())?;
                if !rec.spec.held_in_memory() {
                    continue;
                }
            }
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
pub(crate) mod tests;
