//! The wire protocol between nodes and the coordinator: framing and message types.
//!
//! Every message is one frame: a 4-byte big-endian length, then that many bytes of JSON. A
//! reader refuses a length over its maximum before reading the body, so a peer cannot make it
//! buffer more than the limit, and it buffers only the bytes that actually arrived. See
//! docs/PROTOCOL.md.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::backend::BackendId;
use crate::identity::OrgId;
use crate::plan::{Plan, Table};
use crate::schema::CatalogEntry;

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;
/// Default maximum frame size: 16 MiB.
pub const DEFAULT_MAX_FRAME: usize = 16 << 20;

/// QUIC application close codes.
pub mod close {
    /// Orderly shutdown.
    pub const NORMAL: u32 = 0;
    /// The peer broke the protocol (bad frame, unexpected message).
    pub const PROTOCOL: u32 = 1;
    /// The peer is not allowed (wrong organization, unknown version, not admitted).
    pub const REFUSED: u32 = 2;
    /// A frame exceeded the maximum size.
    pub const FRAME_TOO_LARGE: u32 = 3;
}

/// Errors reading or writing frames.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The stream ended cleanly before a frame started.
    #[error("stream closed")]
    Closed,
    /// The announced frame is larger than allowed.
    #[error("frame of {len} bytes exceeds the {max}-byte maximum")]
    FrameTooLarge {
        /// Announced length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Transport error.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The frame did not decode as the expected message.
    #[error("malformed message: {0}")]
    Decode(String),
}

/// Writes one message as a frame.
pub async fn write_msg<W, T>(w: &mut W, msg: &T) -> Result<(), WireError>
where
    W: AsyncWrite + Unpin,
    T: Serialize,
{
    let body = serde_json::to_vec(msg).map_err(|e| WireError::Decode(e.to_string()))?;
    let len = u32::try_from(body.len()).map_err(|_| WireError::FrameTooLarge {
        len: body.len(),
        max: u32::MAX as usize,
    })?;
    let mut buf = Vec::with_capacity(4 + body.len());
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(&body);
    w.write_all(&buf).await?;
    Ok(())
}

/// Reads one frame of at most `max` bytes and decodes it.
pub async fn read_msg<R, T>(r: &mut R, max: usize) -> Result<T, WireError>
where
    R: AsyncRead + Unpin,
    T: DeserializeOwned,
{
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(WireError::Closed),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(WireError::FrameTooLarge { len, max });
    }
    decode(&read_body(r, len).await?)
}

/// Reads exactly `len` bytes, growing the buffer only as bytes arrive: a peer that announces a
/// large frame and sends nothing pins no memory for it.
async fn read_body<R: AsyncRead + Unpin>(r: &mut R, len: usize) -> Result<Vec<u8>, WireError> {
    const FIRST: usize = 64 << 10;
    let mut body = Vec::with_capacity(len.min(FIRST));
    let got = r.take(len as u64).read_to_end(&mut body).await?;
    if got < len {
        return Err(WireError::Io(std::io::ErrorKind::UnexpectedEof.into()));
    }
    Ok(body)
}

/// Writes raw bytes as one length-prefixed blob (keys, ciphertexts: no JSON).
pub async fn write_bytes<W: AsyncWrite + Unpin>(w: &mut W, bytes: &[u8]) -> Result<(), WireError> {
    let len = u64::try_from(bytes.len()).map_err(|_| WireError::FrameTooLarge {
        len: bytes.len(),
        max: usize::MAX,
    })?;
    w.write_all(&len.to_be_bytes()).await?;
    w.write_all(bytes).await?;
    Ok(())
}

/// Reads one blob written by [`write_bytes`], refusing one over `max` bytes before reading it.
pub async fn read_bytes<R: AsyncRead + Unpin>(r: &mut R, max: usize) -> Result<Vec<u8>, WireError> {
    let mut len = [0u8; 8];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(WireError::Closed),
        Err(e) => return Err(e.into()),
    }
    let len = usize::try_from(u64::from_be_bytes(len)).unwrap_or(usize::MAX);
    if len > max {
        return Err(WireError::FrameTooLarge { len, max });
    }
    read_body(r, len).await
}

/// Decodes a frame body.
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, WireError> {
    serde_json::from_slice(body).map_err(|e| WireError::Decode(e.to_string()))
}

