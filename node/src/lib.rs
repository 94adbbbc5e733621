//! prism-node: the party node daemon.
//!
//! A node holds its organization's datasets and their privacy budgets in one redb file,
//! publishes catalog metadata (never rows) to the coordinator over mutually authenticated
//! QUIC, answers queries under its own policy, listens for peers, and serves a loopback
//! admin API for the data owner. `start` runs all of it in-process, which is how the tests
//! and `prism-sim` use it; `main.rs` is a thin CLI around it.

//!
//! Layers, bottom to top; each module imports only from the layers below it (see
//! `docs/ARCHITECTURE.md`): [`store`] (every table: datasets, ledger, invitations, HE keys) →
//! [`policy`] (the gate every backend passes) → the backends [`dp`], [`he`], [`mpc`] →
//! [`dispatch`] (every request from the coordinator, one match) → [`link`] (the coordinator
//! connection) and [`peer`] (the peer endpoint) → [`admin`] (the owner's API).

pub mod admin;
pub mod columnar;
pub mod config;
pub mod console;
pub mod dispatch;
pub mod dp;
#[cfg(any(test, feature = "test-util"))]
pub mod fuzz_checks;
pub mod he;
pub mod import;
pub mod ledger_view;
pub mod link;
pub mod mpc;
pub mod owner_text;
pub mod peer;
pub mod policy;
pub mod provenance;
pub mod request_view;
pub mod sources;
pub mod store;
pub mod stream_watch;
#[cfg(feature = "test-util")]
pub mod testing;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use anyhow::Context;
use prism_common::identity::OrgId;
use prism_common::metrics::Metrics;
use prism_common::schema::{CatalogEntry, Dataset};
use prism_common::tls::TlsMaterial;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::info;

pub use config::{NodeConfig, Policy};
use store::Store;

/// Shared state of a running node.
pub struct NodeState {
    /// This node's organization.
    pub org: OrgId,
    /// Its configuration.
    pub config: NodeConfig,
    /// Its store.
    pub store: Arc<Store>,
    /// Where its peer endpoint is bound.
    pub peer_addr: SocketAddr,
    datasets: RwLock<HashMap<String, Arc<Dataset>>>,
    /// Datasets whose rows stay in a database (`sources`): DP queries are pushed down.
    remote: RwLock<HashMap<String, Arc<sources::Remote>>>,
    /// Signalled when the catalog changes, so the link republishes it.
    pub catalog_changed: tokio::sync::Notify,
    /// Whether the coordinator link is up.
    pub connected: AtomicBool,
    /// The federation's members as the coordinator last listed them (`None` until it has):
    /// the only organizations the peer endpoint accepts.
    pub members: std::sync::RwLock<Option<std::collections::HashSet<OrgId>>>,
    /// Why the link gave up for good (a refusal only a reconfigured node can overcome).
    pub link_failed: std::sync::Mutex<Option<String>>,
    /// The organization's Ed25519 key (PKCS#8 DER): signs attestations.
    signing_key: Vec<u8>,
    /// The QUIC endpoint (peer server and client for dialing peers).
    pub endpoint: quinn::Endpoint,
    events: tokio::sync::mpsc::UnboundedSender<prism_common::wire::NodeEvent>,
    /// Events waiting for the coordinator link.
    pub events_rx:
        tokio::sync::Mutex<tokio::sync::mpsc::UnboundedReceiver<prism_common::wire::NodeEvent>>,
    /// Shares received from peers, per room.
    pub mailbox: mpc::Mailbox,
    /// Authenticated connections to other nodes, kept between executions.
    pub peers: mpc::PeerCache,
    /// HE key sets kept decompressed in memory.
    pub he_keys: he::keys::KeyCache,
    /// Test seams (fault injection, HE stream recorder): `test-util` builds only.
    #[cfg(feature = "test-util")]
    pub seams: testing::Seams,
    /// Cancelled when the node stops.
    pub shutdown: CancellationToken,
    /// Counters served on the admin API's `/metrics`.
    pub metrics: Metrics,
    /// Runs whose DP or HE answer is being computed (what `Request::Collect` calls `answering`).
    pub answering: std::sync::Mutex<std::collections::HashSet<String>>,
    /// Signalled when a charged answer could not be delivered, so the link announces what it
    /// holds (`store/held.rs`).
    pub held_changed: tokio::sync::Notify,
}

