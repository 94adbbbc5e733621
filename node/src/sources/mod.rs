//! Sources: datasets registered where the data already is, instead of imported.
//!
//! - A **file source** (a CSV file or a directory of CSV files, [`csv`]; a Parquet file or a
//!   directory of Parquet files, [`parquet`]) is read into the normal in-memory dataset at
//!   registration, at node start and on refresh; every backend works on it unchanged. When a
//!   re-read fails (the file was removed, a cell is bad), the previous data stays in service and the failure is recorded on the source (`last_error`) and audited.
//! - A **PostgreSQL source** ([`postgres`]) keeps its rows in the database: the node pushes the
//!   exact aggregate of a DP query down (clamping, WHERE and GROUP BY in SQL, [`pg_sql`]) and
//!   releases it through the same DP path as an imported dataset (`dp.rs`). In a `dp` data
//!   room its exact local vector is pushed down the same way (`prism_common::mpc::pushdown`)
//!   and noised as any other party's (`crate::mpc::release`); an `exact` room is refused (the
//!   node cannot check that a grouped or filtered column does not single out rows). HE
//!   queries on it are refused ([`refuse_backend`]): HE evaluates encrypted constants on every
//!   row.
//!
//! The schema and bounds are the owner's declaration (the same schema file as an import). The
//! store keeps the source description ([`SourceRecord`]), never a secret: a PostgreSQL password
//! is read at each connection from the file or environment variable the registration names.

pub mod csv;
pub mod parquet;
pub mod pg_sql;
pub mod postgres;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use prism_common::schema::{ColumnSpec, Dataset, DatasetSchema};

use crate::NodeState;
use crate::store::{Budget, DatasetMeta, StoreError};

/// Why a source could not be registered or read.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The source cannot be reached or read (file removed, server down, table dropped).
    #[error("source {source_name} is unavailable: {message}")]
    Unavailable {
        /// The file, or the PostgreSQL table and connection string.
        source_name: String,
        /// What failed.
        message: String,
    },
    /// The source does not match its declaration (bad cell, wrong type, bad settings).
    #[error("source {source_name}: {message}")]
    Invalid {
        /// The file, or the PostgreSQL table and connection string.
        source_name: String,
        /// What is wrong.
        message: String,
    },
    /// A declared column is not in the source.
    #[error(
        "source {source_name} has no column {column} of the declared schema (it has: {present}); fix the schema file or the source"
    )]
    MissingColumn {
        /// The PostgreSQL table and connection string.
        source_name: String,
        /// The declared column.
        column: String,
        /// The columns the source has.
        present: String,
    },
    /// The name or the declaration is not acceptable.
    #[error(transparent)]
    Import(#[from] crate::import::ImportError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub use crate::store::source_record::{PgSource, SourceRecord, SourceSpec};

/// A dataset whose rows stay where they are (a PostgreSQL database, or Parquet files streamed
/// in place): queried by pushdown.
#[derive(Debug, Clone)]
pub struct Remote {
    /// The owner's declaration.
    pub schema: DatasetSchema,
    /// The row count read at registration or the last refresh (what the catalog publishes).
    pub rows: u64,
    /// Where the rows are.
    pub source: Place,
}

/// Where a dataset queried by pushdown keeps its rows.
#[derive(Debug, Clone)]
pub enum Place {
    /// A PostgreSQL table or view: each aggregate is one SQL statement.
    Postgres(PgSource),
    /// Parquet files: each aggregate is one scan of the columns it needs, a chunk at a time
    /// (`prism_common::dp::Scan`).
    Parquet(PathBuf),
}

impl Place {
    /// `postgres` or `parquet`.
    pub fn kind(&self) -> &'static str {
        match self {
            Place::Postgres(_) => "postgres",
            Place::Parquet(_) => "parquet",
        }
    }

    /// The table or the path, for messages.
    pub fn label(&self) -> String {
        match self {
            Place::Postgres(pg) => pg.table.clone(),
            Place::Parquet(path) => path.display().to_string(),
        }
    }
}

