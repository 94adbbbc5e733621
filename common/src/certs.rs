//! Federation certificates with rcgen: one CA, the coordinator, one certificate per organization.
//!
//! Keys are Ed25519. An organization's key signs its TLS handshakes and, because the certificate
//! certifies the same key, its data-room attestations. All of this is pure: the caller decides
//! where PEM goes (see `prism-coordinator certs init`).

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    PKCS_ED25519, RevokedCertParams, SanType, SerialNumber,
};
use time::{Duration, OffsetDateTime};

use crate::identity::{COORDINATOR_NAME, OrgId};

/// Errors generating certificates.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// rcgen refused the parameters or a key.
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
}

/// A certificate and its private key, PEM-encoded.
#[derive(Clone)]
pub struct PemPair {
    /// Certificate PEM.
    pub cert_pem: String,
    /// PKCS#8 private key PEM.
    pub key_pem: String,
}

impl std::fmt::Debug for PemPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PemPair")
            .field("key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// A federation CA able to issue certificates.
pub struct FederationCa {
    /// The CA certificate and key.
    pub pem: PemPair,
    issuer: Issuer<'static, KeyPair>,
}

fn validity(params: &mut CertificateParams, not_before: OffsetDateTime, days: i64) {
    params.not_before = not_before;
    params.not_after = not_before + Duration::days(days);
}

fn random_serial() -> SerialNumber {
    let mut bytes = uuid::Uuid::new_v4().into_bytes();
    bytes[0] &= 0x7f; // positive
    SerialNumber::from_slice(&bytes)
}

impl FederationCa {
    /// Creates a new self-signed CA valid for `days`.
    pub fn generate(name: &str, days: i64) -> Result<Self, CertError> {
        let key = KeyPair::generate_for(&PKCS_ED25519)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("{name} federation CA"));
        dn.push(DnType::OrganizationName, "Prism");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.serial_number = Some(random_serial());
        validity(
            &mut params,
            OffsetDateTime::now_utc() - Duration::hours(1),
            days,
        );
        let cert = params.self_signed(&key)?;
        let pem = PemPair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        };
        Ok(FederationCa {
            pem,
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads an existing CA from its certificate and key PEM.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, CertError> {
        let key = KeyPair::from_pem(key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)?;
        Ok(FederationCa {
            pem: PemPair {
                cert_pem: cert_pem.to_string(),
                key_pem: key_pem.to_string(),
            },
            issuer,
        })
    }

    fn leaf(
        &self,
        cn: &str,
        sans: Vec<SanType>,
        not_before: OffsetDateTime,
        days: i64,
    ) -> Result<PemPair, CertError> {
        let key = KeyPair::generate_for(&PKCS_ED25519)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        params.distinguished_name = dn;
        params.subject_alt_names = sans;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        // Every party is both a TLS client (dialing) and a server (its endpoint).
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.serial_number = Some(random_serial());
        params.key_identifier_method = KeyIdMethod::Sha256;
        validity(&mut params, not_before, days);
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(PemPair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Issues the coordinator's certificate (DNS SANs `coordinator.prism` and `localhost`).
    pub fn issue_coordinator(&self, days: i64) -> Result<PemPair, CertError> {
        let sans = vec![
            SanType::DnsName(COORDINATOR_NAME.try_into()?),
            SanType::DnsName("localhost".try_into()?),
        ];
        self.leaf(
            "prism coordinator",
            sans,
            OffsetDateTime::now_utc() - Duration::hours(1),
            days,
        )
    }

    /// Issues an organization's certificate valid from `not_before` for `days`.
    pub fn issue_org_at(
        &self,
        org: &OrgId,
        not_before: OffsetDateTime,
        days: i64,
    ) -> Result<PemPair, CertError> {
        let sans = vec![
            SanType::URI(org.uri().try_into()?),
            SanType::DnsName(org.dns_name().try_into()?),
        ];
        self.leaf(org.as_str(), sans, not_before, days)
    }

    /// Issues an organization's certificate valid from now for `days`.
    pub fn issue_org(&self, org: &OrgId, days: i64) -> Result<PemPair, CertError> {
        self.issue_org_at(org, OffsetDateTime::now_utc() - Duration::hours(1), days)
    }

    /// A CRL revoking the given certificate serial numbers (hex), valid for `days`.
    pub fn crl(
        &self,
        revoked_serials_hex: &[String],
        crl_number: u64,
        days: i64,
    ) -> Result<String, CertError> {
        let now = OffsetDateTime::now_utc();
        let revoked = revoked_serials_hex
            .iter()
            .filter_map(|h| hex::decode(h).ok())
            .map(|bytes| RevokedCertParams {
                serial_number: SerialNumber::from_slice(&bytes),
                revocation_time: now,
                reason_code: None,
                invalidity_date: None,
            })
            .collect();
        let params = CertificateRevocationListParams {
            this_update: now - Duration::minutes(1),
            next_update: now + Duration::days(days),
            crl_number: SerialNumber::from(crl_number),
            issuing_distribution_point: None,
            revoked_certs: revoked,
            key_identifier_method: KeyIdMethod::Sha256,
        };
        Ok(params.signed_by(&self.issuer)?.pem()?)
    }
}

/// The serial number (hex) of a PEM certificate, for revocation.
pub fn serial_hex(cert_pem: &str) -> Option<String> {
    let der = rustls_pki_types::pem::PemObject::from_pem_slice(cert_pem.as_bytes()).ok()?;
    let der: rustls_pki_types::CertificateDer<'_> = der;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
    Some(hex::encode(cert.raw_serial()))
}
