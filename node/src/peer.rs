//! The node's peer endpoint: other nodes connect here with the same mutual TLS.
//!
//! A connection is accepted only from a certificate of the federation CA that names an
//! organization; the organization is read once, at accept time, and travels with every
//! stream of that connection.

use std::sync::Arc;

use prism_common::identity::{PeerIdentity, peer_identity};
use prism_common::wire::{self, ErrorBody, PeerRequest, PeerResponse};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info_span, warn};

use crate::NodeState;

/// Accepts peer connections until `shutdown`.
pub async fn run(state: Arc<NodeState>, endpoint: quinn::Endpoint, shutdown: CancellationToken) {
    loop {
        let incoming = tokio::select! {
            _ = shutdown.cancelled() => return,
            i = endpoint.accept() => match i { Some(i) => i, None => return },
        };
        let state = state.clone();
        tokio::spawn(async move {
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
            serve(state, conn, org.clone())
                .instrument(info_span!("peer", %remote, %org))
                .await;
        });
    }
}

async fn serve(
    state: Arc<NodeState>,
    conn: quinn::Connection,
    from: prism_common::identity::OrgId,
) {
    while let Ok((mut send, mut recv)) = conn.accept_bi().await {
        let state = state.clone();
        let from = from.clone();
        tokio::spawn(async move {
            let resp = match wire::read_msg::<_, PeerRequest>(&mut recv, state.config.max_frame)
                .await
            {
                Ok(PeerRequest::Ping) => PeerResponse::Pong {
                    org: state.org.clone(),
                },
                Ok(PeerRequest::Share {
                    room_id,
                    execution_id,
                    manifest_hash,
                    share,
                }) => {
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
                Err(e) => PeerResponse::Refused(ErrorBody::new("bad_frame", e.to_string())),
            };
            if let Err(e) = wire::write_msg(&mut send, &resp).await {
                warn!(error = %e, "could not answer a peer");
            }
            let _ = send.finish();
            let _ = send.stopped().await;
        });
    }
}
