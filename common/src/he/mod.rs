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

/// HE messages from the coordinator (key holder) to a node. Each goes first on its own stream;
/// blobs ([`crate::wire::write_bytes`]) follow where the variant says so.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeRequest {
    /// The public encoding domain of text columns, so the key holder can encode constants.
    Domains {
        /// Dataset name on the node.
        dataset: String,
        /// Text columns that the query filters on.
        columns: Vec<String>,
    },
    /// Installs a key set. Followed by two blobs: the compact public key, then the compressed
    /// server key (both `tfhe::safe_serialization`).
    InstallKeys {
        /// Key id: a digest of both blobs (see [`keys::key_id`]).
        key_id: String,
    },
    /// Evaluates a query shape under a key set. Followed by one blob per encrypted constant, in
    /// the order of [`HeQuery::constant_bits`].
    Evaluate {
        /// The coordinator's run id (audit on both sides).
        run_id: String,
        /// The key set the constants are encrypted under.
        key_id: String,
        /// The public shape: no constant appears in it.
        query: HeQuery,
        /// What the analyst allows the release to cost, for a dp-mode release.
        #[serde(default)]
        privacy: Option<crate::wire::PrivacyParams>,
        /// Who asked, without the SQL (its constants are what the encryption hides).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        requester: Option<crate::wire::Requester>,
    },
}

/// A node's HE answers (refusals travel as `Response::Refused`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeResponse {
    /// Answer to [`HeRequest::Domains`], one per column asked.
    Domains {
        /// The domains.
        domains: Vec<TextDomain>,
    },
    /// Answer to [`HeRequest::InstallKeys`].
    KeysInstalled {
        /// The key id now cached.
        key_id: String,
        /// Time to check, decompress and store the keys.
        setup_ms: f64,
    },
    /// Answer to [`HeRequest::Evaluate`]; followed by one blob, the compressed result list.
    Evaluated(HeEvaluation),
}

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

/// What a node reports with an encrypted result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeEvaluation {
    /// Layout of the result list.
    pub cells: Vec<ResultCell>,
    /// Whether the predicate was evaluated homomorphically (false: no encrypted constant).
    pub homomorphic: bool,
    /// Encrypted operations.
    pub ops: OpCounts,
    /// Groups of rows (distinct filter-value combinations) the predicate was evaluated over.
    pub groups: u64,
    /// Distinct values per filter column.
    pub distinct_values: Vec<u64>,
    /// Rows scanned.
    pub rows: u64,
    /// Node timings in milliseconds.
    pub timings: NodeTimings,
    /// Size of the result blob.
    pub result_bytes: u64,
    /// How the node released it (noise or oblivious threshold); `None` from a node that
    /// predates release modes (an exact, ungated answer).
    #[serde(default)]
    pub release: Option<release::HeRelease>,
}

/// Node-side phases, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeTimings {
    /// Loading the key set from the node's store (0 when cached in memory).
    pub key_load_ms: f64,
    /// Clear grouping and pre-aggregation.
    pub preaggregate_ms: f64,
    /// Homomorphic evaluation (or public-key encryption of a clear result).
    pub evaluate_ms: f64,
    /// Compressing and serialising the result list.
    pub compress_ms: f64,
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
