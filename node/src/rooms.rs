//! Data rooms on the node: invitations, attestations, and MPC execution with share exchange.
//!
//! Nothing leaves this node for a room unless (1) the manifest it is asked to execute hashes to
//! exactly what this node attested, (2) its policy still allows it, and (3) every other
//! participant's attestation verifies against the key in that participant's certificate, as
//! presented on a mutually authenticated connection to its peer endpoint. Only then does the
//! node send one additive share to each peer; it answers the coordinator with the sum of its own
//! share and the shares it received — never its input.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prism_common::backend::BackendId;
use prism_common::identity::{OrgId, PeerIdentity, peer_identity};
use prism_common::release::ReleaseMode;
use prism_common::room::{self, Manifest};
use prism_common::wire::{
    self, Attestation, ErrorBody, MpcResponse, NodeEvent, PeerAddr, PeerRequest, PeerResponse,
};
use prism_common::{mpc, shares};
use redb::{ReadableDatabase, TableDefinition};
use serde::{Deserialize, Serialize};
use tracing::info;

use crate::NodeState;

/// room id → JSON [`Invitation`].
pub const INVITATIONS: TableDefinition<&str, &str> = TableDefinition::new("invitations");

/// Where an invitation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InvitationStatus {
    /// Waiting for the owner.
    Pending,
    /// Signed.
    Attested,
    /// Refused by the owner.
    Declined,
    /// Signed, then taken back.
    Withdrawn,
}

/// A room invitation as this node keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Invitation {
    /// The manifest as received.
    pub manifest: Manifest,
    /// Its hash.
    pub manifest_hash: String,
    /// Status.
    pub status: InvitationStatus,
    /// When it arrived.
    pub received_at: String,
    /// When the owner (or the auto-attest policy) decided.
    pub decided_at: Option<String>,
    /// This node's signature, once attested.
    pub signature: Option<String>,
    /// Why it was declined.
    pub reason: Option<String>,
    /// Who created the room, as the coordinator says (recorded, never checked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requester: Option<wire::Requester>,
    /// The manifest this one replaced, if the room was re-sent changed (what changed is shown
    /// to the owner; its signature, if any, no longer applies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<Box<Superseded>>,
}

/// A manifest a newer one replaced, with where it stood then.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Superseded {
    /// The manifest.
    pub manifest: Manifest,
    /// Its hash.
    pub manifest_hash: String,
    /// Its status when it was replaced.
    pub status: InvitationStatus,
    /// When it had arrived.
    pub received_at: String,
}

/// A fault a test injects into execution (test doubles only; never set in production).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Stop after computing the local vector, before sending any share, until shut down.
    StallBeforeShares,
}

/// Shares received per room, from which organization.
#[derive(Default)]
pub struct Mailbox {
    shares: std::sync::Mutex<HashMap<String, HashMap<OrgId, Vec<u64>>>>,
    arrived: tokio::sync::Notify,
}

fn refuse(code: &str, message: impl Into<String>) -> ErrorBody {
    ErrorBody::new(code, message)
}

/// A refusal caused by another party; counted per peer on `/metrics`.
fn peer_failed(state: &NodeState, org: &OrgId, code: &str, message: String) -> ErrorBody {
    state.metrics.peer_failure(org.as_str());
    refuse(code, message)
}

fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn internal(e: impl std::fmt::Display) -> ErrorBody {
    refuse("node_store_error", e.to_string())
}

/// Loads an invitation.
pub fn load(state: &NodeState, room_id: &str) -> Result<Option<Invitation>, ErrorBody> {
    let txn = state.store.db().begin_read().map_err(internal)?;
    let t = txn.open_table(INVITATIONS).map_err(internal)?;
    let v = t.get(room_id).map_err(internal)?;
    v.map(|v| serde_json::from_str(v.value()).map_err(internal))
        .transpose()
}

