//! The QUIC endpoint nodes connect to, and the registry of connected nodes.
//!
//! Identity comes from the verified client certificate, once, at accept time. The node's
//! `Hello` must claim the same organization and a protocol version this build speaks;
//! otherwise it gets a refusal frame and the connection is closed with `REFUSED`.
//!
//! This module is the link and nothing more: it answers calls ([`NodeRegistry::call`]) and
//! forwards what nodes send on their control streams, as [`Inbound`] events on a channel, to
//! [`crate::events`].

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prism_common::identity::{OrgId, PeerIdentity, peer_identity};
use prism_common::metrics::Metrics;
use prism_common::refusal::RefusalCode;
use prism_common::tls;
use prism_common::wire::{
    self, ErrorBody, Hello, HelloReply, NodeEvent, PROTOCOL_VERSION, Request, Response, WireError,
};
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span, warn};

use crate::store::Audit;

/// How long a node has to deliver its whole Hello once its control stream is open.
const HELLO_DEADLINE: Duration = Duration::from_secs(10);

/// Live connections one organization may hold at once. A node needs one; the slack lets a node
/// that reconnects after a drop in while its dead connection waits out the idle timeout.
pub const MAX_CONNECTIONS_PER_ORG: usize = 4;

/// Bidirectional streams a node may open: its control stream (the coordinator opens the rest).
pub const MAX_NODE_STREAMS: u32 = 2;

/// The transport of the coordinator's endpoint: the usual keep-alive and idle timeout, at most
/// [`MAX_NODE_STREAMS`] streams opened by the node, none unidirectional, and flow-control windows
/// of one `max_frame` per stream and four per connection. Windows bound what is buffered, not
/// what a stream may carry: HE blobs larger than a window still flow as the coordinator reads.
pub fn transport(tls: &tls::TlsMaterial, max_frame: usize) -> quinn::TransportConfig {
    let frame = u32::try_from(max_frame.saturating_add(8)).unwrap_or(u32::MAX);
    let mut t = tls.transport_config();
    t.max_concurrent_bidi_streams(quinn::VarInt::from_u32(MAX_NODE_STREAMS))
        .max_concurrent_uni_streams(quinn::VarInt::from_u32(0))
        .stream_receive_window(quinn::VarInt::from_u32(frame))
        .receive_window(quinn::VarInt::from_u32(frame.saturating_mul(4)));
    t
}

/// A connected node.
#[derive(Clone)]
struct Link {
    conn: quinn::Connection,
    info: NodeInfo,
}

/// What the API shows about a connected node.
#[derive(Debug, Clone, Serialize)]
pub struct NodeInfo {
    /// Organization.
    pub organization: OrgId,
    /// The node's peer endpoint address.
    pub peer_addr: Option<String>,
    /// Node software.
    pub software: String,
    /// When it connected.
    pub connected_since: String,
    /// Remote address of the QUIC connection.
    pub remote: String,
    /// The HE key sets the node said it holds, when it serves `he_backend`.
    #[serde(skip)]
    pub he_keys: Option<Vec<String>>,
}

/// Errors calling a node.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The node is not connected.
    #[error("the node of {0} is offline (not connected to the coordinator)")]
    Offline(OrgId),
    /// Nothing was heard from the node for the idle timeout: it died or the network to it is cut.
    #[error(
        "the node of {0} is unreachable: nothing heard from it for {1:?}, so the coordinator dropped its connection"
    )]
    Unreachable(OrgId, Duration),
    /// The node closed its connection (it is shutting down, or reconnected).
    #[error("the node of {org} went offline: it closed its connection ({reason})")]
    Closed {
        /// Organization.
        org: OrgId,
        /// The node's close reason.
        reason: String,
    },
    /// The coordinator is shutting down and abandoned the call.
    #[error("the coordinator is shutting down; the call to the node of {0} was abandoned")]
    Stopping(OrgId),
    /// It did not answer in time.
    #[error("the node of {0} did not answer within {1:?}")]
    Timeout(OrgId, Duration),
    /// The stream failed while the connection stayed up.
    #[error("the node of {0} dropped the request: {1}")]
    Transport(OrgId, String),
}

