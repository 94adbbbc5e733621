//! The node's peer endpoint: other nodes connect here with the same mutual TLS.
//!
//! A connection is accepted only from a certificate of the federation CA that names an
//! organization the coordinator lists as a member (none before the node has heard the list),
//! and while that organization holds fewer than [`MAX_CONNECTIONS_PER_ORG`] connections here;
//! the organization is read once, at accept time, and travels with every stream of that
//! connection.
//!
//! What one connection can hold is bounded: a few concurrent streams, receive windows sized to
//! one request frame, no unidirectional streams, and a deadline on every request frame. A
//! frame that is too large, does not decode or does not arrive in time closes the connection
//! with the code docs/PROTOCOL.md gives (`FRAME_TOO_LARGE` or `PROTOCOL`).

use std::sync::Arc;
use std::time::Duration;

use prism_common::identity::{OrgId, PeerIdentity, peer_identity};
use prism_common::wire::{self, ErrorBody, PeerRequest, PeerResponse};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info_span, warn};

use crate::NodeState;

/// Concurrent request streams one peer connection may have open (a room's share exchange
/// needs one per execution).
pub const MAX_STREAMS: u32 = 8;
/// How long a peer has to deliver a whole request frame once its stream is open.
pub const FRAME_DEADLINE: Duration = Duration::from_secs(10);
/// Live connections one organization may hold to this endpoint at once. A peer keeps one
/// between executions (`mpc::peers`); the slack covers a reconnect while a dead one times out.
pub const MAX_CONNECTIONS_PER_ORG: usize = 4;

/// Why `org` may not connect, if it may not: not a member, or members not yet known.
fn not_admitted(state: &NodeState, org: &OrgId) -> Option<String> {
    let members = state.members.read().ok()?;
    match members.as_ref() {
        None => Some(format!(
            "organization {org} refused: this node has not yet heard the federation's members from the coordinator"
        )),
        Some(m) if !m.contains(org) => Some(format!(
            "organization {org} is not a member of this federation"
        )),
        Some(_) => None,
    }
}

/// The transport for connections to the peer endpoint: the usual keep-alive and idle timeout,
/// at most [`MAX_STREAMS`] bidirectional streams, none unidirectional, and flow-control windows
/// of one `max_frame` per stream and two per connection, so a peer can make the node buffer at
/// most about `2 × max_frame` however many streams it opens.
pub fn transport(tls: &prism_common::tls::TlsMaterial, max_frame: usize) -> quinn::TransportConfig {
    let frame = u32::try_from(max_frame.saturating_add(8)).unwrap_or(u32::MAX);
    let mut t = tls.transport_config();
    t.max_concurrent_bidi_streams(quinn::VarInt::from_u32(MAX_STREAMS))
        .max_concurrent_uni_streams(quinn::VarInt::from_u32(0))
        .stream_receive_window(quinn::VarInt::from_u32(frame))
        .receive_window(quinn::VarInt::from_u32(frame.saturating_mul(2)));
    t
}

/// The close code and reason for a request frame that could not be read.
fn close_for(e: &wire::WireError) -> (u32, String) {
    match e {
        wire::WireError::FrameTooLarge { .. } => (wire::close::FRAME_TOO_LARGE, e.to_string()),
        _ => (wire::close::PROTOCOL, format!("bad request frame: {e}")),
    }
}

