//! One execution of an attested room: re-check everything, compute this party's (noised)
//! vector, split it into additive shares, send one to each verified peer, wait for theirs,
//! and answer the coordinator with the partial sum only.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prism_common::identity::OrgId;
use prism_common::refusal::RefusalCode;
use prism_common::room::Manifest;
use prism_common::wire::{
    Attestation, ErrorBody, MpcResponse, PeerAddr, PeerRequest, PeerResponse,
};
use prism_common::{mpc, shares};
use tracing::info;

use super::invitations::{admissible, load};
use super::peers::{dial_verified, peer_connection, send_share};
use crate::NodeState;
use crate::policy::refuse;
use crate::store::InvitationStatus;

/// Shares received per room, from which organization.
#[derive(Default)]
pub struct Mailbox {
    shares: std::sync::Mutex<HashMap<String, HashMap<OrgId, Vec<u64>>>>,
    /// Per execution, why a participant's share was refused: this party cannot complete it, so
    /// its own exchange fails at once with the reason instead of waiting out the deadline.
    refused: std::sync::Mutex<HashMap<String, String>>,
    arrived: tokio::sync::Notify,
}

impl Mailbox {
    fn refuse(&self, key: String, why: String) {
        if let Ok(mut r) = self.refused.lock() {
            // Bounded: one entry per execution, removed when it ends; a stale one is harmless.
            if r.len() < 4096 {
                r.entry(key).or_insert(why);
            }
        }
        self.arrived.notify_waiters();
    }
}

/// A refusal caused by another party; counted per peer on `/metrics`.
fn peer_failed(state: &NodeState, org: &OrgId, code: &str, message: String) -> ErrorBody {
    state.metrics.peer_failure(org.as_str());
    refuse(code, message)
}

