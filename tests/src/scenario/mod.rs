//! Scenario files for `prism-sim run`: organizations (node policy, datasets from the synthetic
//! generator or from CSV + schema files, budgets and release modes), a network setting, and a
//! script of steps — queries, data rooms, budget changes, parties going down — each with the
//! outcome it expects.
//!
//! A scenario is TOML; unknown fields are refused, and [`Scenario::parse`] checks every
//! reference (organizations, datasets, backends, files) before anything starts, so a typo is
//! reported with the step it is in rather than as a failed run.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use prism_common::backend::BackendId;
use prism_common::identity::OrgId;
use prism_common::schema::ColumnSpec;
use prism_node::Policy;
use serde::{Deserialize, Serialize};

mod html;
pub mod report;
pub mod run;
pub mod truth;

/// The default scenario (the demo's flow), shipped in `tests/scenarios/demo.toml`.
pub const DEMO: &str = include_str!("../../scenarios/demo.toml");

/// A whole scenario.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name, shown in the report.
    pub name: String,
    /// What it shows.
    #[serde(default)]
    pub description: String,
    /// Seed of the synthetic data.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Added latency on the links.
    #[serde(default)]
    pub network: Network,
    /// The organizations, in order (the synthetic generator's organization index).
    #[serde(rename = "organization")]
    pub organizations: Vec<Organization>,
    /// The script.
    #[serde(rename = "step")]
    pub steps: Vec<Step>,
    /// Directory relative file names are resolved against (the scenario file's).
    #[serde(skip)]
    pub base_dir: PathBuf,
}

fn default_seed() -> u64 {
    7
}

/// A WAN-like setting: every node reaches the coordinator, and every other node reaches its
/// peer endpoint, through a UDP relay that holds each datagram this long in each direction.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    /// One-way delay, ms.
    #[serde(default)]
    pub latency_ms: u64,
    /// Extra delay drawn uniformly from 0..=jitter_ms per datagram (order is kept).
    #[serde(default)]
    pub jitter_ms: u64,
}

/// One organization and its node.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Organization {
    /// Organization id (lower-case letters, digits, '-').
    pub id: String,
    /// The node's policy (the node's defaults where a field is left out).
    #[serde(default)]
    pub policy: Option<Policy>,
    /// Extra one-way delay on this party's links (to the coordinator, and into its peer
    /// endpoint) for the whole scenario, ms (a slow party).
    #[serde(default)]
    pub slow_ms: u64,
    /// Its datasets.
    #[serde(default, rename = "dataset")]
    pub datasets: Vec<DatasetSource>,
}

/// A dataset: synthetic patients (`rows`) or the user's CSV with a schema file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetSource {
    /// Dataset (table) name.
    #[serde(default = "default_dataset")]
    pub name: String,
    /// Synthetic patients to generate.
    #[serde(default)]
    pub rows: Option<usize>,
    /// A CSV file with a header row (relative to the scenario file).
    #[serde(default)]
    pub csv: Option<PathBuf>,
    /// A TOML file declaring its columns (`[[columns]]` with name, type, bounds, public_keys).
    #[serde(default)]
    pub schema: Option<PathBuf>,
    /// Total ε of the dataset's budget (the node's default otherwise).
    #[serde(default)]
    pub epsilon: Option<f64>,
    /// Total δ of the dataset's budget (with `epsilon`; default 1e-6).
    #[serde(default)]
    pub delta: Option<f64>,
    /// Release mode per backend (`dp`, `exact`, `off`), e.g. `{ mpc_backend = "exact" }`.
    #[serde(default)]
    pub release: BTreeMap<String, String>,
}

fn default_dataset() -> String {
    "patients".into()
}

/// A schema file's contents.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemaFile {
    /// The declared columns.
    pub columns: Vec<ColumnSpec>,
}

/// What a step does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A query on one dataset (`dp_sandbox`, `he_backend`, `enclave_backend`).
    Query,
    /// A data room across organizations (`mpc_backend`).
    Room,
    /// Sets a dataset's budget on its node.
    Budget,
    /// Stops a node (it stays down until a `start` step).
    Stop,
    /// Starts a stopped node again from its store.
    Start,
}

