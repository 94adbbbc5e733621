//! Data rooms' lifecycle: every room transition is persisted here (the rules themselves are
//! [`crate::model::room`]), invitations are delivered, node events about rooms are applied,
//! and executions are run through [`crate::mpc`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use prism_common::identity::OrgId;
use prism_common::metrics;
use prism_common::room;
use prism_common::wire::{Attestation, MpcRequest, MpcResponse, Request, Response};
use tracing::{info, warn};

use crate::CoordState;
use crate::model::{ParticipantStatus, Room, RoomStatus, now};
use crate::store::{Audit, ROOMS, StoreError};

/// Loads a room.
pub fn load(state: &CoordState, id: &str) -> Result<Option<Room>, StoreError> {
    state.store.get(ROOMS, id)
}

fn save(
    state: &CoordState,
    room: &Room,
    actor: &str,
    action: &str,
    details: serde_json::Value,
) -> Result<(), StoreError> {
    state.store.put(
        ROOMS,
        &room.id,
        room,
        Some(Audit {
            actor,
            action,
            target: &room.id,
            details,
        }),
    )
}

/// Rooms are updated by node events and executions concurrently: serialise read-modify-write.
fn update<T>(
    state: &CoordState,
    id: &str,
    f: impl FnOnce(&mut Room) -> Option<(T, &'static str, serde_json::Value)>,
) -> Result<Option<(Room, T)>, StoreError> {
    let _guard = state.rooms_lock.lock().unwrap_or_else(|e| e.into_inner());
    let Some(mut room) = load(state, id)? else {
        return Ok(None);
    };
    let Some((out, action, details)) = f(&mut room) else {
        return Ok(None);
    };
    save(state, &room, "system", action, details)?;
    Ok(Some((room, out)))
}

/// Sends invitations to every participant whose node is connected and has not got one yet.
pub async fn deliver_invitations(state: &Arc<CoordState>, room_id: &str) {
    let Ok(Some(room)) = load(state, room_id) else {
        return;
    };
    if !matches!(room.status, RoomStatus::Pending | RoomStatus::Ready) {
        return;
    }
    let requester = crate::requester::of_room(state, &room);
    for p in room.participants.iter().filter(|p| !p.invitation_delivered) {
        let req = Request::Mpc(MpcRequest::Invite {
            manifest: room.manifest.clone(),
            requester: Some(requester.clone()),
        });
        match state
            .nodes
            .call(&p.organization, &req, Duration::from_secs(10))
            .await
        {
            Ok(Response::Mpc(MpcResponse::Invited { status })) => {
                let org = p.organization.clone();
                let _ = update(state, room_id, |r| {
                    let q = r.participants.iter_mut().find(|q| q.organization == org)?;
                    q.invitation_delivered = true;
                    Some((
                        (),
                        "room_invitation_delivered",
                        serde_json::json!({"organization": org, "status": status}),
                    ))
                });
            }
            Ok(Response::Refused(e)) => {
                warn!(room_id, org = %p.organization, code = %e.code, "invitation refused: {}", e.message)
            }
            Ok(other) => {
                warn!(room_id, org = %p.organization, "unexpected answer to an invitation: {other:?}")
            }
            Err(e) => info!(room_id, org = %p.organization, "invitation not delivered yet: {e}"),
        }
    }
}

/// Delivers pending invitations to a node that just connected.
pub async fn on_node_connected(state: Arc<CoordState>, org: OrgId) {
    let rooms: Vec<Room> = state.store.list(ROOMS).unwrap_or_default();
    for r in rooms.into_iter().filter(|r| {
        matches!(r.status, RoomStatus::Pending | RoomStatus::Ready)
            && r.participants
                .iter()
                .any(|p| p.organization == org && !p.invitation_delivered)
    }) {
        deliver_invitations(&state, &r.id).await;
    }
}

/// Records an attestation from `org`, verified with the key of the certificate it connected
/// with. Returns the room when this attestation made it `ready`.
pub fn on_attested(
    state: &CoordState,
    org: &OrgId,
    cert_public_key: Option<[u8; 32]>,
    a: Attestation,
) -> Option<Room> {
    let Ok(Some(room)) = load(state, &a.room_id) else {
        warn!(room_id = %a.room_id, %org, "attestation for an unknown room");
        return None;
    };
    if a.org != *org || a.manifest_hash != room.manifest_hash {
        let _ = state.store.audit(Audit {
            actor: org.as_str(),
            action: "attestation_rejected",
            target: &a.room_id,
            details: serde_json::json!({"reason": "the attestation is for another organization or manifest", "manifest_hash": a.manifest_hash}),
        });
        return None;
    }
    let verified = cert_public_key
        .ok_or_else(|| "no certificate key".to_string())
        .and_then(|pk| {
            room::verify(org, &pk, &room.manifest.hash(), &a.signature)
                .map(|_| pk)
                .map_err(|e| e.to_string())
        });
    let pk = match verified {
        Ok(pk) => pk,
        Err(why) => {
            let _ = state.store.audit(Audit {
                actor: org.as_str(),
                action: "attestation_rejected",
                target: &a.room_id,
                details: serde_json::json!({"reason": why}),
            });
            return None;
        }
    };
    let became_ready = update(state, &a.room_id, |r| {
        let ready = r.attest(org, &a.signature, hex::encode(pk), now())?;
        Some((
            ready,
            "room_attested",
            serde_json::json!({"organization": org, "signature": a.signature}),
        ))
    });
    match became_ready {
        Ok(Some((room, true))) if room.status == RoomStatus::Ready => Some(room),
        _ => None,
    }
}

/// Records a decline or a withdrawal. A decline ends the room (`declined`, terminal): the room
/// is returned so the caller can end what waits for it (`crate::runs::room_settled`).
pub fn on_declined(
    state: &CoordState,
    org: &OrgId,
    room_id: &str,
    status: ParticipantStatus,
    reason: Option<String>,
) -> Option<Room> {
    let updated = update(state, room_id, |r| {
        if !r.decline(org, status, reason.clone()) {
            return None;
        }
        let action = if status == ParticipantStatus::Declined {
            "room_declined"
        } else {
            "room_withdrawn"
        };
        Some((
            (),
            action,
            serde_json::json!({"organization": org, "reason": reason}),
        ))
    });
    match updated {
        Ok(Some((room, ()))) if room.status == RoomStatus::Declined => Some(room),
        _ => None,
    }
}

/// Why a room cannot execute now.
#[derive(Debug)]
pub enum ExecuteError {
    /// No such room.
    Unknown,
    /// Not ready: the state and who has not attested.
    NotReady(RoomStatus, Vec<OrgId>),
    /// Store failure.
    Store(StoreError),
}

/// Moves a ready (or failed) room to `executing`; [`execute`] then runs it (see
/// `crate::runs::execute_room`, which starts both).
pub fn start_execution(
    state: &CoordState,
    room_id: &str,
    actor: &str,
) -> Result<Room, ExecuteError> {
    let _guard = state.rooms_lock.lock().unwrap_or_else(|e| e.into_inner());
    let mut room = load(state, room_id)
        .map_err(ExecuteError::Store)?
        .ok_or(ExecuteError::Unknown)?;
    room.begin_execution(now())
        .map_err(|(status, waiting)| ExecuteError::NotReady(status, waiting))?;
    save(state, &room, actor, "room_executing", serde_json::json!({}))
        .map_err(ExecuteError::Store)?;
    Ok(room)
}

/// Runs an executing room's parties and records the outcome; returns the finished room.
pub async fn execute(state: &Arc<CoordState>, room_id: &str) -> Option<Room> {
    let started = Instant::now();
    let room = load(state, room_id).ok().flatten()?;
    let outcome = crate::mpc::execute::run_parties(state, &room).await;
    state.metrics.room_executed(
        if outcome.is_ok() {
            metrics::Outcome::Completed
        } else {
            metrics::Outcome::Failed
        },
        started.elapsed().as_secs_f64(),
    );
    let elapsed = started.elapsed().as_secs_f64() * 1000.0;
    let (s, id) = (state.clone(), room_id.to_string());
    let finished = tokio::task::spawn_blocking(move || {
        update(&s, &id, |r| {
            let action = r.finish(&outcome, elapsed);
            Some((
                (),
                action,
                serde_json::json!({"error": r.error_message, "execution_time_ms": elapsed}),
            ))
        })
    })
    .await;
    match finished {
        Ok(Ok(Some((room, ())))) => {
            acknowledge_partials(state, &room);
            Some(room)
        }
        _ => None,
    }
}

/// A completed `dp` room: every party may forget the partial sum it held for the execution.
pub fn acknowledge_partials(state: &Arc<CoordState>, room: &Room) {
    if room.status == RoomStatus::Completed
        && room.manifest.params.release == prism_common::release::ReleaseMode::Dp
    {
        acknowledge_execution(state, room);
    }
}

/// Every party of `room` may forget what it holds for the room's latest execution.
pub fn acknowledge_execution(state: &Arc<CoordState>, room: &Room) {
    if let Some(eid) = &room.execution_id {
        for org in &room.manifest.participants {
            crate::dp::acknowledge(state, org, vec![eid.clone()]);
        }
    }
}

/// Ends a room with the outcome of collecting its parties' held partial sums of
/// `execution_id`, if it may still be collected ([`Room::collectible`]); returns the room.
pub fn finish_collected(
    state: &CoordState,
    room_id: &str,
    execution_id: &str,
    outcome: crate::model::RoomOutcome,
) -> Result<Option<Room>, StoreError> {
    Ok(update(state, room_id, |r| {
        if !r.collectible(execution_id) {
            return None;
        }
        let after = r
            .error_code
            .clone()
            .unwrap_or_else(|| "coordinator_restarted".into());
        let outcome = outcome.map(|(table, mut proof)| {
            proof["collected"] = serde_json::json!({
                "after": after,
                "note": "every party charged its partial sum before the coordinator could combine them; \
                         each node held its partial sum until the coordinator collected it",
            });
            (table, proof)
        });
        let elapsed = r.execution_time_ms.unwrap_or(0.0);
        let action = r.finish(&outcome, elapsed);
        Some((
            (),
            action,
            serde_json::json!({"execution_id": execution_id, "collected_after": after,
                               "error": r.error_message}),
        ))
    })?
    .map(|(r, ())| r))
}

/// Cancels a room that has not executed.
pub fn cancel(state: &CoordState, room_id: &str, actor: &str) -> Result<Option<Room>, StoreError> {
    Ok(update(state, room_id, |r| {
        r.cancel(actor)
            .then(|| ((), "room_cancelled", serde_json::json!({"by": actor})))
    })?
    .map(|(r, _)| r))
}

/// Saves a new room and sends its invitations.
pub fn open(state: &Arc<CoordState>, room: &Room, actor: &str) -> Result<(), StoreError> {
    save(
        state,
        room,
        actor,
        "room_created",
        serde_json::json!({"name": room.name, "participants": room.manifest.participants, "manifest_hash": room.manifest_hash}),
    )?;
    let (s, id) = (state.clone(), room.id.clone());
    state
        .tasks
        .spawn(async move { deliver_invitations(&s, &id).await });
    Ok(())
}
