//! Queries and runs: create, validate (with the holding node's estimate), execute, read.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use prism_common::backend::{self, BackendId};
use prism_common::plan::Plan;
use prism_common::release::ReleaseMode;
use prism_common::sql;
use prism_common::wire::{PrivacyParams, Request, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::{
    ApiError, ApiResult, Caller, ErrorResponse, WaitParam, blocking, skipped_headers,
    unknown_dataset,
};
use crate::CoordState;
use crate::model::{DatasetRecord, QueryRecord, RunRecord, User, now, visible_to};
use crate::runs;
use crate::store::{Audit, Listing, QUERIES, RUNS};

/// Default ε of a query that names none.
pub const DEFAULT_EPSILON: f64 = 0.5;
/// Default δ of a query that names none (only spent by threshold key release).
pub const DEFAULT_DELTA: f64 = 1e-7;

/// A query as submitted.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueryInput {
    /// `<organization>.<name>` from GET /api/v1/datasets.
    dataset_id: String,
    /// One `SELECT` of aggregates over the dataset's table.
    sql: String,
    /// `dp_sandbox` (default), `he_backend`, `mpc_backend` or `enclave_backend`.
    #[serde(default)]
    backend: Option<String>,
    /// ε to spend (DP; default 0.5).
    #[serde(default)]
    epsilon: Option<f64>,
    /// δ to spend (DP; default 1e-7).
    #[serde(default)]
    delta: Option<f64>,
}

/// The seed API nests the query under `query`; both shapes are accepted.
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
pub enum QueryBody {
    /// `{"query": {...}}`
    Nested {
        /// The query.
        query: QueryInput,
    },
    /// `{...}`
    Flat(QueryInput),
}

impl QueryBody {
    fn into_input(self) -> QueryInput {
        match self {
            QueryBody::Nested { query } | QueryBody::Flat(query) => query,
        }
    }
}

/// A query that passed validation.
struct Validated {
    dataset: DatasetRecord,
    plan: Plan,
    backend: BackendId,
    epsilon: f64,
    delta: f64,
    estimated_epsilon: f64,
    estimated_delta: f64,
    estimate_source: &'static str,
    /// The release mode the holding node applies (from its published catalog, or its answer).
    release_mode: ReleaseMode,
}

fn unprocessable(code: &str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
}

