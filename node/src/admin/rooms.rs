//! The owner's decisions on data-room invitations: read them, attest, decline with a reason,
//! withdraw.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::{Admin, AdminError, Result, blocking, check_token};
use crate::NodeState;

fn room_err(e: prism_common::wire::ErrorBody) -> AdminError {
    let status = match e.code.as_str() {
        "unknown_room" => StatusCode::NOT_FOUND,
        "node_store_error" | "signing_failed" => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::CONFLICT,
    };
    AdminError(
        status,
        "room_refused",
        format!("{} ({})", e.message, e.code),
    )
}

async fn room_call<T: Send + 'static>(
    a: &Admin,
    f: impl FnOnce(&NodeState) -> std::result::Result<T, prism_common::wire::ErrorBody> + Send + 'static,
) -> Result<T> {
    let state = a.state.clone();
    blocking(move || f(&state)).await?.map_err(room_err)
}

fn invitation_json(state: &NodeState, inv: &crate::store::Invitation) -> serde_json::Value {
    json!({
        "room_id": inv.manifest.room_id, "status": inv.status, "manifest_hash": inv.manifest_hash,
        "manifest": inv.manifest, "received_at": inv.received_at, "decided_at": inv.decided_at,
        "reason": inv.reason, "coordinator_connected": state.is_connected(),
    })
}

pub(super) async fn invitations(
    State(a): State<Arc<Admin>>,
    h: HeaderMap,
) -> Result<Json<serde_json::Value>> {
    check_token(&a, &h)?;
    let list = room_call(&a, crate::mpc::invitations::list).await?;
    Ok(Json(json!(
        list.iter()
            .map(|i| invitation_json(&a.state, i))
            .collect::<Vec<_>>()
    )))
}

pub(super) async fn invitation(
    State(a): State<Arc<Admin>>,
    h: HeaderMap,
    Path(room): Path<String>,
) -> Result<Json<serde_json::Value>> {
    check_token(&a, &h)?;
    let inv = load_invitation(&a, room).await?;
    Ok(Json(invitation_json(&a.state, &inv)))
}

/// A room's invitation, or 404 `unknown_room`.
pub(crate) async fn load_invitation(a: &Admin, room: String) -> Result<crate::store::Invitation> {
    let r = room.clone();
    let inv = room_call(a, move |s| crate::mpc::invitations::load(s, &r)).await?;
    inv.ok_or_else(|| {
        AdminError(
            StatusCode::NOT_FOUND,
            "unknown_room",
            format!("no invitation for room {room}"),
        )
    })
}

pub(super) async fn attest(
    State(a): State<Arc<Admin>>,
    h: HeaderMap,
    Path(room): Path<String>,
) -> Result<Json<serde_json::Value>> {
    check_token(&a, &h)?;
    let inv = room_call(&a, move |s| {
        crate::mpc::invitations::attest(s, &room, "node-admin")
    })
    .await?;
    Ok(Json(invitation_json(&a.state, &inv)))
}

#[derive(Deserialize, Default)]
pub(super) struct DeclineBody {
    #[serde(default)]
    reason: Option<String>,
}

pub(super) async fn decline(
    State(a): State<Arc<Admin>>,
    h: HeaderMap,
    Path(room): Path<String>,
    body: Option<Json<DeclineBody>>,
) -> Result<Json<serde_json::Value>> {
    check_token(&a, &h)?;
    let reason = body
        .and_then(|b| b.0.reason)
        .unwrap_or_else(|| "declined by the data owner".into());
    let inv = room_call(&a, move |s| {
        crate::mpc::invitations::decline(s, &room, &reason)
    })
    .await?;
    Ok(Json(invitation_json(&a.state, &inv)))
}

pub(super) async fn withdraw(
    State(a): State<Arc<Admin>>,
    h: HeaderMap,
    Path(room): Path<String>,
) -> Result<Json<serde_json::Value>> {
    check_token(&a, &h)?;
    let inv = room_call(&a, move |s| crate::mpc::invitations::withdraw(s, &room)).await?;
    Ok(Json(invitation_json(&a.state, &inv)))
}
