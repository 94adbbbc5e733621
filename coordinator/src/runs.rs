//! Runs: the one place a run changes state.
//!
//! `pending` is committed before the API answers; the run then goes `running` when it is sent
//! to its backend (`crate::dp`, `crate::he`, or a data room for `mpc_backend`), and ends
//! `completed` or `failed` with the backend's outcome. Backends return outcomes and never
//! write a run. A run left unfinished by a stopped coordinator is failed at the next start
//! (`crate::store::recovery`).

use std::sync::Arc;
use std::time::Instant;

use prism_common::backend::{self, BackendId};
use prism_common::metrics::Outcome;
use tracing::{info, warn};

use crate::CoordState;
use crate::model::{
    DatasetRecord, QueryRecord, Room, RoomStatus, RunFailure, RunOutcome, RunRecord, RunStatus,
    User, now,
};
use crate::rooms::{self, ExecuteError};
use crate::store::{Audit, DATASETS, RUNS};

fn new_run(query: &QueryRecord, user: &User) -> RunRecord {
    RunRecord {
        id: uuid::Uuid::new_v4().to_string(),
        query_id: query.id.clone(),
        status: RunStatus::Pending,
        result: None,
        backend_used: query.backend,
        epsilon_consumed: 0.0,
        delta_consumed: 0.0,
        execution_time_ms: None,
        proof_artifacts: serde_json::json!({}),
        error_message: None,
        error_code: None,
        created_by: user.id.clone(),
        organization: user.organization.clone(),
        created_at: now(),
        finished_at: None,
    }
}

fn save(
    state: &CoordState,
    run: &RunRecord,
    action: &str,
    actor: &str,
    details: serde_json::Value,
) -> Result<(), crate::store::StoreError> {
    state.store.put(
        RUNS,
        &run.id,
        run,
        Some(Audit {
            actor,
            action,
            target: &run.id,
            details,
        }),
    )
}

/// Marks a run `running`, audited as `run_started`. Not fsynced on its own: a restarted
/// coordinator fails unfinished runs whether or not this mark survived.
async fn mark_running(state: &Arc<CoordState>, run: &mut RunRecord, details: serde_json::Value) {
    run.status = RunStatus::Running;
    let (s, r) = (state.clone(), run.clone());
    let saved = tokio::task::spawn_blocking(move || {
        s.store.put_lazy(
            RUNS,
            &r.id,
            &r,
            Some(Audit {
                actor: "system",
                action: "run_started",
                target: &r.id,
                details,
            }),
        )
    })
    .await;
    if !matches!(saved, Ok(Ok(()))) {
        warn!(run_id = %run.id, "could not persist run start");
    }
}

/// Persists a new run for `query` and starts it. Returns the run as first committed.
pub fn start(
    state: &Arc<CoordState>,
    query: QueryRecord,
    user: &User,
) -> Result<RunRecord, crate::store::StoreError> {
    let mut run = new_run(&query, user);
    if query.backend == BackendId::EnclaveBackend {
        // Refused outright: there is nothing to send anywhere.
        run.status = RunStatus::Failed;
        run.error_code = Some("backend_not_implemented".into());
        run.error_message = Some(backend::ENCLAVE_MESSAGE.into());
        run.proof_artifacts = serde_json::json!({"refusal": backend::enclave_refusal()});
        run.finished_at = Some(now());
        state.metrics.run(query.backend, Outcome::Refused);
        state
            .metrics
            .refusal(query.backend, "backend_not_implemented");
        save(
            state,
            &run,
            "backend_not_implemented",
            &user.name,
            serde_json::json!({"query_id": query.id, "backend": query.backend}),
        )?;
        let _ = state.run_done.send(run.id.clone());
        return Ok(run);
    }
    save(
        state,
        &run,
        "run_created",
        &user.name,
        serde_json::json!({"query_id": query.id, "backend": query.backend, "dataset_id": query.dataset_id}),
    )?;
    let (state2, run2, user_name) = (state.clone(), run.clone(), user.name.clone());
    state
        .tasks
        .spawn(async move { drive(state2, query, run2, user_name).await });
    Ok(run)
}

