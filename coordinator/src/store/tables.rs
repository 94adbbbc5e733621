//! Every table of the coordinator store, each tied to its record type: a record can only be
//! written to and read from the table that holds its kind.
//!
//! Records are JSON text under string keys (readable with any redb tool, and decoded again
//! before they are written, see [`super::Store::put`]); the HE key holder's key sets are binary.

use std::marker::PhantomData;

use redb::TableDefinition;

use crate::model::{DatasetRecord, HePending, QueryRecord, Room, RunRecord, User};

/// A redb table of JSON records of type `T` under string keys.
pub struct Table<T> {
    name: &'static str,
    record: PhantomData<fn() -> T>,
}

impl<T> Table<T> {
    /// The table named `name`.
    pub const fn new(name: &'static str) -> Self {
        Table {
            name,
            record: PhantomData,
        }
    }

    /// Its name in the redb file.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Its redb definition.
    pub fn def(&self) -> TableDefinition<'static, &'static str, &'static str> {
        TableDefinition::new(self.name)
    }
}

impl<T> Clone for Table<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Table<T> {}

/// SHA-256(token) hex → [`User`].
pub const USERS: Table<User> = Table::new("users");
/// `<organization>.<name>` → [`DatasetRecord`].
pub const DATASETS: Table<DatasetRecord> = Table::new("datasets");
/// Query id → [`QueryRecord`].
pub const QUERIES: Table<QueryRecord> = Table::new("queries");
/// Run id → [`RunRecord`].
pub const RUNS: Table<RunRecord> = Table::new("runs");
/// Room id → [`Room`].
pub const ROOMS: Table<Room> = Table::new("rooms");
/// Run id → [`HePending`], while an HE run's answer may still be collected.
pub const HE_PENDING: Table<HePending> = Table::new("he_pending");

/// `"current"` → the HE key id in use; key id → a `StoredKeySet` record (binary).
pub(super) const HE_KEY_HOLDER: TableDefinition<&str, &[u8]> =
    TableDefinition::new("he_key_holder");