/// Every invitation, newest first.
pub fn list(state: &NodeState) -> Result<Vec<Invitation>, ErrorBody> {
    use redb::ReadableTable;
    let txn = state.store.db().begin_read().map_err(internal)?;
    let t = txn.open_table(INVITATIONS).map_err(internal)?;
    let mut out: Vec<Invitation> = Vec::new();
    for row in t.iter().map_err(internal)? {
        let (_, v) = row.map_err(internal)?;
        out.push(serde_json::from_str(v.value()).map_err(internal)?);
    }
    out.sort_by(|a, b| b.received_at.cmp(&a.received_at));
    Ok(out)
}

fn save(state: &NodeState, inv: &Invitation, action: &str, actor: &str) -> Result<(), ErrorBody> {
    let txn = state.store.db().begin_write().map_err(internal)?;
    {
        let mut t = txn.open_table(INVITATIONS).map_err(internal)?;
        let json = serde_json::to_string(inv).map_err(internal)?;
        t.insert(inv.manifest.room_id.as_str(), json.as_str())
            .map_err(internal)?;
        prism_common::audit::store::append(
            &txn,
            actor,
            action,
            &inv.manifest.room_id,
            serde_json::json!({"manifest_hash": inv.manifest_hash, "query": inv.manifest.query_text,
                               "participants": inv.manifest.participants, "status": inv.status, "reason": inv.reason}),
        )
        .map_err(internal)?;
    }
    txn.commit().map_err(internal)
}

/// Checks a manifest against this node's policy and catalog.
fn admissible(state: &NodeState, m: &Manifest) -> Result<(), ErrorBody> {
    if m.backend != BackendId::MpcBackend {
        return Err(refuse(
            "backend_not_served",
            format!(
                "room {} uses {}; this node runs rooms with mpc_backend",
                m.room_id, m.backend
            ),
        ));
    }
    if !m.participants.contains(&state.org) {
        return Err(refuse(
            "not_a_participant",
            format!("{} is not a participant of room {}", state.org, m.room_id),
        ));
    }
    if m.expired(time::OffsetDateTime::now_utc()) {
        return Err(refuse(
            "room_expired",
            format!("room {} expired at {}", m.room_id, m.expires_at),
        ));
    }
    let ds = crate::exec::admit(state, m.backend, &m.plan.dataset, &m.plan)?;
    let l =
        mpc::layout(&m.plan, &ds.schema, &m.params).map_err(|e| refuse(e.code(), e.to_string()))?;
    crate::room_release::check(state, m, &ds, &l)
}

/// Stores an invitation; attests at once when the policy says so.
pub fn invite(
    state: &NodeState,
    manifest: Manifest,
    requester: Option<wire::Requester>,
) -> Result<MpcResponse, ErrorBody> {
    let hash = manifest.hash_hex();
    let old = load(state, &manifest.room_id)?;
    if let Some(old) = &old
        && old.manifest_hash == hash
    {
        return Ok(MpcResponse::Invited {
            status: format!("{:?}", old.status).to_lowercase(),
        });
    }
    // A new manifest for a known room replaces the old one: earlier signatures no longer apply.
    let inv = Invitation {
        manifest,
        manifest_hash: hash,
        status: InvitationStatus::Pending,
        received_at: now(),
        decided_at: None,
        signature: None,
        reason: None,
        requester,
        previous: old.map(|o| {
            Box::new(Superseded {
                manifest: o.manifest,
                manifest_hash: o.manifest_hash,
                status: o.status,
                received_at: o.received_at,
            })
        }),
    };
    save(state, &inv, "room_invited", "coordinator")?;
    // An exact room always waits for the owner's own decision.
    if state.config.policy.auto_attest
        && inv.manifest.params.release != ReleaseMode::Exact
        && admissible(state, &inv.manifest).is_ok()
    {
        attest(state, &inv.manifest.room_id, "auto-attest policy")?;
        return Ok(MpcResponse::Invited {
            status: "attested".into(),
        });
    }
    Ok(MpcResponse::Invited {
        status: "pending".into(),
    })
}

