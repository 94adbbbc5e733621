//! The node's local admin API (loopback only, bearer token): the data owner's controls.
//!
//! Import datasets, declare bounds and public keys, set budgets, read the audit log. The
//! coordinator has no access to any of this.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch};
use axum::{Json, Router};
use prism_common::backend::BackendId;
use prism_common::release::{DatasetRelease, ReleaseMode};
use prism_common::schema::{Bounds, ColumnSpec};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::NodeState;
use crate::import::{ImportError, parse_csv};
use crate::store::{Budget, StoreError};

mod owner;
mod rooms;
mod sources;
mod upload;

pub(crate) use rooms::load_invitation;
use rooms::{attest, decline, invitation, invitations, withdraw};

/// An admin API error: status, stable code, message.
#[derive(Debug)]
pub struct AdminError(
    pub(crate) StatusCode,
    pub(crate) &'static str,
    pub(crate) String,
);

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        (
            self.0,
            Json(json!({"error": {"code": self.1, "message": self.2}})),
        )
            .into_response()
    }
}

impl From<StoreError> for AdminError {
    fn from(e: StoreError) -> Self {
        match &e {
            StoreError::UnknownDataset(_) => {
                AdminError(StatusCode::NOT_FOUND, "unknown_dataset", e.to_string())
            }
            StoreError::DatasetExists(_) => {
                AdminError(StatusCode::CONFLICT, "dataset_exists", e.to_string())
            }
            StoreError::InvalidBudget(_) => AdminError(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_budget",
                e.to_string(),
            ),
            _ => AdminError(
                StatusCode::INTERNAL_SERVER_ERROR,
                "store_error",
                e.to_string(),
            ),
        }
    }
}

impl From<ImportError> for AdminError {
    fn from(e: ImportError) -> Self {
        AdminError(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_csv",
            e.to_string(),
        )
    }
}

pub(crate) type Result<T> = std::result::Result<T, AdminError>;

pub(crate) struct Admin {
    pub(crate) state: Arc<NodeState>,
    token_hash: [u8; 32],
}

pub(crate) fn check_token(admin: &Admin, headers: &HeaderMap) -> Result<()> {
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            AdminError(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing bearer token".into(),
            )
        })?;
    let h: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    if h != admin.token_hash {
        return Err(AdminError(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "invalid node admin token".into(),
        ));
    }
    Ok(())
}

pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| AdminError(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))
}

/// Builds the router.
pub fn router(state: Arc<NodeState>, token: &str) -> Router {
    let admin = Arc::new(Admin {
        state,
        token_hash: Sha256::digest(token.as_bytes()).into(),
    });
    let import_limit = admin.state.config.max_import_mib.saturating_mul(1 << 20);
    Router::new()
        .route("/healthz", get(health))
        .route("/readyz", get(ready))
        .route("/v1/status", get(status))
        .route(
            "/v1/datasets",
            get(list_datasets)
                .post(import)
                .layer(axum::extract::DefaultBodyLimit::max(import_limit)),
        )
        .route("/v1/datasets/{name}/columns/{column}", patch(update_column))
        .route(
            "/v1/datasets/{name}/budget",
            get(get_budget).put(set_budget),
        )
        .route(
            "/v1/datasets/{name}/release",
            get(get_release).put(set_release),
        )
        .route("/v1/invitations", get(invitations))
        .route("/v1/invitations/{room_id}", get(invitation))
        .route(
            "/v1/invitations/{room_id}/attest",
            axum::routing::post(attest),
        )
        .route(
            "/v1/invitations/{room_id}/decline",
            axum::routing::post(decline),
        )
        .route(
            "/v1/invitations/{room_id}/withdraw",
            axum::routing::post(withdraw),
        )
        .route("/v1/audit", get(audit))
        .route("/v1/audit/verify", get(verify_audit))
        .route("/metrics", get(metrics))
        .merge(owner::routes())
        .merge(sources::routes())
        .merge(upload::routes())
        .merge(crate::console::routes())
        .with_state(admin)
}