impl CallError {
    /// The stable code a run or room that failed on this error carries.
    pub fn code(&self) -> &'static str {
        match self {
            CallError::Stopping(_) => RefusalCode::CoordinatorStopped,
            _ => RefusalCode::NodeUnavailable,
        }
        .as_str()
    }

    /// The error for a stream that failed with `e` on `conn`: when the connection itself is
    /// gone, why it went (unreachable, closed by the node, coordinator stopping) is the news.
    fn lost(
        org: &OrgId,
        conn: &quinn::Connection,
        stopping: bool,
        idle: Duration,
        e: &dyn std::fmt::Display,
    ) -> Self {
        use quinn::ConnectionError as C;
        match conn.close_reason() {
            // A stopping coordinator abandons its calls: whatever failed the stream (the close
            // under way, a stream ended before the connection's reason is set), that is the cause.
            _ if stopping => CallError::Stopping(org.clone()),
            Some(C::TimedOut) => CallError::Unreachable(org.clone(), idle),
            Some(C::ApplicationClosed(c)) => CallError::Closed {
                org: org.clone(),
                reason: String::from_utf8_lossy(&c.reason).into_owned(),
            },
            Some(other) => CallError::Closed {
                org: org.clone(),
                reason: other.to_string(),
            },
            None => CallError::Transport(org.clone(), e.to_string()),
        }
    }
}

/// One event from a connected node.
#[derive(Debug)]
pub struct Inbound {
    /// The organization of the certificate the node connected with.
    pub org: OrgId,
    /// The Ed25519 key that certificate certifies (what its attestations must verify against).
    pub cert_key: Option<[u8; 32]>,
    /// What happened.
    pub event: LinkEvent,
}

/// What a node's link reports.
#[derive(Debug)]
pub enum LinkEvent {
    /// The node connected (or reconnected).
    Connected,
    /// The node sent an event on its control stream.
    Node(NodeEvent),
}

/// Connected nodes by organization.
pub struct NodeRegistry {
    allowed: HashSet<OrgId>,
    links: Mutex<HashMap<OrgId, Link>>,
    /// Live connections per organization, registered or still in their handshake.
    live: prism_common::conn_cap::ConnectionCap,
    max_frame: usize,
    /// The connections' idle timeout (how long an unreachable node goes unnoticed).
    idle: std::time::Duration,
    /// Every answer nodes sent, while a test records (`test-util` builds only).
    #[cfg(feature = "test-util")]
    tap: Mutex<Option<Vec<(OrgId, Response)>>>,
    metrics: Arc<Metrics>,
    /// The coordinator's shutdown: calls in flight are abandoned when it fires.
    stopping: CancellationToken,
    /// Where node events go.
    events: tokio::sync::mpsc::Sender<Inbound>,
}

impl NodeRegistry {
    /// A registry admitting these organizations.
    pub fn new(
        allowed: impl IntoIterator<Item = OrgId>,
        max_frame: usize,
        idle: std::time::Duration,
        metrics: Arc<Metrics>,
        stopping: CancellationToken,
        events: tokio::sync::mpsc::Sender<Inbound>,
    ) -> Self {
        NodeRegistry {
            events,
            allowed: allowed.into_iter().collect(),
            links: Mutex::new(HashMap::new()),
            live: prism_common::conn_cap::ConnectionCap::new(MAX_CONNECTIONS_PER_ORG),
            max_frame,
            idle,
            #[cfg(feature = "test-util")]
            tap: Mutex::new(None),
            metrics,
            stopping,
        }
    }

    /// Admitted organizations, sorted.
    pub fn members(&self) -> Vec<OrgId> {
        let mut v: Vec<_> = self.allowed.iter().cloned().collect();
        v.sort();
        v
    }

    /// Whether an organization is admitted.
    pub fn is_member(&self, org: &OrgId) -> bool {
        self.allowed.contains(org)
    }