/// Signs a pending (or withdrawn) invitation's manifest and tells the coordinator.
pub fn attest(state: &NodeState, room_id: &str, actor: &str) -> Result<Invitation, ErrorBody> {
    let mut inv = load(state, room_id)?
        .ok_or_else(|| refuse("unknown_room", format!("no invitation for room {room_id}")))?;
    if inv.status == InvitationStatus::Declined {
        return Err(refuse(
            "room_declined",
            format!("room {room_id} was declined"),
        ));
    }
    admissible(state, &inv.manifest)?;
    let hash = inv.manifest.hash();
    let signature = room::sign(&state.signing_key, &hash)
        .map_err(|e| refuse("signing_failed", e.to_string()))?;
    inv.status = InvitationStatus::Attested;
    inv.signature = Some(signature.clone());
    inv.decided_at = Some(now());
    save(state, &inv, "room_attested", actor)?;
    state.send_event(NodeEvent::Attested(Attestation {
        room_id: room_id.into(),
        org: state.org.clone(),
        manifest_hash: inv.manifest_hash.clone(),
        signature,
    }));
    Ok(inv)
}

/// Declines an invitation.
pub fn decline(state: &NodeState, room_id: &str, reason: &str) -> Result<Invitation, ErrorBody> {
    let mut inv = load(state, room_id)?
        .ok_or_else(|| refuse("unknown_room", format!("no invitation for room {room_id}")))?;
    inv.status = InvitationStatus::Declined;
    inv.reason = Some(reason.into());
    inv.decided_at = Some(now());
    inv.signature = None;
    save(state, &inv, "room_declined", "node-admin")?;
    state.send_event(NodeEvent::Declined {
        room_id: room_id.into(),
        reason: reason.into(),
    });
    Ok(inv)
}

/// Withdraws an attestation before execution.
pub fn withdraw(state: &NodeState, room_id: &str) -> Result<Invitation, ErrorBody> {
    let mut inv = load(state, room_id)?
        .ok_or_else(|| refuse("unknown_room", format!("no invitation for room {room_id}")))?;
    if inv.status != InvitationStatus::Attested {
        return Err(refuse(
            "not_attested",
            format!("room {room_id} is not attested by {}", state.org),
        ));
    }
    inv.status = InvitationStatus::Withdrawn;
    inv.signature = None;
    inv.decided_at = Some(now());
    save(state, &inv, "room_withdrawn", "node-admin")?;
    state.send_event(NodeEvent::Withdrawn {
        room_id: room_id.into(),
    });
    Ok(inv)
}

/// Accepts a share from a peer (called by the peer endpoint with the TLS-verified sender).
pub fn accept_share(
    state: &NodeState,
    from: &OrgId,
    room_id: &str,
    execution_id: &str,
    manifest_hash: &str,
    share: Vec<u64>,
) -> PeerResponse {
    let inv = match load(state, room_id) {
        Ok(Some(inv)) => inv,
        Ok(None) => {
            return PeerResponse::Refused(refuse(
                "unknown_room",
                format!("{} has no room {room_id}", state.org),
            ));
        }
        Err(e) => return PeerResponse::Refused(e),
    };
    if !inv.manifest.participants.contains(from) || from == &state.org {
        return PeerResponse::Refused(refuse(
            "not_a_participant",
            format!("organization {from} is not a participant of room {room_id}"),
        ));
    }
    if inv.status != InvitationStatus::Attested || inv.manifest_hash != manifest_hash {
        return PeerResponse::Refused(refuse(
            "manifest_mismatch",
            format!(
                "{} has not attested manifest {manifest_hash} of room {room_id}",
                state.org
            ),
        ));
    }
    let expected = state
        .dataset(&inv.manifest.plan.dataset)
        .and_then(|d| mpc::layout(&inv.manifest.plan, &d.schema, &inv.manifest.params).ok())
        .map(|l| l.len());
    if expected != Some(share.len()) {
        return PeerResponse::Refused(refuse(
            "bad_share",
            format!(
                "share of {} elements does not fit room {room_id}",
                share.len()
            ),
        ));
    }
    if let Ok(mut m) = state.mailbox.shares.lock() {
        m.entry(format!("{room_id}/{execution_id}"))
            .or_default()
            .insert(from.clone(), share);
    }
    state.mailbox.arrived.notify_waiters();
    PeerResponse::ShareAccepted
}

