//! The admin API's read-only views for the data owner's console and CLI (same loopback
//! listener, same bearer token as every other admin route):
//!
//! - `GET /v1/requests`, `GET /v1/requests/{room_id}`: invitations explained (the query, what
//!   leaves the node, what changed from the room's previous manifest), with the pending count.
//! - `GET /v1/datasets/{name}/history`: the dataset's spend over time, from the audit log.
//! - `GET /v1/activity`: the audit log newest first, filtered (`action`, `target`, `q`), paged
//!   with `before` (a sequence number) and `limit`.
//!
//! Deciding (attest, decline, withdraw) and changing settings stay on the routes in `admin`.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Admin, AdminError, Result, blocking, check_token, load_invitation};
use crate::ledger_view::{self, Filter};
use crate::mpc::invitations as rooms;
use crate::{NodeState, request_view};

/// The routes (merged into the admin router).
pub(crate) fn routes() -> Router<Arc<Admin>> {
    Router::new()
        .route("/v1/requests", get(requests))
        .route("/v1/requests/{room_id}", get(request))
        .route("/v1/datasets/{name}/history", get(history))
        .route("/v1/activity", get(activity))
}

fn internal(e: impl std::fmt::Display) -> AdminError {
    AdminError(
        StatusCode::INTERNAL_SERVER_ERROR,
        "store_error",
        e.to_string(),
    )
}

fn explained(state: &NodeState, inv: &crate::store::Invitation) -> Value {
    let schema = state
        .dataset(&inv.manifest.plan.dataset)
        .map(|d| d.schema.clone());
    request_view::explain(
        &state.org,
        inv,
        schema.as_ref(),
        time::OffsetDateTime::now_utc(),
    )
}

async fn requests(State(a): State<Arc<Admin>>, h: HeaderMap) -> Result<Json<Value>> {
    check_token(&a, &h)?;
    let state = a.state.clone();
    let list = blocking(move || rooms::list(&state))
        .await?
        .map_err(|e| internal(e.message))?;
    let pending = list
        .iter()
        .filter(|i| i.status == crate::store::InvitationStatus::Pending)
        .count();
    Ok(Json(json!({
        "org": a.state.org,
        "pending": pending,
        "coordinator_connected": a.state.is_connected(),
        "requests": list.iter().map(|i| explained(&a.state, i)).collect::<Vec<_>>(),
    })))
}

async fn request(
    State(a): State<Arc<Admin>>,
    h: HeaderMap,
    Path(room): Path<String>,
) -> Result<Json<Value>> {
    check_token(&a, &h)?;
    let inv = load_invitation(&a, room).await?;
    Ok(Json(explained(&a.state, &inv)))
}

async fn history(
    State(a): State<Arc<Admin>>,
    h: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<Value>> {
    check_token(&a, &h)?;
    let store = a.state.store.clone();
    let (budget, points) = blocking(move || {
        let budget = store.budget(&name)?;
        let entries = ledger_view::all_entries(store.db())?;
        let total = crate::store::real(budget.total_epsilon);
        Ok::<_, crate::store::StoreError>((budget, ledger_view::history(&entries, &name, total)))
    })
    .await??;
    Ok(Json(json!({"budget": budget.to_json(), "points": points})))
}

/// Query of `GET /v1/activity`.
#[derive(Deserialize)]
struct ActivityQuery {
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    target: Option<String>,
    #[serde(default)]
    q: Option<String>,
    #[serde(default)]
    before: Option<u64>,
    #[serde(default)]
    limit: Option<usize>,
}

async fn activity(
    State(a): State<Arc<Admin>>,
    h: HeaderMap,
    Query(q): Query<ActivityQuery>,
) -> Result<Json<Value>> {
    check_token(&a, &h)?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let filter = Filter {
        action: q.action,
        target: q.target,
        q: q.q,
    };
    let store = a.state.store.clone();
    let entries =
        blocking(move || ledger_view::newest_first(store.db(), &filter, q.before, limit)).await??;
    // The next page starts below the oldest entry shown, while a full page came back.
    let next = (entries.len() == limit)
        .then(|| entries.last().map(|e| e.seq))
        .flatten();
    Ok(Json(json!({"entries": entries, "next_before": next})))
}