/// One step of the script. Which fields apply depends on `kind`; [`Scenario::parse`] refuses
/// the others.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// What it does.
    pub kind: Kind,
    /// A label for the report.
    #[serde(default)]
    pub name: String,
    /// query: the backend.
    #[serde(default)]
    pub backend: Option<String>,
    /// query, budget: `organization.dataset`.
    #[serde(default)]
    pub dataset: Option<String>,
    /// query, room: the SQL.
    #[serde(default)]
    pub sql: Option<String>,
    /// query: ε asked for; room: ε of every participant; budget: the new total ε.
    #[serde(default)]
    pub epsilon: Option<f64>,
    /// budget: the new total δ (default 1e-6).
    #[serde(default)]
    pub delta: Option<f64>,
    /// room: participants (default: every organization).
    #[serde(default)]
    pub participants: Option<Vec<String>>,
    /// room: ε per participant.
    #[serde(default)]
    pub participant_epsilon: BTreeMap<String, f64>,
    /// room: `dp` (default) or `exact`.
    #[serde(default)]
    pub release: Option<String>,
    /// room: share-exchange deadline, ms (the coordinator's default otherwise).
    #[serde(default)]
    pub deadline_ms: Option<u64>,
    /// room: groups below this row count are suppressed (default 10; a party's policy may
    /// ask for more).
    #[serde(default)]
    pub min_group_size: Option<u64>,
    /// room: participants whose admin declines the invitation.
    #[serde(default)]
    pub decline: Vec<String>,
    /// room: participants killed during execution (after computing their own vector, before
    /// sending a share); started again after the step.
    #[serde(default)]
    pub kill: Vec<String>,
    /// query, room: organizations whose node is stopped for this step (after attesting, in a
    /// room) and started again after it.
    #[serde(default)]
    pub offline: Vec<String>,
    /// query, room: extra one-way delay (ms) on these organizations' links for this step.
    #[serde(default)]
    pub slow: BTreeMap<String, u64>,
    /// stop, start: the organization.
    #[serde(default)]
    pub organization: Option<String>,
    /// The outcome it expects (default: completed).
    #[serde(default)]
    pub expect: Expect,
}

/// An expected outcome.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// `completed` (default) or `refused`.
    #[serde(default)]
    pub status: ExpectStatus,
    /// With `refused`: the error code.
    #[serde(default)]
    pub code: Option<String>,
    /// Every released value within this many 95 % half-widths (as the answer's proof states
    /// them) of the plaintext truth.
    #[serde(default)]
    pub within_ci95: Option<f64>,
    /// Every released value within this absolute distance of the truth.
    #[serde(default)]
    pub within: Option<f64>,
    /// Every released value within this fraction of the truth (0.05 = 5 %).
    #[serde(default)]
    pub within_rel: Option<f64>,
}

impl Expect {
    /// Whether the answer is compared with the truth.
    pub fn checks_truth(&self) -> bool {
        self.within_ci95.is_some() || self.within.is_some() || self.within_rel.is_some()
    }
}

/// The expected status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExpectStatus {
    /// The step completes.
    #[default]
    Completed,
    /// The step is refused (or fails) with `code`.
    Refused,
}

impl Kind {
    /// The name scenario files use.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Query => "query",
            Kind::Room => "room",
            Kind::Budget => "budget",
            Kind::Stop => "stop",
            Kind::Start => "start",
        }
    }
}

impl Step {
    /// The label: the name, or the kind and what it is about.
    pub fn label(&self) -> String {
        if !self.name.is_empty() {
            return self.name.clone();
        }
        self.kind.as_str().to_string()
    }
}

