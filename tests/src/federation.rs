//! A whole federation in one process: certificates, a coordinator and N party nodes, each on
//! port 0 with its own redb file, talking real mutually authenticated QUIC.
//!
//! The end-to-end tests and `prism-sim` both build on this.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use prism_common::identity::OrgId;
use prism_common::tls::TlsFiles;
use prism_coordinator::model::Role;
use prism_coordinator::{CoordinatorConfig, CoordinatorHandle};
use prism_node::{NodeConfig, NodeHandle, Policy};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::data;
use crate::progress::Progress;

pub use crate::api::Api;

mod lifecycle;
mod saved;

/// What to start.
#[derive(Debug, Clone)]
pub struct FederationSpec {
    /// Organization ids.
    pub orgs: Vec<String>,
    /// Patients per organization (0: import nothing), unless `rows` names it.
    pub rows_per_org: usize,
    /// Patients of particular organizations (overrides `rows_per_org`).
    pub rows: BTreeMap<String, usize>,
    /// Data seed.
    pub seed: u64,
    /// Node policy for every node, unless `policies` names it.
    pub policy: Policy,
    /// Node policy of particular organizations (overrides `policy`).
    pub policies: BTreeMap<String, Policy>,
    /// Where starting the nodes and importing their data shows progress (nowhere by default).
    pub progress: Progress,
}

impl Default for FederationSpec {
    fn default() -> Self {
        FederationSpec {
            orgs: vec![
                "hospital-a".into(),
                "hospital-b".into(),
                "hospital-c".into(),
            ],
            rows_per_org: 10_000,
            rows: BTreeMap::new(),
            seed: 7,
            policy: Policy::default(),
            policies: BTreeMap::new(),
            progress: Progress::hidden(),
        }
    }
}

impl FederationSpec {
    /// Patients imported into an organization's node.
    pub fn rows_of(&self, org: &str) -> usize {
        self.rows.get(org).copied().unwrap_or(self.rows_per_org)
    }
}

/// One running node and how to restart it.
pub struct NodeSlot {
    /// The running node, if any.
    pub handle: Option<NodeHandle>,
    /// Its configuration.
    pub config: NodeConfig,
    /// Its admin token.
    pub admin_token: String,
    shutdown: CancellationToken,
}

impl NodeSlot {
    /// An admin API client for this node.
    pub fn admin(&self) -> Option<Api> {
        self.handle
            .as_ref()
            .map(|h| Api::new(h.admin_url(), self.admin_token.clone()))
    }
}

/// A running federation.
pub struct Federation {
    /// Working directory (certificates, stores).
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    /// The coordinator.
    pub coordinator: Option<CoordinatorHandle>,
    /// The coordinator's configuration (a restart uses it, so tests may change it first).
    pub coordinator_config: CoordinatorConfig,
    coordinator_shutdown: CancellationToken,
    /// Nodes by organization.
    pub nodes: BTreeMap<OrgId, NodeSlot>,
    /// An admin's API token.
    pub admin_token: String,
    /// An analyst's API token.
    pub analyst_token: String,
    /// The data seed.
    pub seed: u64,
    /// Patients per organization (the default; `rows` has each organization's own).
    pub rows_per_org: usize,
    /// Patients imported per organization.
    pub rows: BTreeMap<OrgId, usize>,
    /// Each organization's position in the spec (the synthetic generator's organization index).
    pub org_index: BTreeMap<OrgId, usize>,
    /// Where long steps show progress (the spec's).
    pub progress: Progress,
}

/// The QUIC idle timeout of an in-process federation of `orgs` parties. Up to ten parties it is
/// the daemons' default (1.5 s: a lost party is noticed within 2 s). Beyond, every party shares
/// this machine's cores, and a data room opens `n × (n − 1)` mutually authenticated connections
/// at once: on two cores 25 parties' 600 handshakes delay keep-alives past 1.5 s and end healthy
/// connections, so larger simulations allow 300 ms per party (25 parties: 7.5 s). A real
/// deployment, one machine per party, keeps the default.
pub fn idle_timeout_ms(orgs: usize) -> u64 {
    let default = prism_common::tls::default_idle_timeout_ms();
    if orgs <= 10 {
        default
    } else {
        default.max(300 * orgs as u64)
    }
}

fn tls_files(dir: &Path, stem: &str) -> TlsFiles {
    TlsFiles {
        ca_cert: dir.join("ca.pem"),
        cert: dir.join(format!("{stem}.pem")),
        key: dir.join(format!("{stem}.key.pem")),
        crl: None,
    }
}