impl Remote {
    /// The exact aggregates `push` asks for, over the rows `filter` selects. Files streamed
    /// in place must still hold the rows last read: otherwise the scan is refused (the files
    /// changed; a refresh re-reads and re-checks them).
    pub async fn aggregate(
        &self,
        filter: Option<&prism_common::plan::Predicate>,
        push: &prism_common::dp::Pushdown,
    ) -> Result<Vec<prism_common::dp::SourceGroup>, SourceError> {
        let schema = &self.schema;
        let path = match &self.source {
            Place::Postgres(pg) => return pg.aggregate(schema, filter, push).await,
            Place::Parquet(path) => path.clone(),
        };
        let published = self.rows;
        let wanted = prism_common::dp::Scan::columns_of(push, filter);
        let columns: Vec<ColumnSpec> = schema
            .columns
            .iter()
            .filter(|c| wanted.iter().any(|w| w.eq_ignore_ascii_case(&c.name)))
            .cloned()
            .collect();
        let name = schema.name.clone();
        let label = path.display().to_string();
        let failed = |e: tokio::task::JoinError| SourceError::Unavailable {
            source_name: label.clone(),
            message: e.to_string(),
        };
        let at = label.clone();
        let (push, filter) = (push.clone(), filter.cloned());
        tokio::task::spawn_blocking(move || {
            let label = at;
            let bad = |message: String| SourceError::Invalid {
                source_name: label.clone(),
                message,
            };
            // Without a privacy unit the row groups are scanned in shares, one per core, and
            // merged; a unit's bound follows the rows' order, so that scan runs as one.
            let parts = if push.unit.is_some() {
                1
            } else {
                parquet::shares()
            };
            let scans = parquet::in_shares(parts, &path, |part, parts| {
                let mut scan = prism_common::dp::Scan::new(push.clone(), filter.clone());
                parquet::stream_part(&name, &columns, &path, (part, parts), &mut |c| {
                    scan.add(&c).map_err(bad)
                })?;
                Ok(scan)
            })?;
            let mut scans = scans.into_iter();
            let mut scan = scans.next().ok_or_else(|| bad("no scan ran".into()))?;
            for other in scans {
                scan.merge(other).map_err(bad)?;
            }
            if scan.rows() != published {
                return Err(SourceError::Unavailable {
                    source_name: label,
                    message: format!(
                        "the files hold {} rows, {published} when last read: they changed; \
                         refresh the dataset (`prism-node source refresh {name}`) to re-read \
                         and check them, then ask again",
                        scan.rows()
                    ),
                });
            }
            Ok(scan.finish())
        })
        .await
        .map_err(failed)?
    }
}

/// Reads a source: a file source's rows, or a database source's row count after checking the
/// declared columns against it.
async fn read(
    name: &str,
    columns: &[ColumnSpec],
    spec: &SourceSpec,
) -> Result<(u64, Option<Dataset>), SourceError> {
    /// A file source's read: its row count, and its rows when the node holds them.
    type ReadFile = fn(&str, &[ColumnSpec], &Path) -> Result<(u64, Option<Dataset>), SourceError>;
    fn held(ds: Dataset) -> (u64, Option<Dataset>) {
        (ds.rows as u64, Some(ds))
    }
    let (path, read_file): (&PathBuf, ReadFile) = match spec {
        SourceSpec::Csv { path } => (path, |n, c, p| csv::read(n, c, p).map(held)),
        // Every row is read and checked once, then dropped: the count is what remains.
        SourceSpec::Parquet {
            path,
            streamed: true,
        } => (path, |n, c, p| Ok((parquet::census(n, c, p)?, None))),
        SourceSpec::Parquet { path, .. } => (path, |n, c, p| parquet::read(n, c, p).map(held)),
        SourceSpec::Postgres(pg) => {
            let schema = DatasetSchema {
                name: name.to_string(),
                columns: columns.to_vec(),
            };
            return Ok((pg.census(&schema).await?, None));
        }
    };
    let (n, c, p) = (name.to_string(), columns.to_vec(), path.clone());
    tokio::task::spawn_blocking(move || read_file(&n, &c, &p))
        .await
        .map_err(|e| SourceError::Unavailable {
            source_name: path.display().to_string(),
            message: e.to_string(),
        })?
}

