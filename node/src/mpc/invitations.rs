//! The owner's side of a room: an invitation arrives, is checked against this node's policy,
//! and is attested (signed), declined or withdrawn; each decision is stored with its audit
//! entry and told to the coordinator.

use prism_common::backend::BackendId;
use prism_common::release::ReleaseMode;
use prism_common::room::{self, Manifest};
use prism_common::wire::{Attestation, ErrorBody, MpcResponse, NodeEvent};

use prism_common::clock::now;

use crate::NodeState;
use crate::policy::{refuse, store_refusal};
use crate::store::{Invitation, InvitationStatus, Superseded};

/// Loads an invitation.
pub fn load(state: &NodeState, room_id: &str) -> Result<Option<Invitation>, ErrorBody> {
    state.store.invitation(room_id).map_err(store_refusal)
}

/// Every invitation, newest first.
pub fn list(state: &NodeState) -> Result<Vec<Invitation>, ErrorBody> {
    state.store.invitations().map_err(store_refusal)
}

fn save(state: &NodeState, inv: &Invitation, action: &str, actor: &str) -> Result<(), ErrorBody> {
    state
        .store
        .put_invitation(inv, action, actor)
        .map_err(store_refusal)
}

/// Checks a manifest against this node's policy and catalog.
pub(crate) fn admissible(state: &NodeState, m: &Manifest) -> Result<(), ErrorBody> {
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
    // A database source takes part by pushdown (`super::release::local_vector`).
    let ds = crate::policy::admit_dp(state, m.backend, &m.plan.dataset, &m.plan)?;
    let l = prism_common::mpc::layout(&m.plan, ds.schema(), &m.params)
        .map_err(|e| refuse(e.code(), e.to_string()))?;
    super::release::check(state, m, &ds, &l)
}

/// Stores an invitation; attests at once when the policy says so.
pub fn invite(
    state: &NodeState,
    manifest: Manifest,
    requester: Option<prism_common::wire::Requester>,
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