impl NodeState {
    /// A dataset by name.
    pub fn dataset(&self, name: &str) -> Option<Arc<Dataset>> {
        self.datasets.read().ok()?.get(name).cloned()
    }

    /// Installs (or replaces) a dataset in memory and republishes the catalog.
    pub fn install_dataset(&self, ds: Arc<Dataset>) {
        if let Ok(mut m) = self.remote.write() {
            m.remove(&ds.schema.name);
        }
        if let Ok(mut m) = self.datasets.write() {
            m.insert(ds.schema.name.clone(), ds);
        }
        self.catalog_changed.notify_one();
    }

    /// A dataset whose rows stay in a database, by name.
    pub fn remote(&self, name: &str) -> Option<Arc<sources::Remote>> {
        self.remote.read().ok()?.get(name).cloned()
    }

    /// Installs (or replaces) a database source and republishes the catalog.
    pub fn install_remote(&self, r: Arc<sources::Remote>) {
        if let Ok(mut m) = self.datasets.write() {
            m.remove(&r.schema.name);
        }
        if let Ok(mut m) = self.remote.write() {
            m.insert(r.schema.name.clone(), r);
        }
        self.catalog_changed.notify_one();
    }

    /// A dataset's declared schema, wherever its rows are.
    pub fn schema(&self, name: &str) -> Option<prism_common::schema::DatasetSchema> {
        self.dataset(name)
            .map(|d| d.schema.clone())
            .or_else(|| self.remote(name).map(|r| r.schema.clone()))
    }

    /// The catalog this node publishes: metadata only.
    pub fn catalog(&self) -> anyhow::Result<Vec<CatalogEntry>> {
        let m = self
            .datasets
            .read()
            .map_err(|_| anyhow::anyhow!("dataset lock poisoned"))?;
        let remote = self
            .remote
            .read()
            .map_err(|_| anyhow::anyhow!("source lock poisoned"))?;
        let entry = |schema: &prism_common::schema::DatasetSchema, rows: u64| CatalogEntry {
            name: schema.name.clone(),
            columns: schema.columns.clone(),
            row_count: rows,
            release: policy::modes(self, &schema.name),
            budget: self
                .config
                .policy
                .publish_budget
                .then(|| self.store.budget(&schema.name).ok())
                .flatten()
                .map(|b| b.published()),
        };
        let mut out: Vec<CatalogEntry> = m
            .values()
            .map(|d| entry(&d.schema, d.rows as u64))
            .chain(remote.values().map(|r| entry(&r.schema, r.rows)))
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// A dataset's ledger changed (a charge, a new total): republishes the catalog when the
    /// policy publishes budgets, so the coordinator's catalog shows what is left.
    pub fn budget_changed(&self) {
        if self.config.policy.publish_budget {
            self.catalog_changed.notify_one();
        }
    }

    /// Queues an event for the coordinator (sent when the link is up).
    pub fn send_event(&self, ev: prism_common::wire::NodeEvent) {
        let _ = self.events.send(ev);
    }

    /// Counts an execution on `/metrics`. A node answers every failure with a refusal frame;
    /// the ones caused by another party (unreachable, late) count as failures, the rest as
    /// refusals.
    pub fn count(
        &self,
        backend: prism_common::backend::BackendId,
        refusal: Option<&prism_common::wire::ErrorBody>,
    ) -> prism_common::metrics::Outcome {
        use prism_common::metrics::Outcome;
        let outcome = match refusal {
            None => Outcome::Completed,
            Some(e) if e.refusal().is_party_failure() => Outcome::Failed,
            Some(e) => {
                self.metrics.refusal(backend, &e.code);
                Outcome::Refused
            }
        };
        self.metrics.run(backend, outcome);
        outcome
    }

    /// Whether the coordinator link is up.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::SeqCst)
    }

