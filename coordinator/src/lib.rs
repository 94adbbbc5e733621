//! prism-coordinator: the coordinator daemon.
//!
//! Keeps the federation's catalog, users, queries and runs in one redb file; accepts node
//! connections over mutually authenticated QUIC; serves the admin API. `start` runs it all
//! in-process (tests, `prism-sim`); `main.rs` is a thin CLI around it.

//!
//! Layers, bottom to top; each module imports only from the layers below it (see
//! `docs/ARCHITECTURE.md`):
//!
//! 1. [`model`]: the records and their state machines (users, catalog, queries, runs, rooms);
//! 2. [`store`]: every table, typed, and all restart recovery;
//! 3. [`nodes`]: the QUIC link: answers calls, forwards node events on a channel;
//! 4. backends [`dp`], [`he`], [`mpc`]: they return an outcome and never write a run;
//! 5. [`rooms`] (every room transition), then [`runs`] (every run transition);
//! 6. [`events`] (applies node events), then [`api`] and [`console`].

pub mod api;
pub mod certs_cmd;
pub mod collect;
pub mod config;
pub mod console;
pub mod dp;
pub mod events;
pub mod he;
pub mod intervals;
pub mod model;
pub mod mpc;
pub mod nodes;
mod pacing;
pub mod requester;
pub mod rooms;
pub mod runs;
pub mod store;
pub mod users;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use prism_common::metrics::Metrics;
use prism_common::tls::TlsMaterial;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

pub use config::CoordinatorConfig;
use model::DatasetRecord;
use nodes::NodeRegistry;
use store::{DATASETS, Store};

/// Shared state of a running coordinator.
pub struct CoordState {
    /// Configuration.
    pub config: CoordinatorConfig,
    /// Store.
    pub store: Arc<Store>,
    /// Connected nodes.
    pub nodes: Arc<NodeRegistry>,
    /// Run tasks.
    pub tasks: TaskTracker,
    /// Ids of runs that just finished.
    pub run_done: tokio::sync::broadcast::Sender<String>,
    /// Ids of rooms that just finished executing.
    pub room_done: tokio::sync::broadcast::Sender<String>,
    /// Serialises read-modify-write of room records.
    pub rooms_lock: std::sync::Mutex<()>,
    /// Counters served on `/metrics`.
    pub metrics: Arc<Metrics>,
    /// The HE key holder's key set, once loaded or generated.
    pub he_keys: he::keys::KeySlot,
    /// Which nodes hold the HE key set; one install per node at a time.
    pub he_installs: he::warm::Installs,
    /// Cancelled when the coordinator stops: calls to nodes are abandoned, `/readyz` says 503.
    pub shutdown: CancellationToken,
    /// Whether the node endpoint is accepting connections (for `/readyz`).
    pub listening: std::sync::atomic::AtomicBool,
    /// Runs whose answers are collected from their nodes after a restart.
    pub collections: collect::Collections,
    /// The last progress report of each HE run being evaluated, by run id, with the
    /// organization that sent it.
    pub progress: std::sync::Mutex<
        std::collections::HashMap<
            String,
            (prism_common::identity::OrgId, prism_common::wire::Progress),
        >,
    >,
}

impl CoordState {
    /// A catalog entry by id.
    pub fn dataset(&self, id: &str) -> Option<DatasetRecord> {
        self.store.get(DATASETS, id).ok().flatten()
    }
}

/// A running coordinator.
pub struct CoordinatorHandle {
    /// Shared state.
    pub state: Arc<CoordState>,
    /// Where the admin API listens.
    pub http_addr: SocketAddr,
    /// Where nodes connect.
    pub quic_addr: SocketAddr,
    shutdown: CancellationToken,
    tasks: tokio::task::JoinSet<()>,
    endpoint: quinn::Endpoint,
}

impl CoordinatorHandle {
    /// The admin API base URL.
    pub fn api_url(&self) -> String {
        format!("http://{}", self.http_addr)
    }

    /// Stops the coordinator: stops accepting, closes every node connection with
    /// `close::NORMAL`, fails the runs and rooms in flight with `coordinator_stopped`, and
    /// flushes the store.
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        // The node endpoint and the admin API stop on the token; calls to nodes return at once.
        while self.tasks.join_next().await.is_some() {}
        self.endpoint.close(
            prism_common::wire::close::NORMAL.into(),
            b"coordinator shutting down",
        );
        self.state.tasks.close();
        // Run and room tasks record their failure; one stuck on the store is not waited for:
        // the next start fails what it left in flight (`coordinator_restarted`).
        if tokio::time::timeout(SHUTDOWN_GRACE, self.state.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("run tasks still busy after {SHUTDOWN_GRACE:?}; stopping anyway");
        }
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, self.endpoint.wait_idle()).await;
        let store = self.state.store.clone();
        let stopped = tokio::task::spawn_blocking(move || {
            // Runs still open (an mpc_backend run waiting for attestations) end here, with a reason.
            let failed = store.fail_unfinished_runs(
                "coordinator_stopped",
                "the coordinator was stopped before this run finished; no result was released (a DP \
                 answer its node charged is collected when the coordinator is back); execute the query again",
            )?;
            store.flush().map(|()| failed)
        })
        .await;
        match stopped {
            Ok(Ok(failed)) => info!(
                runs_failed = failed.len(),
                "coordinator stopped; store flushed"
            ),
            Ok(Err(e)) => tracing::error!(error = %e, "flushing the store failed"),
            Err(e) => tracing::error!(error = %e, "flushing the store failed"),
        }
    }
}

