//! Data-room messages: what the coordinator asks a participant, and what nodes send each other
//! on their peer endpoints (shares).

use serde::{Deserialize, Serialize};

use super::shared::{ErrorBody, Requester};
use crate::identity::OrgId;

/// A participant's signature over a room manifest's hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attestation {
    /// Room.
    pub room_id: String,
    /// The attesting organization.
    pub org: OrgId,
    /// SHA-256 of the canonical manifest, hex.
    pub manifest_hash: String,
    /// Ed25519 signature over the hash, hex.
    pub signature: String,
}

/// Where a participant's peer endpoint listens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerAddr {
    /// Organization (the TLS name dialled is `<org>.org.prism`).
    pub org: OrgId,
    /// `host:port`.
    pub addr: String,
}

/// Data-room requests from the coordinator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MpcRequest {
    /// An invitation to attest to a manifest.
    Invite {
        /// The manifest.
        manifest: crate::room::Manifest,
        /// Who created the room (recorded, never checked; absent from older coordinators).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        requester: Option<Requester>,
    },
    /// Execute an attested room: compute, share, sum, answer with the partial sum.
    Execute {
        /// The manifest (re-checked against this node's own attestation).
        manifest: crate::room::Manifest,
        /// Every participant's attestation (each re-verified against its certificate).
        attestations: Vec<Attestation>,
        /// Where the other participants listen.
        peers: Vec<PeerAddr>,
        /// This execution attempt's id.
        execution_id: String,
    },
}

/// A node's answers to [`MpcRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MpcResponse {
    /// The invitation is stored; `status` says whether it was attested automatically.
    Invited {
        /// `pending` or `attested`.
        status: String,
    },
    /// This party's partial sum: its own share plus every share it received.
    Partial {
        /// Room.
        room_id: String,
        /// The partial sum over Z_2^64.
        partial: Vec<u64>,
        /// Local aggregation time, ms.
        compute_ms: f64,
        /// Share exchange time, ms.
        exchange_ms: f64,
        /// In a `dp` room: the noise this party added to its own vector (ε it spent, scales).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        noise: Option<crate::mpc::noise::PartyNoise>,
    },
}

/// What one node asks another on the peer endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerRequest {
    /// Liveness check.
    Ping,
    /// One additive share of the sender's aggregate vector for a room.
    Share {
        /// Room.
        room_id: String,
        /// The execution attempt (shares of different attempts never mix).
        execution_id: String,
        /// The manifest hash the sender attested to.
        manifest_hash: String,
        /// The share.
        share: Vec<u64>,
    },
}

/// A node's answer on its peer endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerResponse {
    /// Answer to [`PeerRequest::Ping`], naming the answering organization.
    Pong {
        /// The answering node's organization.
        org: OrgId,
    },
    /// The share was stored.
    ShareAccepted,
    /// Refused.
    Refused(ErrorBody),
}