    /// Appends an audit entry off the async runtime and waits until it is committed, so an
    /// answer sent afterwards is already in the log.
    pub async fn audit_committed(
        &self,
        actor: &str,
        action: &str,
        target: &str,
        details: serde_json::Value,
    ) {
        let store = self.store.clone();
        let (actor, action, target) = (actor.to_string(), action.to_string(), target.to_string());
        let done =
            tokio::task::spawn_blocking(move || store.audit(&actor, &action, &target, details))
                .await;
        match done {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "audit append failed"),
            Err(e) => tracing::error!(error = %e, "audit append failed"),
        }
    }

    /// Appends an audit entry off the async runtime.
    pub fn audit_async(&self, actor: &str, action: &str, target: &str, details: serde_json::Value) {
        let store = self.store.clone();
        let (actor, action, target) = (actor.to_string(), action.to_string(), target.to_string());
        tokio::task::spawn_blocking(move || {
            if let Err(e) = store.audit(&actor, &action, &target, details) {
                tracing::error!(error = %e, "audit append failed");
            }
        });
    }
}

/// A running node.
pub struct NodeHandle {
    /// Shared state.
    pub state: Arc<NodeState>,
    /// Where the admin API listens.
    pub admin_addr: SocketAddr,
    /// Where the peer endpoint listens.
    pub peer_addr: SocketAddr,
    shutdown: CancellationToken,
    tasks: JoinSet<()>,
    endpoint: quinn::Endpoint,
}

impl NodeHandle {
    /// The admin API base URL.
    pub fn admin_url(&self) -> String {
        format!("http://{}", self.admin_addr)
    }

    /// Stops the node: no new requests, those in flight get [`link::REQUEST_GRACE`] to answer,
    /// then every connection closes with `close::NORMAL` and the store is flushed. The store
    /// file is closed when the last task holding it ends.
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        while self.tasks.join_next().await.is_some() {}
        self.endpoint.close(
            prism_common::wire::close::NORMAL.into(),
            b"node shutting down",
        );
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), self.endpoint.wait_idle())
            .await;
        let store = self.state.store.clone();
        match tokio::task::spawn_blocking(move || store.flush()).await {
            Ok(Ok(())) => info!(org = %self.state.org, "node stopped; store flushed"),
            Ok(Err(e)) => tracing::error!(error = %e, "flushing the store failed"),
            Err(e) => tracing::error!(error = %e, "flushing the store failed"),
        }
    }

    /// Waits until `shutdown` is cancelled from elsewhere, then stops.
    pub async fn run_until_stopped(self) {
        self.shutdown.cancelled().await;
        self.shutdown().await;
    }
}

/// The coordinator refuses a node whose `Hello` claims another organization than its
/// certificate (`org_mismatch`); say so at start, naming the file, instead of dialing in vain.
fn check_certificate_org(config: &NodeConfig, tls: &TlsMaterial) -> anyhow::Result<()> {
    use prism_common::identity::{PeerIdentity, identity_from_cert};
    let cert = config.tls.cert.display();
    match identity_from_cert(tls.leaf().as_ref()) {
        Ok(PeerIdentity::Org(o)) if o == config.org => Ok(()),
        Ok(PeerIdentity::Org(o)) => anyhow::bail!(
            "{cert} is the certificate of organization {o}, but the config says org = \"{}\"; \
             configure this organization's certificate and key, or fix `org`",
            config.org
        ),
        Ok(PeerIdentity::Coordinator) => anyhow::bail!(
            "{cert} is the coordinator's certificate; a node needs its organization's certificate"
        ),
        Err(e) => anyhow::bail!("{cert}: {e}"),
    }
}

