//! rustls / quinn configuration: TLS 1.3 only, ALPN `prism/1`, client certificates required.
//!
//! The same material serves both directions: a node dials the coordinator and its peers as a
//! client, and accepts peers as a server; the coordinator accepts nodes. Each side trusts only
//! the federation CA (and, optionally, honours a CRL from it).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};

/// The ALPN protocol id of Prism's QUIC connections.
pub const ALPN: &[u8] = b"prism/1";

/// How often an idle connection sends a keep-alive (a QUIC PING) by default: three per idle
/// timeout, so one or two lost packets do not end a healthy connection.
pub const KEEP_ALIVE: Duration = Duration::from_millis(500);

/// A connection that hears nothing from its peer for this long is dropped, and every call on
/// it fails as "unreachable": a dead or cut-off party is noticed within this, not minutes.
/// The default of `idle_timeout_ms` in both daemons' configurations; QUIC takes the smaller of
/// the two ends' values, so raising it takes both.
pub const IDLE_TIMEOUT: Duration = Duration::from_millis(1500);

/// The shortest idle timeout a configuration may ask for: below it, a busy machine's scheduling
/// delays alone end healthy connections.
pub const MIN_IDLE_TIMEOUT: Duration = Duration::from_millis(300);

/// The longest idle timeout a configuration may ask for: beyond it, a dead party goes unnoticed
/// for longer than any caller waits.
pub const MAX_IDLE_TIMEOUT: Duration = Duration::from_secs(600);

/// The idle timeout a configuration's `idle_timeout_ms` asks for, refused outside
/// [`MIN_IDLE_TIMEOUT`]..=[`MAX_IDLE_TIMEOUT`] with a message naming the bounds.
pub fn idle_timeout_from_ms(ms: u64) -> Result<Duration, String> {
    let d = Duration::from_millis(ms);
    if d < MIN_IDLE_TIMEOUT || d > MAX_IDLE_TIMEOUT {
        return Err(format!(
            "idle_timeout_ms = {ms}: must lie between {} and {}",
            MIN_IDLE_TIMEOUT.as_millis(),
            MAX_IDLE_TIMEOUT.as_millis()
        ));
    }
    Ok(d)
}

/// The default of `idle_timeout_ms` in both daemons' configurations.
pub fn default_idle_timeout_ms() -> u64 {
    u64::try_from(IDLE_TIMEOUT.as_millis()).unwrap_or(1500)
}

/// Errors loading TLS material or building configurations.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A PEM file held nothing usable.
    #[error("{path}: {what}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        what: String,
    },
    /// rustls refused the configuration.
    #[error("tls configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client verifier could not be built.
    #[error("client verifier: {0}")]
    Verifier(String),
    /// quinn refused the rustls configuration.
    #[error("quic configuration: {0}")]
    Quic(String),
    /// The private key is not the one the certificate certifies.
    #[error(
        "{key} is not the private key of the certificate {cert} ({what}); configure the key issued with that certificate"
    )]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls found.
        what: String,
    },
}

/// Paths to a party's TLS material.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// The federation CA certificate (PEM).
    pub ca_cert: PathBuf,
    /// This party's certificate (PEM).
    pub cert: PathBuf,
    /// This party's private key (PKCS#8 PEM).
    pub key: PathBuf,
    /// An optional CRL from the federation CA (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crl: Option<PathBuf>,
}

/// Parsed TLS material.
pub struct TlsMaterial {
    roots: Arc<rustls::RootCertStore>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    crls: Vec<CertificateRevocationListDer<'static>>,
    /// The idle timeout of every connection built from this material (keep-alives every third).
    idle: Duration,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("chain", &self.chain.len())
            .finish_non_exhaustive()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn pem_err(path: &Path, what: impl Into<String>) -> TlsError {
    TlsError::Pem {
        path: path.to_path_buf(),
        what: what.into(),
    }
}

/// The one crypto provider every Prism TLS configuration uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl TlsMaterial {
    /// Loads and parses the files.
    pub fn load(files: &TlsFiles) -> Result<Self, TlsError> {
        let ca = read(&files.ca_cert)?;
        let cert = read(&files.cert)?;
        let key = read(&files.key)?;
        let crl = files.crl.as_deref().map(read).transpose()?;
        let m = Self::from_pem(&ca, &cert, &key, crl.as_deref()).map_err(|e| match e {
            // Name the file the complaint is about.
            TlsError::Pem { what, .. } => {
                let path = if what.starts_with("ca certificate") || what.starts_with("no CA") {
                    &files.ca_cert
                } else if what.starts_with("private key") {
                    &files.key
                } else if what.starts_with("crl") {
                    files.crl.as_ref().unwrap_or(&files.cert)
                } else {
                    &files.cert
                };
                pem_err(path, what)
            }
            other => other,
        })?;
        // A key from another certificate would only fail later, in every handshake, unnamed.
        rustls::sign::CertifiedKey::from_der(m.chain.clone(), m.key.clone_key(), &provider())
            .map_err(|e| TlsError::KeyMismatch {
                cert: files.cert.clone(),
                key: files.key.clone(),
                what: e.to_string(),
            })?;
        Ok(m)
    }

