//! The node's configuration file (`node.toml`) and its local policy.

use std::net::SocketAddr;
use std::path::PathBuf;

use prism_common::backend::BackendId;
use prism_common::identity::OrgId;
use prism_common::release::ReleaseModes;
use prism_common::tls::TlsFiles;
use prism_common::wire::DEFAULT_MAX_FRAME;
use serde::{Deserialize, Serialize};

/// A party node's configuration.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// This node's organization (must match its certificate).
    pub org: OrgId,
    /// The redb file.
    pub data_path: PathBuf,
    /// The coordinator's QUIC address: `host:port`, an IP address or a DNS name (resolved at
    /// every connection attempt).
    pub coordinator_addr: prism_common::addr::HostPort,
    /// The name in the coordinator's certificate.
    #[serde(default = "default_coordinator_name")]
    pub coordinator_name: String,
    /// Where the peer endpoint listens (port 0 picks one).
    #[serde(default = "default_loopback")]
    pub peer_listen: SocketAddr,
    /// The address other nodes should dial, `host:port` (defaults to the bound peer address).
    #[serde(default)]
    pub peer_advertise: Option<prism_common::addr::HostPort>,
    /// Where the local admin API listens; keep it on loopback.
    #[serde(default = "default_loopback")]
    pub admin_listen: SocketAddr,
    /// A file holding the admin API token.
    #[serde(default)]
    pub admin_token_file: Option<PathBuf>,
    /// The admin token itself (prefer the file or `PRISM_NODE_ADMIN_TOKEN`).
    #[serde(default)]
    pub admin_token: Option<String>,
    /// TLS material.
    pub tls: TlsFiles,
    /// Local policy.
    #[serde(default)]
    pub policy: Policy,
    /// Largest protocol frame accepted.
    #[serde(default = "default_max_frame")]
    pub max_frame: usize,
    /// Largest CSV upload the admin API accepts, in MiB (the whole file is parsed in memory
    /// and refused whole on the first bad row).
    #[serde(default = "default_max_import_mib")]
    pub max_import_mib: usize,
    /// How long a QUIC connection (to the coordinator or a peer) may hear nothing before it is
    /// dropped as unreachable, in milliseconds; keep-alives go every third of it. QUIC takes the
    /// smaller of both ends' values. Default 1500 (a lost party is noticed within 2 s).
    #[serde(default = "prism_common::tls::default_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
}

impl std::fmt::Debug for NodeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeConfig")
            .field("org", &self.org)
            .field("data_path", &self.data_path)
            .field("coordinator_addr", &self.coordinator_addr)
            .field("peer_listen", &self.peer_listen)
            .field("admin_listen", &self.admin_listen)
            .field(
                "admin_token",
                &self.admin_token.as_ref().map(|_| "<redacted>"),
            )
            .field("tls", &self.tls)
            .field("policy", &self.policy)
            .finish()
    }
}

fn default_coordinator_name() -> String {
    prism_common::identity::COORDINATOR_NAME.to_string()
}
fn default_loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}
fn default_max_frame() -> usize {
    DEFAULT_MAX_FRAME
}
fn default_max_import_mib() -> usize {
    512
}

/// What this node allows, whatever the coordinator asks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Backends this node serves.
    #[serde(default = "default_backends")]
    pub backends: Vec<BackendId>,
    /// Largest ε one query may spend.
    #[serde(default = "default_max_epsilon")]
    pub max_epsilon_per_query: f64,
    /// Largest δ one query may spend.
    #[serde(default = "default_max_delta")]
    pub max_delta_per_query: f64,
    /// Smallest group released by a GROUP BY (on noisy counts).
    #[serde(default = "default_min_group")]
    pub min_group_size: u64,
    /// Columns that may be aggregated (`*` = all).
    #[serde(default = "star")]
    pub aggregatable_columns: Vec<String>,
    /// Columns that may appear in WHERE / GROUP BY (`*` = all).
    #[serde(default = "star")]
    pub filterable_columns: Vec<String>,
    /// Budget given to a newly imported dataset: ε.
    #[serde(default = "default_budget_epsilon")]
    pub default_budget_epsilon: f64,
    /// Budget given to a newly imported dataset: δ.
    #[serde(default = "default_budget_delta")]
    pub default_budget_delta: f64,
    /// Whether data-room invitations this policy allows are attested without an admin.
    #[serde(default)]
    pub auto_attest: bool,
    /// he_backend: most distinct values of one column an encrypted filter is evaluated over
    /// (encrypted work grows with it).
    #[serde(default = "default_he_max_distinct")]
    pub he_max_distinct_values: usize,
    /// he_backend: most groups (combinations of filter values) one query is evaluated over.
    #[serde(default = "default_he_max_groups")]
    pub he_max_groups: usize,
    /// How each backend's answers may leave this node (`dp`, `exact` or `off`); the owner can
    /// override it per dataset. Defaults: every backend under DP.
    #[serde(default)]
    pub release: ReleaseModes,
    /// Columns (in any dataset) that identify a person: in `exact` mode they are never filtered
    /// or grouped on. Columns whose values are all distinct are treated the same way.
    #[serde(default)]
    pub identifying_columns: Vec<String>,
    /// mpc_backend in `exact` mode: most GROUP BY keys a room may declare.
    #[serde(default = "default_max_group_keys")]
    pub max_group_keys: usize,
    /// Whether each dataset's budget (total, spent, remaining ε and δ) is published with the
    /// catalog, so analysts see what is left before they ask. On by default.
    #[serde(default = "yes")]
    pub publish_budget: bool,
}