/// Prometheus scrapes this with the admin token (`authorization.credentials_file`).
async fn metrics(State(a): State<Arc<Admin>>, h: HeaderMap) -> Result<Response> {
    check_token(&a, &h)?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            prism_common::metrics::CONTENT_TYPE,
        )],
        a.state.metrics.encode(),
    )
        .into_response())
}

async fn health(State(a): State<Arc<Admin>>) -> Json<serde_json::Value> {
    Json(json!({"status": "ok", "org": a.state.org, "connected": a.state.is_connected()}))
}

/// Readiness: 200 only while the node is connected to the coordinator, its store answers and
/// it is not stopping; otherwise 503 naming the failed check. `/healthz` stays liveness.
async fn ready(State(a): State<Arc<Admin>>) -> (StatusCode, Json<serde_json::Value>) {
    let store = a.state.store.clone();
    let store_ok = tokio::task::spawn_blocking(move || store.readable())
        .await
        .unwrap_or(false);
    let connected = a.state.is_connected();
    let stopping = a.state.shutdown.is_cancelled();
    let refused = a.state.link_failed.lock().ok().and_then(|f| f.clone());
    let ready = store_ok && connected && !stopping;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({
            "ready": ready,
            "org": a.state.org,
            "checks": {"store": store_ok, "coordinator_connected": connected, "stopping": stopping},
            "coordinator_refused": refused,
        })),
    )
}

async fn status(State(a): State<Arc<Admin>>, h: HeaderMap) -> Result<Json<serde_json::Value>> {
    check_token(&a, &h)?;
    Ok(Json(json!({
        "org": a.state.org,
        "connected": a.state.is_connected(),
        "coordinator": a.state.config.coordinator_addr.to_string(),
        "peer_addr": a.state.peer_addr.to_string(),
        "policy": a.state.config.policy,
    })))
}

fn budget_json(b: &Budget) -> serde_json::Value {
    b.to_json()
}

async fn list_datasets(
    State(a): State<Arc<Admin>>,
    h: HeaderMap,
) -> Result<Json<serde_json::Value>> {
    check_token(&a, &h)?;
    let store = a.state.store.clone();
    let (list, sources) =
        blocking(move || Ok::<_, StoreError>((store.datasets()?, store.sources()?))).await??;
    // Where each dataset's rows are: `import` (stored on the node), `csv`, `parquet` or
    // `postgres`.
    let source = |name: &str| match sources.get(name) {
        Some(s) => s.describe(),
        None => json!({"kind": "import"}),
    };
    Ok(Json(json!(
        list.iter()
            .map(
                |(m, b)| json!({"name": m.schema.name, "columns": m.schema.columns, "rows": m.rows,
                             "imported_at": m.imported_at, "budget": budget_json(b),
                             "population": m.population,
                             "source": source(&m.schema.name),
                             "release": crate::policy::modes(&a.state, &m.schema.name),
                             "identifying_columns": crate::policy::dataset_release(&a.state, &m.schema.name).identifying_columns})
            )
            .collect::<Vec<_>>()
    )))
}

/// Body of `POST /v1/datasets`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportBody {
    name: String,
    columns: Vec<ColumnSpec>,
    csv: String,
    #[serde(default)]
    replace: bool,
    #[serde(default)]
    budget: Option<BudgetBody>,
    /// Charge the one budget of this population (shared with its other datasets).
    #[serde(default)]
    population: Option<String>,
}

/// A budget total.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BudgetBody {
    epsilon: f64,
    delta: f64,
}

/// The budget a new dataset gets: the one asked for, or the policy's default; checked.
pub(crate) fn requested_budget(a: &Admin, asked: Option<&BudgetBody>) -> Result<Budget> {
    let policy = &a.state.config.policy;
    let (e, d) = asked.map_or(
        (policy.default_budget_epsilon, policy.default_budget_delta),
        |b| (b.epsilon, b.delta),
    );
    crate::store::check_total(e, d)?;
    Ok(Budget::new(e, d))
}

