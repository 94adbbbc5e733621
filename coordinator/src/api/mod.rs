//! The admin API under `/api/v1`: bearer tokens, JSON errors `{"error": {"code", "message"}}`.
//!
//! Handlers are thin: they authenticate, call the store / planner / run orchestration, and map
//! errors to statuses. A user error is never a 500.

mod queries;
mod rooms;

use std::sync::Arc;

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use prism_common::backend;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::CoordState;
use crate::model::{DatasetRecord, Role, User};
use crate::store::{DATASETS, StoreError};

/// An API error: HTTP status, stable code, message, optional structured details.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable code.
    pub code: String,
    /// What happened and what to do.
    pub message: String,
    /// Structured detail.
    pub details: Option<Value>,
}

impl ApiError {
    /// A new error.
    pub fn new(status: StatusCode, code: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code: code.into(),
            message: message.into(),
            details: None,
        }
    }

    /// Adds details.
    pub fn with_details(mut self, d: Value) -> Self {
        self.details = Some(d);
        self
    }

    fn body(&self) -> Value {
        let mut e = json!({"code": self.code, "message": self.message});
        if let Some(d) = &self.details {
            e["details"] = d.clone();
        }
        json!({ "error": e })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body())).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "store error");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "store_error",
            format!("the coordinator store failed: {e}"),
        )
    }
}

/// Result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;

/// The authenticated caller.
pub struct Caller(pub User);

impl FromRequestParts<Arc<CoordState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<CoordState>,
    ) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let token = header
            .and_then(|h| h.strip_prefix("Bearer "))
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "missing bearer token: send Authorization: Bearer <api token>",
                )
            })?;
        let store = state.store.clone();
        let token = token.trim().to_string();
        let user = blocking(move || store.user_by_token(&token)).await??;
        user.map(Caller).ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "invalid API token",
            )
        })
    }
}

impl Caller {
    /// Refuses non-admins.
    pub fn require_admin(&self) -> ApiResult<()> {
        if self.0.role == Role::Admin {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "user {} is an analyst; this route needs the admin role",
                    self.0.name
                ),
            ))
        }
    }
}

/// Runs blocking store work off the async runtime.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> ApiResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))
}

/// The `/api/v1` router plus `/healthz`.
pub fn router(state: Arc<CoordState>) -> Router {
    let api = Router::new()
        .route("/backends", get(backends))
        .route("/organizations", get(organizations))
        .route("/datasets", get(datasets))
        .route("/datasets/{id}", get(dataset))
        .route("/queries", get(queries::list).post(queries::create))
        .route("/queries/validate", post(queries::validate))
        .route("/queries/{id}", get(queries::show))
        .route("/queries/{id}/execute", post(queries::execute))
        .route("/runs", get(queries::list_runs))
        .route("/runs/{id}", get(queries::show_run))
        .route("/data_rooms", get(rooms::list).post(rooms::create))
        .route("/data_rooms/{id}", get(rooms::show))
        .route("/data_rooms/{id}/execute", post(rooms::execute))
        .route("/data_rooms/{id}/cancel", post(rooms::cancel))
        .route("/users", post(create_user))
        .route("/audit", get(audit))
        .route("/audit/verify", get(verify_audit))
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such API route; see docs/API.md",
            )
        });
    Router::new()
        .route("/healthz", get(health))
        .nest("/api/v1", api)
        .with_state(state)
}

async fn health(State(s): State<Arc<CoordState>>) -> Json<Value> {
    let connected = s
        .nodes
        .members()
        .iter()
        .filter(|o| s.nodes.info(o).is_some())
        .count();
    Json(
        json!({"status": "ok", "nodes_connected": connected, "version": env!("CARGO_PKG_VERSION")}),
    )
}

async fn backends(_c: Caller) -> Json<Value> {
    Json(json!(backend::registry()))
}

async fn organizations(State(s): State<Arc<CoordState>>, _c: Caller) -> ApiResult<Json<Value>> {
    let store = s.store.clone();
    let all: Vec<DatasetRecord> = blocking(move || store.list(DATASETS)).await??;
    let out: Vec<Value> = s
        .nodes
        .members()
        .into_iter()
        .map(|org| {
            let node = s.nodes.info(&org);
            json!({
                "id": org,
                "connected": node.is_some(),
                "node": node,
                "datasets": all.iter().filter(|d| d.organization == org).map(|d| &d.id).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(Json(json!(out)))
}

fn dataset_json(s: &CoordState, d: &DatasetRecord) -> Value {
    let mut v = json!(d);
    v["online"] = json!(s.nodes.info(&d.organization).is_some());
    v
}

async fn datasets(State(s): State<Arc<CoordState>>, _c: Caller) -> ApiResult<Json<Value>> {
    let store = s.store.clone();
    let all: Vec<DatasetRecord> = blocking(move || store.list(DATASETS)).await??;
    Ok(Json(json!(
        all.iter().map(|d| dataset_json(&s, d)).collect::<Vec<_>>()
    )))
}

async fn dataset(
    State(s): State<Arc<CoordState>>,
    _c: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let d = s.dataset(&id).ok_or_else(|| unknown_dataset(&id))?;
    Ok(Json(dataset_json(&s, &d)))
}

/// The 404 for a dataset id.
pub fn unknown_dataset(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "unknown_dataset",
        format!(
            "dataset {id} is not in the catalog; GET /api/v1/datasets lists dataset ids (<organization>.<name>)"
        ),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    name: String,
    role: Role,
    #[serde(default)]
    organization: Option<prism_common::identity::OrgId>,
}

async fn create_user(
    State(s): State<Arc<CoordState>>,
    c: Caller,
    Json(body): Json<NewUser>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    c.require_admin()?;
    let store = s.store.clone();
    let (user, token) =
        blocking(move || store.create_user(&body.name, body.role, body.organization)).await??;
    Ok((
        StatusCode::CREATED,
        Json(json!({"user": user, "token": token, "note": "the token is shown once"})),
    ))
}

#[derive(Deserialize)]
struct Page {
    #[serde(default)]
    after: u64,
    #[serde(default = "default_limit")]
    limit: usize,
}
fn default_limit() -> usize {
    200
}

async fn audit(
    State(s): State<Arc<CoordState>>,
    c: Caller,
    Query(p): Query<Page>,
) -> ApiResult<Json<Value>> {
    c.require_admin()?;
    let store = s.store.clone();
    let entries =
        blocking(move || prism_common::audit::store::list(store.db(), p.after, p.limit.min(1000)))
            .await?
            .map_err(|e| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "store_error",
                    e.to_string(),
                )
            })?;
    Ok(Json(json!(entries)))
}

async fn verify_audit(State(s): State<Arc<CoordState>>, c: Caller) -> ApiResult<Json<Value>> {
    c.require_admin()?;
    let store = s.store.clone();
    Ok(Json(
        match blocking(move || prism_common::audit::store::verify(store.db())).await? {
            Ok(n) => json!({"valid": true, "entries": n}),
            Err(e) => json!({"valid": false, "error": e.to_string()}),
        },
    ))
}
