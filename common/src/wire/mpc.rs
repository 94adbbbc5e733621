//! Data-room messages: what the coordinator asks a participant, and what nodes send each other
//! on their peer endpoints (shares).

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};

use super::frame::{WireError, read_bytes, read_msg, write_bytes, write_msg};

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

/// What one node asks another on the peer endpoint. On the wire ([`write_peer_request`],
/// [`read_peer_request`]) a share is not JSON: the message frame names its length in words and
/// one blob of little-endian 64-bit words follows it.
#[derive(Debug, Clone, PartialEq)]
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

/// The frame of a [`PeerRequest`]: everything but the share's words.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum PeerFrame {
    Ping,
    Share {
        room_id: String,
        execution_id: String,
        manifest_hash: String,
        /// Words in the blob that follows.
        words: u64,
    },
}

/// Writes a peer request: its frame, and for a share the blob of its words.
pub async fn write_peer_request<W: AsyncWrite + Unpin>(
    w: &mut W,
    req: &PeerRequest,
) -> Result<(), WireError> {
    match req {
        PeerRequest::Ping => write_msg(w, &PeerFrame::Ping).await,
        PeerRequest::Share {
            room_id,
            execution_id,
            manifest_hash,
            share,
        } => {
            let frame = PeerFrame::Share {
                room_id: room_id.clone(),
                execution_id: execution_id.clone(),
                manifest_hash: manifest_hash.clone(),
                words: share.len() as u64,
            };
            write_msg(w, &frame).await?;
            write_bytes(w, &words_to_bytes(share)).await
        }
    }
}

/// Reads a peer request written by [`write_peer_request`]: a frame and a blob of at most `max`
/// bytes each; a blob whose length is not the announced word count is refused.
pub async fn read_peer_request<R: AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
) -> Result<PeerRequest, WireError> {
    match read_msg::<_, PeerFrame>(r, max).await? {
        PeerFrame::Ping => Ok(PeerRequest::Ping),
        PeerFrame::Share {
            room_id,
            execution_id,
            manifest_hash,
            words,
        } => {
            let announced = usize::try_from(words)
                .ok()
                .and_then(|w| w.checked_mul(8))
                .filter(|b| *b <= max)
                .ok_or(WireError::FrameTooLarge {
                    len: usize::try_from(words.saturating_mul(8)).unwrap_or(usize::MAX),
                    max,
                })?;
            let bytes = read_bytes(r, max).await?;
            if bytes.len() != announced {
                return Err(WireError::Decode(format!(
                    "the share announced {words} words and carried {} bytes",
                    bytes.len()
                )));
            }
            Ok(PeerRequest::Share {
                room_id,
                execution_id,
                manifest_hash,
                share: bytes_to_words(&bytes),
            })
        }
    }
}

/// 64-bit words as little-endian bytes.
pub fn words_to_bytes(words: &[u64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(words.len() * 8);
    for w in words {
        out.extend_from_slice(&w.to_le_bytes());
    }
    out
}

/// Little-endian bytes (a multiple of 8) as 64-bit words.
fn bytes_to_words(bytes: &[u8]) -> Vec<u64> {
    bytes
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
        .collect()
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