    /// Parses PEM bytes.
    pub fn from_pem(
        ca: &[u8],
        cert: &[u8],
        key: &[u8],
        crl: Option<&[u8]>,
    ) -> Result<Self, TlsError> {
        let here = Path::new("<pem>");
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(ca) {
            let c = c.map_err(|e| pem_err(here, format!("ca certificate: {e}")))?;
            roots.add(c).map_err(TlsError::Rustls)?;
        }
        if roots.is_empty() {
            return Err(pem_err(here, "no CA certificate found"));
        }
        let chain = CertificateDer::pem_slice_iter(cert)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| pem_err(here, format!("certificate: {e}")))?;
        if chain.is_empty() {
            return Err(pem_err(here, "no certificate found"));
        }
        let key = PrivateKeyDer::from_pem_slice(key)
            .map_err(|e| pem_err(here, format!("private key: {e}")))?;
        let crls = match crl {
            None => Vec::new(),
            Some(c) => CertificateRevocationListDer::pem_slice_iter(c)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| pem_err(here, format!("crl: {e}")))?,
        };
        Ok(TlsMaterial {
            roots: Arc::new(roots),
            chain,
            key,
            crls,
            idle: IDLE_TIMEOUT,
        })
    }

    /// This party's leaf certificate (DER).
    pub fn leaf(&self) -> &CertificateDer<'static> {
        &self.chain[0]
    }

    /// This party's private key as PKCS#8 DER (the Ed25519 key that also signs attestations).
    pub fn key_pkcs8_der(&self) -> &[u8] {
        self.key.secret_der()
    }

    /// The federation CA roots.
    pub fn roots(&self) -> Arc<rustls::RootCertStore> {
        self.roots.clone()
    }

    /// The same material with another idle timeout (see [`IDLE_TIMEOUT`]); keep-alives go every
    /// third of it.
    pub fn with_idle_timeout(mut self, idle: Duration) -> Self {
        self.idle = idle;
        self
    }

    /// The idle timeout of connections built from this material.
    pub fn idle_timeout(&self) -> Duration {
        self.idle
    }

    /// The transport every endpoint starts from: keep-alive and idle timeout.
    pub fn transport_config(&self) -> quinn::TransportConfig {
        let mut t = quinn::TransportConfig::default();
        t.keep_alive_interval(Some(self.idle / 3));
        let idle = quinn::IdleTimeout::try_from(self.idle)
            .unwrap_or_else(|_| quinn::VarInt::from_u32(1500).into());
        t.max_idle_timeout(Some(idle));
        t
    }

    fn transport(&self) -> Arc<quinn::TransportConfig> {
        Arc::new(self.transport_config())
    }

    /// A QUIC server configuration that requires a client certificate from the federation CA.
    pub fn server_config(&self) -> Result<quinn::ServerConfig, TlsError> {
        let provider = provider();
        let verifier =
            WebPkiClientVerifier::builder_with_provider(self.roots.clone(), provider.clone())
                .with_crls(self.crls.clone())
                .build()
                .map_err(|e| TlsError::Verifier(e.to_string()))?;
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key.clone_key())?;
        cfg.alpn_protocols = vec![ALPN.to_vec()];
        let quic = QuicServerConfig::try_from(cfg).map_err(|e| TlsError::Quic(e.to_string()))?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(quic));
        server.transport_config(self.transport());
        Ok(server)
    }

    /// A QUIC client configuration that presents this party's certificate and trusts only the
    /// federation CA.
    pub fn client_config(&self) -> Result<quinn::ClientConfig, TlsError> {
        let provider = provider();
        let verifier =
            WebPkiServerVerifier::builder_with_provider(self.roots.clone(), provider.clone())
                .with_crls(self.crls.clone())
                .build()
                .map_err(|e| TlsError::Verifier(e.to_string()))?;
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_webpki_verifier(verifier)
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())?;
        cfg.alpn_protocols = vec![ALPN.to_vec()];
        let quic = QuicClientConfig::try_from(cfg).map_err(|e| TlsError::Quic(e.to_string()))?;
        let mut client = quinn::ClientConfig::new(Arc::new(quic));
        client.transport_config(self.transport());
        Ok(client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::FederationCa;
    use crate::identity::OrgId;

    #[test]
    fn idle_timeouts_outside_their_bounds_are_refused_with_the_bounds() {
        assert_eq!(
            idle_timeout_from_ms(default_idle_timeout_ms()),
            Ok(IDLE_TIMEOUT)
        );
        assert_eq!(idle_timeout_from_ms(7500), Ok(Duration::from_millis(7500)));
        for bad in [0, 299, 600_001, u64::MAX] {
            let msg = idle_timeout_from_ms(bad).expect_err("out of bounds");
            assert!(msg.contains("300") && msg.contains("600000"), "{msg}");
        }
    }

    #[test]
    fn a_key_that_is_not_the_certificates_names_both_files() {
        let dir = tempfile::tempdir().expect("tmp");
        let ca = FederationCa::generate("t", 1).expect("ca");
        let a = ca
            .issue_org(&OrgId::new("org-a").expect("org"), 1)
            .expect("a");
        let b = ca
            .issue_org(&OrgId::new("org-b").expect("org"), 1)
            .expect("b");
        let p = |n: &str| dir.path().join(n);
        std::fs::write(p("ca.pem"), &ca.pem.cert_pem).expect("write");
        std::fs::write(p("a.pem"), &a.cert_pem).expect("write");
        std::fs::write(p("b.key.pem"), &b.key_pem).expect("write");
        std::fs::write(p("a.key.pem"), &a.key_pem).expect("write");
        let files = |key: &str| TlsFiles {
            ca_cert: p("ca.pem"),
            cert: p("a.pem"),
            key: p(key),
            crl: None,
        };
        let err = TlsMaterial::load(&files("b.key.pem")).expect_err("mismatch");
        assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.contains("b.key.pem") && msg.contains("a.pem"), "{msg}");
        TlsMaterial::load(&files("a.key.pem")).expect("the right key loads");

        std::fs::write(p("bad.key.pem"), "not a key").expect("write");
        let msg = TlsMaterial::load(&files("bad.key.pem"))
            .expect_err("bad key")
            .to_string();
        assert!(
            msg.contains("bad.key.pem"),
            "a bad key names its file: {msg}"
        );
    }
}
