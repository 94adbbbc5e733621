//! The owner's source controls: register a dataset where its data already is (a CSV or Parquet
//! file or directory, a PostgreSQL table or view) and re-read it.
//!
//! - `POST /v1/sources`: `{name, columns, source: {kind: "csv", path} | {kind: "parquet",
//!   path, streamed?} | {kind:
//!   "postgres", conninfo, table, password_file | password_env, ca_file?}, replace, budget}`.
//! - `POST /v1/datasets/{name}/refresh`: re-reads the source; on failure the previous data
//!   stays and the error names the source.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use prism_common::schema::ColumnSpec;
use serde::Deserialize;
use serde_json::json;

use super::{Admin, AdminError, BudgetBody, Result, check_token};
use crate::sources::{SourceError, SourceSpec};

pub(super) fn routes() -> Router<Arc<Admin>> {
    Router::new()
        .route("/v1/sources", post(register))
        .route("/v1/datasets/{name}/refresh", post(refresh))
}

impl From<SourceError> for AdminError {
    fn from(e: SourceError) -> Self {
        match e {
            SourceError::Store(s) => s.into(),
            SourceError::Import(i) => i.into(),
            SourceError::Unavailable { .. } => {
                AdminError(StatusCode::BAD_GATEWAY, "source_unavailable", e.to_string())
            }
            SourceError::MissingColumn { .. } => AdminError(
                StatusCode::UNPROCESSABLE_ENTITY,
                "source_missing_column",
                e.to_string(),
            ),
            SourceError::Invalid { .. } => AdminError(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_source",
                e.to_string(),
            ),
        }
    }
}

/// Body of `POST /v1/sources`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceBody {
    name: String,
    columns: Vec<ColumnSpec>,
    source: SourceSpec,
    #[serde(default)]
    replace: bool,
    #[serde(default)]
    budget: Option<BudgetBody>,
    /// Charge the one budget of this population (shared with its other datasets).
    #[serde(default)]
    population: Option<String>,
}

async fn register(
    State(a): State<Arc<Admin>>,
    h: HeaderMap,
    Json(body): Json<SourceBody>,
) -> Result<(StatusCode, Json<serde_json::Value>)> {
    check_token(&a, &h)?;
    let budget = super::requested_budget(&a, body.budget.as_ref())?;
    let kind = body.source.kind();
    let meta = crate::sources::register(
        &a.state,
        &body.name,
        body.columns,
        body.source,
        budget,
        body.population,
        body.replace,
        "node-admin",
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(
            json!({"name": meta.schema.name, "rows": meta.rows, "columns": meta.schema.columns,
                    "source": kind}),
        ),
    ))
}

async fn refresh(
    State(a): State<Arc<Admin>>,
    h: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>> {
    check_token(&a, &h)?;
    if a.state.schema(&name).is_none() {
        return Err(crate::store::StoreError::UnknownDataset(name).into());
    }
    let meta = crate::sources::refresh(&a.state, &name, "node-admin").await?;
    Ok(Json(
        json!({"name": meta.schema.name, "rows": meta.rows, "refreshed_at": meta.imported_at}),
    ))
}
