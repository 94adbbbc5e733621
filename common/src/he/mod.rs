//! Homomorphic-encryption backend (TFHE-rs): the messages both sides exchange and the maths.
//!
//! The key holder (the coordinator, for the requester) keeps the client key. A node receives a
//! compact public key and a compressed server key once per key set, then for each query only the
//! public *shape* of the plan ([`HeQuery`]: columns, operators, how many constants) plus one
//! encrypted blob per filter constant. It groups its rows by the filter columns' values in the
//! clear, evaluates the encrypted predicate once per distinct value, selects and sums the groups'
//! clear counts and sums under encryption, and returns a compressed ciphertext list that only the
//! key holder can decrypt. See docs/HE.md.
//!
//! - [`shape`]: the public shape of a query, and the encodings.
//! - [`encode`]: plan → shape and constant codes (key holder), and what HE refuses.
//! - [`groups`]: the node's clear pre-aggregation.
//! - [`keys`]: parameters, key generation, (de)serialisation with size and conformance checks.
//! - [`cipher`]: encrypted integers of each width, constants, the result list.
//! - [`eval`]: the node's homomorphic evaluation.
//! - [`holder`]: the key holder's encryption of constants, decryption, and the answer table.

pub mod cipher;
pub mod control;
pub mod encode;
pub mod eval;
pub mod groups;
pub mod holder;
pub mod keys;
mod lookup;
pub mod release;
pub mod shape;
#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};

pub use shape::{Atom, Encoding, FilterColumn, HeQuery, HeValue, TextDomain};

/// Largest compact public key blob a node accepts (the real one is about 32 KiB).
pub const MAX_PUBLIC_KEY_BYTES: usize = 1 << 20;
/// Largest compressed server key blob a node accepts (the real one is tens of MiB).
pub const MAX_SERVER_KEY_BYTES: usize = 256 << 20;
/// Largest encrypted-constant blob a node accepts (one compressed integer of ≤ 32 bits).
pub const MAX_CONSTANT_BYTES: usize = 64 << 10;
/// Most encrypted constants one query may carry.
pub const MAX_CONSTANTS: usize = 256;
/// Largest result list the key holder accepts.
pub const MAX_RESULT_BYTES: usize = 16 << 20;
/// The refusal code of a node that does not hold the key set a query names.
pub const UNKNOWN_KEY_CODE: &str = "unknown_key_id";

/// One encrypted value of the result list, as the node laid it out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultCell {
    /// What it holds.
    pub value: HeValue,
    /// Width of the encrypted unsigned integer (8, 10, 12, 14, 16, 32 or 64).
    pub bits: u32,
    /// What the key holder adds back per counted row (the column's lower bound; 0 for counts).
    pub offset: i64,
    /// The noise the node added (dp release mode): the value is then two's complement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub noise: Option<release::CellNoise>,
}

/// How many encrypted operations ran, by kind.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OpCounts {
    /// Encrypted constant vs clear value comparisons.
    pub comparisons: u64,
    /// Encrypted boolean AND / OR / NOT.
    pub boolean_ops: u64,
    /// Encrypted-boolean × clear dot products (each one call).
    pub dot_products: u64,
    /// Clear tables evaluated at an encrypted index (TFHE-rs `match_value`, each one call).
    pub table_lookups: u64,
    /// Encrypted subtractions and selections.
    pub arithmetic: u64,
    /// Values encrypted under the compact public key (clear results, or zero results).
    pub public_key_encryptions: u64,
}

impl OpCounts {
    /// Adds another count to this one.
    pub fn add(&mut self, o: &OpCounts) {
        self.comparisons += o.comparisons;
        self.boolean_ops += o.boolean_ops;
        self.dot_products += o.dot_products;
        self.table_lookups += o.table_lookups;
        self.arithmetic += o.arithmetic;
        self.public_key_encryptions += o.public_key_encryptions;
    }

    /// All operations.
    pub fn total(&self) -> u64 {
        self.comparisons
            + self.boolean_ops
            + self.dot_products
            + self.table_lookups
            + self.arithmetic
            + self.public_key_encryptions
    }
}

/// Errors of the HE backend, on either side.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum HeError {
    /// The plan uses a construct the HE backend does not evaluate.
    #[error("he_backend does not support {construct}; {hint}")]
    Unsupported {
        /// The construct, e.g. `or` or `group by`.
        construct: String,
        /// What to do instead.
        hint: String,
    },
    /// A column cannot be used the way the plan uses it.
    #[error("column {column}: {reason}")]
    Column {
        /// Column name.
        column: String,
        /// Why, and what to do.
        reason: String,
    },
    /// The node's policy refuses the query.
    #[error("node policy: {0}")]
    Policy(String),
    /// The query does not fit what the node holds (stale domain, wrong counts).
    #[error("query does not match the dataset: {0}")]
    Mismatch(String),
    /// A blob (key or ciphertext) was malformed, too large or not of the expected parameters.
    #[error("malformed {what}: {reason}")]
    Blob {
        /// Which blob.
        what: String,
        /// Why it was refused.
        reason: String,
    },
    /// TFHE failed while computing.
    #[error("tfhe: {0}")]
    Tfhe(String),
    /// The evaluation was stopped: its deadline passed, or the node is stopping.
    #[error(
        "the encrypted evaluation was stopped after {:.1} s and {steps} steps: {}",
        after.as_secs_f64(),
        if *cancelled { "the node is stopping" } else { "its deadline passed" }
    )]
    Stopped {
        /// How long it ran.
        after: std::time::Duration,
        /// Steps done.
        steps: u64,
        /// Cancelled (the node is stopping) rather than past its deadline.
        cancelled: bool,
    },
}

impl HeError {
    /// A stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            HeError::Unsupported { .. } => "he_unsupported",
            HeError::Column { .. } => "he_column_refused",
            HeError::Policy(_) => "policy_violation",
            HeError::Mismatch(_) => "he_mismatch",
            HeError::Blob { .. } => "he_malformed_blob",
            HeError::Tfhe(_) => "he_failed",
            HeError::Stopped {
                cancelled: true, ..
            } => "node_stopping",
            HeError::Stopped { .. } => "deadline_exceeded",
        }
    }

    pub(crate) fn blob(what: &str, reason: impl std::fmt::Display) -> Self {
        HeError::Blob {
            what: what.to_string(),
            reason: reason.to_string(),
        }
    }

    pub(crate) fn column(column: &str, reason: impl Into<String>) -> Self {
        HeError::Column {
            column: column.to_string(),
            reason: reason.into(),
        }
    }
}

/// Smallest number of bits that holds every value in `0..=max`.
pub fn bits_for(max: u64) -> u32 {
    (u64::BITS - max.leading_zeros()).max(1)
}
