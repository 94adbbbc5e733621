//! HE messages: what the key holder (the coordinator) sends a node on an HE stream, and the
//! node's answers. Blobs (keys, encrypted constants, the result list) follow the frame where a
//! variant says so.

use serde::{Deserialize, Serialize};

use super::shared::{PrivacyParams, Requester};
use crate::he::release::HeRelease;
use crate::he::{HeQuery, OpCounts, ResultCell, TextDomain};

/// HE messages from the coordinator (key holder) to a node. Each goes first on its own stream;
/// blobs ([`super::write_bytes`]) follow where the variant says so.
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
        privacy: Option<PrivacyParams>,
        /// Who asked, without the SQL (its constants are what the encryption hides).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        requester: Option<Requester>,
        /// Milliseconds the node has from receipt to answer; past it the node stops the
        /// evaluation, releases what it reserved and answers `deadline_exceeded`. The node's
        /// own limit applies when absent or longer.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        deadline_ms: Option<u64>,
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
    pub release: Option<HeRelease>,
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
