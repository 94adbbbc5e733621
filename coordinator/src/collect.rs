//! Answers a node charged that the coordinator did not record: collected, never lost.
//!
//! A node commits a DP charge together with a copy of its answer and holds the copy until the
//! coordinator acknowledges the run (node `store/held.rs`). Here the coordinator
//! - acknowledges each answer once its run is recorded `completed` ([`crate::dp::acknowledge`]);
//! - after a restart, asks each reconnecting node for the runs it left in flight
//!   ([`on_connected`]): a held answer completes its run, a run the node is still computing
//!   waits for the node's announcement, and a run the node holds nothing for fails
//!   `coordinator_restarted` (nothing was charged);
//! - on a node's announcement of held answers ([`on_held`]): completes the runs that failed
//!   only because the node or the coordinator went away (`COLLECTIBLE`), and acknowledges the
//!   runs already recorded.
//!
//! So the ε a node charged is the ε of the answers the coordinator delivered, apart from
//! answers still held for collection. A node only ever completes runs on its own datasets.

use std::collections::HashSet;
use std::sync::Arc;

use prism_common::identity::OrgId;
use prism_common::wire::{HeldResult, Request, Response};
use tracing::{info, warn};

use crate::CoordState;
use crate::model::{DatasetRecord, QueryRecord, RunFailure, RunRecord, RunStatus};
use crate::pacing::{CALL_TIMEOUT, retry_later};
use crate::store::{QUERIES, RUNS};

pub use crate::model::COLLECTIBLE;

/// Runs and rooms awaiting collection after a restart, and those being collected now.
#[derive(Default)]
pub struct Collections {
    awaiting: std::sync::Mutex<HashSet<String>>,
    rooms: std::sync::Mutex<HashSet<String>>,
    busy: std::sync::Mutex<HashSet<String>>,
    /// Claimed collections asked for again while they ran.
    again: std::sync::Mutex<HashSet<String>>,
}

impl Collections {
    /// Collections for the runs and rooms a restart left awaiting.
    pub fn new(awaiting: Vec<String>, rooms: Vec<String>) -> Self {
        Collections {
            awaiting: std::sync::Mutex::new(awaiting.into_iter().collect()),
            rooms: std::sync::Mutex::new(rooms.into_iter().collect()),
            busy: Default::default(),
            again: Default::default(),
        }
    }

    /// Asks the collection that holds `id` to run once more when it is done.
    pub(crate) fn again(&self, id: &str) {
        if let Ok(mut a) = self.again.lock() {
            a.insert(id.to_string());
        }
    }

    /// Whether the collection of `id` was asked for again (and clears the request).
    pub(crate) fn take_again(&self, id: &str) -> bool {
        self.again.lock().is_ok_and(|mut a| a.remove(id))
    }