async fn check(state: &Arc<CoordState>, input: &QueryInput) -> ApiResult<Validated> {
    let backend = match &input.backend {
        None => BackendId::DpSandbox,
        Some(b) => BackendId::parse(b).ok_or_else(|| {
            unprocessable("unknown_backend", format!("unknown backend {b:?}: use dp_sandbox, he_backend, mpc_backend or enclave_backend"))
        })?,
    };
    let dataset = state
        .dataset(&input.dataset_id)
        .ok_or_else(|| unknown_dataset(&input.dataset_id))?;
    let schema = dataset.schema();
    let plan =
        sql::plan_query(&input.sql, &schema).map_err(|e| unprocessable(e.code(), e.to_string()))?;
    prism_common::support::check_supported(backend, &plan)
        .map_err(|m| unprocessable("backend_unsupported", m))?;
    let epsilon = input.epsilon.unwrap_or(DEFAULT_EPSILON);
    let delta = input.delta.unwrap_or(DEFAULT_DELTA);
    let in_range = epsilon.is_finite()
        && epsilon >= prism_common::dp::MIN_EPSILON
        && delta.is_finite()
        && (0.0..1.0).contains(&delta);
    if !in_range {
        return Err(unprocessable(
            "invalid_epsilon",
            format!(
                "epsilon must be a finite number > 0, at least {:e} (a smaller one makes the noise scale overflow), and delta in [0, 1); got ε={epsilon} δ={delta}",
                prism_common::dp::MIN_EPSILON
            ),
        ));
    }
    if backend == BackendId::HeBackend {
        prism_common::he::encode::check_weights(&plan, &schema, dataset.row_count)
            .map_err(|e| unprocessable("backend_unsupported", e.to_string()))?;
        // What the node would refuse at run time (AVG of a float column, a column without
        // bounds), said now, whether or not the node is online.
        prism_common::he::encode::values_for(&plan, &schema)
            .map_err(|e| unprocessable(e.code(), e.to_string()))?;
    }
    let mut v = Validated {
        dataset,
        plan,
        backend,
        epsilon,
        delta,
        estimated_epsilon: 0.0,
        estimated_delta: 0.0,
        estimate_source: "none",
        release_mode: ReleaseMode::Off,
    };
    v.release_mode = v.dataset.release.get(backend);
    if matches!(backend, BackendId::DpSandbox | BackendId::HeBackend) {
        // The holding node is the authority on what a release costs under its policy.
        let req = Request::Estimate {
            backend,
            dataset: v.dataset.name.clone(),
            plan: v.plan.clone(),
            params: PrivacyParams { epsilon, delta },
        };
        match state
            .nodes
            .call(&v.dataset.organization, &req, Duration::from_secs(10))
            .await
        {
            Ok(Response::Estimated {
                epsilon,
                delta,
                release,
            }) => {
                v.estimated_epsilon = epsilon;
                v.estimated_delta = delta;
                v.estimate_source = "node";
                if let Some(m) = release {
                    v.release_mode = m;
                }
            }
            Ok(Response::Refused(e)) => return Err(unprocessable(&e.code, e.message)),
            Ok(other) => {
                return Err(ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "protocol_error",
                    format!("unexpected node answer {other:?}"),
                ));
            }
            Err(e) if backend == BackendId::HeBackend => {
                // Offline node: it decides the cost when it answers.
                tracing::info!(error = %e, "cannot estimate an he_backend query without its node");
                v.estimate_source = "none (node offline; it decides the cost at execution)";
            }
            Err(e) => {
                // Offline node: estimate with the default node policy; the node re-checks at execution.
                let cost = prism_common::dp::estimate(
                    &v.plan,
                    &v.dataset.schema(),
                    &prism_common::dp::DpParams { epsilon, delta },
                    &Default::default(),
                )
                .map_err(|d| unprocessable(d.code(), d.to_string()))?;
                tracing::info!(error = %e, "estimating without the node");
                v.estimated_epsilon = cost.epsilon;
                v.estimated_delta = cost.delta;
                v.estimate_source = "coordinator (node offline; default policy)";
            }
        }
    }
    Ok(v)
}

/// Why a query would exceed the budget its dataset's owner publishes, naming the organization
/// whose owner can raise it; `None` when it fits or the budget is not published.
fn over_budget(v: &Validated) -> Option<String> {
    let b = v.dataset.budget?;
    // The ledger counts in pico-units; allow for the rounding of the published numbers.
    const SLACK: f64 = 1e-9;
    let short_e = v.estimated_epsilon > b.remaining_epsilon + SLACK;
    let short_d = v.estimated_delta > b.remaining_delta + SLACK * 1e-6;
    (short_e || short_d).then(|| {
        format!(
            "dataset {}: this query needs ε={} δ={}, but {} ε and {} δ remain of {} ε; ask the \
             data owner of organization {} to raise the budget",
            v.dataset.id,
            v.estimated_epsilon,
            v.estimated_delta,
            b.remaining_epsilon,
            b.remaining_delta,
            b.total_epsilon,
            v.dataset.organization
        )
    })
}

fn query_json(q: &QueryRecord) -> Value {
    json!(q)
}