/// A stable error code and a human message, as carried in refusals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Stable machine-readable code.
    pub code: String,
    /// What happened and what to do.
    pub message: String,
    /// Structured detail, where there is some (e.g. the enclave refusal, a budget remainder).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}

impl ErrorBody {
    /// A body with no details.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        ErrorBody {
            code: code.into(),
            message: message.into(),
            details: None,
        }
    }
}

/// First frame a node sends, on the control stream it opens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// Protocol version the node speaks.
    pub version: u32,
    /// The organization the node claims to be (must match its certificate).
    pub org: OrgId,
    /// Node software version.
    pub software: String,
    /// Where the node's peer endpoint listens (`host:port`), for other nodes to dial.
    pub peer_addr: Option<String>,
}

/// The coordinator's answer to [`Hello`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HelloReply {
    /// Accepted.
    Welcome {
        /// Protocol version the coordinator speaks.
        version: u32,
        /// Coordinator software version.
        software: String,
    },
    /// Refused; the coordinator closes the connection after this frame.
    Refused(ErrorBody),
}

/// Events a node sends on its control stream after the handshake.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeEvent {
    /// The node's full catalog (replaces what the coordinator had for this organization).
    Catalog {
        /// Datasets: metadata only, never rows.
        datasets: Vec<CatalogEntry>,
    },
    /// The organization attests to a room's manifest.
    Attested(Attestation),
    /// The organization declines a room.
    Declined {
        /// Room.
        room_id: String,
        /// Why, in the owner's words.
        reason: String,
    },
    /// The organization withdraws its attestation before execution.
    Withdrawn {
        /// Room.
        room_id: String,
    },
}

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

/// Parameters of a DP release.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PrivacyParams {
    /// ε the analyst asks to spend.
    pub epsilon: f64,
    /// δ the analyst allows.
    pub delta: f64,
}

/// Work the coordinator sends a node on a stream it opens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Request {
    /// Liveness check.
    Ping,
    /// Ask the node what a plan would cost under its policy, without running it.
    Estimate {
        /// Backend requested.
        backend: BackendId,
        /// Dataset name on that node.
        dataset: String,
        /// The plan.
        plan: Plan,
        /// Requested privacy parameters.
        params: PrivacyParams,
    },
    /// Homomorphic-encryption traffic (keys, encrypted queries); see `he`.
    He(crate::he::HeRequest),
    /// Data-room traffic: invitations and MPC execution.
    Mpc(MpcRequest),
    /// Run a plan.
    Execute {
        /// The coordinator's run id (for audit on both sides).
        run_id: String,
        /// Backend requested.
        backend: BackendId,
        /// Dataset name on that node.
        dataset: String,
        /// The plan.
        plan: Plan,
        /// Requested privacy parameters.
        params: PrivacyParams,
    },
}

/// A node's answer to a [`Request`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    /// Answer to [`Request::Ping`].
    Pong,
    /// Answer to [`Request::Estimate`].
    Estimated {
        /// ε the plan would be charged.
        epsilon: f64,
        /// δ the plan would be charged.
        delta: f64,
        /// The release mode the node applies to this dataset and backend.
        #[serde(default)]
        release: Option<crate::release::ReleaseMode>,
    },
    /// Answer to [`Request::Execute`].
    Executed(Execution),
    /// Answer to [`Request::He`].
    He(crate::he::HeResponse),
    /// Answer to [`Request::Mpc`].
    Mpc(MpcResponse),
    /// The node refused or failed; nothing was charged unless `details` says otherwise.
    Refused(ErrorBody),
}

