//! Run orchestration: a persisted state machine per execution.
//!
//! `pending` is committed before the API answers; the run then goes `running` when it is sent
//! to the node that holds the dataset, and ends `completed` or `failed` with the node's words.
//! A run left unfinished by a stopped coordinator is failed at the next start (see the store).

use std::sync::Arc;
use std::time::{Duration, Instant};

use prism_common::backend::{self, BackendId};
use prism_common::metrics::Outcome;
use prism_common::wire::{PrivacyParams, Request, Response};
use tracing::{info, warn};

use crate::CoordState;
use crate::model::{DatasetRecord, QueryRecord, RunRecord, RunStatus, User, now};
use crate::store::{Audit, RUNS};

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
pub(crate) async fn mark_running(
    state: &Arc<CoordState>,
    run: &mut RunRecord,
    details: serde_json::Value,
) {
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
    let (state2, run2) = (state.clone(), run.clone());
    state
        .tasks
        .spawn(async move { drive(state2, query, run2).await });
    Ok(run)
}

async fn drive(state: Arc<CoordState>, query: QueryRecord, run: RunRecord) {
    let Some(dataset) = state.dataset(&query.dataset_id) else {
        return finish(
            &state,
            run,
            Err((
                "unknown_dataset".into(),
                format!("dataset {} is no longer in the catalog", query.dataset_id),
            )),
        )
        .await;
    };
    match query.backend {
        BackendId::HeBackend => crate::he::drive(state, query, dataset, run).await,
        BackendId::MpcBackend => open_room(state, query, dataset, run).await,
        _ => drive_generic(state, query, dataset, run).await,
    }
}

/// Sends the plan to the holding node as one request and records its answer.
async fn drive_generic(
    state: Arc<CoordState>,
    query: QueryRecord,
    dataset: DatasetRecord,
    mut run: RunRecord,
) {
    let org = dataset.organization.clone();
    mark_running(&state, &mut run, serde_json::json!({"organization": org})).await;
    let req = Request::Execute {
        run_id: run.id.clone(),
        backend: query.backend,
        dataset: dataset.name.clone(),
        plan: query.plan.clone(),
        params: PrivacyParams {
            epsilon: query.epsilon,
            delta: query.delta,
        },
        requester: Some(crate::requester::of_run(&state, &query, &run, true)),
    };
    let started = Instant::now();
    let mut refused = false;
    let timeout = Duration::from_secs(state.config.run_timeout_secs);
    let answer = state.nodes.call(&dataset.organization, &req, timeout).await;
    run.execution_time_ms = Some(started.elapsed().as_secs_f64() * 1000.0);
    let outcome = match answer {
        Ok(Response::Executed(x)) => {
            state
                .metrics
                .budget_spent(&query.dataset_id, x.epsilon_spent, x.delta_spent);
            run.result = Some(x.table);
            run.epsilon_consumed = x.epsilon_spent;
            run.delta_consumed = x.delta_spent;
            run.proof_artifacts = serde_json::json!({
                "organization": dataset.organization,
                "node_compute_ms": x.compute_ms,
                "release": x.proof,
            });
            Ok(())
        }
        Ok(Response::Refused(e)) => {
            state.metrics.refusal(query.backend, &e.code);
            refused = true;
            if let Some(d) = e.details {
                run.proof_artifacts = serde_json::json!({"refusal": d});
            }
            Err((e.code, e.message))
        }
        Ok(other) => Err((
            "protocol_error".into(),
            format!("unexpected answer from the node: {other:?}"),
        )),
        Err(e) => Err((e.code().into(), e.to_string())),
    };
    let kind = match &outcome {
        Ok(()) => Outcome::Completed,
        Err(_) if refused => Outcome::Refused,
        Err(_) => Outcome::Failed,
    };
    finish_as(&state, run, outcome, kind).await;
}

/// Ends a run: records its outcome (completed, or failed with a code and message) and announces it.
pub async fn finish(
    state: &Arc<CoordState>,
    run: RunRecord,
    outcome: Result<(), (String, String)>,
) {
    let kind = match outcome {
        Ok(()) => Outcome::Completed,
        Err(_) => Outcome::Failed,
    };
    finish_as(state, run, outcome, kind).await
}

/// [`finish`], counting the run under `kind` on `/metrics` (a refusal is a failed run too).
pub async fn finish_as(
    state: &Arc<CoordState>,
    mut run: RunRecord,
    outcome: Result<(), (String, String)>,
    kind: Outcome,
) {
    state.metrics.run(run.backend_used, kind);
    run.finished_at = Some(now());
    let action = match outcome {
        Ok(()) => {
            run.status = RunStatus::Completed;
            "query_executed"
        }
        Err((code, message)) => {
            run.status = RunStatus::Failed;
            run.error_code = Some(code);
            run.error_message = Some(message);
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
    match tokio::task::spawn_blocking(move || save(&s, &run, action, "system", details)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warn!(error = %e, "could not persist run result"),
        Err(e) => warn!(error = %e, "could not persist run result"),
    }
    let _ = state.run_done.send(id);
}

/// The seed's flow: an `mpc_backend` query opens a room over every organization holding a
/// dataset of that name and schema; the run waits for their attestations and ends with the room.
async fn open_room(
    state: Arc<CoordState>,
    query: QueryRecord,
    dataset: DatasetRecord,
    mut run: RunRecord,
) {
    let all: Vec<DatasetRecord> = state.store.list(crate::store::DATASETS).unwrap_or_default();
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
    let input = crate::rooms::NewRoom {
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
    let room = match crate::rooms::build(&state, input, &run.created_by, Some(run.id.clone())) {
        Ok(r) => r,
        Err((code, message)) => return finish(&state, run, Err((code.into(), message))).await,
    };
    run.proof_artifacts = serde_json::json!({
        "room_id": room.id,
        "waiting_for_attestations": room.waiting_for(),
        "note": "the run completes when every participant has attested and the room has executed",
    });
    mark_running(&state, &mut run, serde_json::json!({"room_id": room.id})).await;
    let s = state.clone();
    let opened = tokio::task::spawn_blocking(move || crate::rooms::open(&s, &room, "system")).await;
    if !matches!(opened, Ok(Ok(()))) {
        warn!("could not open the room for run {}", run.id);
    }
}

/// Ends a run opened by an `mpc_backend` query with its room's outcome.
pub async fn finish_from_room(state: &Arc<CoordState>, run_id: &str, room: &crate::rooms::Room) {
    let Ok(Some(mut run)) = state.store.get::<RunRecord>(RUNS, run_id) else {
        return;
    };
    if run.status.is_final() {
        return;
    }
    run.execution_time_ms = room.execution_time_ms;
    let outcome = match room.status {
        crate::rooms::RoomStatus::Completed => {
            run.result = room.result.clone();
            // Each participant spent its own ε on its own dataset; the run reports the largest.
            run.epsilon_consumed = room
                .manifest
                .params
                .epsilon
                .iter()
                .map(|p| p.epsilon)
                .fold(0.0, f64::max);
            run.proof_artifacts =
                serde_json::json!({"room_id": room.id, "mpc": room.proof_artifacts});
            Ok(())
        }
        _ => Err((
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