    /// The connected node of an organization.
    pub fn info(&self, org: &OrgId) -> Option<NodeInfo> {
        self.links.lock().ok()?.get(org).map(|l| l.info.clone())
    }

    fn conn(&self, org: &OrgId) -> Option<quinn::Connection> {
        self.links.lock().ok()?.get(org).map(|l| l.conn.clone())
    }

    /// Starts recording every answer nodes send (for tests that check what the coordinator saw).
    #[cfg(feature = "test-util")]
    pub fn record(&self) {
        if let Ok(mut t) = self.tap.lock() {
            *t = Some(Vec::new());
        }
    }

    /// What was recorded since [`NodeRegistry::record`].
    #[cfg(feature = "test-util")]
    pub fn recorded(&self) -> Vec<(OrgId, Response)> {
        self.tap
            .lock()
            .ok()
            .and_then(|t| t.clone())
            .unwrap_or_default()
    }

    /// Opens a raw stream to a node (for exchanges that carry blobs after the request frame).
    pub async fn open(
        &self,
        org: &OrgId,
    ) -> Result<(quinn::SendStream, quinn::RecvStream), CallError> {
        let conn = self
            .conn(org)
            .ok_or_else(|| CallError::Offline(org.clone()))?;
        if self.stopping.is_cancelled() {
            return Err(CallError::Stopping(org.clone()));
        }
        conn.open_bi()
            .await
            .map_err(|e| CallError::lost(org, &conn, self.stopping.is_cancelled(), self.idle, &e))
    }

    /// Why a stream opened with [`NodeRegistry::open`] failed with `e`, when the cause is the
    /// connection (gone, or the coordinator stopping) rather than the stream; `None` otherwise.
    pub fn stream_error(&self, org: &OrgId, e: &dyn std::fmt::Display) -> Option<CallError> {
        if self.stopping.is_cancelled() {
            return Some(CallError::Stopping(org.clone()));
        }
        match self.conn(org) {
            Some(c) if c.close_reason().is_some() => {
                Some(CallError::lost(org, &c, false, self.idle, e))
            }
            Some(_) => None,
            None => Some(CallError::Offline(org.clone())),
        }
    }

    /// Sends a request on a new stream and waits for the answer.
    pub async fn call(
        &self,
        org: &OrgId,
        req: &Request,
        timeout: Duration,
    ) -> Result<Response, CallError> {
        let resp = self.call_once(org, req, timeout).await;
        if resp.is_err() {
            self.metrics.peer_failure(org.as_str());
        }
        resp
    }

    async fn call_once(
        &self,
        org: &OrgId,
        req: &Request,
        timeout: Duration,
    ) -> Result<Response, CallError> {
        let conn = self
            .conn(org)
            .ok_or_else(|| CallError::Offline(org.clone()))?;
        let t = |e: &dyn std::fmt::Display| {
            CallError::lost(org, &conn, self.stopping.is_cancelled(), self.idle, e)
        };
        let fut = async {
            let (mut send, mut recv) = conn.open_bi().await.map_err(|e| t(&e))?;
            wire::write_msg(&mut send, req).await.map_err(|e| t(&e))?;
            send.finish().map_err(|e| t(&e))?;
            wire::read_msg::<_, Response>(&mut recv, self.max_frame)
                .await
                .map_err(|e| t(&e))
        };
        let resp = tokio::select! {
            _ = self.stopping.cancelled() => return Err(CallError::Stopping(org.clone())),
            r = tokio::time::timeout(timeout, fut) => {
                r.map_err(|_| CallError::Timeout(org.clone(), timeout))??
            }
        };
        #[cfg(feature = "test-util")]
        if let Ok(mut t) = self.tap.lock()
            && let Some(t) = t.as_mut()
        {
            t.push((org.clone(), resp.clone()));
        }
        Ok(resp)
    }
}