impl Scenario {
    /// Reads and validates a scenario file.
    pub fn load(path: &Path) -> anyhow::Result<Scenario> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading scenario {}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        Scenario::parse(&text, &base).with_context(|| format!("scenario {}", path.display()))
    }

    /// Parses and validates scenario text; relative files are resolved against `base_dir`.
    pub fn parse(text: &str, base_dir: &Path) -> anyhow::Result<Scenario> {
        let mut s: Scenario = toml::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?;
        s.base_dir = base_dir.to_path_buf();
        s.validate()?;
        Ok(s)
    }

    /// Sets every synthetic dataset to `rows` rows (a quick run of a large scenario).
    pub fn override_rows(&mut self, rows: usize) {
        for d in self.organizations.iter_mut().flat_map(|o| &mut o.datasets) {
            if d.rows.is_some() {
                d.rows = Some(rows);
            }
        }
    }

    /// The organization ids, in order.
    pub fn org_ids(&self) -> Vec<String> {
        self.organizations.iter().map(|o| o.id.clone()).collect()
    }

    /// A file named in the scenario.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    fn validate(&self) -> anyhow::Result<()> {
        if self.organizations.is_empty() {
            bail!("a scenario needs at least one [[organization]]");
        }
        let mut ids = BTreeSet::new();
        let mut datasets = BTreeSet::new();
        for o in &self.organizations {
            OrgId::new(&o.id).map_err(|_| {
                anyhow::anyhow!(
                    "organization {:?}: an id is lower-case letters, digits and '-'",
                    o.id
                )
            })?;
            if !ids.insert(o.id.clone()) {
                bail!("organization {} is declared twice", o.id);
            }
            for d in &o.datasets {
                self.validate_dataset(&o.id, d)?;
                if !datasets.insert(format!("{}.{}", o.id, d.name)) {
                    bail!(
                        "organization {}: dataset {} is declared twice",
                        o.id,
                        d.name
                    );
                }
            }
        }
        if self.steps.is_empty() {
            bail!("a scenario needs at least one [[step]]");
        }
        for (i, step) in self.steps.iter().enumerate() {
            self.validate_step(step, &ids, &datasets)
                .with_context(|| format!("step {} ({})", i + 1, step.label()))?;
        }
        Ok(())
    }

    fn validate_dataset(&self, org: &str, d: &DatasetSource) -> anyhow::Result<()> {
        let at = || format!("organization {org}, dataset {}", d.name);
        if !prism_node::store::valid_dataset_name(&d.name) {
            bail!(
                "{}: a dataset name is lower-case letters, digits and '_'",
                at()
            );
        }
        match (d.rows, &d.csv, &d.schema) {
            (Some(_), None, None) => {}
            (None, Some(csv), Some(schema)) => {
                for f in [csv, schema] {
                    let p = self.resolve(f);
                    if !p.is_file() {
                        bail!("{}: file {} not found", at(), p.display());
                    }
                }
                let text = std::fs::read_to_string(self.resolve(schema))?;
                toml::from_str::<SchemaFile>(&text)
                    .map_err(|e| anyhow::anyhow!("{}: schema {}: {e}", at(), schema.display()))?;
            }
            (None, Some(_), None) => bail!("{}: a csv needs a schema file", at()),
            _ => bail!(
                "{}: give either rows (synthetic patients) or csv + schema",
                at()
            ),
        }
        if d.delta.is_some() && d.epsilon.is_none() {
            bail!("{}: delta needs epsilon", at());
        }
        for (backend, mode) in &d.release {
            if BackendId::parse(backend).is_none() {
                bail!("{}: release: unknown backend {backend}", at());
            }
            if prism_common::release::ReleaseMode::parse(mode).is_none() {
                bail!(
                    "{}: release {backend} = {mode:?}: use dp, exact or off",
                    at()
                );
            }
        }
        Ok(())
    }

    fn validate_step(
        &self,
        s: &Step,
        orgs: &BTreeSet<String>,
        datasets: &BTreeSet<String>,
    ) -> anyhow::Result<()> {
        let known = |o: &String| -> anyhow::Result<()> {
            if orgs.contains(o) {
                Ok(())
            } else {
                bail!("{o} is not an organization of this scenario")
            }
        };
        let forbid = |present: bool, field: &str| -> anyhow::Result<()> {
            if present {
                bail!("`{field}` does not apply to a {} step", s.kind.as_str());
            }
            Ok(())
        };
        let need = |present: bool, field: &str| -> anyhow::Result<()> {
            if !present {
                bail!("a {} step needs `{field}`", s.kind.as_str());
            }
            Ok(())
        };
        let dataset_known = || -> anyhow::Result<()> {
            let d = s.dataset.as_deref().unwrap_or_default();
            if !datasets.contains(d) {
                bail!("dataset {d:?} is not declared (write organization.dataset)");
            }
            Ok(())
        };
        let room_only = |s: &Step| -> anyhow::Result<()> {
            forbid(s.participants.is_some(), "participants")?;
            forbid(!s.participant_epsilon.is_empty(), "participant_epsilon")?;
            forbid(s.release.is_some(), "release")?;
            forbid(s.deadline_ms.is_some(), "deadline_ms")?;
            forbid(s.min_group_size.is_some(), "min_group_size")?;
            forbid(!s.decline.is_empty(), "decline")?;
            forbid(!s.kill.is_empty(), "kill")
        };
        match s.kind {
            Kind::Query => {
                need(s.sql.is_some(), "sql")?;
                need(s.dataset.is_some(), "dataset")?;
                dataset_known()?;
                let b = s.backend.as_deref().unwrap_or_default();
                match BackendId::parse(b) {
                    Some(BackendId::MpcBackend) => {
                        bail!("mpc_backend runs in a room step (kind = \"room\")")
                    }
                    Some(_) => {}
                    None => bail!("backend {b:?}: use dp_sandbox, he_backend or enclave_backend"),
                }
                room_only(s)?;
                forbid(s.delta.is_some(), "delta")?;
                forbid(s.organization.is_some(), "organization")?;
            }
            Kind::Room => {
                need(s.sql.is_some(), "sql")?;
                forbid(s.dataset.is_some(), "dataset (the SQL names the table)")?;
                if let Some(b) = &s.backend
                    && b != "mpc_backend"
                {
                    bail!("a room runs on mpc_backend, not {b}");
                }
                let parts = s.participants.clone().unwrap_or_else(|| self.org_ids());
                if parts.len() < 2 {
                    bail!("a room needs at least two participants");
                }
                for p in &parts {
                    known(p)?;
                }
                for o in s
                    .participant_epsilon
                    .keys()
                    .chain(&s.decline)
                    .chain(&s.kill)
                    .chain(&s.offline)
                {
                    if !parts.contains(o) {
                        bail!("{o} is not a participant of this room");
                    }
                }
                if let Some(r) = &s.release
                    && r != "dp"
                    && r != "exact"
                {
                    bail!("release {r:?}: a room releases dp or exact");
                }
                forbid(s.delta.is_some(), "delta")?;
                forbid(s.organization.is_some(), "organization")?;
            }
            Kind::Budget => {
                need(s.dataset.is_some(), "dataset")?;
                need(s.epsilon.is_some(), "epsilon")?;
                dataset_known()?;
                room_only(s)?;
                forbid(s.sql.is_some(), "sql")?;
                forbid(s.backend.is_some(), "backend")?;
                forbid(!s.offline.is_empty(), "offline")?;
                forbid(!s.slow.is_empty(), "slow")?;
                forbid(s.organization.is_some(), "organization")?;
            }
            Kind::Stop | Kind::Start => {
                need(s.organization.is_some(), "organization")?;
                known(s.organization.as_ref().context("organization")?)?;
                room_only(s)?;
                forbid(s.sql.is_some(), "sql")?;
                forbid(s.dataset.is_some(), "dataset")?;
                forbid(s.backend.is_some(), "backend")?;
                forbid(s.epsilon.is_some(), "epsilon")?;
                forbid(!s.offline.is_empty(), "offline")?;
                forbid(!s.slow.is_empty(), "slow")?;
            }
        }
        for o in s.offline.iter().chain(s.slow.keys()) {
            known(o)?;
        }
        match (s.expect.status, &s.expect.code) {
            (ExpectStatus::Refused, None) => bail!("expect refused needs the error `code`"),
            (ExpectStatus::Completed, Some(_)) => {
                bail!("expect: a `code` goes with status = \"refused\"")
            }
            (ExpectStatus::Refused, Some(_)) if s.expect.checks_truth() => {
                bail!("expect: a tolerance goes with status = \"completed\"")
            }
            _ => {}
        }
        if s.expect.checks_truth() && !matches!(s.kind, Kind::Query | Kind::Room) {
            bail!("expect: only query and room steps have an answer to compare");
        }
        for v in [s.expect.within_ci95, s.expect.within, s.expect.within_rel]
            .into_iter()
            .flatten()
        {
            if !(v.is_finite() && v >= 0.0) {
                bail!("expect: a tolerance is a non-negative number");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