    /// Rooms a restart left awaiting their parties' partial sums.
    pub(crate) fn awaiting_rooms(&self) -> Vec<String> {
        self.rooms
            .lock()
            .map(|a| a.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// A room no longer awaits collection.
    pub(crate) fn room_settled(&self, id: &str) {
        if let Ok(mut a) = self.rooms.lock() {
            a.remove(id);
        }
    }

    fn awaiting(&self) -> Vec<String> {
        self.awaiting
            .lock()
            .map(|a| a.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn is_awaiting(&self, id: &str) -> bool {
        self.awaiting.lock().is_ok_and(|a| a.contains(id))
    }

    fn settled(&self, id: &str) {
        if let Ok(mut a) = self.awaiting.lock() {
            a.remove(id);
        }
    }

    /// Claims `ids` for one collection; returns those no other collection holds.
    pub(crate) fn claim(&self, ids: Vec<String>) -> Vec<String> {
        match self.busy.lock() {
            Ok(mut b) => ids.into_iter().filter(|i| b.insert(i.clone())).collect(),
            Err(_) => Vec::new(),
        }
    }

    pub(crate) fn release(&self, ids: &[String]) {
        if let Ok(mut b) = self.busy.lock() {
            for i in ids {
                b.remove(i);
            }
        }
    }
}

/// The run, its query and dataset, when the dataset is `org`'s.
pub(crate) fn run_of(
    state: &CoordState,
    org: &OrgId,
    run_id: &str,
) -> Option<(RunRecord, QueryRecord, DatasetRecord)> {
    let run: RunRecord = state.store.get(RUNS, run_id).ok().flatten()?;
    let query: QueryRecord = state.store.get(QUERIES, &run.query_id).ok().flatten()?;
    let dataset = state.dataset(&query.dataset_id)?;
    (dataset.organization == *org).then_some((run, query, dataset))
}

/// A node connected: collect the runs a restart left awaiting on its datasets, and the rooms
/// it takes part in.
pub async fn on_connected(state: Arc<CoordState>, org: OrgId) {
    crate::mpc::collect::on_connected(&state, &org).await;
    let ids = state.collections.awaiting();
    if ids.is_empty() {
        return;
    }
    let s = state.clone();
    let o = org.clone();
    let mine = tokio::task::spawn_blocking(move || {
        ids.into_iter()
            .filter(|id| run_of(&s, &o, id).is_some())
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    collect(&state, &org, mine).await;
}

/// `org`'s node announced held answers.
pub async fn on_held(state: Arc<CoordState>, org: OrgId, run_ids: Vec<String>) {
    let s = state.clone();
    let o = org.clone();
    let (done, wanted, executions) = tokio::task::spawn_blocking(move || {
        let (mut done, mut wanted, mut executions) = (Vec::new(), Vec::new(), Vec::new());
        for id in run_ids {
            let Some((run, ..)) = run_of(&s, &o, &id) else {
                // Not a run of its datasets: perhaps a room execution's partial sum.
                executions.push(id);
                continue;
            };
            match run.status {
                RunStatus::Completed => done.push(id),
                RunStatus::Failed
                    if run
                        .error_code
                        .as_deref()
                        .is_some_and(|c| COLLECTIBLE.contains(&c)) =>
                {
                    wanted.push(id)
                }
                _ if s.collections.is_awaiting(&id) => wanted.push(id),
                // Still being answered on its own stream, or refused: nothing to do.
                _ => {}
            }
        }
        (done, wanted, executions)
    })
    .await
    .unwrap_or_default();
    crate::dp::acknowledge(&state, &org, done);
    collect(&state, &org, wanted).await;
    crate::mpc::collect::on_held(&state, &org, executions).await;
}

/// Asks `org`'s node for the answers of `run_ids` and ends each run with what it holds.
async fn collect(state: &Arc<CoordState>, org: &OrgId, run_ids: Vec<String>) {
    let run_ids = state.collections.claim(run_ids);
    if run_ids.is_empty() {
        return;
    }
    let req = Request::Collect {
        run_ids: run_ids.clone(),
    };
    let answer = state.nodes.call(org, &req, CALL_TIMEOUT).await;
    match answer {
        Ok(Response::Collected { held, answering }) => {
            let mut recorded = Vec::new();
            for h in held {
                let id = h.run_id.clone();
                if complete(state, org, h).await {
                    recorded.push(id);
                }
            }
            for id in &run_ids {
                if recorded.contains(id) || answering.contains(id) {
                    continue;
                }
                // Awaiting since a restart, and the node holds nothing: it never charged it.
                if state.collections.is_awaiting(id) {
                    fail_uncharged(state, org, id).await;
                }
            }
            info!(%org, collected = recorded.len(), answering = answering.len(), "collected held answers");
            crate::dp::acknowledge(state, org, recorded);
            // A run still being answered is announced when it is charged, but one the node
            // stops (it lost the coordinator that asked) is never charged: ask again until
            // the node holds its answer or no longer answers it.
            let again: Vec<String> = answering
                .into_iter()
                .filter(|id| state.collections.is_awaiting(id))
                .collect();
            if !again.is_empty() {
                collect_later(state.clone(), org.clone(), again);
            }
        }
        Ok(other) => warn!(%org, "unexpected answer to a collection: {other:?}"),
        Err(e) => {
            warn!(%org, error = %e, "could not collect held answers; retried when the node announces them")
        }
    }
    state.collections.release(&run_ids);
}

fn collect_later(state: Arc<CoordState>, org: OrgId, run_ids: Vec<String>) {
    let s = state.clone();
    retry_later(
        &state,
        Box::pin(async move { collect(&s, &org, run_ids).await }),
    );
}

/// Ends a run with its collected answer; returns whether it is recorded.
async fn complete(state: &Arc<CoordState>, org: &OrgId, h: prism_common::wire::HeldAnswer) -> bool {
    let (s, o, id) = (state.clone(), org.clone(), h.run_id.clone());
    let Ok(Some((mut run, query, dataset))) =
        tokio::task::spawn_blocking(move || run_of(&s, &o, &id)).await
    else {
        return false;
    };
    if run.status == RunStatus::Completed {
        return true;
    }
    let before = run
        .error_code
        .take()
        .unwrap_or_else(|| "coordinator_restarted".into());
    run.error_message = None;
    let outcome = match h.result {
        HeldResult::Execution(x) => Ok(crate::dp::released(state, &query, &dataset, x)),
        HeldResult::He(he) => {
            let read = crate::he::read_collected(state, &query, &dataset, &run.id, he).await;
            crate::he::forget_pending(state, &run.id);
            read
        }
        // A room's partial sum is never a run's answer (`crate::mpc::collect`).
        HeldResult::Mpc(_) => return false,
    };
    state.collections.settled(&run.id);
    let outcome = outcome.map(|mut released| {
        released.proof["collected"] = serde_json::json!({
            "after": before,
            "note": "this answer was charged by the node before the coordinator could record it; \
                     the node held it until the coordinator collected it",
        });
        released
    });
    // Recorded either way: a held answer that cannot be read is not collected twice.
    crate::runs::finish(state, run, outcome).await
}

async fn fail_uncharged(state: &Arc<CoordState>, org: &OrgId, run_id: &str) {
    let (s, o, id) = (state.clone(), org.clone(), run_id.to_string());
    let Ok(Some((mut run, ..))) = tokio::task::spawn_blocking(move || run_of(&s, &o, &id)).await
    else {
        return;
    };
    state.collections.settled(run_id);
    if run.backend_used == prism_common::backend::BackendId::HeBackend {
        crate::he::forget_pending(state, run_id);
    }
    run.proof_artifacts = serde_json::json!({});
    let why = RunFailure::new(
        "coordinator_restarted",
        format!(
            "the coordinator stopped while this run was in flight; the node of {org} holds no answer for it, \
             so nothing was charged; execute the query again"
        ),
    );
    crate::runs::finish(state, run, Err(why)).await;
}