/// Starts a node: opens its store, binds its endpoints and connects to the coordinator.
pub async fn start(config: NodeConfig, shutdown: CancellationToken) -> anyhow::Result<NodeHandle> {
    config
        .policy
        .check()
        .map_err(|e| anyhow::anyhow!("node {}: {e}", config.org))?;
    let idle = prism_common::tls::idle_timeout_from_ms(config.idle_timeout_ms)
        .map_err(anyhow::Error::msg)?;
    let tls = TlsMaterial::load(&config.tls)
        .context("loading the node's TLS material")?
        .with_idle_timeout(idle);
    check_certificate_org(&config, &tls)?;
    let token = config.resolve_admin_token()?;
    let path = config.data_path.clone();
    let (store, settled) = tokio::task::spawn_blocking(move || Store::open(&path))
        .await?
        .with_context(|| format!("opening the node store {}", config.data_path.display()))?;
    if !settled.is_empty() {
        info!(
            count = settled.len(),
            "released reservations left open by a previous run"
        );
    }
    let store = Arc::new(store);
    let s2 = store.clone();
    let data_path = config.data_path.clone();
    let (datasets, remote) = tokio::task::spawn_blocking(move || {
        let remote = sources::remotes(&s2)?;
        let named: Vec<std::path::PathBuf> = remote
            .iter()
            .filter_map(|r| match &r.source {
                sources::Place::Parquet(p) => Some(p.clone()),
                sources::Place::Postgres(_) => None,
            })
            .collect();
        columnar::sweep(&data_path, &named);
        Ok::<_, store::StoreError>((s2.load_all()?, remote))
    })
    .await??;

    let mut peer_server = tls.server_config()?;
    peer_server.transport_config(Arc::new(peer::transport(&tls, config.max_frame)));
    let mut endpoint = quinn::Endpoint::server(peer_server, config.peer_listen)
        .with_context(|| format!("binding the peer endpoint on {}", config.peer_listen))?;
    let client = tls.client_config()?;
    endpoint.set_default_client_config(client.clone());
    let peer_addr = endpoint.local_addr()?;
    let admin_listener = tokio::net::TcpListener::bind(config.admin_listen)
        .await
        .with_context(|| format!("binding the admin API on {}", config.admin_listen))?;
    let admin_addr = admin_listener.local_addr()?;

    let advertise = config
        .peer_advertise
        .as_ref()
        .map_or_else(|| peer_addr.to_string(), ToString::to_string);
    let (events, events_rx) = tokio::sync::mpsc::unbounded_channel();
    let state = Arc::new(NodeState {
        org: config.org.clone(),
        config,
        store,
        peer_addr,
        datasets: RwLock::new(
            datasets
                .into_iter()
                .map(|(k, v)| (k, Arc::new(v)))
                .collect(),
        ),
        remote: RwLock::new(
            remote
                .into_iter()
                .map(|r| (r.schema.name.clone(), Arc::new(r)))
                .collect(),
        ),
        catalog_changed: tokio::sync::Notify::new(),
        connected: AtomicBool::new(false),
        members: std::sync::RwLock::new(None),
        link_failed: std::sync::Mutex::new(None),
        signing_key: tls.key_pkcs8_der().to_vec(),
        endpoint: endpoint.clone(),
        events,
        events_rx: tokio::sync::Mutex::new(events_rx),
        mailbox: mpc::Mailbox::default(),
        peers: mpc::PeerCache::default(),
        he_keys: he::keys::KeyCache::default(),
        #[cfg(feature = "test-util")]
        seams: testing::Seams::default(),
        shutdown: shutdown.clone(),
        metrics: Metrics::new("prism_node"),
        answering: std::sync::Mutex::new(Default::default()),
        held_changed: tokio::sync::Notify::new(),
    });
    info!(org = %state.org, %peer_addr, %admin_addr, config = ?state.config, "prism-node {} starting", env!("CARGO_PKG_VERSION"));

    let mut tasks = JoinSet::new();
    tasks.spawn(link::run(
        state.clone(),
        endpoint.clone(),
        client,
        advertise,
        shutdown.clone(),
    ));
    tasks.spawn(peer::run(state.clone(), endpoint.clone(), shutdown.clone()));
    // Sources are re-read in the background: the stored data serves meanwhile.
    let (s, sd) = (state.clone(), shutdown.clone());
    tasks.spawn(async move {
        tokio::select! {
            () = sources::reestablish(s) => {}
            () = sd.cancelled() => {}
        }
    });
    let router = admin::router(state.clone(), &token);
    let sd = shutdown.clone();
    tasks.spawn(async move {
        if let Err(e) = axum::serve(admin_listener, router)
            .with_graceful_shutdown(async move { sd.cancelled().await })
            .await
        {
            tracing::error!(error = %e, "admin API stopped");
        }
    });
    Ok(NodeHandle {
        state,
        admin_addr,
        peer_addr,
        shutdown,
        tasks,
        endpoint,
    })
}
