//! prism-common: everything the node and the coordinator must agree on, as plain logic.
//!
//! Protocol messages and framing, the query model (SQL → plan) and its evaluation, the
//! backend registry, identities, certificates, TLS helpers, the audit chain, the DP maths and
//! the `/metrics` counters both daemons serve, and the stop signals both daemons obey.
//! No daemons live here.

pub mod addr;
pub mod audit;
pub mod backend;
pub mod certs;
pub mod clock;
pub mod conn_cap;
pub mod dp;
pub mod eval;
pub mod he;
pub mod identity;
pub mod metrics;
pub mod mpc;
pub mod plan;
pub mod process;
pub mod refusal;
pub mod release;
pub mod room;
pub mod schema;
pub mod shares;
pub mod sql;
pub mod support;
pub mod text;
pub mod tls;
pub mod wire;

/// Implements `From` for redb's specific error types on an error type that wraps
/// `redb::Error` in `$variant`, so `?` works on every redb call.
/// Usage: `prism_common::from_redb_errors!(StoreError, StoreError::Db);`
#[macro_export]
macro_rules! from_redb_errors {
    ($err:ty, $variant:path) => {
        $crate::from_redb_errors!(@each $err, $variant,
            redb::DatabaseError, redb::TransactionError, redb::TableError,
            redb::StorageError, redb::CommitError);
    };
    (@each $err:ty, $variant:path, $($t:ty),*) => {$(
        impl From<$t> for $err {
            fn from(e: $t) -> Self {
                $variant(e.into())
            }
        }
    )*};
}
