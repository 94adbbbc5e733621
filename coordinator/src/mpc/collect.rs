//! Partial sums the parties of a `dp` room charged that the coordinator never combined: collected,
//! never lost.
//!
//! Each party commits its ε together with its partial sum before the partial sum leaves, and
//! holds it under the execution's id until the coordinator acknowledges it (node
//! `mpc/release.rs`). When the coordinator stops, or a party's connection goes, between those
//! commits and the total, the room's latest execution may still be completed
//! ([`Room::collectible`]): the coordinator asks every party for its held partial sum
//! ([`collect_room`]) when a party reconnects ([`on_connected`], for the rooms a restart left
//! awaiting) or announces what it holds ([`on_held`]). With every party's partial sum the total
//! is decoded exactly as a live execution decodes it, the room completes, and every party is
//! acknowledged. A party that holds nothing for the execution never charged it: the room then
//! ends failed, naming who did charge.
//!
//! A partial sum alone is one uniformly random share per other party plus the party's own: what
//! the coordinator collects is exactly what the live execution would have received.

use std::sync::Arc;

use prism_common::identity::OrgId;
use prism_common::mpc;
use prism_common::wire::{HeldResult, Request, Response};
use tracing::{info, warn};

use super::execute::{PartyAnswer, release, schema};
use crate::CoordState;
use crate::model::{Room, RoomStatus};
use crate::pacing::{CALL_TIMEOUT, retry_later};
use crate::store::{ROOMS, RUNS};