/// Validates a query and, for DP and HE, asks the holding node for its release mode and the ε
/// it would charge.
#[utoipa::path(post, path = "/queries/validate", tag = "queries", request_body = QueryBody, responses(
    (status = 200, description = "`{valid, errors: [{code, message}], estimated_epsilon, release_mode, plan, backend}`", body = Object),
    (status = 401, description = "Missing or invalid API token", body = ErrorResponse),
))]
/// `POST /api/v1/queries/validate`: always 200 for a well-formed request; `valid` says whether
/// the query would run, `errors` why not.
pub async fn validate(
    State(s): State<Arc<CoordState>>,
    _c: Caller,
    Json(body): Json<QueryBody>,
) -> ApiResult<Json<Value>> {
    let input = body.into_input();
    let backend_name = input.backend.clone().unwrap_or_else(|| "dp_sandbox".into());
    let info = BackendId::parse(&backend_name).map(|b| b.info());
    let backend_json = json!({"name": backend_name, "info": info, "supported": info.as_ref().is_some_and(|i| i.available)});
    match check(&s, &input).await {
        Ok(v) if v.backend == BackendId::EnclaveBackend => Ok(Json(json!({
            "valid": false,
            "errors": [{"code": "backend_not_implemented", "message": backend::ENCLAVE_MESSAGE, "details": backend::enclave_refusal()}],
            "estimated_epsilon": 0.0, "plan": v.plan, "backend": backend_json,
        }))),
        Ok(v) => {
            let over = over_budget(&v);
            Ok(Json(json!({
                "valid": over.is_none(),
                "errors": over.map(|m| vec![json!({"code": "budget_exhausted", "message": m})]).unwrap_or_default(),
                "estimated_epsilon": v.estimated_epsilon, "estimated_delta": v.estimated_delta,
                "estimate_source": v.estimate_source, "plan": v.plan, "backend": backend_json,
                "organization": v.dataset.organization, "release_mode": v.release_mode,
                "budget": v.dataset.budget,
            })))
        }
        Err(e)
            if e.status == StatusCode::UNPROCESSABLE_ENTITY
                || e.status == StatusCode::NOT_FOUND =>
        {
            Ok(Json(json!({
                "valid": false, "errors": [{"code": e.code, "message": e.message}], "estimated_epsilon": null, "backend": backend_json,
            })))
        }
        Err(e) => Err(e),
    }
}

/// Saves a validated query.
#[utoipa::path(post, path = "/queries", tag = "queries", request_body = QueryBody, responses(
    (status = 201, description = "The saved query", body = Object),
    (status = 404, description = "Unknown dataset", body = ErrorResponse),
    (status = 422, description = "Invalid SQL or a construct the backend refuses", body = ErrorResponse),
))]
/// `POST /api/v1/queries`: 201 with the saved query, or 422 naming the problem.
pub async fn create(
    State(s): State<Arc<CoordState>>,
    Caller(user): Caller,
    Json(body): Json<QueryBody>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let input = body.into_input();
    let v = check(&s, &input).await?;
    let q = QueryRecord {
        id: uuid::Uuid::new_v4().to_string(),
        dataset_id: v.dataset.id.clone(),
        sql: input.sql,
        backend: v.backend,
        epsilon: v.epsilon,
        delta: v.delta,
        estimated_epsilon: v.estimated_epsilon,
        estimated_delta: v.estimated_delta,
        plan: v.plan,
        created_by: user.id.clone(),
        organization: user.organization.clone(),
        created_at: now(),
    };
    let store = s.store.clone();
    let q2 = q.clone();
    blocking(move || {
        store.put(QUERIES, &q2.id, &q2, Some(Audit {
            actor: &user.name,
            action: "query_created",
            target: &q2.id,
            details: json!({"dataset_id": q2.dataset_id, "backend": q2.backend, "estimated_epsilon": q2.estimated_epsilon, "sql": q2.sql}),
        }))
    })
    .await??;
    Ok((StatusCode::CREATED, Json(query_json(&q))))
}

