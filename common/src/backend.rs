//! The backend registry: what each backend is, what it supports and guarantees, and the
//! structured refusal of the enclave backend.
//!
//! The registry is honest about this build: a backend is `available` only when a node in this
//! build can serve it.

use serde::{Deserialize, Serialize};

/// A backend id, as used in the API (`dp_sandbox`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendId {
    /// Differential privacy on one dataset (OpenDP).
    DpSandbox,
    /// Homomorphic encryption on one dataset (TFHE-rs).
    HeBackend,
    /// Additive secret sharing across the nodes of a data room.
    MpcBackend,
    /// Hardware trusted execution environment: not available.
    EnclaveBackend,
}

impl BackendId {
    /// All backends, in display order.
    pub const ALL: [BackendId; 4] = [
        BackendId::DpSandbox,
        BackendId::HeBackend,
        BackendId::MpcBackend,
        BackendId::EnclaveBackend,
    ];

    /// The API id.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendId::DpSandbox => "dp_sandbox",
            BackendId::HeBackend => "he_backend",
            BackendId::MpcBackend => "mpc_backend",
            BackendId::EnclaveBackend => "enclave_backend",
        }
    }

    /// Parses an API id.
    pub fn parse(s: &str) -> Option<BackendId> {
        BackendId::ALL.into_iter().find(|b| b.as_str() == s)
    }

    /// Registry entry.
    pub fn info(self) -> BackendInfo {
        registry()
            .into_iter()
            .find(|b| b.id == self)
            .unwrap_or_else(|| unreachable_info(self))
    }
}

fn unreachable_info(id: BackendId) -> BackendInfo {
    // `registry()` lists every id; this keeps `info` total without a panic path.
    BackendInfo {
        id,
        name: id.as_str().into(),
        available: false,
        mocked: false,
        status: "not available".into(),
        description: String::new(),
        supports: vec![],
        performance: String::new(),
        privacy_guarantee: String::new(),
    }
}

impl std::fmt::Display for BackendId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the registry says about a backend (the seed plan's fields, plus a status word).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendInfo {
    /// API id.
    pub id: BackendId,
    /// Display name.
    pub name: String,
    /// Whether this build can execute it.
    pub available: bool,
    /// Whether results are simulated. Always false in Prism: nothing is mocked.
    pub mocked: bool,
    /// `functional`, `semi-honest` or `not available`.
    pub status: String,
    /// What it does.
    pub description: String,
    /// Supported SQL constructs.
    pub supports: Vec<String>,
    /// Expected performance.
    pub performance: String,
    /// The guarantee it gives.
    pub privacy_guarantee: String,
}

fn strings(xs: &[&str]) -> Vec<String> {
    xs.iter().map(|s| s.to_string()).collect()
}

/// Every backend's registry entry.
pub fn registry() -> Vec<BackendInfo> {
    vec![
        BackendInfo {
            id: BackendId::DpSandbox,
            name: "Differential Privacy".into(),
            available: true,
            mocked: false,
            status: "functional".into(),
            description: "Noisy aggregates on one dataset, computed by the node that holds it with OpenDP \
                          mechanisms and charged to that dataset's (ε, δ) budget, which the node enforces."
                .into(),
            supports: strings(&["COUNT", "SUM", "AVG", "MIN", "MAX", "WHERE", "GROUP BY", "HAVING COUNT(*) >= k"]),
            performance: "Fast (milliseconds on the node)".into(),
            privacy_guarantee: "(ε, δ)-differential privacy, add/remove-one-row neighbours".into(),
        },
        BackendInfo {
            id: BackendId::HeBackend,
            name: "Homomorphic Encryption".into(),
            available: true,
            mocked: false,
            status: "functional".into(),
            description: "Exact aggregates computed with TFHE-rs on the node that holds the data: the \
                          coordinator, as key holder, encrypts the filter constants; the node evaluates the \
                          filter on ciphertexts once per distinct filter value and returns an encrypted \
                          aggregate only the key holder can decrypt. WHERE is a conjunction (AND) of \
                          comparisons, IN and BETWEEN on integer (declared bounds), text and boolean columns; \
                          no OR, NOT, IS NULL or GROUP BY."
                .into(),
            supports: strings(&["COUNT", "SUM", "SUM(col * k)", "AVG", "MIN", "MAX", "WHERE (encrypted constants; AND of =, <>, <, <=, >, >=, IN, BETWEEN)"]),
            performance: "Seconds: grows with distinct filter values, not rows (one-time key transfer of ~tens of MB per node)".into(),
            privacy_guarantee: "IND-CPA encryption (TFHE, 128-bit); the node never sees filter constants or results; \
                                the coordinator (key holder) sees the exact result".into(),
        },
        BackendInfo {
            id: BackendId::MpcBackend,
            name: "Multi-Party Computation".into(),
            available: true,
            mocked: false,
            status: "semi-honest".into(),
            description: "Totals across organizations from additive secret shares over Z_2^64 exchanged \
                          node to node inside a data room every participant has attested; the coordinator \
                          receives only partial sums. By default (release dp) each party adds DP noise for \
                          its own attested ε to its own input before sharing; exact totals only where every \
                          owner opted in (key limits, no identifying columns, small groups suppressed)."
                .into(),
            supports: strings(&["COUNT", "SUM", "AVG", "WHERE", "GROUP BY (declared keys)"]),
            performance: "Milliseconds per party on a LAN".into(),
            privacy_guarantee: "Inputs: semi-honest security with additive secret sharing, non-colluding parties. \
                                Output (dp): ε-DP for each party's rows from its own noise, even if all others \
                                collude"
                .into(),
        },
        BackendInfo {
            id: BackendId::EnclaveBackend,
            name: "Secure Enclave".into(),
            available: false,
            mocked: false,
            status: "not available".into(),
            description: "Hardware trusted execution environment. Not implemented: see the refusal for what \
                          it would need."
                .into(),
            supports: vec![],
            performance: "n/a".into(),
            privacy_guarantee: "Would be hardware-backed isolation with remote attestation".into(),
        },
    ]
}