/// Executes an attested room and returns this party's partial sum.
pub async fn execute(
    state: &Arc<NodeState>,
    manifest: Manifest,
    attestations: Vec<Attestation>,
    peers: Vec<PeerAddr>,
    execution_id: &str,
) -> Result<MpcResponse, ErrorBody> {
    let room_id = manifest.room_id.clone();
    let hash_hex = manifest.hash_hex();
    let inv = load(state, &room_id)?.ok_or_else(|| {
        refuse(
            "unknown_room",
            format!("{} was never invited to room {room_id}", state.org),
        )
    })?;
    if inv.manifest_hash != hash_hex {
        return Err(refuse(
            "manifest_changed",
            format!(
                "the manifest of room {room_id} differs from the one {} attested (attested {}, asked {}); refusing",
                state.org, inv.manifest_hash, hash_hex
            ),
        ));
    }
    if inv.status != InvitationStatus::Attested {
        return Err(refuse(
            "not_attested",
            format!(
                "{} has not attested room {room_id} (status {:?})",
                state.org, inv.status
            ),
        ));
    }
    admissible(state, &manifest)?;
    for o in &manifest.participants {
        if !attestations
            .iter()
            .any(|a| &a.org == o && a.manifest_hash == hash_hex)
        {
            return Err(refuse(
                "missing_attestation",
                format!("no attestation of room {room_id} from {o}"),
            ));
        }
    }

    let started = Instant::now();
    let ds = state
        .dataset(&manifest.plan.dataset)
        .ok_or_else(|| refuse("unknown_dataset", "dataset vanished"))?;
    // In a dp room this reserves the ε (before any share leaves) and adds this party's noise.
    let (s, m, eid) = (state.clone(), manifest.clone(), execution_id.to_string());
    let (local, charge) =
        tokio::task::spawn_blocking(move || crate::room_release::local_vector(&s, &m, &ds, &eid))
            .await
            .map_err(internal)??;
    let compute_ms = started.elapsed().as_secs_f64() * 1000.0;
    let exchanged = exchange(state, &manifest, &attestations, &peers, execution_id, local).await;
    let failure = exchanged.as_ref().err().map(|e| e.message.clone());
    let (s, m) = (state.clone(), manifest.clone());
    let settled = tokio::task::spawn_blocking(move || match (failure, charge) {
        // From here on a release is possible: the charge is committed before the partial sum
        // leaves, and the partial sum is not sent if it cannot be.
        (None, Some(c)) => crate::room_release::commit(&s, &c, &m).map(|()| Some(c)),
        (Some(why), Some(c)) => {
            crate::room_release::rollback(&s, &c, &m, &why);
            Ok(None)
        }
        (_, None) => Ok(None),
    })
    .await
    .map_err(internal)?;
    let (partial, exchange_ms) = exchanged?;
    let charge = settled?;
    info!(
        room_id,
        parties = manifest.participants.len(),
        compute_ms,
        exchange_ms,
        release = %manifest.params.release,
        "room executed"
    );
    state.audit_async(
        "coordinator",
        "room_executed",
        &room_id,
        serde_json::json!({"manifest_hash": hash_hex, "sent": "partial sum only",
                           "release": manifest.params.release,
                           "epsilon": charge.as_ref().map(|c| c.epsilon)}),
    );
    Ok(MpcResponse::Partial {
        room_id,
        partial,
        compute_ms,
        exchange_ms,
        noise: charge.map(|c| c.report),
    })
}

