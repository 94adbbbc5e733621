//! The admin API under `/api/v1`: bearer tokens, JSON errors `{"error": {"code", "message"}}`.
//!
//! Handlers are thin: they authenticate, call the store / planner / run orchestration, and map
//! errors to statuses. A user error is never a 500.
//!
//! Every route is registered once, in [`routes`], together with its `#[utoipa::path]`
//! operation, so the axum router and the OpenAPI document at `/api/v1/openapi.json` cannot
//! drift apart.

mod audit;
mod auth;
mod error;
mod errors_doc;
mod queries;
mod rooms;
mod system;
mod users;

pub use auth::{Caller, SKIPPED_HEADER, SKIPPED_IDS_HEADER, skipped_headers};
pub use error::{ApiError, ApiResult, ErrorDetail, ErrorResponse};

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json, Router};
use prism_common::backend;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::CoordState;
use crate::model::{DatasetRecord, Role};
use crate::store::DATASETS;

/// Runs blocking store work off the async runtime.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> ApiResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))
}

/// The OpenAPI document's frame; the operations come from [`routes`].
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Prism coordinator API",
        description = "Federated analytics under differential privacy, homomorphic encryption \
                       and multi-party computation. Errors are `{\"error\": {\"code\", \"message\"}}`.",
    ),
    modifiers(&ApiToken),
    security(("api_token" = [])),
    tags(
        (name = "catalog", description = "Backends, organizations and datasets"),
        (name = "queries", description = "Queries and their runs"),
        (name = "data_rooms", description = "Multi-organization MPC rooms"),
        (name = "admin", description = "Users and the audit log (admin role)"),
        (name = "operations", description = "Health, metrics and this document"),
        (name = "console", description = "The web console's static assets"),
    )
)]
struct ApiDoc;

/// The bearer API token every `/api/v1` route (and `/metrics`) requires.
struct ApiToken;

impl utoipa::Modify for ApiToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        openapi
            .components
            .get_or_insert_default()
            .add_security_scheme(
            "api_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "an API token from `prism-coordinator users create` or POST /api/v1/users",
                    ))
                    .build(),
            ),
        );
    }
}

/// Every HTTP route of the coordinator with its OpenAPI operation: the single list both the
/// router and the document are built from.
fn routes() -> OpenApiRouter<Arc<CoordState>> {
    let api = OpenApiRouter::new()
        .routes(routes!(backends))
        .routes(routes!(organizations))
        .routes(routes!(datasets))
        .routes(routes!(dataset))
        .routes(routes!(queries::list, queries::create))
        .routes(routes!(queries::validate))
        .routes(routes!(queries::show, queries::delete))
        .routes(routes!(queries::execute))
        .routes(routes!(queries::list_runs))
        .routes(routes!(queries::show_run, queries::delete_run))
        .routes(routes!(rooms::list, rooms::create))
        .routes(routes!(rooms::show, rooms::delete))
        .routes(routes!(rooms::execute))
        .routes(routes!(rooms::cancel))
        .routes(routes!(users::list, create_user))
        .routes(routes!(users::revoke))
        .routes(routes!(users::me))
        .routes(routes!(audit::audit))
        .routes(routes!(audit::verify_audit))
        .routes(routes!(system::openapi_json))
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such API route; GET /api/v1/openapi.json lists them",
            )
        });
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(system::health))
        .routes(routes!(system::ready))
        .routes(routes!(system::metrics))
        .nest("/api/v1", api)
        .merge(crate::console::routes())
}

/// The OpenAPI document of every route the coordinator serves.
pub fn openapi() -> utoipa::openapi::OpenApi {
    errors_doc::document(routes().into_openapi())
}

/// The coordinator's HTTP router: `/api/v1`, `/healthz`, `/metrics` and the console.
pub fn router(state: Arc<CoordState>) -> Router {
    let (router, doc) = routes().split_for_parts();
    let doc = errors_doc::document(doc);
    router
        .layer(Extension(Arc::new(doc)))
        .layer(axum::middleware::from_fn(json_errors))
        .with_state(state)
}