/// The structured refusal of the enclave backend.
pub fn enclave_refusal() -> serde_json::Value {
    serde_json::json!({
        "backend": "enclave_backend",
        "status": "not_implemented",
        "summary": "Secure Enclave Backend - Not Yet Implemented. Prism has no trusted execution \
                    environment backend; no query is run on it.",
        "requirements": {
            "hardware": [
                "Intel SGX with DCAP attestation (Ice Lake server or newer, SGX enabled, enough EPC)",
                "or AMD SEV-SNP (EPYC Milan or newer) with the host's VCEK certificate chain",
                "or AWS Nitro Enclaves (Nitro-based EC2 instance with enclave support)"
            ],
            "attestation_evidence": "a quote / attestation report from the enclave, verified against the \
                                     vendor's certificate chain (Intel PCS, AMD KDS, AWS Nitro root) before any \
                                     data is provisioned",
            "reference_measurements": "the expected measurement of the enclave build (MRENCLAVE/MRSIGNER, \
                                       SNP launch digest, or Nitro PCR0-2), published reproducibly",
            "freshness": "a fresh nonce from each data owner bound into the report data of the quote",
            "tcb_policy": "a TCB policy each owner accepts: minimum microcode/firmware (TCB) levels, \
                           debug mode refused, advisories (e.g. SGX-SA) that are not acceptable",
            "data_path": "data keys released to the enclave only after verification, sealed storage, and a \
                          query engine running inside the enclave"
        },
        "alternatives": [
            {"backend": "dp_sandbox", "status": "functional",
             "use_for": "noisy aggregates on one dataset, charged to its privacy budget"},
            {"backend": "he_backend", "status": "see GET /api/v1/backends",
             "use_for": "exact aggregates with encrypted filter constants on one dataset"},
            {"backend": "mpc_backend", "status": "see GET /api/v1/backends",
             "use_for": "totals across organizations in an attested data room (DP noise per party by default)"}
        ],
        "next_step": "choose dp_sandbox for this query, or another available backend from GET /api/v1/backends"
    })
}

/// The one-line message that goes with [`enclave_refusal`].
pub const ENCLAVE_MESSAGE: &str = "Secure Enclave Backend - Not Yet Implemented: enclave_backend needs TEE hardware \
    (SGX DCAP, SEV-SNP or Nitro), verified attestation evidence against reference measurements, a fresh nonce and \
    a TCB policy; none is available. Use dp_sandbox (functional) instead; see details.alternatives.";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_roundtrip_and_registry_is_complete() {
        for id in BackendId::ALL {
            assert_eq!(BackendId::parse(id.as_str()), Some(id));
            assert_eq!(id.info().id, id);
            assert!(!id.info().mocked, "nothing in Prism is mocked");
        }
        assert_eq!(BackendId::parse("quantum"), None);
        // Every backend with an executor in this build is available; only the enclave is not.
        for (id, status) in [
            (BackendId::DpSandbox, "functional"),
            (BackendId::HeBackend, "functional"),
            (BackendId::MpcBackend, "semi-honest"),
            (BackendId::EnclaveBackend, "not available"),
        ] {
            assert_eq!(id.info().status, status, "{id}");
            assert_eq!(id.info().available, id != BackendId::EnclaveBackend, "{id}");
        }
    }

    #[test]
    fn enclave_refusal_names_requirements_and_alternatives() {
        let r = enclave_refusal();
        assert_eq!(r["status"], "not_implemented");
        let text = r.to_string();
        for needle in [
            "SGX",
            "SEV-SNP",
            "Nitro",
            "nonce",
            "TCB",
            "measurement",
            "dp_sandbox",
        ] {
            assert!(text.contains(needle), "missing {needle}");
        }
    }
}