/// Accepts node connections until `shutdown`.
pub async fn serve(
    endpoint: quinn::Endpoint,
    state: Arc<crate::CoordState>,
    shutdown: CancellationToken,
) {
    use std::sync::atomic::Ordering;
    state.listening.store(true, Ordering::SeqCst);
    loop {
        let incoming = tokio::select! {
            _ = shutdown.cancelled() => break,
            i = endpoint.accept() => match i { Some(i) => i, None => break },
        };
        let (state, shutdown) = (state.clone(), shutdown.clone());
        let remote = incoming.remote_address();
        let tasks = state.tasks.clone();
        tasks.spawn(
            async move {
                match incoming.await {
                    Ok(conn) => handle(conn, state, shutdown).await,
                    Err(e) => warn!(error = %e, "node handshake failed"),
                }
            }
            .instrument(info_span!("node", %remote)),
        );
    }
    state.listening.store(false, Ordering::SeqCst);
    endpoint.close(wire::close::NORMAL.into(), b"coordinator shutting down");
}

fn peer_leaf(conn: &quinn::Connection) -> Option<Vec<u8>> {
    let certs = conn
        .peer_identity()?
        .downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
        .ok()?;
    certs.first().map(|c| c.to_vec())
}

async fn refuse(
    conn: &quinn::Connection,
    send: Option<&mut quinn::SendStream>,
    code: &str,
    message: String,
) {
    warn!(code, %message, "refusing node");
    if let Some(send) = send {
        let _ = wire::write_msg(
            send,
            &HelloReply::Refused(ErrorBody::new(code, message.clone())),
        )
        .await;
        let _ = send.finish();
        let _ = tokio::time::timeout(Duration::from_secs(2), send.stopped()).await;
    }
    conn.close(wire::close::REFUSED.into(), message.as_bytes());
}

fn close_for(conn: &quinn::Connection, e: &WireError) {
    let code = if matches!(e, WireError::FrameTooLarge { .. }) {
        wire::close::FRAME_TOO_LARGE
    } else {
        wire::close::PROTOCOL
    };
    conn.close(code.into(), e.to_string().as_bytes());
}