/// The most of a non-JSON error body that is kept as the message.
const MAX_REJECTION_TEXT: usize = 2048;

/// axum answers some errors itself before a handler runs (malformed JSON, a missing or wrong
/// content type, a body over the limit, a body that does not match the schema, a method the
/// route does not serve), as plain text or with no body. The API promises
/// `{"error": {"code", "message"}}` for every error, so those are rewritten here, keeping
/// their status and headers (such as `Allow`).
async fn json_errors(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    let json = resp
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || json {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, MAX_REJECTION_TEXT)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let (code, hint) = match status {
        StatusCode::BAD_REQUEST => ("invalid_json", "send a JSON body"),
        StatusCode::NOT_FOUND => ("not_found", "GET /api/v1/openapi.json lists the routes"),
        StatusCode::METHOD_NOT_ALLOWED => (
            "method_not_allowed",
            "the Allow header lists the methods this path serves",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => ("payload_too_large", "send a smaller body"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            "unsupported_media_type",
            "send the body as JSON with Content-Type: application/json",
        ),
        StatusCode::UNPROCESSABLE_ENTITY => (
            "invalid_body",
            "the body does not match the request schema in /api/v1/openapi.json",
        ),
        s if s.is_server_error() => ("internal", "the coordinator failed; see its log"),
        _ => ("bad_request", "see /api/v1/openapi.json"),
    };
    let what = status.canonical_reason().unwrap_or("error").to_lowercase();
    let message = if text.is_empty() {
        format!("{what}; {hint}")
    } else {
        format!("{what}: {text}; {hint}")
    };
    parts.headers.remove(axum::http::header::CONTENT_TYPE);
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    let mut out = ApiError::new(status, code, message).into_response();
    for (name, value) in parts.headers.iter() {
        out.headers_mut().insert(name.clone(), value.clone());
    }
    out
}

/// The OpenAPI 3.1 document of this API.
/// The backend registry: each backend's status, supported SQL, performance and guarantee.
#[utoipa::path(get, path = "/backends", tag = "catalog", responses(
    (status = 200, description = "The registry", body = Vec<Value>),
    (status = 401, description = "Missing or invalid API token", body = ErrorResponse),
))]
async fn backends(_c: Caller) -> Json<Value> {
    Json(json!(backend::registry()))
}

/// Member organizations, whether their node is connected, and their datasets.
#[utoipa::path(get, path = "/organizations", tag = "catalog", responses(
    (status = 200, description = "Organizations", body = Vec<Value>),
    (status = 401, description = "Missing or invalid API token", body = ErrorResponse),
))]
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

/// The catalog: every dataset's schema, row count and whether its node is online.
#[utoipa::path(get, path = "/datasets", tag = "catalog", responses(
    (status = 200, description = "Datasets", body = Vec<Value>),
    (status = 401, description = "Missing or invalid API token", body = ErrorResponse),
))]
async fn datasets(State(s): State<Arc<CoordState>>, _c: Caller) -> ApiResult<Json<Value>> {
    let store = s.store.clone();
    let all: Vec<DatasetRecord> = blocking(move || store.list(DATASETS)).await??;
    Ok(Json(json!(
        all.iter().map(|d| dataset_json(&s, d)).collect::<Vec<_>>()
    )))
}

/// One catalog entry.
#[utoipa::path(get, path = "/datasets/{id}", tag = "catalog",
    params(("id" = String, Path, description = "`<organization>.<name>`")),
    responses(
        (status = 200, description = "The dataset", body = Object),
        (status = 404, description = "Not in the catalog (`unknown_dataset`)", body = ErrorResponse),
    )
)]
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

/// A user to create.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewUser {
    /// Display name.
    name: String,
    role: Role,
    /// The user's organization (sees that organization's data rooms).
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    organization: Option<prism_common::identity::OrgId>,
}