/// The files a file source's path names: itself, or the `*.{ext}` files of a directory in name
/// order. A single file must not be of another file kind (a `.parquet` file registered as csv).
fn files(path: &Path, ext: &str) -> Result<Vec<PathBuf>, SourceError> {
    let unreadable = |e: std::io::Error| SourceError::Unavailable {
        source_name: path.display().to_string(),
        message: e.to_string(),
    };
    let has_ext = |p: &Path, x: &str| p.extension().is_some_and(|e| e.eq_ignore_ascii_case(x));
    let meta = std::fs::metadata(path).map_err(unreadable)?;
    if !meta.is_dir() {
        if let Some(other) = ["csv", "parquet"]
            .into_iter()
            .find(|x| *x != ext && has_ext(path, x))
        {
            return Err(SourceError::Invalid {
                source_name: path.display().to_string(),
                message: format!(
                    "this is a .{other} file, registered as a {ext} source; register it with \
                     kind {other} (prism-node source add --{other})"
                ),
            });
        }
        return Ok(vec![path.to_path_buf()]);
    }
    let mut out = Vec::new();
    for entry in std::fs::read_dir(path).map_err(unreadable)? {
        let p = entry.map_err(unreadable)?.path();
        if p.is_file() && has_ext(&p, ext) {
            out.push(p);
        }
    }
    out.sort();
    if out.is_empty() {
        return Err(SourceError::Unavailable {
            source_name: path.display().to_string(),
            message: format!("the directory holds no .{ext} file"),
        });
    }
    Ok(out)
}

/// Registers (or, with `replace`, re-registers) a dataset read from `spec`, charging its own
/// budget or, with `population`, that population's one budget (`Store::put_dataset_in`).
#[allow(clippy::too_many_arguments)]
pub async fn register(
    state: &Arc<NodeState>,
    name: &str,
    columns: Vec<ColumnSpec>,
    spec: SourceSpec,
    budget: Budget,
    population: Option<String>,
    replace: bool,
    actor: &str,
) -> Result<DatasetMeta, SourceError> {
    crate::import::check_declaration(name, &columns)?;
    if let SourceSpec::Postgres(pg) = &spec {
        pg.config()?;
    }
    let (rows, data) = read(name, &columns, &spec).await?;
    let schema = DatasetSchema {
        name: name.to_string(),
        columns,
    };
    install(
        state, schema, rows, data, spec, budget, population, replace, actor,
    )
    .await
}

/// Records a source read (its rows, for a file source held in memory) and serves it.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn install(
    state: &Arc<NodeState>,
    schema: DatasetSchema,
    rows: u64,
    data: Option<Dataset>,
    spec: SourceSpec,
    budget: Budget,
    population: Option<String>,
    replace: bool,
    actor: &str,
) -> Result<DatasetMeta, SourceError> {
    let record = SourceRecord {
        spec: spec.clone(),
        refreshed_at: prism_common::clock::now(),
        last_error: None,
    };
    let data = data.map(Arc::new);
    let (store, s, d, a) = (
        state.store.clone(),
        schema.clone(),
        data.clone(),
        actor.to_string(),
    );
    let meta = tokio::task::spawn_blocking(move || {
        store.put_source(
            &s,
            rows,
            d.as_deref(),
            &record,
            budget,
            replace,
            &a,
            population.as_deref(),
        )
    })
    .await
    .map_err(|e| SourceError::Invalid {
        source_name: schema.name.clone(),
        message: e.to_string(),
    })??;
    match (data, spec) {
        (Some(ds), _) => state.install_dataset(ds),
        (None, spec) => {
            if let Some(source) = place(spec) {
                state.install_remote(Arc::new(Remote {
                    schema,
                    rows,
                    source,
                }))
            }
        }
    }
    Ok(meta)
}