/// Sends this party's shares of `local` to every other participant (each verified first),
/// waits for theirs, and returns the partial sum with the exchange time in ms.
async fn exchange(
    state: &Arc<NodeState>,
    manifest: &Manifest,
    attestations: &[Attestation],
    peers: &[PeerAddr],
    execution_id: &str,
    local: Vec<u64>,
) -> Result<(Vec<u64>, f64), ErrorBody> {
    let room_id = manifest.room_id.clone();
    let mailbox_key = format!("{room_id}/{execution_id}");
    let hash = manifest.hash();
    let hash_hex = hex::encode(hash);
    let others: Vec<OrgId> = manifest
        .participants
        .iter()
        .filter(|o| **o != state.org)
        .cloned()
        .collect();

    if state.fault() == Some(Fault::StallBeforeShares) {
        state.shutdown.cancelled().await;
        return Err(refuse(
            "node_stopping",
            format!("{} is shutting down", state.org),
        ));
    }

    // Connect to every other participant (concurrently; connections are kept between
    // executions) and verify its attestation with the key its certificate carries, before a
    // single share leaves this node.
    let exchange = Instant::now();
    let dials = others.iter().map(|org| {
        let addr = peers
            .iter()
            .find(|p| &p.org == org)
            .map(|p| p.addr.as_str());
        let hash = &hash;
        async move {
            let r = dial_verified(state, org, addr, hash, attestations).await;
            if let Err(e) = &r
                && e.code == "party_unreachable"
            {
                state.metrics.peer_failure(org.as_str());
            }
            r
        }
    });
    let conns = futures::future::try_join_all(dials).await?;

    let mut rng = shares::os_seeded();
    let mut split = shares::split(&local, manifest.participants.len(), &mut rng);
    let own = split.pop().unwrap_or_default();
    let sends = conns
        .into_iter()
        .zip(split)
        .map(|((org, sock, conn, cached), share)| {
            let req = PeerRequest::Share {
                room_id: room_id.clone(),
                execution_id: execution_id.to_string(),
                manifest_hash: hash_hex.clone(),
                share,
            };
            let max = state.config.max_frame;
            let state = state.clone();
            async move {
                let mut r = send_share(&conn, &req, max).await;
                if r.is_err() && cached {
                    // The kept connection went stale (the peer restarted): dial afresh, once. The
                    // new connection is the same organization, checked at its handshake.
                    r = match peer_connection(&state, &org, sock, true).await {
                        Ok((conn, _)) => send_share(&conn, &req, max).await,
                        Err(e) => Err(e.message),
                    };
                }
                (org, r)
            }
        });
    let deadline = Duration::from_millis(manifest.params.deadline_ms);
    let results = tokio::time::timeout(deadline, futures::future::join_all(sends))
        .await
        .map_err(|_| {
            refuse(
                "party_timeout",
                format!("sending shares of room {room_id} missed the deadline"),
            )
        })?;
    for (org, r) in results {
        match r {
            Ok(PeerResponse::ShareAccepted) => {}
            Ok(PeerResponse::Refused(e)) => {
                return Err(refuse(
                    "share_refused",
                    format!("{org} refused the share: {}", e.message),
                ));
            }
            Ok(other) => return Err(refuse("share_refused", format!("{org} answered {other:?}"))),
            Err(e) => {
                return Err(peer_failed(
                    state,
                    &org,
                    "party_unreachable",
                    format!("party {org} dropped during the share exchange: {e}"),
                ));
            }
        }
    }

    // Wait for every other party's share.
    let received = tokio::time::timeout(deadline, async {
        loop {
            let notified = state.mailbox.arrived.notified();
            if let Ok(m) = state.mailbox.shares.lock()
                && let Some(got) = m.get(&mailbox_key)
                && others.iter().all(|o| got.contains_key(o))
            {
                break;
            }
            notified.await;
        }
    })
    .await;
    let got = state
        .mailbox
        .shares
        .lock()
        .ok()
        .and_then(|mut m| m.remove(&mailbox_key))
        .unwrap_or_default();
    if received.is_err() {
        let missing: Vec<String> = others
            .iter()
            .filter(|o| !got.contains_key(*o))
            .map(|o| {
                state.metrics.peer_failure(o.as_str());
                o.to_string()
            })
            .collect();
        return Err(refuse(
            "party_timeout",
            format!(
                "no share from {} within the room's {} ms deadline",
                missing.join(", "),
                manifest.params.deadline_ms
            ),
        ));
    }
    let mut partial = own;
    for o in &others {
        if let Some(s) = got.get(o) {
            shares::add_into(&mut partial, s);
        }
    }
    Ok((partial, exchange.elapsed().as_secs_f64() * 1000.0))
}

