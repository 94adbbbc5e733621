//! Data-room manifests and attestations.
//!
//! A manifest says exactly what a room will compute: the query, its normalized plan, the
//! backend, the participants, the parameters and an expiry. It has one canonical encoding (a
//! domain tag, then the struct as JSON in declaration order — no maps, so the bytes are
//! deterministic) and a SHA-256 hash. Attesting means signing that hash with the organization's
//! Ed25519 key, the key its certificate certifies; anyone holding the certificate can verify
//! it. Any change to the manifest changes the hash and voids every signature.

use ed25519_dalek::pkcs8::DecodePrivateKey;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::backend::BackendId;
use crate::identity::OrgId;
use crate::plan::Plan;
use crate::release::ReleaseMode;

/// Domain separation for manifest hashes.
const DOMAIN: &[u8] = b"prism/room-manifest/v1\0";

/// Errors about manifests and signatures.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum RoomError {
    /// The private key is not a PKCS#8 Ed25519 key.
    #[error("signing key is not a PKCS#8 Ed25519 key: {0}")]
    BadKey(String),
    /// The certificate does not carry an Ed25519 key.
    #[error("certificate does not carry an Ed25519 public key: {0}")]
    BadCertificate(String),
    /// A signature is malformed or does not verify.
    #[error("attestation signature of {org} does not verify against its certificate")]
    BadSignature {
        /// The signer.
        org: OrgId,
    },
}

/// One participant's ε for a `dp` room: what it adds noise for and charges to its own ledger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartyEpsilon {
    /// The participant.
    pub org: OrgId,
    /// ε it spends on this room.
    pub epsilon: f64,
}

/// Parameters that are part of what participants agree to.
///
/// The release fields are skipped when they hold their defaults, so a manifest written before
/// they existed keeps its canonical bytes (and its hash).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomParams {
    /// Decimal places kept for float columns (values × 10^d, rounded to integers).
    pub fixed_point_decimals: u32,
    /// The declared GROUP BY key domain: one list of values per GROUP BY column; the result has
    /// one row per combination. Rows with other keys are not counted.
    pub group_keys: Vec<Vec<String>>,
    /// How long a party waits for the others' shares, in milliseconds.
    pub deadline_ms: u64,
    /// How the total may be released: `dp` (each party adds noise to its own vector before it
    /// is shared) or `exact` (only where every participant's owner opted in).
    #[serde(default, skip_serializing_if = "is_dp")]
    pub release: ReleaseMode,
    /// ε each participant spends in a `dp` room, sorted by organization (a list, not a map,
    /// so the encoding stays deterministic).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub epsilon: Vec<PartyEpsilon>,
    /// Groups whose (noisy, in `dp`) row count is below this are suppressed when the total is
    /// decoded; 0 means none.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub min_group_size: u64,
}

fn is_dp(m: &ReleaseMode) -> bool {
    *m == ReleaseMode::Dp
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl RoomParams {
    /// The ε the manifest gives `org`, if any.
    pub fn epsilon_of(&self, org: &OrgId) -> Option<f64> {
        self.epsilon
            .iter()
            .find(|p| &p.org == org)
            .map(|p| p.epsilon)
    }

    /// Number of GROUP BY keys (combinations) the room computes; 1 without GROUP BY.
    pub fn key_count(&self) -> usize {
        self.group_keys
            .iter()
            .fold(1usize, |n, k| n.saturating_mul(k.len()))
    }
}

impl Default for RoomParams {
    fn default() -> Self {
        RoomParams {
            fixed_point_decimals: 2,
            group_keys: Vec::new(),
            deadline_ms: 30_000,
            release: ReleaseMode::Dp,
            epsilon: Vec::new(),
            min_group_size: 0,
        }
    }
}

/// What every participant attests to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Manifest format version.
    pub version: u32,
    /// Room id.
    pub room_id: String,
    /// The SQL as written.
    pub query_text: String,
    /// The normalized plan every node executes.
    pub plan: Plan,
    /// Backend.
    pub backend: BackendId,
    /// Participants, sorted and unique.
    pub participants: Vec<OrgId>,
    /// Parameters.
    pub params: RoomParams,
    /// RFC 3339 time after which the room may not execute.
    pub expires_at: String,
}

impl Manifest {
    /// The canonical bytes that are hashed.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = DOMAIN.to_vec();
        // A struct of plain fields always serialises.
        out.extend(serde_json::to_vec(self).unwrap_or_default());
        out
    }

    /// SHA-256 of the canonical bytes.
    pub fn hash(&self) -> [u8; 32] {
        Sha256::digest(self.canonical_bytes()).into()
    }

    /// The hash in hex.
    pub fn hash_hex(&self) -> String {
        hex::encode(self.hash())
    }

    /// Whether the manifest has expired at `now`.
    pub fn expired(&self, now: time::OffsetDateTime) -> bool {
        time::OffsetDateTime::parse(
            &self.expires_at,
            &time::format_description::well_known::Rfc3339,
        )
        .map_or(true, |t| now > t)
    }
}

/// Signs a manifest hash with a PKCS#8 Ed25519 key; returns the signature in hex.
pub fn sign(key_pkcs8_der: &[u8], hash: &[u8; 32]) -> Result<String, RoomError> {
    let key =
        SigningKey::from_pkcs8_der(key_pkcs8_der).map_err(|e| RoomError::BadKey(e.to_string()))?;
    Ok(hex::encode(key.sign(hash).to_bytes()))
}

