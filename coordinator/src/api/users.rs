//! Users: who am I (any token), the user list and revocation (admins).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::{ApiError, ApiResult, Caller, ErrorResponse, blocking};
use crate::CoordState;

/// The signed-in user: name, role and organization (the console's header shows them).
#[utoipa::path(get, path = "/me", tag = "admin", responses(
    (status = 200, description = "`{id, name, role, organization, created_at}`", body = Object),
    (status = 401, description = "Missing or invalid API token", body = ErrorResponse),
))]
pub async fn me(Caller(user): Caller) -> Json<Value> {
    Json(json!(user))
}

/// Every user (never their tokens), oldest first.
#[utoipa::path(get, path = "/users", tag = "admin", responses(
    (status = 200, description = "Users `{id, name, role, organization, created_at}`", body = Vec<Value>),
    (status = 403, description = "Not an admin", body = ErrorResponse),
))]
pub async fn list(State(s): State<Arc<CoordState>>, c: Caller) -> ApiResult<Json<Value>> {
    c.require_admin()?;
    let store = s.store.clone();
    let users = blocking(move || crate::users::list(&store)).await??;
    Ok(Json(json!(users)))
}

/// Revokes a user's API token: it stops working at once (audited as `user_revoked`).
#[utoipa::path(delete, path = "/users/{id}", tag = "admin",
    params(("id" = String, Path, description = "User id (from GET /api/v1/users)")),
    responses(
        (status = 200, description = "The revoked user", body = Object),
        (status = 403, description = "Not an admin", body = ErrorResponse),
        (status = 404, description = "`unknown_user`", body = ErrorResponse),
        (status = 409, description = "`cannot_revoke_self`: an admin revoking their own token", body = ErrorResponse),
    )
)]
pub async fn revoke(
    State(s): State<Arc<CoordState>>,
    c: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    c.require_admin()?;
    if c.0.id == id {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "cannot_revoke_self",
            "you cannot revoke your own token from it; another admin (or `prism-coordinator \
             users revoke` with the coordinator stopped) can",
        ));
    }
    let (store, actor, id2) = (s.store.clone(), c.0.name.clone(), id.clone());
    match blocking(move || crate::users::revoke(&store, &id2, &actor)).await?? {
        Some(u) => Ok(Json(json!({"revoked": u}))),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_user",
            format!("user {id} does not exist; GET /api/v1/users lists the users"),
        )),
    }
}
