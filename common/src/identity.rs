//! Organization identities and how certificates carry them.
//!
//! An organization id is a short lowercase slug (`hospital-a`). Its certificate carries it twice:
//! as a URI SAN `urn:prism:org:<id>` (the identity the protocol trusts, read once at accept time)
//! and as a DNS SAN `<id>.org.prism` (the name a peer dials, so TLS server-name checks bind
//! the peer endpoint to the organization too).

use std::fmt;

use serde::{Deserialize, Serialize};

/// URI SAN prefix that carries the organization id.
pub const ORG_URI_PREFIX: &str = "urn:prism:org:";
/// DNS suffix of an organization's peer endpoint name.
pub const ORG_DNS_SUFFIX: &str = ".org.prism";
/// The coordinator's DNS name in its certificate.
pub const COORDINATOR_NAME: &str = "coordinator.prism";

/// Errors about identities.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum IdentityError {
    /// The id is not a lowercase slug.
    #[error(
        "invalid organization id {0:?}: use 1-63 lowercase letters, digits and '-', starting with a letter or digit"
    )]
    InvalidOrgId(String),
    /// The certificate could not be parsed.
    #[error("peer certificate could not be parsed: {0}")]
    BadCertificate(String),
    /// The certificate carries no organization.
    #[error(
        "peer certificate carries no organization id (expected a URI SAN {ORG_URI_PREFIX}<id>)"
    )]
    NoOrganization,
    /// The connection presented no certificate.
    #[error("peer presented no client certificate")]
    NoCertificate,
}

/// A validated organization id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct OrgId(String);

impl OrgId {
    /// Validates an organization id.
    pub fn new(s: impl Into<String>) -> Result<Self, IdentityError> {
        let s = s.into();
        let ok = !s.is_empty()
            && s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !s.starts_with('-');
        if ok {
            Ok(OrgId(s))
        } else {
            Err(IdentityError::InvalidOrgId(s))
        }
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The DNS name of this organization's peer endpoint.
    pub fn dns_name(&self) -> String {
        format!("{}{}", self.0, ORG_DNS_SUFFIX)
    }

    /// The URI SAN that carries this id.
    pub fn uri(&self) -> String {
        format!("{ORG_URI_PREFIX}{}", self.0)
    }
}

impl TryFrom<String> for OrgId {
    type Error = IdentityError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        OrgId::new(s)
    }
}

impl From<OrgId> for String {
    fn from(o: OrgId) -> String {
        o.0
    }
}

impl fmt::Display for OrgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for OrgId {
    type Err = IdentityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        OrgId::new(s)
    }
}

/// Who is on the other end of a verified connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerIdentity {
    /// An organization's node.
    Org(OrgId),
    /// The coordinator.
    Coordinator,
}

/// Reads the identity from a DER certificate whose chain rustls has already verified.
pub fn identity_from_cert(der: &[u8]) -> Result<PeerIdentity, IdentityError> {
    use x509_parser::prelude::*;
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| IdentityError::BadCertificate(e.to_string()))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| IdentityError::BadCertificate(e.to_string()))?;
    let mut coordinator = false;
    for name in san.iter().flat_map(|s| s.value.general_names.iter()) {
        match name {
            GeneralName::URI(uri) => {
                if let Some(id) = uri.strip_prefix(ORG_URI_PREFIX) {
                    return Ok(PeerIdentity::Org(OrgId::new(id)?));
                }
            }
            GeneralName::DNSName(dns) if *dns == COORDINATOR_NAME => coordinator = true,
            _ => {}
        }
    }
    if coordinator {
        Ok(PeerIdentity::Coordinator)
    } else {
        Err(IdentityError::NoOrganization)
    }
}

/// The organization of a quinn connection's verified client certificate.
pub fn peer_identity(conn: &quinn::Connection) -> Result<PeerIdentity, IdentityError> {
    let certs = conn
        .peer_identity()
        .and_then(|any| {
            any.downcast::<Vec<rustls_pki_types::CertificateDer<'static>>>()
                .ok()
        })
        .ok_or(IdentityError::NoCertificate)?;
    let leaf = certs.first().ok_or(IdentityError::NoCertificate)?;
    identity_from_cert(leaf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn org_ids_are_slugs() {
        assert!(OrgId::new("hospital-a").is_ok());
        assert!(OrgId::new("bank7").is_ok());
        for bad in ["", "Hospital", "-a", "a b", "a.b", &"x".repeat(64)] {
            assert!(OrgId::new(bad).is_err(), "{bad:?} accepted");
        }
    }
}