/// A completed execution on a node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Execution {
    /// The released answer.
    pub table: Table,
    /// Mechanism, parameters and accuracy of the release.
    pub proof: serde_json::Value,
    /// ε charged to the dataset's budget.
    pub epsilon_spent: f64,
    /// δ charged to the dataset's budget.
    pub delta_spent: f64,
    /// Time the node spent computing, in milliseconds.
    pub compute_ms: f64,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{AggFunc, Aggregate, Output};

    async fn roundtrip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(msg: T) {
        let (mut a, mut b) = tokio::io::duplex(1 << 20);
        write_msg(&mut a, &msg).await.expect("write");
        let back: T = read_msg(&mut b, DEFAULT_MAX_FRAME).await.expect("read");
        assert_eq!(back, msg);
    }

    fn plan() -> Plan {
        Plan {
            dataset: "patients".into(),
            outputs: vec![Output::Aggregate(Aggregate {
                func: AggFunc::Count,
                column: None,
                weight: None,
                alias: "count".into(),
            })],
            filter: None,
            group_by: vec![],
            having_min_count: None,
        }
    }

    #[tokio::test]
    async fn every_message_roundtrips() {
        let org = OrgId::new("hospital-a").expect("org");
        roundtrip(Hello {
            version: 1,
            org,
            software: "x".into(),
            peer_addr: Some("127.0.0.1:1".into()),
        })
        .await;
        roundtrip(HelloReply::Welcome {
            version: 1,
            software: "y".into(),
        })
        .await;
        roundtrip(HelloReply::Refused(ErrorBody::new("org_mismatch", "no"))).await;
        roundtrip(NodeEvent::Catalog { datasets: vec![] }).await;
        let params = PrivacyParams {
            epsilon: 0.5,
            delta: 1e-6,
        };
        roundtrip(Request::Ping).await;
        roundtrip(Request::Estimate {
            backend: BackendId::DpSandbox,
            dataset: "p".into(),
            plan: plan(),
            params,
        })
        .await;
        roundtrip(Request::Execute {
            run_id: "r".into(),
            backend: BackendId::DpSandbox,
            dataset: "p".into(),
            plan: plan(),
            params,
        })
        .await;
        roundtrip(Response::Pong).await;
        roundtrip(Response::Estimated {
            epsilon: 0.5,
            delta: 0.0,
            release: Some(crate::release::ReleaseMode::Dp),
        })
        .await;
        roundtrip(Response::Executed(Execution {
            table: Table {
                columns: vec!["count".into()],
                rows: vec![vec![serde_json::json!(3)]],
            },
            proof: serde_json::json!({"mechanism": "discrete_laplace"}),
            epsilon_spent: 0.5,
            delta_spent: 0.0,
            compute_ms: 1.5,
        }))
        .await;
        roundtrip(Response::Refused(ErrorBody::new("budget_exhausted", "no"))).await;
        roundtrip(PeerRequest::Ping).await;
        roundtrip(PeerRequest::Share {
            room_id: "r".into(),
            execution_id: "e".into(),
            manifest_hash: "h".into(),
            share: vec![u64::MAX, 0, 7],
        })
        .await;
        roundtrip(PeerResponse::ShareAccepted).await;
        roundtrip(Response::Mpc(MpcResponse::Partial {
            room_id: "r".into(),
            partial: vec![u64::MAX],
            compute_ms: 1.0,
            exchange_ms: 2.0,
            noise: Some(crate::mpc::noise::PartyNoise {
                epsilon: 0.5,
                scales: vec![2.0],
                sensitivities: vec![1],
            }),
        }))
        .await;
        roundtrip(NodeEvent::Declined {
            room_id: "r".into(),
            reason: "no".into(),
        })
        .await;
        roundtrip(PeerResponse::Pong {
            org: OrgId::new("bank").expect("org"),
        })
        .await;
    }

    #[tokio::test]
    async fn oversized_frame_is_refused_before_reading_the_body() {
        let (mut a, mut b) = tokio::io::duplex(64);
        // Announce 1 GiB; send nothing else. The reader must fail at once, not wait for the body.
        a.write_all(&(1u32 << 30).to_be_bytes())
            .await
            .expect("write");
        let err = read_msg::<_, Request>(&mut b, 1024)
            .await
            .expect_err("must refuse");
        assert!(
            matches!(err, WireError::FrameTooLarge { len, max: 1024 } if len == 1 << 30),
            "{err}"
        );
    }

    #[tokio::test]
    async fn garbage_is_a_decode_error_and_eof_is_closed() {
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&3u32.to_be_bytes()).await.expect("write");
        a.write_all(b"{x}").await.expect("write");
        drop(a);
        assert!(matches!(
            read_msg::<_, Request>(&mut b, 1024).await,
            Err(WireError::Decode(_))
        ));
        assert!(matches!(
            read_msg::<_, Request>(&mut b, 1024).await,
            Err(WireError::Closed)
        ));
    }
}