async fn handle(
    conn: quinn::Connection,
    state: Arc<crate::CoordState>,
    shutdown: CancellationToken,
) {
    let (registry, store) = (state.nodes.clone(), state.store.clone());
    let org = match peer_identity(&conn) {
        Ok(PeerIdentity::Org(org)) => org,
        Ok(PeerIdentity::Coordinator) => {
            return refuse(
                &conn,
                None,
                "not_a_node",
                "a coordinator certificate cannot join as a node".into(),
            )
            .await;
        }
        Err(e) => return refuse(&conn, None, "bad_certificate", e.to_string()).await,
    };
    if !registry.is_member(&org) {
        return refuse(
            &conn,
            None,
            "not_a_member",
            format!("organization {org} is not a member of this federation"),
        )
        .await;
    }
    let Some(_live) = registry.live.admit(&org) else {
        let msg = format!(
            "organization {org} already holds {MAX_CONNECTIONS_PER_ORG} connections to the coordinator"
        );
        return refuse(&conn, None, "too_many_connections", msg).await;
    };
    let Ok(Ok((mut send, mut recv))) =
        tokio::time::timeout(Duration::from_secs(10), conn.accept_bi()).await
    else {
        return refuse(
            &conn,
            None,
            "no_hello",
            "no control stream within 10 s".into(),
        )
        .await;
    };
    // A Hello that never completes (a stalled or 1 byte/s sender) must not hold the connection.
    let hello = tokio::time::timeout(
        HELLO_DEADLINE,
        wire::read_msg(&mut recv, registry.max_frame),
    );
    let hello: Hello = match hello.await {
        Ok(Ok(h)) => h,
        Ok(Err(e)) => {
            warn!(%org, error = %e, "bad hello");
            return close_for(&conn, &e);
        }
        Err(_) => {
            let msg = format!("no complete Hello within {} s", HELLO_DEADLINE.as_secs());
            return refuse(&conn, None, "no_hello", msg).await;
        }
    };
    if hello.version != PROTOCOL_VERSION {
        let msg = format!(
            "protocol version {} is not supported; this coordinator speaks version {PROTOCOL_VERSION}",
            hello.version
        );
        return refuse(&conn, Some(&mut send), "unsupported_version", msg).await;
    }
    if hello.org != org {
        let msg = format!(
            "the node claims organization {} but its certificate is for {org}",
            hello.org
        );
        let _ = store.audit(Audit {
            actor: org.as_str(),
            action: "node_refused",
            target: hello.org.as_str(),
            details: serde_json::json!({"reason": msg}),
        });
        return refuse(&conn, Some(&mut send), "org_mismatch", msg).await;
    }
    let welcome = HelloReply::Welcome {
        version: PROTOCOL_VERSION,
        software: format!("prism-coordinator {}", env!("CARGO_PKG_VERSION")),
        members: registry.members(),
    };
    if wire::write_msg(&mut send, &welcome).await.is_err() {
        return;
    }
    let info = NodeInfo {
        organization: org.clone(),
        peer_addr: hello.peer_addr.clone(),
        software: hello.software.clone(),
        connected_since: crate::model::now(),
        remote: conn.remote_address().to_string(),
        he_keys: hello.he_keys.clone(),
    };
    if let Ok(mut links) = registry.links.lock() {
        // A reconnecting node replaces its older connection.
        if let Some(old) = links.insert(
            org.clone(),
            Link {
                conn: conn.clone(),
                info,
            },
        ) {
            old.conn.close(
                wire::close::NORMAL.into(),
                b"replaced by a newer connection",
            );
        }
    }
    info!(%org, software = %hello.software, "node connected");
    // The key its certificate certifies: what its attestations must verify against.
    let cert_key =
        peer_leaf(&conn).and_then(|der| prism_common::room::public_key_from_cert(&der).ok());
    let forward = |event| Inbound {
        org: org.clone(),
        cert_key,
        event,
    };
    if registry
        .events
        .send(forward(LinkEvent::Connected))
        .await
        .is_err()
    {
        return;
    }
    let _ = store.audit(Audit {
        actor: org.as_str(),
        action: "node_connected",
        target: org.as_str(),
        details: serde_json::json!({"software": hello.software}),
    });

    loop {
        let ev = tokio::select! {
            _ = shutdown.cancelled() => break,
            ev = wire::read_msg::<_, NodeEvent>(&mut recv, registry.max_frame) => ev,
        };
        match ev {
            Ok(ev) => {
                if registry
                    .events
                    .send(forward(LinkEvent::Node(ev)))
                    .await
                    .is_err()
                {
                    break;
                }
            }
            Err(WireError::Closed) => break,
            Err(_) if matches!(conn.close_reason(), Some(quinn::ConnectionError::ApplicationClosed(ref c)) if c.error_code == quinn::VarInt::from_u32(wire::close::NORMAL)) =>
            {
                break;
            }
            // Already gone (timed out, closed): closing it again would only hide why.
            Err(_) if conn.close_reason().is_some() => break,
            Err(e) => {
                warn!(%org, error = %e, "closing node connection");
                close_for(&conn, &e);
                break;
            }
        }
    }
    if let Ok(mut links) = registry.links.lock()
        && links
            .get(&org)
            .is_some_and(|l| l.conn.stable_id() == conn.stable_id())
    {
        links.remove(&org);
    }
    let reason = match conn.close_reason() {
        Some(quinn::ConnectionError::TimedOut) => {
            format!("unreachable: nothing heard for {:?}", registry.idle)
        }
        Some(quinn::ConnectionError::ApplicationClosed(c)) => {
            format!("closed by the node: {}", String::from_utf8_lossy(&c.reason))
        }
        Some(other) => other.to_string(),
        None => "coordinator shutting down".into(),
    };
    info!(%org, %reason, "node disconnected");
    let _ = store.audit(Audit {
        actor: org.as_str(),
        action: "node_disconnected",
        target: org.as_str(),
        details: serde_json::json!({"reason": reason}),
    });
}
