//! PostgreSQL sources: the connection (credentials from a file or an environment variable,
//! never from the catalog), the check of the declared schema against the table, the census
//! (row count) and the one aggregate statement of a pushed-down DP query.
//!
//! Only aggregates cross the connection: the statements are those of [`super::pg_sql`], and
//! the node reads one row per group (keys and exact sums / counts), never a row of the table.
//!
//! TLS ([`Transport`]): a connection that leaves the host is always encrypted, and the server's
//! certificate is verified (chain to the source's `ca_file`, or the system's CA bundle, and the
//! host name, as libpq's `verify-full`); a server that offers no TLS is refused, never used in
//! clear. `sslmode=disable` in the connection string is the owner's explicit choice of clear
//! text. A connection to this host only (Unix socket, `localhost`, a loopback address) without
//! an `sslmode` or `ca_file` stays in clear: nothing crosses a network.

use std::time::Duration;

use prism_common::dp::{Pushdown, SourceGroup};
use prism_common::plan::Predicate;
use prism_common::schema::{ColumnType, DatasetSchema};
use tokio_postgres::types::ToSql;

use super::pg_sql::{self, Param, Statement};
use super::{PgSource, SourceError};

/// The CA bundle a source without `ca_file` verifies its server against (Debian's
/// `ca-certificates`).
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// How a source's connection travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// In clear: `sslmode=disable`, or this host only.
    Clear,
    /// TLS required, the server's certificate chain and host name verified.
    Verified,
}