/// A connection to participant `org` at `addr` whose certificate carries the key that signed
/// `org`'s attestation of the manifest `hash`: `(org, address, connection, whether it was kept)`.
async fn dial_verified(
    state: &NodeState,
    org: &OrgId,
    addr: Option<&str>,
    hash: &[u8; 32],
    attestations: &[Attestation],
) -> Result<(OrgId, std::net::SocketAddr, quinn::Connection, bool), ErrorBody> {
    let addr =
        addr.ok_or_else(|| refuse("party_unreachable", format!("no peer address for {org}")))?;
    let sock: std::net::SocketAddr = addr.parse().map_err(|_| {
        refuse(
            "party_unreachable",
            format!("bad peer address {addr} for {org}"),
        )
    })?;
    let (conn, cached) = peer_connection(state, org, sock, false).await?;
    let cert = peer_cert(&conn)
        .ok_or_else(|| refuse("bad_attestation", format!("no certificate from {org}")))?;
    let pk =
        room::public_key_from_cert(&cert).map_err(|e| refuse("bad_attestation", e.to_string()))?;
    let a = attestations.iter().find(|a| &a.org == org).ok_or_else(|| {
        refuse(
            "missing_attestation",
            format!("no attestation from {org} came with the execution request"),
        )
    })?;
    room::verify(org, &pk, hash, &a.signature)
        .map_err(|e| refuse("bad_attestation", e.to_string()))?;
    Ok((org.clone(), sock, conn, cached))
}

/// How long a kept peer connection is reused before it is dialled afresh (so a revoked
/// certificate stops being accepted within this time even on a busy connection).
const PEER_CONNECTION_MAX_AGE: Duration = Duration::from_secs(300);

/// Authenticated connections to other nodes, by organization, with the address dialled and
/// when.
#[derive(Default)]
pub struct PeerCache(
    std::sync::Mutex<HashMap<OrgId, (std::net::SocketAddr, Instant, quinn::Connection)>>,
);

/// A connection to `org` at `sock` whose certificate names `org`: a kept one when it is open,
/// recent and to the same address (unless `fresh`), else a new one, which is kept. Returns
/// whether it was kept.
async fn peer_connection(
    state: &NodeState,
    org: &OrgId,
    sock: std::net::SocketAddr,
    fresh: bool,
) -> Result<(quinn::Connection, bool), ErrorBody> {
    if !fresh
        && let Ok(m) = state.peers.0.lock()
        && let Some((addr, at, conn)) = m.get(org)
        && *addr == sock
        && at.elapsed() < PEER_CONNECTION_MAX_AGE
        && conn.close_reason().is_none()
    {
        return Ok((conn.clone(), true));
    }
    let conn = tokio::time::timeout(Duration::from_secs(10), async {
        state
            .endpoint
            .connect(sock, &org.dns_name())
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|_| {
        refuse(
            "party_unreachable",
            format!("party {org} did not answer at {sock}"),
        )
    })?
    .map_err(|e| {
        refuse(
            "party_unreachable",
            format!("party {org} unreachable at {sock}: {e}"),
        )
    })?;
    match peer_identity(&conn) {
        Ok(PeerIdentity::Org(o)) if &o == org => {}
        _ => {
            conn.close(wire::close::REFUSED.into(), b"not the organization dialled");
            return Err(refuse(
                "party_unreachable",
                format!("the endpoint at {sock} is not {org}"),
            ));
        }
    }
    if let Ok(mut m) = state.peers.0.lock() {
        m.insert(org.clone(), (sock, Instant::now(), conn.clone()));
    }
    Ok((conn, false))
}

/// Sends one share on its own stream and reads the peer's answer.
async fn send_share(
    conn: &quinn::Connection,
    req: &PeerRequest,
    max: usize,
) -> Result<PeerResponse, String> {
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    wire::write_msg(&mut send, req)
        .await
        .map_err(|e| e.to_string())?;
    send.finish().map_err(|e| e.to_string())?;
    wire::read_msg(&mut recv, max)
        .await
        .map_err(|e| e.to_string())
}

fn peer_cert(conn: &quinn::Connection) -> Option<Vec<u8>> {
    let certs = conn
        .peer_identity()?
        .downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
        .ok()?;
    certs.first().map(|c| c.to_vec())
}