fn yes() -> bool {
    true
}

fn default_backends() -> Vec<BackendId> {
    vec![
        BackendId::DpSandbox,
        BackendId::HeBackend,
        BackendId::MpcBackend,
    ]
}
fn default_max_group_keys() -> usize {
    64
}
fn default_he_max_distinct() -> usize {
    256
}
fn default_he_max_groups() -> usize {
    4096
}
fn default_max_epsilon() -> f64 {
    1.0
}
fn default_max_delta() -> f64 {
    1e-6
}
fn default_min_group() -> u64 {
    10
}
fn star() -> Vec<String> {
    vec!["*".into()]
}
fn default_budget_epsilon() -> f64 {
    10.0
}
fn default_budget_delta() -> f64 {
    1e-5
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            backends: default_backends(),
            max_epsilon_per_query: default_max_epsilon(),
            max_delta_per_query: default_max_delta(),
            min_group_size: default_min_group(),
            aggregatable_columns: star(),
            filterable_columns: star(),
            default_budget_epsilon: default_budget_epsilon(),
            default_budget_delta: default_budget_delta(),
            auto_attest: false,
            he_max_distinct_values: default_he_max_distinct(),
            he_max_groups: default_he_max_groups(),
            release: ReleaseModes::default(),
            identifying_columns: Vec::new(),
            max_group_keys: default_max_group_keys(),
            publish_budget: true,
        }
    }
}

impl Policy {
    /// Checks the policy is one the node can enforce: exact releases need a minimum group size
    /// of at least 2, and dp_sandbox has no exact mode.
    pub fn check(&self) -> Result<(), String> {
        self.release.check()?;
        if self.release.any_exact() && self.min_group_size < 2 {
            return Err(format!(
                "policy: an exact release mode needs min_group_size >= 2 (it is {})",
                self.min_group_size
            ));
        }
        Ok(())
    }

    /// Whether a column is named identifying by the policy.
    pub fn names_identifying(&self, column: &str) -> bool {
        self.identifying_columns
            .iter()
            .any(|c| c.eq_ignore_ascii_case(column))
    }

    fn allows(list: &[String], column: &str) -> bool {
        list.iter()
            .any(|c| c == "*" || c.eq_ignore_ascii_case(column))
    }

    /// Whether a column may be aggregated.
    pub fn may_aggregate(&self, column: &str) -> bool {
        Self::allows(&self.aggregatable_columns, column)
    }

    /// Whether a column may be filtered or grouped on.
    pub fn may_filter(&self, column: &str) -> bool {
        Self::allows(&self.filterable_columns, column)
    }

    /// The DP engine's view of this policy.
    pub fn dp(&self) -> prism_common::dp::DpPolicy {
        prism_common::dp::DpPolicy {
            max_epsilon_per_query: self.max_epsilon_per_query,
            max_delta_per_query: self.max_delta_per_query,
            min_group_size: self.min_group_size,
        }
    }
}

impl NodeConfig {
    /// Reads and parses a TOML file.
    pub fn from_file(path: &std::path::Path) -> anyhow::Result<Self> {
        use anyhow::Context;
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }

    /// The admin token from the config, its file or the environment.
    pub fn resolve_admin_token(&self) -> anyhow::Result<String> {
        use anyhow::Context;
        if let Some(t) = &self.admin_token {
            return Ok(t.clone());
        }
        if let Some(p) = &self.admin_token_file {
            let t =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            return Ok(t.trim().to_string());
        }
        std::env::var("PRISM_NODE_ADMIN_TOKEN")
            .context("no admin token: set admin_token_file in the config or PRISM_NODE_ADMIN_TOKEN")
    }
}