async fn drive(state: Arc<CoordState>, query: QueryRecord, mut run: RunRecord, user: String) {
    let Some(dataset) = state.dataset(&query.dataset_id) else {
        let why = RunFailure::new(
            "unknown_dataset",
            format!("dataset {} is no longer in the catalog", query.dataset_id),
        );
        finish(&state, run, Err(why)).await;
        return;
    };
    if query.backend == BackendId::MpcBackend {
        return open_room(state, query, dataset, run).await;
    }
    let mut details = serde_json::json!({"organization": dataset.organization});
    if query.backend == BackendId::HeBackend {
        details["backend"] = serde_json::json!("he_backend");
    }
    mark_running(&state, &mut run, details).await;
    let started = Instant::now();
    // The holding node records who asked; an HE request carries no SQL (its constants are what
    // the encryption keeps from the node).
    let he = query.backend == BackendId::HeBackend;
    let requester = crate::requester::of_run(&user, &query, &run, !he);
    let outcome = if he {
        crate::he::execute(&state, &query, &dataset, &run.id, &requester).await
    } else {
        crate::dp::execute(&state, &query, &dataset, &run.id, requester).await
    };
    run.execution_time_ms = Some(started.elapsed().as_secs_f64() * 1000.0);
    let delivered = outcome.is_ok().then(|| run.id.clone());
    let recorded = finish(&state, run, name_owner(outcome, &dataset.organization)).await;
    // The node holds a charged answer until it hears the run is recorded (`crate::collect`).
    if let (Some(id), true) = (delivered, recorded) {
        crate::dp::acknowledge(&state, &dataset.organization, vec![id]);
    }
}

/// A budget refusal says whose owner to ask: the node's words name the dataset, not its
/// organization.
fn name_owner(outcome: RunOutcome, org: &prism_common::identity::OrgId) -> RunOutcome {
    outcome.map_err(|mut f| {
        if f.code == "budget_exhausted" && !f.message.contains(org.as_str()) {
            f.message = format!(
                "{} (the dataset belongs to organization {org}: its data owner decides)",
                f.message
            );
        }
        f
    })
}

/// Ends a run with its backend's outcome: `completed` with the answer, its cost and proof, or
/// `failed` with a code and message; persists it and announces it to waiters. Returns whether
/// the run was persisted.
pub async fn finish(state: &Arc<CoordState>, mut run: RunRecord, outcome: RunOutcome) -> bool {
    let kind = match &outcome {
        Ok(_) => Outcome::Completed,
        Err(f) if f.refused => Outcome::Refused,
        Err(_) => Outcome::Failed,
    };
    state.metrics.run(run.backend_used, kind);
    if let Ok(mut p) = state.progress.lock() {
        p.remove(&run.id);
    }
    run.finished_at = Some(now());
    let action = match outcome {
        Ok(released) => {
            run.status = RunStatus::Completed;
            run.result = Some(released.table);
            run.epsilon_consumed = released.epsilon;
            run.delta_consumed = released.delta;
            run.proof_artifacts = released.proof;
            "query_executed"
        }
        Err(failure) => {
            run.status = RunStatus::Failed;
            run.error_code = Some(failure.code);
            run.error_message = Some(failure.message);
            if let Some(d) = failure.details {
                run.proof_artifacts = d;
            }
            "query_failed"
        }
    };
    info!(run_id = %run.id, status = ?run.status, "run finished");
    let details = serde_json::json!({
        "query_id": run.query_id, "backend": run.backend_used, "epsilon_consumed": run.epsilon_consumed,
        "delta_consumed": run.delta_consumed, "error": run.error_message,
    });
    let s = state.clone();
    let id = run.id.clone();
    let saved = match tokio::task::spawn_blocking(move || save(&s, &run, action, "system", details))
        .await
    {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            warn!(error = %e, "could not persist run result");
            false
        }
        Err(e) => {
            warn!(error = %e, "could not persist run result");
            false
        }
    };
    let _ = state.run_done.send(id);
    saved
}

