//! The node's connection to the coordinator: dial, handshake, publish the catalog, serve work.
//!
//! The node dials out (organizations rarely accept inbound connections from a coordinator),
//! keeps one connection, and reconnects with exponential backoff when it drops. The
//! coordinator sends work on bidirectional streams it opens; each stream is one request.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use prism_common::wire::{self, Hello, HelloReply, NodeEvent, PROTOCOL_VERSION};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info, info_span, warn};

use crate::NodeState;

/// Keeps the node connected until `shutdown`.
pub async fn run(
    state: Arc<NodeState>,
    endpoint: quinn::Endpoint,
    client: quinn::ClientConfig,
    peer_addr: String,
    shutdown: CancellationToken,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        let mut cap = MAX_BACKOFF;
        match session(&state, &endpoint, &client, &peer_addr, &shutdown).await {
            Ok(()) => backoff = Duration::from_millis(100),
            Err(e) => match e.downcast_ref::<Refused>() {
                Some(r) if FATAL_REFUSALS.contains(&r.0.code.as_str()) => {
                    state.connected.store(false, Ordering::SeqCst);
                    tracing::error!(
                        code = %r.0.code,
                        "{r}; not retrying: fix this node's configuration (or upgrade it) and restart it"
                    );
                    if let Ok(mut f) = state.link_failed.lock() {
                        *f = Some(r.to_string());
                    }
                    return;
                }
                _ => {
                    if refused(&e) {
                        // Not a member, or a revoked certificate: the operator must act first.
                        cap = MAX_REFUSED_BACKOFF;
                    }
                    warn!(error = %format!("{e:#}"), "coordinator connection failed; retrying in {backoff:?}")
                }
            },
        }
        state.connected.store(false, Ordering::SeqCst);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(cap);
    }
}

/// Longest wait between two attempts to reach the coordinator.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Longest wait between attempts while the coordinator refuses this node's certificate.
pub const MAX_REFUSED_BACKOFF: Duration = Duration::from_secs(60);
/// Refusals no retry can overcome: the node claims another organization than its certificate,
/// or speaks another protocol version.
const FATAL_REFUSALS: &[&str] = &["org_mismatch", "unsupported_version"];

/// The coordinator's refusal of this node's `Hello`.
#[derive(Debug, thiserror::Error)]
#[error("the coordinator refused this node: {} ({})", .0.message, .0.code)]
struct Refused(wire::ErrorBody);

/// The coordinator closed the connection before the handshake: not a member, or its TLS
/// stack rejected the certificate (revoked, another CA).
#[derive(Debug, thiserror::Error)]
#[error("the coordinator refused this node's certificate: {0}")]
struct CertificateRefused(String);

/// Whether the attempt ended in a refusal (of the `Hello` or of the certificate).
fn refused(e: &anyhow::Error) -> bool {
    e.chain()
        .any(|c| c.is::<Refused>() || c.is::<CertificateRefused>())
}