/// Saved queries, newest first.
#[utoipa::path(get, path = "/queries", tag = "queries", responses(
    (status = 200, description = "Queries; `x-prism-skipped-records` counts records that do not decode", body = Vec<Value>),
    (status = 401, description = "Missing or invalid API token", body = ErrorResponse),
))]
pub async fn list(
    State(s): State<Arc<CoordState>>,
    Caller(user): Caller,
) -> ApiResult<(HeaderMap, Json<Value>)> {
    let store = s.store.clone();
    let l: Listing<QueryRecord> = blocking(move || store.listing(QUERIES)).await??;
    let mut all = l.records;
    all.retain(|q| visible_to(&user, &q.created_by, q.organization.as_ref()));
    all.sort_by(|a, b| b.created_at.cmp(&a.created_at));
    Ok((skipped_headers(&user, &l.corrupt), Json(json!(all))))
}

/// Deletes a record as an admin, whether or not it decodes; 404 if there is none.
pub(super) async fn delete_record<T: Send + 'static>(
    s: &Arc<CoordState>,
    c: &Caller,
    table: crate::store::Table<T>,
    what: &'static str,
    id: String,
) -> ApiResult<StatusCode> {
    c.require_admin()?;
    let (store, actor, id2) = (s.store.clone(), c.0.name.clone(), id.clone());
    let action = format!("{what}_deleted");
    let removed = blocking(move || {
        store.remove(
            table,
            &id2,
            Audit {
                actor: &actor,
                action: &action,
                target: &id2,
                details: json!({}),
            },
        )
    })
    .await??;
    if removed {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("unknown_{what}"),
            format!("{what} {id} does not exist"),
        ))
    }
}

/// Deletes a saved query (admin; also one that no longer decodes). Its runs stay.
#[utoipa::path(delete, path = "/queries/{id}", tag = "queries",
    params(("id" = String, Path, description = "Query id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, description = "Not an admin", body = ErrorResponse),
        (status = 404, description = "`unknown_query`", body = ErrorResponse),
    )
)]
pub async fn delete(
    State(s): State<Arc<CoordState>>,
    c: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    delete_record(&s, &c, QUERIES, "query", id).await
}

/// Deletes a run (admin; also one that no longer decodes).
#[utoipa::path(delete, path = "/runs/{id}", tag = "queries",
    params(("id" = String, Path, description = "Run id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, description = "Not an admin", body = ErrorResponse),
        (status = 404, description = "`unknown_run`", body = ErrorResponse),
    )
)]
pub async fn delete_run(
    State(s): State<Arc<CoordState>>,
    c: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    delete_record(&s, &c, RUNS, "run", id).await
}

/// A query the caller may see; another organization's answers 404 like a missing one.
async fn load_query(s: &Arc<CoordState>, user: &User, id: String) -> ApiResult<QueryRecord> {
    let store = s.store.clone();
    let q: Option<QueryRecord> = blocking({
        let id = id.clone();
        move || store.get(QUERIES, &id)
    })
    .await??;
    q.filter(|q| visible_to(user, &q.created_by, q.organization.as_ref()))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_query",
                format!("query {id} does not exist or is not visible to you"),
            )
        })
}

/// One saved query.
#[utoipa::path(get, path = "/queries/{id}", tag = "queries",
    params(("id" = String, Path, description = "Query id")),
    responses(
        (status = 200, description = "The query", body = Object),
        (status = 404, description = "`unknown_query`", body = ErrorResponse),
    )
)]
pub async fn show(
    State(s): State<Arc<CoordState>>,
    Caller(user): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(query_json(&load_query(&s, &user, id).await?)))
}