/// Creates a user and returns its API token, once.
#[utoipa::path(post, path = "/users", tag = "admin", request_body = NewUser, responses(
    (status = 201, description = "`{user, token, note}`", body = Object),
    (status = 403, description = "Not an admin", body = ErrorResponse),
    (status = 422, description = "`invalid_user` (empty or overlong name) or `unknown_organization`", body = ErrorResponse),
))]
async fn create_user(
    State(s): State<Arc<CoordState>>,
    c: Caller,
    Json(body): Json<NewUser>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    c.require_admin()?;
    let name = crate::model::user_name(&body.name)
        .map_err(|m| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_user", m))?;
    if let Some(o) = body.organization.as_ref().filter(|o| !s.nodes.is_member(o)) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_organization",
            format!(
                "organization {o} is not a member of this federation; GET /api/v1/organizations lists the members"
            ),
        ));
    }
    let store = s.store.clone();
    let (user, token) =
        blocking(move || store.create_user(&name, body.role, body.organization)).await??;
    Ok((
        StatusCode::CREATED,
        Json(json!({"user": user, "token": token, "note": "the token is shown once"})),
    ))
}

/// `?wait=true` on the execute routes.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WaitParam {
    /// Answer once the run or room has finished instead of at once with it pending.
    #[serde(default)]
    pub wait: bool,
}

/// Waits until `id` is announced on `done` (when announcements were missed, until `finished`
/// says so), `deadline` passes, or the coordinator stops: a stopping coordinator fails what is
/// in flight at once, and the caller then answers with the record as it stands rather than
/// hold the API's graceful shutdown for the whole deadline.
pub async fn wait_done<F, Fut>(
    s: &CoordState,
    mut done: tokio::sync::broadcast::Receiver<String>,
    id: &str,
    deadline: std::time::Duration,
    finished: F,
) where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let wait = async {
        loop {
            match done.recv().await {
                Ok(rid) if rid == id => break,
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    if finished().await {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
    };
    let stopping = async {
        s.shutdown.cancelled().await;
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    };
    tokio::select! {
        _ = tokio::time::timeout(deadline, wait) => {}
        _ = stopping => {}
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// A route registered on a plain axum router would be served without being documented.
    /// Every HTTP route must go through `routes!` in [`super::routes`]; this scans the crate's
    /// source for the axum calls that would bypass it.
    #[test]
    fn no_route_bypasses_the_openapi_router() {
        // Spelled in pieces so this file does not match itself.
        let bypasses = [
            concat!(".rou", "te("),
            concat!(".route_", "service("),
            concat!(".nest_", "service("),
            concat!("Router::", "new()"),
            concat!("axum::rou", "ting::"),
        ];
        let mut stack = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("src")];
        let mut scanned = 0;
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).expect("read src") {
                let path = entry.expect("entry").path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    scanned += 1;
                    let text = std::fs::read_to_string(&path)
                        .expect("read")
                        .replace("OpenApiRouter::new()", "");
                    for b in bypasses {
                        assert!(
                            !text.contains(b),
                            "{} uses {b}: register routes with utoipa_axum::routes! in api::routes",
                            path.display()
                        );
                    }
                }
            }
        }
        assert!(scanned > 5, "scanned only {scanned} files");
    }

    #[test]
    fn the_document_names_its_security_scheme_and_error_schema() {
        let doc = serde_json::to_value(super::openapi()).expect("JSON");
        assert_eq!(
            doc["components"]["securitySchemes"]["api_token"]["scheme"],
            "bearer"
        );
        assert!(doc["components"]["schemas"]["ErrorResponse"].is_object());
        // Public operations say so; the rest inherit the bearer requirement.
        assert_eq!(
            doc["paths"]["/healthz"]["get"]["security"],
            serde_json::json!([{}])
        );
        assert!(
            doc["paths"]["/api/v1/runs"]["get"]
                .get("security")
                .is_none()
        );
        assert_eq!(doc["security"][0]["api_token"], serde_json::json!([]));
        // Listings are documented as the arrays they are.
        for path in [
            "/api/v1/queries",
            "/api/v1/runs",
            "/api/v1/data_rooms",
            "/api/v1/datasets",
            "/api/v1/organizations",
            "/api/v1/backends",
            "/api/v1/audit",
        ] {
            let schema = &doc["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]
                ["schema"];
            assert_eq!(schema["type"], "array", "{path}: {schema}");
        }
    }
}