fn internal(e: impl std::fmt::Display) -> ErrorBody {
    refuse("node_store_error", e.to_string())
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
    let key = format!("{room_id}/{execution_id}");
    if inv.status != InvitationStatus::Attested || inv.manifest_hash != manifest_hash {
        let why = format!(
            "{} has not attested manifest {manifest_hash} of room {room_id}",
            state.org
        );
        state
            .mailbox
            .refuse(key, format!("the share of {from} was refused: {why}"));
        return PeerResponse::Refused(refuse("manifest_mismatch", why));
    }
    let expected = state
        .schema(&inv.manifest.plan.dataset)
        .and_then(|s| mpc::layout(&inv.manifest.plan, &s, &inv.manifest.params).ok())
        .map(|l| l.len());
    if expected != Some(share.len()) {
        let why = format!(
            "share of {} elements does not fit room {room_id}",
            share.len()
        );
        state
            .mailbox
            .refuse(key, format!("the share of {from} was refused: {why}"));
        return PeerResponse::Refused(refuse("bad_share", why));
    }
    if let Ok(mut m) = state.mailbox.shares.lock() {
        m.entry(key).or_default().insert(from.clone(), share);
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
    abort: &tokio_util::sync::CancellationToken,
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

    // A dp room's partial sum is held once charged: until then a collection hears that this
    // execution is still being answered.
    let _answering = (manifest.params.release == prism_common::release::ReleaseMode::Dp)
        .then(|| crate::dp::Answering::start(state, execution_id));
    let started = Instant::now();
    let name = &manifest.plan.dataset;
    let ds = state
        .dataset(name)
        .map(crate::policy::Admitted::Memory)
        .or_else(|| state.remote(name).map(crate::policy::Admitted::Remote))
        .ok_or_else(|| refuse("unknown_dataset", "dataset vanished"))?;
    // In a dp room this reserves the ε (before any share leaves) and adds this party's noise;
    // a database source computes its exact vector by pushdown.
    let (s, m, eid) = (state.clone(), manifest.clone(), execution_id.to_string());
    let (local, charge) =
        tokio::task::spawn_blocking(move || super::release::local_vector(&s, &m, &ds, &eid))
            .await
            .map_err(internal)??;
    let compute_ms = started.elapsed().as_secs_f64() * 1000.0;
    // Abandoning the exchange is safe: nothing in it touches the ledger, and the reservation is
    // released below like any failed exchange's.
    let exchanged = tokio::select! {
        r = exchange(state, &manifest, &attestations, &peers, execution_id, local) => r,
        _ = abort.cancelled() => {
            if let Ok(mut m) = state.mailbox.shares.lock() {
                m.remove(&format!("{room_id}/{execution_id}"));
            }
            Err(refuse(
                "room_aborted",
                format!(
                    "the coordinator ended this execution of room {room_id} (another party failed, \
                     or it stopped); no share was combined and nothing was charged"
                ),
            ))
        }
    };
    let (s, m, eid) = (state.clone(), manifest.clone(), execution_id.to_string());
    let answer = exchanged.as_ref().ok().cloned();
    let settled = tokio::task::spawn_blocking(move || match (exchanged, charge) {
        // From here on a release is possible: the charge is committed, with the partial sum it
        // pays for, before the partial sum leaves, and the partial sum is not sent if it cannot be.
        (Ok((partial, exchange_ms)), Some(c)) => {
            let held = prism_common::wire::HeldAnswer::mpc(
                eid,
                prism_common::wire::HeldPartial {
                    room_id: m.room_id.clone(),
                    partial,
                    compute_ms,
                    exchange_ms,
                    noise: c.report.clone(),
                },
            );
            super::release::commit(&s, &c, &m, held).map(|()| Some(c))
        }
        (Err(e), Some(c)) => {
            super::release::rollback(&s, &c, &m, &e.message);
            Err(e)
        }
        (Err(e), None) => Err(e),
        (Ok(_), None) => Ok(None),
    })
    .await
    .map_err(internal)?;
    let charge = settled?;
    let (partial, exchange_ms) = answer.ok_or_else(|| internal("the exchange vanished"))?;
    #[cfg(feature = "test-util")]
    if charge.is_some() {
        state.seams.stall_after_charge(&state.shutdown).await;
    }
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

    #[cfg(feature = "test-util")]
    if state.seams.fault() == Some(crate::testing::Fault::StallBeforeShares) {
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
                && e.refusal() == RefusalCode::PartyUnreachable
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
    #[cfg(feature = "test-util")]
    if state.seams.fault() == Some(crate::testing::Fault::ShortShares) {
        for s in &mut split {
            s.pop();
        }
    }
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
    // The shares go out while this party waits for the others': the exchange is done when every
    // other party's share is here and every peer has accepted this party's. The acceptance costs
    // half a round trip more than the shares alone, and it is what keeps a party from charging
    // its ε for a room that cannot complete because a peer refused its share. A peer that
    // refuses a share fails its own exchange at once, naming the reason.
    let mut sends: futures::stream::FuturesUnordered<_> = sends.collect();
    let waited = tokio::time::timeout(deadline, async {
        loop {
            let notified = state.mailbox.arrived.notified();
            if let Some(why) = state
                .mailbox
                .refused
                .lock()
                .ok()
                .and_then(|mut r| r.remove(&mailbox_key))
            {
                return Err(refuse("share_refused", why));
            }
            if let Ok(m) = state.mailbox.shares.lock()
                && let Some(got) = m.get(&mailbox_key)
                && others.iter().all(|o| got.contains_key(o))
                && sends.is_empty()
            {
                return Ok(());
            }
            tokio::select! {
                _ = notified => {}
                Some((org, r)) = futures::StreamExt::next(&mut sends) => match r {
                    Ok(PeerResponse::ShareAccepted) => {}
                    Ok(PeerResponse::Refused(e)) => {
                        return Err(refuse(
                            "share_refused",
                            format!("{org} refused the share: {}", e.message),
                        ));
                    }
                    Ok(other) => {
                        return Err(refuse("share_refused", format!("{org} answered {other:?}")));
                    }
                    Err(e) => {
                        return Err(peer_failed(
                            state,
                            &org,
                            RefusalCode::PartyUnreachable.as_str(),
                            format!("party {org} dropped during the share exchange: {e}"),
                        ));
                    }
                },
            }
        }
    })
    .await;
    // After a failure, acknowledgements still on their way finish on their own.
    if !sends.is_empty() {
        tokio::spawn(async move { while futures::StreamExt::next(&mut sends).await.is_some() {} });
    }
    let got = state
        .mailbox
        .shares
        .lock()
        .ok()
        .and_then(|mut m| m.remove(&mailbox_key))
        .unwrap_or_default();
    if let Ok(mut r) = state.mailbox.refused.lock() {
        r.remove(&mailbox_key);
    }
    if let Ok(Err(e)) = waited {
        return Err(e);
    }
    if waited.is_err() {
        let missing: Vec<String> = others
            .iter()
            .filter(|o| !got.contains_key(*o))
            .map(|o| {
                state.metrics.peer_failure(o.as_str());
                o.to_string()
            })
            .collect();
        return Err(refuse(
            RefusalCode::PartyTimeout.as_str(),
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
