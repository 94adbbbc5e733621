//! Stopping and starting a federation's daemons again, each from its store: a node (to the
//! coordinator directly, or through a relay in front of it; advertising its own peer address
//! or a relay's) and the coordinator (on the same QUIC port, so the nodes reconnect).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use prism_common::identity::OrgId;
use tokio_util::sync::CancellationToken;

use super::Federation;

impl Federation {
    /// Stops one node (its store stays on disk).
    pub async fn stop_node(&mut self, org: &str) -> anyhow::Result<()> {
        let slot = self
            .nodes
            .get_mut(&OrgId::new(org)?)
            .context("no such node")?;
        slot.shutdown.cancel();
        if let Some(h) = slot.handle.take() {
            h.shutdown().await;
        }
        Ok(())
    }

    /// Starts a stopped node again from its store.
    pub async fn restart_node(&mut self, org: &str) -> anyhow::Result<()> {
        let quic = self
            .coordinator
            .as_ref()
            .map(|c| c.quic_addr)
            .context("coordinator stopped")?;
        self.start_node_dialing(org, quic).await
    }

    /// Where an organization's running node listens for its peers.
    pub fn peer_addr(&self, org: &str) -> anyhow::Result<SocketAddr> {
        self.nodes
            .get(&OrgId::new(org)?)
            .and_then(|n| n.handle.as_ref())
            .map(|h| h.peer_addr)
            .with_context(|| format!("node {org} is not running"))
    }

    /// From its next start on, `org`'s node listens for peers on the port it has now and tells
    /// the coordinator (and so the other parties) to dial `advertise` instead: a
    /// [`crate::relay::Relay`] in front of its peer endpoint, say.
    pub fn advertise_peer(&mut self, org: &str, advertise: SocketAddr) -> anyhow::Result<()> {
        let bound = self.peer_addr(org)?;
        let slot = self
            .nodes
            .get_mut(&OrgId::new(org)?)
            .context("no such node")?;
        slot.config.peer_listen = bound;
        slot.config.peer_advertise = Some(advertise.into());
        Ok(())
    }

    /// Restarts a node so that it dials the coordinator at `addr` (a [`crate::relay::Relay`]
    /// in front of it, say).
    pub async fn reroute_node(&mut self, org: &str, addr: SocketAddr) -> anyhow::Result<()> {
        self.stop_node(org).await?;
        self.start_node_dialing(org, addr).await
    }

    async fn start_node_dialing(&mut self, org: &str, addr: SocketAddr) -> anyhow::Result<()> {
        let slot = self
            .nodes
            .get_mut(&OrgId::new(org)?)
            .context("no such node")?;
        slot.config.coordinator_addr = addr.into();
        slot.shutdown = CancellationToken::new();
        // Tasks of the stopped node may hold its store for a moment after shutdown.
        let mut tries = 0;
        let handle = loop {
            match prism_node::start(slot.config.clone(), slot.shutdown.clone()).await {
                Ok(h) => break h,
                Err(e) if tries < 40 => {
                    tries += 1;
                    tracing::debug!(error = %e, "node restart: retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e),
            }
        };
        slot.handle = Some(handle);
        self.wait_connected().await
    }

    /// Prepares the HE key set as a coordinator with `he_keys_at_start` does when it starts:
    /// generated (or loaded) and installed on every connected node that serves HE; returns when
    /// that is done.
    pub async fn prepare_he(&self) -> anyhow::Result<()> {
        let c = self.coordinator.as_ref().context("no coordinator")?;
        prism_coordinator::he::warm::at_start(c.state.clone()).await;
        Ok(())
    }

    /// Stops the coordinator (its store stays on disk).
    pub async fn stop_coordinator(&mut self) {
        self.coordinator_shutdown.cancel();
        if let Some(c) = self.coordinator.take() {
            c.shutdown().await;
        }
    }

    /// Starts the coordinator again from its store, on the same QUIC port so nodes reconnect.
    pub async fn restart_coordinator(&mut self) -> anyhow::Result<()> {
        let quic = self
            .nodes
            .values()
            .next()
            .and_then(|n| n.config.coordinator_addr.socket_addr())
            .context("no nodes")?;
        let mut cfg = self.coordinator_config.clone();
        cfg.quic_listen = quic;
        self.coordinator_shutdown = CancellationToken::new();
        self.coordinator =
            Some(prism_coordinator::start(cfg, self.coordinator_shutdown.clone()).await?);
        self.wait_connected_again().await
    }

    async fn wait_connected_again(&self) -> anyhow::Result<()> {
        let api = self.admin();
        for _ in 0..300 {
            let (_, v) = api.get("/api/v1/organizations").await?;
            let running = self.nodes.values().filter(|n| n.handle.is_some()).count();
            if v.as_array()
                .is_some_and(|a| a.iter().filter(|o| o["connected"] == true).count() >= running)
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("nodes did not reconnect to the restarted coordinator")
    }
}