fn random_token() -> String {
    use rand::RngCore;
    let mut b = [0u8; 24];
    rand::rng().fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Federation {
    /// Starts a federation in a new temporary directory.
    pub async fn start(spec: FederationSpec) -> anyhow::Result<Self> {
        let tmp = tempfile::tempdir()?;
        let dir = tmp.path().to_path_buf();
        let mut f = Self::start_in(&dir, spec).await?;
        f._tmp = Some(tmp);
        Ok(f)
    }

    /// Starts a federation in `dir` (kept afterwards; [`Federation::resume`] starts it again).
    pub async fn start_in(dir: &Path, spec: FederationSpec) -> anyhow::Result<Self> {
        let orgs = spec
            .orgs
            .iter()
            .map(OrgId::new)
            .collect::<Result<Vec<_>, _>>()?;
        if orgs.is_empty() {
            bail!("a federation needs at least one organization");
        }
        for name in spec.rows.keys().chain(spec.policies.keys()) {
            if !spec.orgs.contains(name) {
                bail!(
                    "{name} is not one of the organizations ({})",
                    spec.orgs.join(", ")
                );
            }
        }
        let certs = dir.join("certs");
        prism_coordinator::certs_cmd::init(&certs, &orgs, 30)?;
        let saved = saved::Saved {
            seed: spec.seed,
            organizations: orgs
                .iter()
                .map(|o| saved::SavedOrg {
                    id: o.clone(),
                    rows: spec.rows_of(o.as_str()),
                    policy: spec
                        .policies
                        .get(o.as_str())
                        .unwrap_or(&spec.policy)
                        .clone(),
                    node_admin_token: random_token(),
                })
                .collect(),
            admin_token: String::new(),
            analyst_token: String::new(),
            rows_per_org: spec.rows_per_org,
        };
        let f = Self::launch(dir, saved, true, spec.progress).await?;
        let importing = f.rows.values().filter(|&&r| r > 0).count();
        let task = f
            .progress
            .bar(importing as u64, "generating and importing patients");
        for (org, &rows) in &f.rows {
            if rows > 0 {
                task.say(format!("{org}: {rows} rows"));
                let csv = data::to_csv(&f.patients_of(org));
                f.import(org, "patients", &csv).await?;
                task.inc();
            }
        }
        task.finish(&format!("{} rows", f.rows.values().copied().sum::<usize>()));
        f.wait_for_datasets(f.rows.values().filter(|&&r| r > 0).count())
            .await?;
        f.wait_connected().await?;
        f.save()?;
        Ok(f)
    }

    /// Starts the coordinator and the nodes of `saved` in `dir`; `fresh`: create the users.
    async fn launch(
        dir: &Path,
        mut saved: saved::Saved,
        fresh: bool,
        progress: Progress,
    ) -> anyhow::Result<Self> {
        let certs = dir.join("certs");
        let orgs: Vec<OrgId> = saved.organizations.iter().map(|o| o.id.clone()).collect();
        let coordinator_config = CoordinatorConfig {
            data_path: dir.join("coordinator.redb"),
            quic_listen: "127.0.0.1:0".parse()?,
            http_listen: "127.0.0.1:0".parse()?,
            tls: tls_files(&certs, "coordinator"),
            organizations: orgs.clone(),
            max_frame: prism_common::wire::DEFAULT_MAX_FRAME,
            // Generous: a first HE run generates and installs keys, slow on a loaded 2-core machine.
            run_timeout_secs: 240,
            // Key generation burns seconds of CPU: tests that want the key set ahead of their
            // first HE query ask for it (`prepare_he`).
            he_keys_at_start: false,
            idle_timeout_ms: idle_timeout_ms(orgs.len()),
        };
        let coordinator_shutdown = CancellationToken::new();
        let coordinator =
            prism_coordinator::start(coordinator_config.clone(), coordinator_shutdown.clone())
                .await?;
        if fresh {
            let store = coordinator.state.store.clone();
            (_, saved.admin_token) = store.create_user("admin", Role::Admin, None)?;
            (_, saved.analyst_token) = store.create_user("analyst", Role::Analyst, None)?;
        }
        let quic = coordinator.quic_addr;

        let mut nodes = BTreeMap::new();
        let task = progress.bar(saved.organizations.len() as u64, "starting the nodes");
        for org in &saved.organizations {
            task.say(org.id.to_string());
            let config = NodeConfig {
                org: org.id.clone(),
                data_path: dir.join(format!("{}.redb", org.id)),
                coordinator_addr: quic.into(),
                coordinator_name: prism_common::identity::COORDINATOR_NAME.into(),
                peer_listen: "127.0.0.1:0".parse()?,
                peer_advertise: None,
                admin_listen: "127.0.0.1:0".parse()?,
                admin_token_file: None,
                admin_token: Some(org.node_admin_token.clone()),
                tls: tls_files(&certs, org.id.as_str()),
                policy: org.policy.clone(),
                max_frame: prism_common::wire::DEFAULT_MAX_FRAME,
                max_import_mib: 512,
                idle_timeout_ms: idle_timeout_ms(orgs.len()),
            };
            let shutdown = CancellationToken::new();
            let handle = prism_node::start(config.clone(), shutdown.clone()).await?;
            nodes.insert(
                org.id.clone(),
                NodeSlot {
                    handle: Some(handle),
                    config,
                    admin_token: org.node_admin_token.clone(),
                    shutdown,
                },
            );
            task.inc();
        }
        task.finish(&format!("{} nodes", nodes.len()));
        Ok(Federation {
            dir: dir.to_path_buf(),
            _tmp: None,
            coordinator: Some(coordinator),
            coordinator_config,
            coordinator_shutdown,
            nodes,
            admin_token: saved.admin_token.clone(),
            analyst_token: saved.analyst_token.clone(),
            seed: saved.seed,
            rows_per_org: saved.rows_per_org,
            rows: saved
                .organizations
                .iter()
                .map(|o| (o.id.clone(), o.rows))
                .collect(),
            org_index: orgs
                .iter()
                .enumerate()
                .map(|(i, o)| (o.clone(), i))
                .collect(),
            progress,
        })
    }

    /// Organization ids in the order they were created.
    pub fn orgs(&self) -> Vec<OrgId> {
        let mut orgs: Vec<(usize, OrgId)> = self
            .org_index
            .iter()
            .map(|(o, &i)| (i, o.clone()))
            .collect();
        orgs.sort();
        orgs.into_iter().map(|(_, o)| o).collect()
    }

    /// The synthetic patients an organization's node was given (regenerated from the seed).
    pub fn patients_of(&self, org: &OrgId) -> Vec<data::Patient> {
        match (self.org_index.get(org), self.rows.get(org)) {
            (Some(&i), Some(&rows)) => data::patients(self.seed, i, rows),
            _ => Vec::new(),
        }
    }

    /// The coordinator's API URL.
    pub fn api_url(&self) -> String {
        self.coordinator
            .as_ref()
            .map(|c| c.api_url())
            .unwrap_or_default()
    }

    /// An API client as the admin.
    pub fn admin(&self) -> Api {
        Api::new(self.api_url(), self.admin_token.clone())
    }

    /// An API client as the analyst.
    pub fn analyst(&self) -> Api {
        Api::new(self.api_url(), self.analyst_token.clone())
    }

    /// A QUIC client configuration presenting `org`'s certificate from this federation's CA
    /// (as an attacker holding a member's certificate would).
    pub fn org_client_config(&self, org: &str) -> anyhow::Result<quinn::ClientConfig> {
        let read = |name: String| std::fs::read(self.dir.join("certs").join(name));
        let tls = prism_common::tls::TlsMaterial::from_pem(
            &read("ca.pem".into())?,
            &read(format!("{org}.pem"))?,
            &read(format!("{org}.key.pem"))?,
            None,
        )?;
        Ok(tls.client_config()?)
    }

    /// The admin API client of an organization's node.
    pub fn node_admin(&self, org: &str) -> anyhow::Result<Api> {
        let org = OrgId::new(org)?;
        self.nodes
            .get(&org)
            .and_then(NodeSlot::admin)
            .with_context(|| format!("node {org} is not running"))
    }

    /// Imports patients CSV into an organization's node through its admin API.
    pub async fn import(&self, org: &OrgId, name: &str, csv: &str) -> anyhow::Result<Value> {
        let api = self.node_admin(org.as_str())?;
        let (status, body) = api
            .post(
                "/v1/datasets",
                &json!({"name": name, "columns": data::patient_columns(), "csv": csv}),
            )
            .await?;
        if status != 201 {
            bail!("import into {org} failed: {status} {body}");
        }
        Ok(body)
    }

    /// Waits until the catalog lists at least `n` datasets.
    pub async fn wait_for_datasets(&self, n: usize) -> anyhow::Result<()> {
        let api = self.admin();
        for _ in 0..200 {
            let (_, v) = api.get("/api/v1/datasets").await?;
            if v.as_array().is_some_and(|a| a.len() >= n) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("the catalog did not reach {n} datasets")
    }

    /// Waits until every running node is connected.
    pub async fn wait_connected(&self) -> anyhow::Result<()> {
        for _ in 0..200 {
            if self
                .nodes
                .values()
                .all(|n| n.handle.as_ref().is_none_or(|h| h.state.is_connected()))
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("nodes did not connect to the coordinator")
    }

    /// What `prism-sim serve` writes to `federation.json`.
    pub fn describe(&self) -> Value {
        json!({
            "api_url": self.api_url(),
            "admin_token": self.admin_token,
            "analyst_token": self.analyst_token,
            "organizations": self.nodes.iter().map(|(org, n)| json!({
                "id": org,
                "node_admin_url": n.handle.as_ref().map(|h| h.admin_url()),
                "node_admin_token": n.admin_token,
                "peer_addr": n.handle.as_ref().map(|h| h.peer_addr.to_string()),
                "datasets": if self.rows.get(org).is_some_and(|&r| r > 0) {
                    vec![format!("{org}.patients")]
                } else {
                    Vec::new()
                },
            })).collect::<Vec<_>>(),
            "certs_dir": self.dir.join("certs"),
        })
    }

    /// Stops everything.
    pub async fn shutdown(mut self) {
        // All nodes at once: each waits up to 2 s for its connections to drain, and 25 of them
        // one after another took most of a large simulation's time.
        let mut stopping = tokio::task::JoinSet::new();
        for slot in self.nodes.values_mut() {
            slot.shutdown.cancel();
            if let Some(h) = slot.handle.take() {
                stopping.spawn(h.shutdown());
            }
        }
        while stopping.join_next().await.is_some() {}
        self.stop_coordinator().await;
    }
}