/// How long a stopping coordinator waits for its run tasks to record their outcome.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

/// Starts a coordinator.
pub async fn start(
    config: CoordinatorConfig,
    shutdown: CancellationToken,
) -> anyhow::Result<CoordinatorHandle> {
    let idle = prism_common::tls::idle_timeout_from_ms(config.idle_timeout_ms)
        .map_err(anyhow::Error::msg)?;
    let tls = TlsMaterial::load(&config.tls)
        .context("loading the coordinator's TLS material")?
        .with_idle_timeout(idle);
    let path = config.data_path.clone();
    let (store, recovered) = tokio::task::spawn_blocking(move || Store::open(&path))
        .await?
        .with_context(|| {
            format!(
                "opening the coordinator store {}",
                config.data_path.display()
            )
        })?;
    if !recovered.runs.is_empty()
        || !recovered.rooms.is_empty()
        || !recovered.awaiting.is_empty()
        || !recovered.awaiting_rooms.is_empty()
    {
        info!(
            runs = recovered.runs.len(),
            rooms = recovered.rooms.len(),
            awaiting_collection = recovered.awaiting.len(),
            rooms_awaiting_collection = recovered.awaiting_rooms.len(),
            "ended runs and rooms left in flight by a previous run; DP and HE runs and dp rooms await their nodes' held answers"
        );
    }
    let pruned = store
        .prune_catalog(&config.organizations)
        .context("removing former members' datasets from the catalog")?;
    if !pruned.is_empty() {
        info!(datasets = ?pruned, "removed the datasets of organizations no longer in `organizations`");
    }
    let store = Arc::new(store);
    let mut server = tls.server_config()?;
    server.transport_config(Arc::new(nodes::transport(&tls, config.max_frame)));
    let endpoint = quinn::Endpoint::server(server, config.quic_listen)
        .with_context(|| format!("binding QUIC on {}", config.quic_listen))?;
    let quic_addr = endpoint.local_addr()?;
    let listener = tokio::net::TcpListener::bind(config.http_listen)
        .await
        .with_context(|| format!("binding HTTP on {}", config.http_listen))?;
    let http_addr = listener.local_addr()?;
    let metrics = Arc::new(Metrics::new("prism_coordinator"));
    let (events_tx, events_rx) = tokio::sync::mpsc::channel(events::QUEUE);
    let nodes = Arc::new(NodeRegistry::new(
        config.organizations.clone(),
        config.max_frame,
        idle,
        metrics.clone(),
        shutdown.clone(),
        events_tx,
    ));
    let (run_done, _) = tokio::sync::broadcast::channel(1024);
    let (room_done, _) = tokio::sync::broadcast::channel(1024);
    info!(%quic_addr, %http_addr, config = ?config, "prism-coordinator {} starting", env!("CARGO_PKG_VERSION"));
    let state = Arc::new(CoordState {
        config,
        store: store.clone(),
        nodes,
        tasks: TaskTracker::new(),
        run_done,
        room_done,
        rooms_lock: std::sync::Mutex::new(()),
        metrics,
        he_keys: he::keys::KeySlot::default(),
        he_installs: Default::default(),
        shutdown: shutdown.clone(),
        listening: std::sync::atomic::AtomicBool::new(false),
        collections: collect::Collections::new(recovered.awaiting, recovered.awaiting_rooms),
        progress: Default::default(),
    });

    let mut tasks = tokio::task::JoinSet::new();
    if state.config.he_keys_at_start {
        state.tasks.spawn(he::warm::at_start(state.clone()));
    }
    tasks.spawn(events::run(state.clone(), events_rx, shutdown.clone()));
    tasks.spawn(nodes::serve(
        endpoint.clone(),
        state.clone(),
        shutdown.clone(),
    ));
    let router = api::router(state.clone());
    let sd = shutdown.clone();
    tasks.spawn(async move {
        if let Err(e) = axum::serve(listener, router)
            .with_graceful_shutdown(async move { sd.cancelled().await })
            .await
        {
            tracing::error!(error = %e, "admin API stopped");
        }
    });
    Ok(CoordinatorHandle {
        state,
        http_addr,
        quic_addr,
        shutdown,
        tasks,
        endpoint,
    })
}
