//! Release modes: how each backend's answers may leave a data owner's node.
//!
//! The node owns this decision, per backend and per dataset; the coordinator and the analyst
//! only see it (the catalog publishes it) and cannot change it.
//!
//! - `dp`: every released number carries differential-privacy noise the node adds itself and
//!   charges to the dataset's budget (dp_sandbox always; he_backend and mpc_backend by default).
//! - `exact`: the backend's exact answer, only where the owner opts in; the node then enforces a
//!   minimum group size (obliviously under HE) and refuses filtering or grouping on identifying
//!   columns. Exact answers carry no DP guarantee.
//! - `off`: the backend is not served for the dataset.

use serde::{Deserialize, Serialize};

use crate::backend::BackendId;

/// How a backend's answers may leave the node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReleaseMode {
    /// Noisy answers, charged to the dataset's budget.
    #[default]
    Dp,
    /// Exact answers (owner opt-in), with a minimum group size and no identifying columns.
    Exact,
    /// Not served.
    Off,
}

impl ReleaseMode {
    /// The configuration and API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ReleaseMode::Dp => "dp",
            ReleaseMode::Exact => "exact",
            ReleaseMode::Off => "off",
        }
    }

    /// Parses the configuration and API spelling.
    pub fn parse(s: &str) -> Option<ReleaseMode> {
        match s {
            "dp" => Some(ReleaseMode::Dp),
            "exact" => Some(ReleaseMode::Exact),
            "off" => Some(ReleaseMode::Off),
            _ => None,
        }
    }
}

impl std::fmt::Display for ReleaseMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The release mode of each backend (for a node's policy, or one dataset).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseModes {
    /// dp_sandbox: `dp` or `off` (it has no exact mode).
    #[serde(default)]
    pub dp_sandbox: ReleaseMode,
    /// he_backend.
    #[serde(default)]
    pub he_backend: ReleaseMode,
    /// mpc_backend.
    #[serde(default)]
    pub mpc_backend: ReleaseMode,
}

impl Default for ReleaseModes {
    /// The compiled defaults: every backend releases under DP.
    fn default() -> Self {
        ReleaseModes {
            dp_sandbox: ReleaseMode::Dp,
            he_backend: ReleaseMode::Dp,
            mpc_backend: ReleaseMode::Dp,
        }
    }
}

impl ReleaseModes {
    /// The mode of a backend (the enclave backend is never served).
    pub fn get(&self, backend: BackendId) -> ReleaseMode {
        match backend {
            BackendId::DpSandbox => self.dp_sandbox,
            BackendId::HeBackend => self.he_backend,
            BackendId::MpcBackend => self.mpc_backend,
            BackendId::EnclaveBackend => ReleaseMode::Off,
        }
    }

    /// Sets the mode of a backend; refuses what the backend cannot do.
    pub fn set(&mut self, backend: BackendId, mode: ReleaseMode) -> Result<(), String> {
        match (backend, mode) {
            (BackendId::DpSandbox, ReleaseMode::Exact) => {
                Err("dp_sandbox has no exact mode: it releases under DP or not at all".into())
            }
            (BackendId::EnclaveBackend, _) => {
                Err("enclave_backend is not available in this build".into())
            }
            (BackendId::DpSandbox, m) => {
                self.dp_sandbox = m;
                Ok(())
            }
            (BackendId::HeBackend, m) => {
                self.he_backend = m;
                Ok(())
            }
            (BackendId::MpcBackend, m) => {
                self.mpc_backend = m;
                Ok(())
            }
        }
    }

    /// Checks the combination is one a backend can do.
    pub fn check(&self) -> Result<(), String> {
        if self.dp_sandbox == ReleaseMode::Exact {
            return Err("dp_sandbox has no exact mode: it releases under DP or not at all".into());
        }
        Ok(())
    }

    /// Whether any backend releases exact answers.
    pub fn any_exact(&self) -> bool {
        [self.he_backend, self.mpc_backend].contains(&ReleaseMode::Exact)
    }
}

/// A dataset owner's settings that override the node policy for one dataset.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetRelease {
    /// Per-backend modes set for this dataset (unset: the policy's).
    #[serde(default)]
    pub dp_sandbox: Option<ReleaseMode>,
    /// he_backend override.
    #[serde(default)]
    pub he_backend: Option<ReleaseMode>,
    /// mpc_backend override.
    #[serde(default)]
    pub mpc_backend: Option<ReleaseMode>,
    /// Columns of this dataset that identify a person (never filtered or grouped on in exact
    /// mode), besides the policy's.
    #[serde(default)]
    pub identifying_columns: Vec<String>,
}

impl DatasetRelease {
    /// The effective modes: this dataset's overrides over the policy's modes.
    pub fn apply(&self, policy: ReleaseModes) -> ReleaseModes {
        ReleaseModes {
            dp_sandbox: self.dp_sandbox.unwrap_or(policy.dp_sandbox),
            he_backend: self.he_backend.unwrap_or(policy.he_backend),
            mpc_backend: self.mpc_backend.unwrap_or(policy.mpc_backend),
        }
    }

    /// Sets one backend's override.
    pub fn set(&mut self, backend: BackendId, mode: ReleaseMode) -> Result<(), String> {
        let mut probe = ReleaseModes::default();
        probe.set(backend, mode)?;
        match backend {
            BackendId::DpSandbox => self.dp_sandbox = Some(mode),
            BackendId::HeBackend => self.he_backend = Some(mode),
            BackendId::MpcBackend => self.mpc_backend = Some(mode),
            BackendId::EnclaveBackend => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_dp_and_overrides_apply() {
        let p = ReleaseModes::default();
        for b in [
            BackendId::DpSandbox,
            BackendId::HeBackend,
            BackendId::MpcBackend,
        ] {
            assert_eq!(p.get(b), ReleaseMode::Dp);
        }
        assert_eq!(p.get(BackendId::EnclaveBackend), ReleaseMode::Off);
        let mut d = DatasetRelease::default();
        d.set(BackendId::HeBackend, ReleaseMode::Exact)
            .expect("set");
        assert!(d.set(BackendId::DpSandbox, ReleaseMode::Exact).is_err());
        let eff = d.apply(p);
        assert_eq!(eff.he_backend, ReleaseMode::Exact);
        assert_eq!(eff.mpc_backend, ReleaseMode::Dp);
        assert!(eff.any_exact());
        let parsed: ReleaseModes =
            serde_json::from_str(r#"{"he_backend": "exact"}"#).expect("json");
        assert_eq!(parsed.he_backend, ReleaseMode::Exact);
        assert_eq!(parsed.dp_sandbox, ReleaseMode::Dp);
    }
}