async fn session(
    state: &Arc<NodeState>,
    endpoint: &quinn::Endpoint,
    client: &quinn::ClientConfig,
    peer_addr: &str,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let cfg = &state.config;
    let addr =
        cfg.coordinator_addr.resolve().await.with_context(|| {
            format!("resolving the coordinator address {}", cfg.coordinator_addr)
        })?;
    let conn = endpoint
        .connect_with(client.clone(), addr, &cfg.coordinator_name)
        .context("dialing the coordinator")?
        .await
        .map_err(|e| match e {
            // The coordinator's TLS stack rejected this node's certificate.
            quinn::ConnectionError::ConnectionClosed(c) => CertificateRefused(c.to_string()).into(),
            other => anyhow::Error::new(other).context(format!(
                "connecting to the coordinator at {}",
                cfg.coordinator_addr
            )),
        })?;
    let handshake = async {
        let (mut ctl_send, mut ctl_recv) =
            conn.open_bi().await.context("opening the control stream")?;
        let hello = Hello {
            version: PROTOCOL_VERSION,
            org: state.org.clone(),
            software: format!("prism-node {}", env!("CARGO_PKG_VERSION")),
            peer_addr: Some(peer_addr.to_string()),
            he_keys: crate::he::keys::held_for_hello(state).await,
        };
        wire::write_msg(&mut ctl_send, &hello).await?;
        let reply: HelloReply = tokio::time::timeout(
            Duration::from_secs(10),
            wire::read_msg(&mut ctl_recv, cfg.max_frame),
        )
        .await
        .context("the coordinator did not answer the handshake")??;
        anyhow::Ok((ctl_send, ctl_recv, reply))
    };
    let (mut ctl_send, _ctl_recv, reply) = match handshake.await {
        Ok(h) => h,
        // Refused before a word was exchanged: not a member, or a certificate it rejects.
        Err(e) => {
            return Err(match conn.close_reason() {
                Some(quinn::ConnectionError::ApplicationClosed(c))
                    if c.error_code == quinn::VarInt::from_u32(wire::close::REFUSED) =>
                {
                    CertificateRefused(String::from_utf8_lossy(&c.reason).into_owned()).into()
                }
                Some(quinn::ConnectionError::ConnectionClosed(c)) => {
                    CertificateRefused(c.to_string()).into()
                }
                _ => e,
            });
        }
    };
    match reply {
        HelloReply::Welcome {
            version,
            software,
            members,
        } => {
            info!(version, %software, members = members.len(), "connected to the coordinator");
            if let Ok(mut m) = state.members.write() {
                *m = Some(members.into_iter().collect());
            }
        }
        HelloReply::Refused(e) => return Err(Refused(e).into()),
    }
    state.connected.store(true, Ordering::SeqCst);
    send_catalog(state, &mut ctl_send).await?;
    // Answers charged but never acknowledged (a coordinator that crashed, a link that dropped)
    // are announced at once, then again while any stays unacknowledged.
    announce_held(state, &mut ctl_send, Duration::ZERO).await?;
    let mut reannounce = tokio::time::interval(HELD_REANNOUNCE);
    reannounce.tick().await;
    let mut events = state.events_rx.lock().await;
    let in_flight = TaskTracker::new();
    loop {
        tokio::select! {
            Some(ev) = events.recv() => wire::write_msg(&mut ctl_send, &ev).await?,
            _ = state.held_changed.notified() => announce_held(state, &mut ctl_send, Duration::ZERO).await?,
            _ = reannounce.tick() => announce_held(state, &mut ctl_send, HELD_REANNOUNCE).await?,
            _ = shutdown.cancelled() => {
                // No new requests; those being answered get a moment to deliver their answer
                // (a DP answer is charged before it is sent).
                in_flight.close();
                if tokio::time::timeout(REQUEST_GRACE, in_flight.wait()).await.is_err() {
                    warn!(
                        requests = in_flight.len(),
                        "requests still running after {REQUEST_GRACE:?}; the coordinator fails them"
                    );
                }
                state.connected.store(false, Ordering::SeqCst);
                conn.close(wire::close::NORMAL.into(), b"node shutting down");
                return Ok(());
            }
            _ = state.catalog_changed.notified() => send_catalog(state, &mut ctl_send).await?,
            stream = conn.accept_bi() => {
                let (send, recv) = stream.map_err(|e| lost(&e, Duration::from_millis(cfg.idle_timeout_ms)))?;
                let state = state.clone();
                in_flight.spawn(crate::dispatch::serve_stream(state, send, recv).instrument(info_span!("request")));
            }
        }
    }
}

/// How long a stopping node keeps its coordinator connection open for requests in flight.
pub const REQUEST_GRACE: Duration = Duration::from_secs(2);

/// Why the coordinator connection ended, in words an operator can act on.
fn lost(e: &quinn::ConnectionError, idle: Duration) -> anyhow::Error {
    use quinn::ConnectionError as C;
    match e {
        C::TimedOut => {
            anyhow::anyhow!("the coordinator is unreachable: nothing heard from it for {idle:?}")
        }
        C::ApplicationClosed(c) => anyhow::anyhow!(
            "the coordinator closed the connection: {}",
            String::from_utf8_lossy(&c.reason)
        ),
        other => anyhow::anyhow!("coordinator connection closed: {other}"),
    }
}

/// How often answers still unacknowledged are announced again.
pub const HELD_REANNOUNCE: Duration = Duration::from_secs(5);

/// Announces the answers held for longer than `older_than` (none: nothing is sent), after
/// dropping those held past `store::HOLD_FOR`.
async fn announce_held(
    state: &NodeState,
    ctl: &mut quinn::SendStream,
    older_than: Duration,
) -> anyhow::Result<()> {
    let store = state.store.clone();
    let held = tokio::task::spawn_blocking(move || {
        let now = crate::store::held_now_ms();
        store.expire_held(now).map(|h| (now, h))
    })
    .await?;
    let (now, held) = match held {
        Ok(x) => x,
        Err(e) => {
            warn!(error = %e, "could not read the held answers");
            return Ok(());
        }
    };
    let cutoff = now.saturating_sub(u64::try_from(older_than.as_millis()).unwrap_or(0));
    let run_ids: Vec<String> = held
        .into_iter()
        .filter(|h| h.held_at_ms <= cutoff)
        .map(|h| h.answer.run_id)
        .take(crate::dispatch::MAX_COLLECT)
        .collect();
    if !run_ids.is_empty() {
        info!(
            count = run_ids.len(),
            "announcing answers the coordinator has not acknowledged"
        );
        wire::write_msg(ctl, &NodeEvent::Held { run_ids }).await?;
    }
    Ok(())
}

async fn send_catalog(state: &NodeState, ctl: &mut quinn::SendStream) -> anyhow::Result<()> {
    let datasets = state.catalog()?;
    wire::write_msg(ctl, &NodeEvent::Catalog { datasets }).await?;
    Ok(())
}
