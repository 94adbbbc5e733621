//! What nodes tell the coordinator on their control streams, applied in arrival order: catalog
//! publications, attestations, declines and withdrawals, and a node's arrival (its pending
//! invitations go out). [`crate::nodes`] only forwards them here.

use std::sync::Arc;

use prism_common::wire::NodeEvent;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::CoordState;
use crate::model::ParticipantStatus;
use crate::nodes::{Inbound, LinkEvent};

/// Most runs whose progress is kept at once.
pub const MAX_PROGRESS: usize = 1024;

/// How many node events may wait to be applied before the nodes' control streams wait.
pub const QUEUE: usize = 1024;

/// Applies node events until `shutdown` (or every sender is gone).
pub async fn run(
    state: Arc<CoordState>,
    mut events: mpsc::Receiver<Inbound>,
    shutdown: CancellationToken,
) {
    loop {
        let ev = tokio::select! {
            _ = shutdown.cancelled() => break,
            ev = events.recv() => match ev { Some(ev) => ev, None => break },
        };
        apply(&state, ev).await;
    }
}

async fn apply(state: &Arc<CoordState>, ev: Inbound) {
    let Inbound {
        org,
        cert_key,
        event,
    } = ev;
    let s = state.clone();
    match event {
        LinkEvent::Connected => {
            let (s, o) = (state.clone(), org.clone());
            state
                .tasks
                .spawn(async move { crate::collect::on_connected(s, o).await });
            let (s, o) = (state.clone(), org.clone());
            state
                .tasks
                .spawn(async move { crate::he::warm::on_connected(s, o).await });
            let s = state.clone();
            state
                .tasks
                .spawn(async move { crate::rooms::on_node_connected(s, org).await });
        }
        LinkEvent::Node(NodeEvent::Progress(p)) => {
            // Only the node holding the run's dataset reports on it: checked against the store
            // at a run's first report, then by the organization kept with the report.
            let known = s
                .progress
                .lock()
                .ok()
                .and_then(|m| m.get(&p.run_id).map(|(o, _)| *o == org));
            let holder = match known {
                Some(same) => same,
                None => {
                    let (s, o, id) = (s.clone(), org.clone(), p.run_id.clone());
                    tokio::task::spawn_blocking(move || {
                        crate::collect::run_of(&s, &o, &id)
                            .is_some_and(|(r, ..)| !r.status.is_final())
                    })
                    .await
                    .unwrap_or(false)
                }
            };
            if holder
                && let Ok(mut m) = s.progress.lock()
                && (m.len() < MAX_PROGRESS || m.contains_key(&p.run_id))
            {
                m.insert(p.run_id.clone(), (org, p));
            }
        }
        LinkEvent::Node(NodeEvent::Held { run_ids }) => {
            state
                .tasks
                .spawn(async move { crate::collect::on_held(s, org, run_ids).await });
        }
        LinkEvent::Node(NodeEvent::Catalog { datasets }) => {
            let o = org.clone();
            match tokio::task::spawn_blocking(move || s.store.replace_catalog(&o, &datasets)).await
            {
                Ok(Ok(recs)) => info!(%org, datasets = recs.len(), "catalog updated"),
                Ok(Err(e)) => warn!(%org, error = %e, "catalog update failed"),
                Err(e) => warn!(%org, error = %e, "catalog update failed"),
            }
        }
        LinkEvent::Node(NodeEvent::Attested(a)) => {
            let ready = tokio::task::spawn_blocking(move || {
                crate::rooms::on_attested(&s, &org, cert_key, a)
            })
            .await
            .ok()
            .flatten();
            // A room opened by an `mpc_backend` query runs as soon as everyone attested.
            if let Some(room) = ready
                && room.origin_run.is_some()
            {
                let _ = crate::runs::execute_room(state, &room.id, "system");
            }
        }
        LinkEvent::Node(NodeEvent::Declined { room_id, reason }) => {
            let declined = tokio::task::spawn_blocking(move || {
                crate::rooms::on_declined(
                    &s,
                    &org,
                    &room_id,
                    ParticipantStatus::Declined,
                    Some(reason),
                )
            })
            .await
            .ok()
            .flatten();
            if let Some(room) = declined {
                crate::runs::room_settled(state, &room).await;
            }
        }
        LinkEvent::Node(NodeEvent::Withdrawn { room_id }) => {
            let _ = tokio::task::spawn_blocking(move || {
                crate::rooms::on_declined(&s, &org, &room_id, ParticipantStatus::Withdrawn, None)
            })
            .await;
        }
    }
}
