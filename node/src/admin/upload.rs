//! The columnar import (`crate::columnar`): `POST /v1/datasets/upload`, a
//! `multipart/form-data` body of two parts in this order: `declaration` (JSON: `{name,
//! columns, replace?, budget?, population?}`, as `POST /v1/datasets` without `csv`) and `csv` (the file,
//! streamed: never buffered whole, so it may be larger than memory). 201 with the row count;
//! the dataset is then a streamed Parquet source in the node's own directory.

use std::sync::Arc;

use axum::extract::{Multipart, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use prism_common::schema::{ColumnSpec, DatasetSchema};
use serde::Deserialize;
use serde_json::json;

use super::{Admin, AdminError, BudgetBody, Result, check_token};
use crate::columnar::{self, ChannelReader, ColumnarError};
use crate::sources::SourceSpec;

pub(super) fn routes() -> Router<Arc<Admin>> {
    Router::new().route(
        "/v1/datasets/upload",
        post(upload).layer(axum::extract::DefaultBodyLimit::disable()),
    )
}

impl From<ColumnarError> for AdminError {
    fn from(e: ColumnarError) -> Self {
        match e {
            ColumnarError::Import(i) => i.into(),
            ColumnarError::Upload(_) => {
                AdminError(StatusCode::BAD_REQUEST, "upload_broken", e.to_string())
            }
            ColumnarError::Storage(_) => AdminError(
                StatusCode::INSUFFICIENT_STORAGE,
                "storage_failed",
                e.to_string(),
            ),
        }
    }
}

/// The `declaration` part.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Declaration {
    name: String,
    columns: Vec<ColumnSpec>,
    #[serde(default)]
    replace: bool,
    #[serde(default)]
    budget: Option<BudgetBody>,
    #[serde(default)]
    population: Option<String>,
}

fn bad_request(message: String) -> AdminError {
    AdminError(StatusCode::BAD_REQUEST, "invalid_upload", message)
}

async fn upload(
    State(a): State<Arc<Admin>>,
    h: HeaderMap,
    mut parts: Multipart,
) -> Result<(StatusCode, Json<serde_json::Value>)> {
    check_token(&a, &h)?;
    let broken = |e: axum::extract::multipart::MultipartError| {
        AdminError::from(ColumnarError::Upload(e.body_text()))
    };
    let order = "send two parts, declaration (JSON) then csv (the file)";
    let first = parts
        .next_field()
        .await
        .map_err(broken)?
        .ok_or_else(|| bad_request(format!("the upload is empty; {order}")))?;
    if first.name() != Some("declaration") {
        return Err(bad_request(format!(
            "the first part is {:?}; {order}",
            first.name().unwrap_or_default()
        )));
    }
    let text = first.bytes().await.map_err(broken)?;
    let d: Declaration =
        serde_json::from_slice(&text).map_err(|e| bad_request(format!("the declaration: {e}")))?;
    crate::import::check_declaration(&d.name, &d.columns)?;
    let budget = super::requested_budget(&a, d.budget.as_ref())?;
    if a.state.schema(&d.name).is_some() && !d.replace {
        return Err(AdminError(
            StatusCode::CONFLICT,
            "dataset_exists",
            format!(
                "dataset {} already exists; send replace: true to replace its rows (its budget \
                 ledger is kept)",
                d.name
            ),
        ));
    }
    let mut csv = parts
        .next_field()
        .await
        .map_err(broken)?
        .ok_or_else(|| bad_request(format!("the csv part is missing; {order}")))?;
    if csv.name() != Some("csv") {
        return Err(bad_request(format!(
            "the second part is {:?}; {order}",
            csv.name().unwrap_or_default()
        )));
    }

    let root = columnar::root(&a.state.config.data_path);
    let id = uuid::Uuid::new_v4().to_string();
    let (tmp, done) = (
        root.join(&d.name).join(format!(".upload-{id}")),
        root.join(&d.name).join(&id),
    );
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let (columns, dir) = (d.columns.clone(), tmp.clone());
    let parser =
        tokio::task::spawn_blocking(move || columnar::write(columns, ChannelReader::new(rx), &dir));
    // If the request is dropped while the body is read, the channel closes without its end:
    // the parser fails and removes what it wrote.
    let mut broke = None;
    loop {
        match csv.chunk().await {
            Ok(Some(b)) => {
                if tx.send(Some(Ok(b))).await.is_err() {
                    break; // the parser stopped on a bad row: its error is the answer
                }
            }
            Ok(None) => {
                let _ = tx.send(None).await;
                break;
            }
            Err(e) => {
                let text = e.body_text();
                let _ = tx.send(Some(Err(text.clone()))).await;
                broke = Some(text);
                break;
            }
        }
    }
    drop(tx);
    // From here on the import finishes on its own task: a client gone now cannot leave it
    // half done (published files without their registration).
    let state = a.state.clone();
    tokio::spawn(finish(state, d, parser, broke, tmp, done, budget))
        .await
        .map_err(|e| AdminError(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
}

/// Publishes and registers a parsed upload, or cleans up after a failed one.
async fn finish(
    state: Arc<crate::NodeState>,
    d: Declaration,
    parser: tokio::task::JoinHandle<std::result::Result<u64, ColumnarError>>,
    broke: Option<String>,
    tmp: std::path::PathBuf,
    done: std::path::PathBuf,
    budget: crate::store::Budget,
) -> Result<(StatusCode, Json<serde_json::Value>)> {
    let parsed = parser
        .await
        .map_err(|e| AdminError(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()));
    let rows = match (broke, parsed) {
        (_, Ok(Ok(rows))) => std::fs::rename(&tmp, &done)
            .map(|_| rows)
            .map_err(|e| ColumnarError::Storage(e.to_string()).into()),
        (Some(e), _) => Err(ColumnarError::Upload(e).into()),
        (None, Ok(Err(e))) => Err(e.into()),
        (None, Err(e)) => Err(e),
    };
    let rows = match rows {
        Ok(rows) => rows,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };

    let previous = state
        .remote(&d.name)
        .and_then(|r| match &r.source {
            crate::sources::Place::Parquet(p) => Some(p.clone()),
            crate::sources::Place::Postgres(_) => None,
        })
        .filter(|p| columnar::owned(&state.config.data_path, p) && *p != done);
    let schema = DatasetSchema {
        name: d.name.clone(),
        columns: d.columns,
    };
    let spec = SourceSpec::Parquet {
        path: done.clone(),
        streamed: true,
    };
    let meta = crate::sources::install(
        &state,
        schema,
        rows,
        None,
        spec,
        budget,
        d.population,
        d.replace,
        "node-admin",
    )
    .await;
    let meta = match meta {
        Ok(m) => m,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&done);
            return Err(e.into());
        }
    };
    if let Some(old) = previous {
        // Scans already reading the old files keep them open; new ones read the new files.
        let _ = std::fs::remove_dir_all(old);
    }
    Ok((
        StatusCode::CREATED,
        Json(json!({"name": meta.schema.name, "rows": meta.rows,
                    "columns": meta.schema.columns, "storage": "columnar"})),
    ))
}