/// Runs a saved query.
#[utoipa::path(post, path = "/queries/{id}/execute", tag = "queries",
    params(("id" = String, Path, description = "Query id"), WaitParam),
    responses(
        (status = 200, description = "The finished run (`?wait=true`)", body = Object),
        (status = 202, description = "The pending run", body = Object),
        (status = 404, description = "`unknown_query`", body = ErrorResponse),
        (status = 501, description = "`backend_not_implemented` (enclave) with what it would need", body = ErrorResponse),
    )
)]
/// `POST /api/v1/queries/{id}/execute`: 202 with the pending run, or with `?wait=true` 200 with
/// the finished run. The enclave backend is refused with 501 and a structured error.
pub async fn execute(
    State(s): State<Arc<CoordState>>,
    Caller(user): Caller,
    Path(id): Path<String>,
    Query(p): Query<WaitParam>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let q = load_query(&s, &user, id).await?;
    let done = s.run_done.subscribe();
    let s2 = s.clone();
    let u2 = user.clone();
    let run = blocking(move || runs::start(&s2, q, &u2)).await??;
    if run.backend_used == BackendId::EnclaveBackend {
        return Err(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "backend_not_implemented",
            backend::ENCLAVE_MESSAGE,
        )
        .with_details(json!({"run_id": run.id, "refusal": backend::enclave_refusal()})));
    }
    if !p.wait {
        return Ok((StatusCode::ACCEPTED, Json(run_json(&s, &run))));
    }
    let deadline = Duration::from_secs(s.config.run_timeout_secs + 5);
    let finished = || async {
        load_run(&s, &user, run.id.clone())
            .await
            .is_ok_and(|r| r.status.is_final())
    };
    super::wait_done(&s, done, &run.id, deadline, finished).await;
    let run = load_run(&s, &user, run.id).await?;
    let status = if run.status.is_final() {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, Json(run_json(&s, &run))))
}

/// A run as the API shows it: the record plus `ci95_half_width`, one entry per result column,
/// and while an HE run is evaluated, its node's last `progress` report.
fn run_json(s: &CoordState, r: &RunRecord) -> Value {
    let mut v = json!(r);
    if !r.status.is_final()
        && let Some((_, p)) = s.progress.lock().ok().and_then(|m| m.get(&r.id).cloned())
    {
        v["progress"] = json!({"rows": p.rows, "groups": p.groups, "cells": p.cells,
                               "encrypted_steps": p.steps, "elapsed_ms": p.elapsed_ms});
    }
    v["ci95_half_width"] = json!(crate::intervals::ci95(
        r.result.as_ref(),
        &r.proof_artifacts
    ));
    v
}

/// A run the caller may see; another organization's answers 404 like a missing one.
async fn load_run(s: &Arc<CoordState>, user: &User, id: String) -> ApiResult<RunRecord> {
    let store = s.store.clone();
    let r: Option<RunRecord> = blocking({
        let id = id.clone();
        move || store.get(RUNS, &id)
    })
    .await??;
    r.filter(|r| visible_to(user, &r.created_by, r.organization.as_ref()))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_run",
                format!("run {id} does not exist or is not visible to you"),
            )
        })
}

/// One run: status, result, ε and δ consumed, proof artifacts, error.
#[utoipa::path(get, path = "/runs/{id}", tag = "queries",
    params(("id" = String, Path, description = "Run id")),
    responses(
        (status = 200, description = "The run", body = Object),
        (status = 404, description = "`unknown_run`", body = ErrorResponse),
    )
)]
pub async fn show_run(
    State(s): State<Arc<CoordState>>,
    Caller(user): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(run_json(&s, &load_run(&s, &user, id).await?)))
}

/// Runs, newest first.
#[utoipa::path(get, path = "/runs", tag = "queries", responses(
    (status = 200, description = "Runs; `x-prism-skipped-records` counts records that do not decode", body = Vec<Value>),
    (status = 401, description = "Missing or invalid API token", body = ErrorResponse),
))]
pub async fn list_runs(
    State(s): State<Arc<CoordState>>,
    Caller(user): Caller,
) -> ApiResult<(HeaderMap, Json<Value>)> {
    let store = s.store.clone();
    let l: Listing<RunRecord> = blocking(move || store.listing(RUNS)).await??;
    let mut all = l.records;
    all.retain(|r| visible_to(&user, &r.created_by, r.organization.as_ref()));
    all.sort_by(|a, b| b.created_at.cmp(&a.created_at));
    let all: Vec<Value> = all.iter().map(|r| run_json(&s, r)).collect();
    Ok((skipped_headers(&user, &l.corrupt), Json(json!(all))))
}
