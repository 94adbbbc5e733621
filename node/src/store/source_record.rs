//! What the store keeps about a registered source: where its rows are, when it was last read,
//! why the last re-read failed. Never a secret (see [`crate::sources`]).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// A PostgreSQL table or view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PgSource {
    /// libpq-style connection string without a password (`host=… port=… dbname=… user=…`).
    pub conninfo: String,
    /// `table`, or `schema.table`.
    pub table: String,
    /// A file holding the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// An environment variable of the node holding the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// A PEM file of the CA certificate(s) the server's certificate must chain to (default:
    /// the system's bundle, `/etc/ssl/certs/ca-certificates.crt`). See
    /// `crate::sources::postgres` for when the connection is encrypted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

/// Where a registered dataset's rows are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SourceSpec {
    /// A CSV file, or a directory of CSV files, read in place.
    Csv {
        /// The file or directory.
        path: PathBuf,
    },
    /// A Parquet file, or a directory of Parquet files, read in place.
    Parquet {
        /// The file or directory.
        path: PathBuf,
        /// The rows stay in the files: every query streams the columns it needs, one chunk at
        /// a time, so the node never holds the dataset (queried by pushdown, as a database
        /// source is). Without it the rows are read into memory.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        streamed: bool,
    },
    /// A PostgreSQL table or view, queried by pushdown.
    Postgres(PgSource),
}

impl SourceSpec {
    /// Whether the node holds the rows in memory (file sources) or leaves them in place.
    pub fn held_in_memory(&self) -> bool {
        matches!(
            self,
            SourceSpec::Csv { .. }
                | SourceSpec::Parquet {
                    streamed: false,
                    ..
                }
        )
    }

    /// `csv`, `parquet` or `postgres`.
    pub fn kind(&self) -> &'static str {
        match self {
            SourceSpec::Csv { .. } => "csv",
            SourceSpec::Parquet { .. } => "parquet",
            SourceSpec::Postgres(_) => "postgres",
        }
    }
}

/// What the store keeps about a source (no secret).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceRecord {
    /// Where the rows are.
    pub spec: SourceSpec,
    /// When it was last read successfully.
    pub refreshed_at: String,
    /// Why the last re-read failed, if it did (cleared by a successful one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl SourceRecord {
    /// The description the audit log and the owner's listing show.
    pub fn describe(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(&self.spec).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            o.insert("refreshed_at".into(), self.refreshed_at.clone().into());
            if let Some(e) = &self.last_error {
                o.insert("last_error".into(), e.clone().into());
            }
        }
        v
    }
}