/// The seed's flow: an `mpc_backend` query opens a room over every organization holding a
/// dataset of that name and schema; the run waits for their attestations and ends with the room.
async fn open_room(
    state: Arc<CoordState>,
    query: QueryRecord,
    dataset: DatasetRecord,
    mut run: RunRecord,
) {
    let all: Vec<DatasetRecord> = state.store.list(DATASETS).unwrap_or_default();
    let participants: Vec<_> = all
        .iter()
        .filter(|d| {
            d.name == dataset.name
                && d.columns
                    .iter()
                    .map(|c| (&c.name, c.ty))
                    .eq(dataset.columns.iter().map(|c| (&c.name, c.ty)))
        })
        .map(|d| d.organization.clone())
        .collect();
    let input = crate::mpc::NewRoom {
        name: format!("query {}", query.id),
        description: format!("opened by an mpc_backend query over {}", dataset.name),
        query_text: query.sql.clone(),
        backend: Some("mpc_backend".into()),
        participants,
        group_keys: Default::default(),
        fixed_point_decimals: None,
        deadline_ms: None,
        expires_in_hours: None,
        release: None,
        // Each participant spends the query's ε on its own dataset.
        epsilon: Some(query.epsilon),
        participant_epsilon: Default::default(),
        min_group_size: None,
    };
    let room = match crate::mpc::build(&state, input, &run.created_by, Some(run.id.clone())) {
        Ok(r) => r,
        Err((code, message)) => {
            finish(&state, run, Err(RunFailure::new(code, message))).await;
            return;
        }
    };
    run.proof_artifacts = serde_json::json!({
        "room_id": room.id,
        "waiting_for_attestations": room.waiting_for(),
        "note": "the run completes when every participant has attested and the room has executed",
    });
    mark_running(&state, &mut run, serde_json::json!({"room_id": room.id})).await;
    let s = state.clone();
    let opened = tokio::task::spawn_blocking(move || rooms::open(&s, &room, "system")).await;
    if !matches!(opened, Ok(Ok(()))) {
        warn!("could not open the room for run {}", run.id);
    }
}

/// Starts a ready (or failed) room's execution; when it ends, the run it answers (a room
/// opened by an `mpc_backend` query) ends with it, and waiters on `room_done` are woken.
pub fn execute_room(
    state: &Arc<CoordState>,
    room_id: &str,
    actor: &str,
) -> Result<Room, ExecuteError> {
    let room = rooms::start_execution(state, room_id, actor)?;
    let (s, id) = (state.clone(), room.id.clone());
    state.tasks.spawn(async move {
        if let Some(room) = rooms::execute(&s, &id).await
            && let Some(run_id) = &room.origin_run
        {
            finish_from_room(&s, run_id, &room).await;
        }
        let _ = s.room_done.send(id);
    });
    Ok(room)
}

/// A room reached an end without executing (declined, cancelled): ends the run that opened it, if any,
/// and wakes those waiting for it.
pub async fn room_settled(state: &Arc<CoordState>, room: &Room) {
    if let Some(run_id) = &room.origin_run {
        finish_from_room(state, run_id, room).await;
    }
    let _ = state.room_done.send(room.id.clone());
}

/// A room ended by collecting its parties' held partial sums (`crate::mpc::collect`): the run
/// that opened it ends with it, even when the stop or restart that interrupted the room failed
/// the run meanwhile.
pub async fn room_collected(state: &Arc<CoordState>, room: &Room) {
    if let Some(run_id) = &room.origin_run {
        finish_from_room_as(state, run_id, room, room.status == RoomStatus::Completed).await;
    }
    let _ = state.room_done.send(room.id.clone());
}

/// Ends a run opened by an `mpc_backend` query with its room's outcome.
async fn finish_from_room(state: &Arc<CoordState>, run_id: &str, room: &Room) {
    finish_from_room_as(state, run_id, room, false).await
}

/// [`finish_from_room`]; `reopen`: also a run that failed meanwhile.
async fn finish_from_room_as(state: &Arc<CoordState>, run_id: &str, room: &Room, reopen: bool) {
    let Ok(Some(mut run)) = state.store.get(RUNS, run_id) else {
        return;
    };
    if run.status.is_final() && !(reopen && run.status == RunStatus::Failed) {
        return;
    }
    // Reopened: the failure it ended with is superseded by the room's answer.
    run.error_code = None;
    run.error_message = None;
    run.execution_time_ms = room.execution_time_ms;
    let outcome = match (room.status, &room.result) {
        (RoomStatus::Completed, Some(table)) => Ok(crate::model::Released {
            table: table.clone(),
            // Each participant spent its own ε on its own dataset; the run reports the largest.
            epsilon: room
                .manifest
                .params
                .epsilon
                .iter()
                .map(|p| p.epsilon)
                .fold(0.0, f64::max),
            delta: 0.0,
            proof: serde_json::json!({"room_id": room.id, "mpc": room.proof_artifacts}),
        }),
        _ => Err(RunFailure::new(
            room.error_code
                .clone()
                .unwrap_or_else(|| "room_failed".into()),
            room.error_message
                .clone()
                .unwrap_or_else(|| "the room failed".into()),
        )),
    };
    finish(state, run, outcome).await;
}
