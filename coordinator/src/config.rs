//! The coordinator's configuration file (`coordinator.toml`).

use std::net::SocketAddr;
use std::path::PathBuf;

use prism_common::identity::OrgId;
use prism_common::tls::TlsFiles;
use prism_common::wire::DEFAULT_MAX_FRAME;
use serde::{Deserialize, Serialize};

/// Coordinator configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoordinatorConfig {
    /// The redb file.
    pub data_path: PathBuf,
    /// QUIC address nodes dial (port 0 picks one).
    pub quic_listen: SocketAddr,
    /// HTTP address of the admin API and console (port 0 picks one).
    pub http_listen: SocketAddr,
    /// TLS material.
    pub tls: TlsFiles,
    /// Organizations admitted to the federation.
    pub organizations: Vec<OrgId>,
    /// Largest protocol frame accepted.
    #[serde(default = "default_max_frame")]
    pub max_frame: usize,
    /// How long a node may take to answer a run, in seconds.
    #[serde(default = "default_run_timeout")]
    pub run_timeout_secs: u64,
    /// Generate (or load) the HE key set when the coordinator starts, in the background, and
    /// install it on every node that serves `he_backend` as it connects, so no query waits for
    /// key generation or the key transfer. `false`: both happen at the first HE query.
    #[serde(default = "default_true")]
    pub he_keys_at_start: bool,
    /// How long a node's QUIC connection may hear nothing before it is dropped as unreachable,
    /// in milliseconds; keep-alives go every third of it. QUIC takes the smaller of both ends'
    /// values. Default 1500 (a lost node is noticed within 2 s).
    #[serde(default = "prism_common::tls::default_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
}

fn default_max_frame() -> usize {
    DEFAULT_MAX_FRAME
}
fn default_true() -> bool {
    true
}

fn default_run_timeout() -> u64 {
    120
}

impl CoordinatorConfig {
    /// Reads and parses a TOML file.
    pub fn from_file(path: &std::path::Path) -> anyhow::Result<Self> {
        use anyhow::Context;
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }
}