async fn import(
    State(a): State<Arc<Admin>>,
    h: HeaderMap,
    Json(body): Json<ImportBody>,
) -> Result<(StatusCode, Json<serde_json::Value>)> {
    check_token(&a, &h)?;
    let budget = requested_budget(&a, body.budget.as_ref())?;
    let (name, columns, csv, replace) = (body.name, body.columns, body.csv, body.replace);
    let population = body.population;
    let ds = blocking(move || parse_csv(&name, columns, &csv)).await??;
    let store = a.state.store.clone();
    let ds = Arc::new(ds);
    let ds2 = ds.clone();
    let meta = blocking(move || {
        store.put_dataset_in(&ds2, budget, replace, "node-admin", population.as_deref())
    })
    .await??;
    a.state.install_dataset(ds);
    Ok((
        StatusCode::CREATED,
        Json(json!({"name": meta.schema.name, "rows": meta.rows, "columns": meta.schema.columns})),
    ))
}

/// Body of `PATCH /v1/datasets/{name}/columns/{column}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ColumnPatch {
    #[serde(default)]
    bounds: Option<Bounds>,
    #[serde(default)]
    public_keys: Option<Vec<String>>,
}

async fn update_column(
    State(a): State<Arc<Admin>>,
    h: HeaderMap,
    Path((name, column)): Path<(String, String)>,
    Json(body): Json<ColumnPatch>,
) -> Result<Json<serde_json::Value>> {
    check_token(&a, &h)?;
    let mut new_schema = a.state.schema(&name).ok_or_else(|| {
        AdminError(
            StatusCode::NOT_FOUND,
            "unknown_dataset",
            format!("dataset {name} does not exist"),
        )
    })?;
    let idx = new_schema.column_index(&column).ok_or_else(|| {
        AdminError(
            StatusCode::NOT_FOUND,
            "unknown_column",
            format!("dataset {name} has no column {column}"),
        )
    })?;
    let spec = &mut new_schema.columns[idx];
    if let Some(b) = body.bounds {
        if !(spec.ty.is_numeric() && b.min.is_finite() && b.max.is_finite() && b.min <= b.max) {
            return Err(AdminError(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_bounds",
                format!("column {column}: bounds need a numeric column and finite min ≤ max"),
            ));
        }
        spec.bounds = Some(b);
    }
    if let Some(k) = body.public_keys {
        spec.public_keys = Some(k);
    }
    let schema = new_schema.clone();
    let store = a.state.store.clone();
    let details = json!({"column": column, "spec": schema.columns[idx]});
    blocking(move || store.update_schema(&schema, "node-admin", details)).await??;
    let out = json!(new_schema);
    if let Some(ds) = a.state.dataset(&name) {
        let mut ds = (*ds).clone();
        ds.schema = new_schema;
        a.state.install_dataset(Arc::new(ds));
    } else if let Some(r) = a.state.remote(&name) {
        let mut r = (*r).clone();
        r.schema = new_schema;
        a.state.install_remote(Arc::new(r));
    }
    Ok(Json(out))
}

async fn get_budget(
    State(a): State<Arc<Admin>>,
    h: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>> {
    check_token(&a, &h)?;
    let store = a.state.store.clone();
    let b = blocking(move || store.budget(&name)).await??;
    Ok(Json(budget_json(&b)))
}

async fn set_budget(
    State(a): State<Arc<Admin>>,
    h: HeaderMap,
    Path(name): Path<String>,
    Json(body): Json<BudgetBody>,
) -> Result<Json<serde_json::Value>> {
    check_token(&a, &h)?;
    let store = a.state.store.clone();
    let b =
        blocking(move || store.set_budget(&name, body.epsilon, body.delta, "node-admin")).await??;
    a.state.budget_changed();
    Ok(Json(budget_json(&b)))
}

/// Body of `PUT /v1/datasets/{name}/release`: the fields given replace the dataset's settings.
/// A backend's mode is `dp`, `exact`, `off`, or `policy` (back to the node policy's).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReleaseBody {
    #[serde(default)]
    dp_sandbox: Option<String>,
    #[serde(default)]
    he_backend: Option<String>,
    #[serde(default)]
    mpc_backend: Option<String>,
    #[serde(default)]
    identifying_columns: Option<Vec<String>>,
}