/// The Ed25519 public key a certificate certifies.
pub fn public_key_from_cert(der: &[u8]) -> Result<[u8; 32], RoomError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| RoomError::BadCertificate(e.to_string()))?;
    let spki = cert.public_key();
    if spki.algorithm.algorithm.to_id_string() != "1.3.101.112" {
        return Err(RoomError::BadCertificate(format!(
            "key algorithm {}",
            spki.algorithm.algorithm
        )));
    }
    spki.subject_public_key
        .data
        .as_ref()
        .try_into()
        .map_err(|_| RoomError::BadCertificate("key is not 32 bytes".into()))
}

/// Verifies `org`'s signature (hex) over a manifest hash with its public key.
pub fn verify(
    org: &OrgId,
    public_key: &[u8; 32],
    hash: &[u8; 32],
    signature_hex: &str,
) -> Result<(), RoomError> {
    let bad = || RoomError::BadSignature { org: org.clone() };
    let key = VerifyingKey::from_bytes(public_key).map_err(|_| bad())?;
    let bytes: [u8; 64] = hex::decode(signature_hex)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(bad)?;
    key.verify(hash, &Signature::from_bytes(&bytes))
        .map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::FederationCa;
    use crate::plan::{AggFunc, Aggregate, Output};

    fn manifest() -> Manifest {
        Manifest {
            version: 1,
            room_id: "r1".into(),
            query_text: "SELECT COUNT(*) FROM patients".into(),
            plan: Plan {
                dataset: "patients".into(),
                outputs: vec![Output::Aggregate(Aggregate {
                    func: AggFunc::Count,
                    column: None,
                    weight: None,
                    alias: "count".into(),
                })],
                filter: None,
                group_by: vec![],
                having_min_count: None,
            },
            backend: BackendId::MpcBackend,
            participants: vec![OrgId::new("a").expect("org"), OrgId::new("b").expect("org")],
            params: RoomParams::default(),
            expires_at: "2099-01-01T00:00:00Z".into(),
        }
    }

    #[test]
    fn signatures_verify_with_the_certified_key_and_break_on_any_change() {
        let ca = FederationCa::generate("t", 1).expect("ca");
        let org = OrgId::new("a").expect("org");
        let pair = ca.issue_org(&org, 1).expect("cert");
        let key_der =
            rustls_pki_types::pem::PemObject::from_pem_slice(pair.key_pem.as_bytes()).expect("key");
        let key_der: rustls_pki_types::PrivatePkcs8KeyDer<'_> = key_der;
        let cert_der: rustls_pki_types::CertificateDer<'_> =
            rustls_pki_types::pem::PemObject::from_pem_slice(pair.cert_pem.as_bytes())
                .expect("cert");
        let pk = public_key_from_cert(&cert_der).expect("pk");

        let m = manifest();
        let sig = sign(key_der.secret_pkcs8_der(), &m.hash()).expect("sign");
        assert_eq!(verify(&org, &pk, &m.hash(), &sig), Ok(()));

        // Round-tripping through JSON keeps the hash (the nodes re-hash what they receive).
        let back: Manifest =
            serde_json::from_slice(&serde_json::to_vec(&m).expect("json")).expect("parse");
        assert_eq!(back.hash(), m.hash());

        let mut changed = m.clone();
        changed.query_text.push(' ');
        assert!(verify(&org, &pk, &changed.hash(), &sig).is_err());
        let mut changed = m.clone();
        changed.params.deadline_ms += 1;
        assert!(verify(&org, &pk, &changed.hash(), &sig).is_err());
        assert!(verify(&org, &pk, &m.hash(), "00").is_err());
        assert!(!m.expired(time::OffsetDateTime::now_utc()));
    }

    #[test]
    fn release_fields_are_attested_and_absent_ones_keep_old_hashes() {
        let m = manifest();
        // A manifest written before the release fields existed: same bytes, same hash.
        let json = String::from_utf8(m.canonical_bytes()[DOMAIN.len()..].to_vec()).expect("utf8");
        assert!(
            !json.contains("release") && !json.contains("epsilon"),
            "{json}"
        );
        let old: Manifest = serde_json::from_str(&json).expect("parse");
        assert_eq!(old.hash(), m.hash());
        assert_eq!(old.params.release, ReleaseMode::Dp);

        let mut dp = m.clone();
        dp.params.epsilon = vec![PartyEpsilon {
            org: OrgId::new("a").expect("org"),
            epsilon: 0.25,
        }];
        dp.params.min_group_size = 10;
        assert_ne!(dp.hash(), m.hash());
        let back: Manifest =
            serde_json::from_slice(&serde_json::to_vec(&dp).expect("json")).expect("parse");
        assert_eq!(back.hash(), dp.hash());
        assert_eq!(
            back.params.epsilon_of(&OrgId::new("a").expect("org")),
            Some(0.25)
        );
        assert_eq!(back.params.epsilon_of(&OrgId::new("b").expect("org")), None);
        let mut exact = dp.clone();
        exact.params.release = ReleaseMode::Exact;
        assert_ne!(exact.hash(), dp.hash());
    }
}
