//! What a federation started in a directory keeps there so that it can be started again:
//! organizations, their policies and row counts, the data seed and the API tokens.
//!
//! The certificates, the coordinator's and the nodes' stores stay where they are; a resumed
//! federation reopens them (same CA, same datasets, budgets as spent) on new ports.

use std::path::Path;

use anyhow::{Context, bail};
use prism_common::identity::OrgId;
use prism_node::Policy;
use serde::{Deserialize, Serialize};

use super::Federation;

/// The file, in the federation's directory.
pub const STATE_FILE: &str = "simulation.json";

/// One organization as started.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SavedOrg {
    pub id: OrgId,
    pub rows: usize,
    pub policy: Policy,
    pub node_admin_token: String,
}

/// Everything needed to start the same federation again.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Saved {
    pub seed: u64,
    pub rows_per_org: usize,
    pub organizations: Vec<SavedOrg>,
    pub admin_token: String,
    pub analyst_token: String,
}

impl Federation {
    /// Whether `dir` holds a federation a previous [`Federation::start_in`] left there.
    pub fn exists_in(dir: &Path) -> bool {
        dir.join(STATE_FILE).is_file()
    }

    /// Writes what [`Federation::resume`] needs into the federation's directory.
    pub(super) fn save(&self) -> anyhow::Result<()> {
        // In the order they were created: the synthetic generator's organization index.
        let mut nodes: Vec<_> = self.nodes.iter().collect();
        nodes.sort_by_key(|(org, _)| self.org_index.get(*org).copied());
        let saved = Saved {
            seed: self.seed,
            rows_per_org: self.rows_per_org,
            organizations: nodes
                .into_iter()
                .map(|(org, n)| SavedOrg {
                    id: org.clone(),
                    rows: self.rows.get(org).copied().unwrap_or(0),
                    policy: n.config.policy.clone(),
                    node_admin_token: n.admin_token.clone(),
                })
                .collect(),
            admin_token: self.admin_token.clone(),
            analyst_token: self.analyst_token.clone(),
        };
        let path = self.dir.join(STATE_FILE);
        std::fs::write(&path, serde_json::to_string_pretty(&saved)?)
            .with_context(|| format!("writing {}", path.display()))
    }

    /// Starts again the federation a previous [`Federation::start_in`] created in `dir`: the
    /// same CA and certificates, the same stores (datasets, budgets spent, runs, rooms, audit
    /// logs) and the same tokens; only the ports are new.
    pub async fn resume(dir: &Path) -> anyhow::Result<Self> {
        Self::resume_with(dir, crate::progress::Progress::hidden()).await
    }

    /// [`Federation::resume`], showing progress on `progress`.
    pub async fn resume_with(
        dir: &Path,
        progress: crate::progress::Progress,
    ) -> anyhow::Result<Self> {
        let path = dir.join(STATE_FILE);
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "{} is not a federation directory (no {STATE_FILE})",
                dir.display()
            )
        })?;
        let saved: Saved = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a saved federation", path.display()))?;
        if saved.organizations.is_empty() {
            bail!("{}: no organizations", path.display());
        }
        for o in &saved.organizations {
            let store = dir.join(format!("{}.redb", o.id));
            if !store.is_file() {
                bail!("{}: the store of {} is missing", store.display(), o.id);
            }
        }
        let f = Self::launch(dir, saved, false, progress).await?;
        f.wait_connected().await?;
        f.wait_for_datasets(f.rows.values().filter(|&&r| r > 0).count())
            .await?;
        Ok(f)
    }
}