fn release_json(state: &NodeState, name: &str, own: &DatasetRelease) -> serde_json::Value {
    json!({
        "dataset": name,
        "effective": crate::policy::modes(state, name),
        "policy": state.config.policy.release,
        "overrides": own,
        "min_group_size": state.config.policy.min_group_size,
    })
}

async fn get_release(
    State(a): State<Arc<Admin>>,
    h: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>> {
    check_token(&a, &h)?;
    if a.state.schema(&name).is_none() {
        return Err(StoreError::UnknownDataset(name).into());
    }
    let own = crate::policy::dataset_release(&a.state, &name);
    Ok(Json(release_json(&a.state, &name, &own)))
}

/// Sets the owner's release modes (and identifying columns) for one dataset, audited; the
/// catalog is republished so analysts see the change.
async fn set_release(
    State(a): State<Arc<Admin>>,
    h: HeaderMap,
    Path(name): Path<String>,
    Json(body): Json<ReleaseBody>,
) -> Result<Json<serde_json::Value>> {
    check_token(&a, &h)?;
    let schema = a
        .state
        .schema(&name)
        .ok_or_else(|| StoreError::UnknownDataset(name.clone()))?;
    let bad = |m: String| AdminError(StatusCode::UNPROCESSABLE_ENTITY, "invalid_release", m);
    let mut own = crate::policy::dataset_release(&a.state, &name);
    for (backend, mode) in [
        (BackendId::DpSandbox, body.dp_sandbox),
        (BackendId::HeBackend, body.he_backend),
        (BackendId::MpcBackend, body.mpc_backend),
    ] {
        match mode.as_deref() {
            None => {}
            Some("policy") => match backend {
                BackendId::DpSandbox => own.dp_sandbox = None,
                BackendId::HeBackend => own.he_backend = None,
                _ => own.mpc_backend = None,
            },
            Some(m) => {
                let m = ReleaseMode::parse(m).ok_or_else(|| {
                    bad(format!(
                        "{backend}: release mode {m:?}; use dp, exact, off or policy"
                    ))
                })?;
                own.set(backend, m).map_err(bad)?
            }
        }
    }
    if let Some(cols) = body.identifying_columns {
        if let Some(c) = cols.iter().find(|c| schema.column(c).is_none()) {
            return Err(bad(format!("dataset {name} has no column {c}")));
        }
        own.identifying_columns = cols;
    }
    let policy = &a.state.config.policy;
    if own.apply(policy.release).any_exact() && policy.min_group_size < 2 {
        return Err(bad(format!(
            "an exact release mode needs the node policy's min_group_size >= 2 (it is {})",
            policy.min_group_size
        )));
    }
    let store = a.state.store.clone();
    let (n, o) = (name.clone(), own.clone());
    blocking(move || store.set_dataset_release(&n, &o, "node-admin")).await??;
    a.state.catalog_changed.notify_one();
    Ok(Json(release_json(&a.state, &name, &own)))
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
    State(a): State<Arc<Admin>>,
    h: HeaderMap,
    Query(p): Query<Page>,
) -> Result<Json<serde_json::Value>> {
    check_token(&a, &h)?;
    let store = a.state.store.clone();
    let entries =
        blocking(move || prism_common::audit::store::list(store.db(), p.after, p.limit.min(1000)))
            .await?
            .map_err(|e| {
                AdminError(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "store_error",
                    e.to_string(),
                )
            })?;
    Ok(Json(json!(entries)))
}

async fn verify_audit(
    State(a): State<Arc<Admin>>,
    h: HeaderMap,
) -> Result<Json<serde_json::Value>> {
    check_token(&a, &h)?;
    let store = a.state.store.clone();
    let verified = blocking(move || {
        let n = prism_common::audit::store::verify(store.db()).map_err(|e| e.to_string())?;
        let budgets = crate::store::chain::check(store.db()).map_err(|e| e.to_string())?;
        Ok::<_, String>((n, budgets))
    });
    match verified.await? {
        Ok((n, budgets)) => Ok(Json(
            json!({"valid": true, "entries": n, "budgets_checked": budgets}),
        )),
        Err(e) => Ok(Json(json!({"valid": false, "error": e}))),
    }
}