/// Re-reads a registered source. On failure the previous data (or row count) stays in
/// service, and the error is recorded on the source and audited.
pub async fn refresh(
    state: &Arc<NodeState>,
    name: &str,
    actor: &str,
) -> Result<DatasetMeta, SourceError> {
    let store = state.store.clone();
    let n = name.to_string();
    let (meta, record) = tokio::task::spawn_blocking(move || {
        let meta = store.dataset_meta(&n)?;
        let record = store.sources()?.remove(&n);
        Ok::<_, StoreError>((meta, record))
    })
    .await
    .map_err(|e| SourceError::Invalid {
        source_name: name.to_string(),
        message: e.to_string(),
    })??;
    let Some(record) = record else {
        return Err(SourceError::Invalid {
            source_name: name.to_string(),
            message: "the dataset was imported, not registered from a source; import it again \
                      to load new data"
                .into(),
        });
    };
    match read(name, &meta.schema.columns, &record.spec).await {
        Ok((rows, data)) => {
            let budget = Budget::new(0.0, 0.0); // a replaced dataset keeps its ledger
            install(
                state,
                meta.schema,
                rows,
                data,
                record.spec,
                budget,
                None,
                true,
                actor,
            )
            .await
        }
        Err(e) => {
            let (store, n, msg) = (state.store.clone(), name.to_string(), e.to_string());
            let _ = tokio::task::spawn_blocking(move || store.source_failed(&n, &msg)).await;
            Err(e)
        }
    }
}

/// Where a source queried by pushdown keeps its rows; `None` for one held in memory.
fn place(spec: SourceSpec) -> Option<Place> {
    match spec {
        SourceSpec::Postgres(pg) => Some(Place::Postgres(pg)),
        SourceSpec::Parquet {
            path,
            streamed: true,
        } => Some(Place::Parquet(path)),
        SourceSpec::Csv { .. } | SourceSpec::Parquet { .. } => None,
    }
}

/// The sources queried by pushdown recorded in the store (database sources, streamed Parquet
/// sources), ready to serve with their last row count.
pub fn remotes(store: &crate::store::Store) -> Result<Vec<Remote>, StoreError> {
    let mut out = Vec::new();
    for (name, rec) in store.sources()? {
        if let Some(source) = place(rec.spec) {
            let meta = store.dataset_meta(&name)?;
            out.push(Remote {
                schema: meta.schema,
                rows: meta.rows,
                source,
            });
        }
    }
    Ok(out)
}

/// At node start: re-reads every source (the stored data serves meanwhile, and stays when a
/// re-read fails).
pub async fn reestablish(state: Arc<NodeState>) {
    let store = state.store.clone();
    let names = match tokio::task::spawn_blocking(move || store.sources()).await {
        Ok(Ok(s)) => s.into_keys().collect::<Vec<_>>(),
        _ => return,
    };
    for name in names {
        match refresh(&state, &name, "node").await {
            Ok(meta) => tracing::info!(dataset = %name, rows = meta.rows, "source re-read"),
            Err(e) => {
                tracing::warn!(dataset = %name, error = %e, "source could not be re-read; the previous data stays")
            }
        }
    }
}

/// The refusal of a backend that does not run on a database source.
pub fn refuse_backend(
    state: &NodeState,
    backend: prism_common::backend::BackendId,
    dataset: &str,
) -> Option<prism_common::wire::ErrorBody> {
    let remote = state.remote(dataset)?;
    let why = match backend {
        prism_common::backend::BackendId::HeBackend => {
            "he_backend evaluates encrypted filter constants on every row, which cannot be \
             pushed down to where the rows are"
        }
        // A dp data room's local vector is pushed down (`crate::mpc::release`).
        prism_common::backend::BackendId::MpcBackend => return None,
        _ => "only dp_sandbox aggregates and dp data rooms are pushed down",
    };
    Some(unsupported(state, dataset, &remote, backend, why))
}