/// Accepts peer connections until `shutdown`. Every connection and every stream runs on one
/// task tracker; when the node stops, those still running get [`STOP_GRACE`] to finish.
pub async fn run(state: Arc<NodeState>, endpoint: quinn::Endpoint, shutdown: CancellationToken) {
    let tasks = TaskTracker::new();
    let live = prism_common::conn_cap::ConnectionCap::new(MAX_CONNECTIONS_PER_ORG);
    loop {
        let incoming = tokio::select! {
            _ = shutdown.cancelled() => break,
            i = endpoint.accept() => match i { Some(i) => i, None => break },
        };
        let (state, streams, stop) = (state.clone(), tasks.clone(), shutdown.clone());
        let live = live.clone();
        tasks.spawn(async move {
            let remote = incoming.remote_address();
            let conn = match incoming.await {
                Ok(c) => c,
                Err(e) => {
                    debug!(%remote, error = %e, "peer handshake failed");
                    return;
                }
            };
            let org = match peer_identity(&conn) {
                Ok(PeerIdentity::Org(org)) => org,
                Ok(PeerIdentity::Coordinator) | Err(_) => {
                    conn.close(
                        wire::close::REFUSED.into(),
                        b"peer endpoint accepts organization certificates only",
                    );
                    return;
                }
            };
            if let Some(reason) = not_admitted(&state, &org) {
                debug!(%remote, %org, %reason, "refusing a peer");
                conn.close(wire::close::REFUSED.into(), reason.as_bytes());
                return;
            }
            let Some(_live) = live.admit(&org) else {
                let reason = format!(
                    "organization {org} already holds {MAX_CONNECTIONS_PER_ORG} connections to this peer endpoint"
                );
                debug!(%remote, %org, "refusing a peer: too many connections");
                conn.close(wire::close::REFUSED.into(), reason.as_bytes());
                return;
            };
            serve(state, conn, org.clone(), streams, stop)
                .instrument(info_span!("peer", %remote, %org))
                .await;
        });
    }
    tasks.close();
    let _ = tokio::time::timeout(STOP_GRACE, tasks.wait()).await;
}

/// How long a stopping node lets peer streams in flight finish.
pub const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

async fn serve(
    state: Arc<NodeState>,
    conn: quinn::Connection,
    from: prism_common::identity::OrgId,
    tasks: TaskTracker,
    shutdown: CancellationToken,
) {
    loop {
        // A stopping node takes no new streams; those in flight finish (see `run`).
        let (mut send, mut recv) = tokio::select! {
            _ = shutdown.cancelled() => return,
            s = conn.accept_bi() => match s { Ok(s) => s, Err(_) => return },
        };
        let state = state.clone();
        let from = from.clone();
        let conn = conn.clone();
        tasks.spawn(async move {
            let read = tokio::time::timeout(
                FRAME_DEADLINE,
                wire::read_peer_request(&mut recv, state.config.max_frame),
            );
            let req = match read.await {
                Ok(Ok(req)) => req,
                Ok(Err(wire::WireError::Closed)) => return,
                Ok(Err(e)) => {
                    let (code, reason) = close_for(&e);
                    debug!(error = %e, "closing a peer connection: bad request frame");
                    conn.close(code.into(), reason.as_bytes());
                    return;
                }
                Err(_) => {
                    debug!("closing a peer connection: request frame deadline passed");
                    let reason = format!(
                        "no complete request frame within {}s",
                        FRAME_DEADLINE.as_secs()
                    );
                    conn.close(wire::close::PROTOCOL.into(), reason.as_bytes());
                    return;
                }
            };
            let resp = match req {
                PeerRequest::Ping => PeerResponse::Pong {
                    org: state.org.clone(),
                },
                PeerRequest::Share {
                    room_id,
                    execution_id,
                    manifest_hash,
                    share,
                } => {
                    let s = state.clone();
                    tokio::task::spawn_blocking(move || {
                        crate::mpc::execute::accept_share(
                            &s,
                            &from,
                            &room_id,
                            &execution_id,
                            &manifest_hash,
                            share,
                        )
                    })
                    .await
                    .unwrap_or_else(|e| {
                        PeerResponse::Refused(ErrorBody::new("node_internal_error", e.to_string()))
                    })
                }
            };
            if let Err(e) = wire::write_msg(&mut send, &resp).await {
                warn!(error = %e, "could not answer a peer");
            }
            let _ = send.finish();
            let _ = send.stopped().await;
        });
    }
}