/// `org`'s node connected: collect the rooms a restart left awaiting that it takes part in.
pub async fn on_connected(state: &Arc<CoordState>, org: &OrgId) {
    let ids = state.collections.awaiting_rooms();
    if ids.is_empty() {
        return;
    }
    let s = state.clone();
    let o = org.clone();
    let mine = tokio::task::spawn_blocking(move || {
        ids.into_iter()
            .filter(|id| match crate::rooms::load(&s, id) {
                Ok(Some(r)) if r.awaiting_collection() => r.manifest.participants.contains(&o),
                // Executed again, or ended: no longer awaiting.
                _ => {
                    s.collections.room_settled(id);
                    false
                }
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    for id in mine {
        collect_room(state, &id).await;
    }
}

/// `org`'s node announced held answers that are no run of its datasets: the partial sums of
/// room executions. Collects the rooms they may still complete, and acknowledges those of rooms
/// already completed with them (an acknowledgement that was lost) and those of executions no
/// room can complete any more (superseded by a later execution).
pub async fn on_held(state: &Arc<CoordState>, org: &OrgId, execution_ids: Vec<String>) {
    if execution_ids.is_empty() {
        return;
    }
    let s = state.clone();
    let o = org.clone();
    let (done, wanted) = tokio::task::spawn_blocking(move || {
        let rooms: Vec<Room> = s.store.list(ROOMS).unwrap_or_default();
        let (mut done, mut wanted) = (Vec::new(), Vec::new());
        for id in execution_ids {
            let Some(room) = rooms.iter().find(|r| {
                r.execution_id.as_deref() == Some(id.as_str())
                    && r.manifest.participants.contains(&o)
            }) else {
                // No run, and no room's latest execution (one executed again since): it can
                // never be combined, so the party may forget it (its ε was spent either way).
                if matches!(s.store.get(RUNS, &id), Ok(None)) {
                    done.push(id);
                }
                continue;
            };
            if room.status == RoomStatus::Completed {
                done.push(id);
            } else if room.collectible(&id) {
                wanted.push(room.id.clone());
            }
        }
        (done, wanted)
    })
    .await
    .unwrap_or_default();
    crate::dp::acknowledge(state, org, done);
    for id in wanted {
        collect_room(state, &id).await;
    }
}

fn collect_room_later(state: Arc<CoordState>, room_id: String) {
    let s = state.clone();
    retry_later(
        &state,
        Box::pin(async move { collect_room(&s, &room_id).await }),
    );
}

/// What one party answered to a collection.
enum Collected {
    Held(PartyAnswer),
    Answering,
    Nothing,
    Unreachable(String),
}

/// Asks every party of room `room_id` for its held partial sum of the room's latest execution
/// and ends the room with what they hold, if it may still be collected.
pub async fn collect_room(state: &Arc<CoordState>, room_id: &str) {
    let key = format!("room/{room_id}");
    if state.collections.claim(vec![key.clone()]).is_empty() {
        // Another collection is asking the parties now, perhaps before this party was back:
        // it asks again when it is done.
        state.collections.again(&key);
        return;
    }
    loop {
        collect_claimed(state, room_id).await;
        if !state.collections.take_again(&key) {
            break;
        }
    }
    state.collections.release(&[key]);
}

async fn collect_claimed(state: &Arc<CoordState>, room_id: &str) {
    let Ok(Some(room)) = crate::rooms::load(state, room_id) else {
        return;
    };
    let Some(eid) = room.execution_id.clone().filter(|e| room.collectible(e)) else {
        state.collections.room_settled(room_id);
        return;
    };
    let calls = room.manifest.participants.iter().map(|org| {
        let req = Request::Collect {
            run_ids: vec![eid.clone()],
        };
        let (state, org, eid, rid) = (state.clone(), org.clone(), eid.clone(), room.id.clone());
        async move {
            let got = match state.nodes.call(&org, &req, CALL_TIMEOUT).await {
                Ok(Response::Collected { held, answering }) => {
                    match held.into_iter().find(|h| h.run_id == eid).map(|h| h.result) {
                        Some(HeldResult::Mpc(p)) if p.room_id == rid => {
                            Collected::Held(PartyAnswer {
                                org: org.clone(),
                                partial: p.partial,
                                compute_ms: p.compute_ms,
                                exchange_ms: p.exchange_ms,
                                noise: Some(p.noise),
                            })
                        }
                        Some(_) => Collected::Nothing,
                        None if answering.contains(&eid) => Collected::Answering,
                        None => Collected::Nothing,
                    }
                }
                Ok(other) => Collected::Unreachable(format!("unexpected answer {other:?}")),
                Err(e) => Collected::Unreachable(e.to_string()),
            };
            (org, got)
        }
    });
    let got = futures::future::join_all(calls).await;
    let (mut answers, mut answering, mut nothing, mut unreachable) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (org, c) in got {
        match c {
            Collected::Held(a) => answers.push(a),
            Collected::Answering => answering.push(org),
            Collected::Nothing => nothing.push(org),
            Collected::Unreachable(why) => unreachable.push(format!("{org} ({why})")),
        }
    }
    let charged: Vec<String> = answers.iter().map(|a| a.org.to_string()).collect();
    let outcome = if !nothing.is_empty() {
        // The total can never be formed: say who charged, and let them forget what they hold.
        let missing: Vec<String> = nothing.iter().map(OrgId::to_string).collect();
        Err((
            room.error_code
                .clone()
                .unwrap_or_else(|| "coordinator_restarted".into()),
            format!(
                "the execution was interrupted before the coordinator combined the partial sums; {} \
                 holds no partial sum for it (it never charged it){}; no result was released; \
                 execute the room again",
                missing.join(", "),
                if charged.is_empty() {
                    String::new()
                } else {
                    format!(", while {} charged theirs", charged.join(", "))
                }
            ),
        ))
    } else if !answering.is_empty() {
        // Still computing or exchanging: ask again shortly.
        collect_room_later(state.clone(), room_id.to_string());
        return;
    } else if !unreachable.is_empty() {
        // Asked again when it reconnects or announces what it holds.
        info!(room_id, waiting_for = ?unreachable, "room partial sums not all collected yet");
        return;
    } else {
        schema(state, &room)
            .ok_or_else(|| {
                (
                    "unknown_dataset".to_string(),
                    "the room's dataset is no longer in the catalog".to_string(),
                )
            })
            .and_then(|schema| {
                let layout = mpc::layout(&room.manifest.plan, &schema, &room.manifest.params)
                    .map_err(|e| (e.code().to_string(), e.to_string()))?;
                release(state, &room, &schema, &layout, &answers)
            })
    };
    let (s, id, e) = (state.clone(), room_id.to_string(), eid.clone());
    let finished =
        tokio::task::spawn_blocking(move || crate::rooms::finish_collected(&s, &id, &e, outcome))
            .await;
    state.collections.room_settled(room_id);
    match finished {
        Ok(Ok(Some(room))) => {
            info!(room_id, status = ?room.status, collected = charged.len(), "room collected");
            // Recorded either way: what the parties hold is never combined twice.
            crate::rooms::acknowledge_execution(state, &room);
            crate::runs::room_collected(state, &room).await;
        }
        Ok(Ok(None)) => {}
        Ok(Err(e)) => warn!(room_id, error = %e, "could not record a collected room"),
        Err(e) => warn!(room_id, error = %e, "could not record a collected room"),
    }
}