/// The refusal of what a source queried by pushdown does not serve, saying why and what does.
pub fn unsupported(
    state: &NodeState,
    dataset: &str,
    remote: &Remote,
    backend: prism_common::backend::BackendId,
    why: &str,
) -> prism_common::wire::ErrorBody {
    let (kind, instead) = match &remote.source {
        Place::Postgres(_) => (
            "a postgres source",
            "register the data as a csv or parquet file source or import it",
        ),
        Place::Parquet(_) => (
            "a streamed parquet source",
            "register it again without streamed, to hold its rows in memory",
        ),
    };
    let mut b = prism_common::wire::ErrorBody::new(
        "source_unsupported",
        format!(
            "node {}: dataset {dataset} is {kind} ({}), queried by pushdown: {why}; use \
             dp_sandbox or a dp data room, or {instead}",
            state.org,
            remote.source.label()
        ),
    );
    b.details = Some(
        serde_json::json!({"source": remote.source.kind(), "backend": backend,
                           "served": ["dp_sandbox", "mpc_backend"]}),
    );
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_description_refuses_unknown_fields_and_holds_no_password() {
        let csv: SourceSpec =
            serde_json::from_value(serde_json::json!({"kind": "csv", "path": "/srv/v.csv"}))
                .expect("csv");
        assert!(csv.held_in_memory());
        let parquet: SourceSpec =
            serde_json::from_value(serde_json::json!({"kind": "parquet", "path": "/srv/v"}))
                .expect("parquet");
        assert!(parquet.held_in_memory());
        assert_eq!(parquet.kind(), "parquet");
        let streamed: SourceSpec = serde_json::from_value(
            serde_json::json!({"kind": "parquet", "path": "/srv/v", "streamed": true}),
        )
        .expect("streamed");
        assert!(!streamed.held_in_memory());
        assert!(matches!(place(streamed), Some(Place::Parquet(_))));
        let pg: SourceSpec = serde_json::from_value(serde_json::json!({
            "kind": "postgres", "conninfo": "host=db user=u", "table": "public.visits",
            "password_env": "PGPASS"}))
        .expect("postgres");
        assert_eq!(pg.kind(), "postgres");
        for bad in [
            serde_json::json!({"kind": "csv", "path": "/x", "pasword_file": "/y"}),
            serde_json::json!({"kind": "postgres", "conninfo": "host=db", "table": "t", "password": "p"}),
            serde_json::json!({"kind": "parquet", "path": "/x", "format": "csv"}),
            serde_json::json!({"kind": "excel", "path": "/x.xlsx"}),
        ] {
            assert!(
                serde_json::from_value::<SourceSpec>(bad.clone()).is_err(),
                "{bad}"
            );
        }
    }
}

/// The DP release of a PostgreSQL source.
pub mod pushdown {
    use prism_common::dp::{self, DpError, DpParams, DpPolicy, DpRelease};
    use prism_common::plan::Plan;
    use prism_common::wire::ErrorBody;

    use super::Remote;

    /// Pushes the exact aggregate of `plan` down to the source, then releases it with the DP
    /// engine (same gate, noise, proof and cost as in memory). `Err`: the source failed (named
    /// in the refusal); `Ok(Err)`: the DP engine refused.
    pub async fn release(
        r: &Remote,
        plan: Plan,
        params: DpParams,
        policy: DpPolicy,
    ) -> Result<Result<DpRelease, DpError>, ErrorBody> {
        let push = match dp::pushdown(&plan, &r.schema, &params, &policy) {
            Ok(p) => p,
            Err(e) => return Ok(Err(e)),
        };
        let groups = r
            .aggregate(plan.filter.as_ref(), &push)
            .await
            .map_err(|e| {
                prism_common::wire::ErrorBody::new(
                    "source_unavailable",
                    format!(
                        "dataset {}: {e}; nothing was charged (the reservation was released)",
                        r.schema.name
                    ),
                )
            })?;
        let (schema, published) = (r.schema.clone(), r.rows);
        tokio::task::spawn_blocking(move || {
            dp::release_pushed(&plan, &schema, &params, &policy, groups, published)
        })
        .await
        .map_err(|e| {
            prism_common::wire::ErrorBody::new("node_internal_error", format!("worker failed: {e}"))
        })
    }
}