/// Whether every host the connection may reach is this one (a Unix socket, `localhost`, a
/// loopback address).
fn this_host_only(cfg: &tokio_postgres::Config) -> bool {
    let hosts_local = cfg.get_hosts().iter().all(|h| match h {
        tokio_postgres::config::Host::Tcp(name) => {
            name == "localhost"
                || name
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
        #[cfg(unix)]
        tokio_postgres::config::Host::Unix(_) => true,
    });
    hosts_local && cfg.get_hostaddrs().iter().all(|a| a.is_loopback())
}

/// How long connecting may take when the connection string does not say.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one statement may take.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(300);

impl PgSource {
    /// How errors name this source: the table and the connection string (which holds no
    /// password: registration refuses one).
    pub fn label(&self) -> String {
        format!("postgres table {} ({})", self.table, self.conninfo)
    }

    fn unavailable(&self, message: impl Into<String>) -> SourceError {
        SourceError::Unavailable {
            source_name: self.label(),
            message: message.into(),
        }
    }

    /// The connection settings, with the password read from where the registration names it.
    pub(super) fn config(&self) -> Result<tokio_postgres::Config, SourceError> {
        let mut cfg: tokio_postgres::Config =
            self.conninfo.parse().map_err(|e| SourceError::Invalid {
                // Not the string itself: one that does not parse may hold anything.
                source_name: format!("postgres table {}", self.table),
                message: format!("connection string: {e}"),
            })?;
        if cfg.get_password().is_some() {
            return Err(SourceError::Invalid {
                source_name: format!("postgres table {}", self.table),
                message: "the connection string holds a password; give it with --password-file \
                          or --password-env instead (the connection string is stored and shown)"
                    .into(),
            });
        }
        if let Some(f) = &self.password_file {
            let pw = std::fs::read_to_string(f)
                .map_err(|e| self.unavailable(format!("password file {}: {e}", f.display())))?;
            cfg.password(pw.trim_end_matches(['\r', '\n']));
        } else if let Some(var) = &self.password_env {
            let pw = std::env::var(var).map_err(|_| {
                self.unavailable(format!(
                    "environment variable {var} (the password) is not set"
                ))
            })?;
            cfg.password(pw);
        }
        if cfg.get_connect_timeout().is_none() {
            cfg.connect_timeout(CONNECT_TIMEOUT);
        }
        Ok(cfg)
    }

    /// How this source's connection travels (see the module's documentation).
    pub(super) fn transport(&self, cfg: &tokio_postgres::Config) -> Transport {
        let explicit = self
            .conninfo
            .split(|c: char| c.is_whitespace() || c == '?' || c == '&')
            .any(|kv| kv.trim_start().starts_with("sslmode"));
        if explicit && cfg.get_ssl_mode() == tokio_postgres::config::SslMode::Disable {
            return Transport::Clear;
        }
        if !explicit && self.ca_file.is_none() && this_host_only(cfg) {
            return Transport::Clear;
        }
        Transport::Verified
    }

    /// The rustls configuration that verifies the server: the CA file's certificates (or the
    /// system bundle's) as the only roots.
    fn tls_config(&self) -> Result<rustls::ClientConfig, SourceError> {
        let path = self
            .ca_file
            .clone()
            .unwrap_or_else(|| SYSTEM_CA_BUNDLE.into());
        let pem = std::fs::read(&path).map_err(|e| {
            self.unavailable(format!(
                "CA file {} (to verify the server's certificate): {e}; give the CA that signs \
                 the server's certificate with --ca-file",
                path.display()
            ))
        })?;
        let mut roots = rustls::RootCertStore::empty();
        use rustls::pki_types::{CertificateDer, pem::PemObject};
        for c in CertificateDer::pem_slice_iter(&pem) {
            let c = c.map_err(|e| self.unavailable(format!("CA file {}: {e}", path.display())))?;
            roots
                .add(c)
                .map_err(|e| self.unavailable(format!("CA file {}: {e}", path.display())))?;
        }
        if roots.is_empty() {
            return Err(
                self.unavailable(format!("CA file {} holds no certificate", path.display()))
            );
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        Ok(rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| self.unavailable(format!("TLS: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth())
    }

    async fn connect(&self) -> Result<tokio_postgres::Client, SourceError> {
        let mut cfg = self.config()?;
        match self.transport(&cfg) {
            Transport::Clear => self.open(&cfg, tokio_postgres::NoTls).await,
            Transport::Verified => {
                // Never in clear: a server that offers no TLS is refused.
                cfg.ssl_mode(tokio_postgres::config::SslMode::Require);
                let tls = tokio_postgres_rustls::MakeRustlsConnect::new(self.tls_config()?);
                self.open(&cfg, tls).await
            }
        }
    }

    async fn open<T>(
        &self,
        cfg: &tokio_postgres::Config,
        tls: T,
    ) -> Result<tokio_postgres::Client, SourceError>
    where
        T: tokio_postgres::tls::MakeTlsConnect<tokio_postgres::Socket>,
        T::Stream: Send + 'static,
    {
        let (client, connection) = cfg
            .connect(tls)
            .await
            .map_err(|e| self.unavailable(describe(&e)))?;
        // The connection task ends when the client is dropped.
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }

    async fn query(
        &self,
        client: &tokio_postgres::Client,
        st: &Statement,
    ) -> Result<Vec<tokio_postgres::Row>, SourceError> {
        let params: Vec<Box<dyn ToSql + Sync + Send>> = st
            .params
            .iter()
            .map(|p| -> Box<dyn ToSql + Sync + Send> {
                match p {
                    Param::Float(f) => Box::new(*f),
                    Param::Text(s) => Box::new(s.clone()),
                }
            })
            .collect();
        let refs: Vec<&(dyn ToSql + Sync)> = params
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect();
        match tokio::time::timeout(STATEMENT_TIMEOUT, client.query(&st.sql, &refs)).await {
            Ok(r) => r.map_err(|e| self.unavailable(describe(&e))),
            Err(_) => Err(self.unavailable(format!(
                "no answer within {} s",
                STATEMENT_TIMEOUT.as_secs()
            ))),
        }
    }

    /// Checks that the table has every declared column with a compatible type, and reads its
    /// row count (refusing nulls in a `not_null` column, as import does).
    pub async fn census(&self, schema: &DatasetSchema) -> Result<u64, SourceError> {
        let client = self.connect().await?;
        let (ns, table) = pg_sql::table_parts(&self.table);
        let described = Statement {
            sql: "SELECT column_name::text, data_type::text FROM information_schema.columns \
                  WHERE table_schema = coalesce(nullif($1::text, ''), current_schema()) \
                  AND table_name = $2::text"
                .into(),
            params: vec![
                Param::Text(ns.unwrap_or_default().to_string()),
                Param::Text(table.to_string()),
            ],
        };
        let rows = self.query(&client, &described).await?;
        if rows.is_empty() {
            return Err(
                self.unavailable("the table or view does not exist (or the user may not see it)")
            );
        }
        let have: Vec<(String, String)> = rows
            .iter()
            .map(|r| {
                (
                    r.try_get::<_, String>(0).unwrap_or_default(),
                    r.try_get::<_, String>(1).unwrap_or_default(),
                )
            })
            .collect();
        for c in &schema.columns {
            let Some((_, ty)) = have.iter().find(|(n, _)| *n == c.name) else {
                return Err(SourceError::MissingColumn {
                    source_name: self.label(),
                    column: c.name.clone(),
                    present: have
                        .iter()
                        .map(|(n, _)| n.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            };
            if !compatible(c.ty, ty) {
                return Err(SourceError::Invalid {
                    source_name: self.label(),
                    message: format!(
                        "column {} is declared {} but the table's type is {ty}",
                        c.name, c.ty
                    ),
                });
            }
        }
        let row = self
            .query(&client, &pg_sql::census(&self.table, schema))
            .await?;
        let values = text_values(row.first(), 0)
            .map_err(|m| self.unavailable(format!("the census: {m}")))?;
        let count = values.first().copied().unwrap_or(0);
        for (c, nulls) in schema
            .columns
            .iter()
            .filter(|c| c.not_null)
            .zip(values.iter().skip(1))
        {
            if *nulls > 0 {
                return Err(SourceError::Invalid {
                    source_name: self.label(),
                    message: format!(
                        "column {} is declared not_null but {nulls} of its values are null",
                        c.name
                    ),
                });
            }
        }
        u64::try_from(count).map_err(|_| self.unavailable("negative row count"))
    }

    /// Runs the one aggregate statement of a pushed-down query.
    pub async fn aggregate(
        &self,
        schema: &DatasetSchema,
        filter: Option<&Predicate>,
        push: &Pushdown,
    ) -> Result<Vec<SourceGroup>, SourceError> {
        let st = pg_sql::aggregate(&self.table, schema, filter, push).map_err(|m| {
            SourceError::Invalid {
                source_name: self.label(),
                message: m,
            }
        })?;
        let client = self.connect().await?;
        let rows = self.query(&client, &st).await?;
        let keys: Vec<ColumnType> = push
            .group_by
            .iter()
            .map(|k| schema.column(k).map_or(ColumnType::Text, |c| c.ty))
            .collect();
        rows.iter()
            .map(|r| {
                let key = keys
                    .iter()
                    .enumerate()
                    .map(|(i, ty)| key(r, i, *ty))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| self.unavailable(describe(&e)))?;
                let values = text_values(Some(r), keys.len())
                    .map_err(|m| self.unavailable(format!("the aggregate: {m}")))?;
                Ok(SourceGroup { key, values })
            })
            .collect()
    }
}

/// Whether a PostgreSQL `data_type` can hold a column declared `ty`.
fn compatible(ty: ColumnType, pg: &str) -> bool {
    match ty {
        ColumnType::Integer => matches!(pg, "smallint" | "integer" | "bigint"),
        ColumnType::Float => matches!(
            pg,
            "real" | "double precision" | "numeric" | "smallint" | "integer" | "bigint"
        ),
        ColumnType::Text => matches!(pg, "text" | "character varying" | "character"),
        ColumnType::Boolean => pg == "boolean",
    }
}

/// A group key as [`prism_common::schema::ColumnData::key`] renders it.
fn key(
    r: &tokio_postgres::Row,
    i: usize,
    ty: ColumnType,
) -> Result<Option<String>, tokio_postgres::Error> {
    Ok(match ty {
        ColumnType::Integer => r.try_get::<_, Option<i64>>(i)?.map(|x| x.to_string()),
        ColumnType::Float => r.try_get::<_, Option<f64>>(i)?.map(|x| x.to_string()),
        ColumnType::Boolean => r.try_get::<_, Option<bool>>(i)?.map(|x| x.to_string()),
        ColumnType::Text => r.try_get::<_, Option<String>>(i)?,
    })
}

/// The text-encoded integers of a row from column `from` on.
fn text_values(r: Option<&tokio_postgres::Row>, from: usize) -> Result<Vec<i128>, String> {
    let r = r.ok_or("no row")?;
    (from..r.len())
        .map(|i| {
            let s: String = r.try_get(i).map_err(|e| e.to_string())?;
            s.parse::<i128>().map_err(|e| format!("{s:?}: {e}"))
        })
        .collect()
}

/// An error's message with its cause (tokio-postgres puts the server's message in the source).
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => {
            let mut s = e.to_string();
            let mut src = std::error::Error::source(e);
            while let Some(c) = src {
                s.push_str(": ");
                s.push_str(&c.to_string());
                src = c.source();
            }
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(conninfo: &str) -> PgSource {
        PgSource {
            conninfo: conninfo.into(),
            table: "visits".into(),
            password_file: None,
            password_env: None,
            ca_file: None,
        }
    }

    fn transport(conninfo: &str, ca: bool) -> Transport {
        let mut s = source(conninfo);
        if ca {
            s.ca_file = Some("/etc/prism/pg-ca.pem".into());
        }
        s.transport(&conninfo.parse().expect("conninfo"))
    }

    #[test]
    fn a_connection_that_leaves_the_host_is_encrypted_and_verified_unless_disabled_by_name() {
        use Transport::{Clear, Verified};
        // Off this host: TLS, whatever the server offers.
        assert_eq!(transport("host=db.internal user=u", false), Verified);
        assert_eq!(transport("host=10.0.0.5 user=u", false), Verified);
        assert_eq!(
            transport("host=db.internal user=u sslmode=prefer", false),
            Verified
        );
        assert_eq!(
            transport("postgresql://u@db.internal/clinic", false),
            Verified
        );
        // A list of hosts: one off this host is enough.
        assert_eq!(
            transport("host=localhost,db.internal user=u", false),
            Verified
        );
        assert_eq!(
            transport("host=localhost hostaddr=10.0.0.5 user=u", false),
            Verified
        );
        // This host only, nothing asked: in clear (nothing crosses a network).
        assert_eq!(transport("host=127.0.0.1 user=u", false), Clear);
        assert_eq!(transport("host=localhost user=u", false), Clear);
        assert_eq!(transport("host=::1 user=u", false), Clear);
        assert_eq!(transport("host=/var/run/postgresql user=u", false), Clear);
        // ...unless the owner asks for TLS or names a CA.
        assert_eq!(
            transport("host=localhost user=u sslmode=require", false),
            Verified
        );
        assert_eq!(transport("host=localhost user=u", true), Verified);
        // sslmode=disable is the owner's explicit choice, anywhere.
        assert_eq!(
            transport("host=db.internal user=u sslmode=disable", false),
            Clear
        );
        assert_eq!(
            transport("postgresql://u@db.internal/clinic?sslmode=disable", false),
            Clear
        );
    }

    #[test]
    fn a_missing_or_empty_ca_file_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut s = source("host=db.internal user=u");
        s.ca_file = Some(dir.path().join("nope.pem"));
        let err = s.tls_config().expect_err("missing");
        assert!(
            err.to_string().contains("nope.pem")
                && err
                    .to_string()
                    .contains("give the CA that signs the server's certificate with --ca-file"),
            "{err}"
        );
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").expect("write");
        s.ca_file = Some(empty);
        let err = s.tls_config().expect_err("empty");
        assert!(err.to_string().contains("holds no certificate"), "{err}");
    }

    #[test]
    fn a_password_comes_from_a_file_or_a_variable_never_the_connection_string() {
        let err = source("host=db user=u password=hunter2")
            .config()
            .expect_err("password in the string");
        assert!(err.to_string().contains("--password-file"), "{err}");
        assert!(!err.to_string().contains("hunter2"), "{err}");
        let err = source("postgresql://u:hunter2@db/clinic")
            .config()
            .expect_err("password in a URL");
        assert!(!err.to_string().contains("hunter2"), "{err}");

        let mut s = source("host=db user=u");
        s.password_env = Some("PRISM_TEST_SURELY_UNSET_PASSWORD".into());
        let err = s.config().expect_err("unset variable");
        assert!(
            err.to_string().contains("PRISM_TEST_SURELY_UNSET_PASSWORD"),
            "{err}"
        );

        let dir = tempfile::tempdir().expect("tmp");
        let f = dir.path().join("pw");
        std::fs::write(&f, "hunter2\n").expect("write");
        let mut s = source("host=db user=u");
        s.password_file = Some(f);
        let cfg = s.config().expect("config");
        assert_eq!(cfg.get_password(), Some(&b"hunter2"[..]));
        assert_eq!(cfg.get_connect_timeout(), Some(&CONNECT_TIMEOUT));
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
