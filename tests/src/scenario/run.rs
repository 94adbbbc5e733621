//! Runs a scenario: starts its federation (through delay relays when the scenario sets a
//! latency: one in front of the coordinator and one in front of the peer endpoint for each
//! node), imports every organization's datasets, walks the steps with their faults, and
//! checks each outcome against its expectation and the plaintext truth.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use prism_common::identity::OrgId;
use prism_common::schema::{ColumnSpec, Dataset};
use serde_json::{Value, json};

use super::report::{BudgetLine, Outcome, Report, StepReport};
use super::{ExpectStatus, Kind, Scenario, SchemaFile, Step, truth};
use crate::progress::Progress;
use crate::relay::Relay;
use crate::{Api, Federation, FederationSpec, data};

/// A scenario's running federation and what the simulator keeps beside it.
pub struct Sim<'a> {
    scenario: &'a Scenario,
    /// The federation.
    pub federation: Federation,
    /// The data each node was given, by `organization.dataset` (for the truth).
    datasets: BTreeMap<String, Dataset>,
    /// Each organization's relays when the scenario has a latency setting.
    relays: BTreeMap<String, Links>,
    /// Delay of each organization's link outside any step's `slow`, ms.
    base_delay: BTreeMap<String, u64>,
}

/// The two relays of one organization's node: its link to the coordinator (the node dials
/// `coordinator.addr`), and the way into its peer endpoint (the node advertises `peer.addr`, so
/// every other party's connections to it, and the shares they carry, pass through it).
struct Links {
    coordinator: Relay,
    peer: Relay,
}

impl Links {
    fn set_delay(&self, delay: Duration, jitter: Duration) {
        self.coordinator.set_delay(delay, jitter);
        self.peer.set_delay(delay, jitter);
    }
}

fn uses_relays(s: &Scenario) -> bool {
    s.network.latency_ms > 0
        || s.network.jitter_ms > 0
        || s.organizations.iter().any(|o| o.slow_ms > 0)
        || s.steps
            .iter()
            .any(|st| !st.slow.is_empty() || !st.kill.is_empty())
}

impl Outcome {
    fn from_http(status: u16, body: Value) -> Outcome {
        if (200..300).contains(&status) && body.get("error").is_none() {
            Outcome {
                status: body["status"].as_str().unwrap_or("completed").to_string(),
                code: body["error_code"].as_str().map(String::from),
                message: body["error_message"].as_str().unwrap_or_default().into(),
                body,
            }
        } else {
            Outcome {
                status: format!("http {status}"),
                code: body["error"]["code"].as_str().map(String::from),
                message: body["error"]["message"]
                    .as_str()
                    .map_or_else(|| body.to_string(), String::from),
                body,
            }
        }
    }

    fn failed(code: &str, message: String) -> Outcome {
        Outcome {
            status: "failed".into(),
            code: Some(code.into()),
            message,
            body: Value::Null,
        }
    }
}

impl<'a> Sim<'a> {
    /// Starts the scenario's federation and imports its datasets, showing progress on
    /// `progress`.
    pub async fn start(scenario: &'a Scenario, progress: &Progress) -> anyhow::Result<Sim<'a>> {
        let spec = FederationSpec {
            orgs: scenario.org_ids(),
            rows_per_org: 0,
            seed: scenario.seed,
            policies: scenario
                .organizations
                .iter()
                .filter_map(|o| o.policy.clone().map(|p| (o.id.clone(), p)))
                .collect(),
            progress: progress.clone(),
            ..Default::default()
        };
        let mut federation = Federation::start(spec).await?;
        let mut relays = BTreeMap::new();
        let mut base_delay = BTreeMap::new();
        if uses_relays(scenario) {
            let quic = federation
                .coordinator
                .as_ref()
                .map(|c| c.quic_addr)
                .context("coordinator")?;
            let task = progress.bar(
                scenario.organizations.len() as u64,
                "restarting the nodes behind their relays",
            );
            for o in &scenario.organizations {
                task.say(o.id.clone());
                let links = Links {
                    coordinator: Relay::start(quic).await?,
                    peer: Relay::start(federation.peer_addr(&o.id)?).await?,
                };
                let delay = scenario.network.latency_ms + o.slow_ms;
                links.set_delay(
                    Duration::from_millis(delay),
                    Duration::from_millis(scenario.network.jitter_ms),
                );
                // The restart below brings both in: the node keeps its peer port, advertises
                // the peer relay and dials the coordinator's.
                federation.advertise_peer(&o.id, links.peer.addr)?;
                federation
                    .reroute_node(&o.id, links.coordinator.addr)
                    .await?;
                base_delay.insert(o.id.clone(), delay);
                relays.insert(o.id.clone(), links);
                task.inc();
            }
            task.finish(&format!(
                "{} ms ± {} ms each way",
                scenario.network.latency_ms, scenario.network.jitter_ms
            ));
        }
        let mut sim = Sim {
            scenario,
            federation,
            datasets: BTreeMap::new(),
            relays,
            base_delay,
        };
        sim.import_all().await?;
        Ok(sim)
    }

    async fn import_all(&mut self) -> anyhow::Result<()> {
        let s = self.scenario;
        let mut count = 0;
        let total = s
            .organizations
            .iter()
            .map(|o| o.datasets.len())
            .sum::<usize>();
        let task = self
            .federation
            .progress
            .bar(total as u64, "importing the datasets");
        for (i, o) in s.organizations.iter().enumerate() {
            let node = self.federation.node_admin(&o.id)?;
            for d in &o.datasets {
                task.say(format!("{}.{}", o.id, d.name));
                let (columns, csv): (Vec<ColumnSpec>, String) = match (&d.csv, &d.schema) {
                    (Some(csv), Some(schema)) => {
                        let text = std::fs::read_to_string(s.resolve(schema))?;
                        let schema: SchemaFile = toml::from_str(&text)?;
                        let csv = std::fs::read_to_string(s.resolve(csv))
                            .with_context(|| format!("reading {}", csv.display()))?;
                        (schema.columns, csv)
                    }
                    _ => (
                        data::patient_columns(),
                        data::to_csv(&data::patients(s.seed, i, d.rows.unwrap_or(0))),
                    ),
                };
                let parsed = prism_node::import::parse_csv(&d.name, columns.clone(), &csv)
                    .with_context(|| format!("{}.{}", o.id, d.name))?;
                let mut body = json!({"name": d.name, "columns": columns, "csv": csv});
                if let Some(e) = d.epsilon {
                    body["budget"] = json!({"epsilon": e, "delta": d.delta.unwrap_or(1e-6)});
                }
                let (st, resp) = node.post("/v1/datasets", &body).await?;
                if st != 201 {
                    bail!("importing {}.{} failed: {st} {resp}", o.id, d.name);
                }
                if !d.release.is_empty() {
                    let path = format!("/v1/datasets/{}/release", d.name);
                    let (st, resp) = node.put(&path, &json!(d.release)).await?;
                    if st != 200 {
                        bail!("release modes of {}.{}: {st} {resp}", o.id, d.name);
                    }
                }
                self.datasets.insert(format!("{}.{}", o.id, d.name), parsed);
                count += 1;
                task.inc();
            }
        }
        let rows: usize = self.datasets.values().map(|d| d.rows).sum();
        task.finish(&format!("{count} datasets, {rows} rows"));
        self.federation.wait_for_datasets(count).await
    }

    fn set_slow(&self, slow: &BTreeMap<String, u64>) {
        for (org, links) in &self.relays {
            let d = self.base_delay.get(org).copied().unwrap_or(0)
                + slow.get(org).copied().unwrap_or(0);
            links.set_delay(
                Duration::from_millis(d),
                Duration::from_millis(self.scenario.network.jitter_ms),
            );
        }
    }

    /// Starts a stopped node again (through its relay, if it has one).
    async fn start_node(&mut self, org: &str) -> anyhow::Result<()> {
        if self
            .federation
            .nodes
            .get(&OrgId::new(org)?)
            .is_some_and(|n| n.handle.is_some())
        {
            return Ok(());
        }
        match self.relays.get(org).map(|r| r.coordinator.addr) {
            Some(addr) => self.federation.reroute_node(org, addr).await,
            None => self.federation.restart_node(org).await,
        }
    }

    /// Runs every step, then reads the ledgers and stops the federation.
    pub async fn run(mut self) -> anyhow::Result<Report> {
        let mut steps = Vec::new();
        let progress = self.federation.progress.clone();
        let all = progress.bar(self.scenario.steps.len() as u64, "scenario steps");
        let mut he_seen = false;
        for (i, step) in self.scenario.steps.iter().enumerate() {
            let what = step_label(step, i);
            all.say(what.clone());
            let first_he = step.backend.as_deref() == Some("he_backend") && !he_seen;
            he_seen |= first_he;
            let task = progress.spinner(&what);
            if first_he {
                task.say("the coordinator generates the TFHE key set on the first HE query");
            }
            let t = Instant::now();
            let mut r = self.step(step).await?;
            r.index = i + 1;
            r.time_ms = t.elapsed().as_secs_f64() * 1000.0;
            task.finish(&match &r.code {
                Some(code) => format!("{} ({code})", r.status),
                None => r.status.clone(),
            });
            all.inc();
            steps.push(r);
        }
        all.finish(&format!("{} steps", steps.len()));
        let budgets = self.budgets().await;
        self.federation.shutdown().await;
        Ok(Report::new(self.scenario, steps, budgets))
    }

    async fn budgets(&self) -> Vec<BudgetLine> {
        let mut lines = Vec::new();
        for key in self.datasets.keys() {
            let Some((org, name)) = key.split_once('.') else {
                continue;
            };
            let Ok(node) = self.federation.node_admin(org) else {
                continue;
            };
            if let Ok((200, b)) = node.get(&format!("/v1/datasets/{name}/budget")).await {
                lines.push(BudgetLine {
                    dataset: key.clone(),
                    organization: org.into(),
                    total_epsilon: b["total_epsilon"].as_f64().unwrap_or(0.0),
                    spent_epsilon: b["spent_epsilon"].as_f64().unwrap_or(0.0),
                });
            }
        }
        lines
    }

    async fn step(&mut self, step: &Step) -> anyhow::Result<StepReport> {
        let mut faults: Vec<String> = Vec::new();
        // A room's offline parties attest first and go down before the execution.
        if step.kind != Kind::Room {
            for o in &step.offline {
                self.federation.stop_node(o).await?;
                faults.push(format!("{o} offline"));
            }
        }
        if !step.slow.is_empty() {
            self.set_slow(&step.slow);
            faults.extend(step.slow.iter().map(|(o, ms)| format!("{o} +{ms} ms")));
        }
        let mut report = match step.kind {
            Kind::Query => self.query(step).await?,
            Kind::Room => self.room(step, &mut faults).await?,
            Kind::Budget => self.budget(step).await?,
            Kind::Stop | Kind::Start => {
                let org = step.organization.clone().unwrap_or_default();
                let r = if step.kind == Kind::Stop {
                    self.federation.stop_node(&org).await
                } else {
                    self.start_node(&org).await
                };
                let outcome = match r {
                    Ok(()) => Outcome::from_http(200, json!({"status": "completed"})),
                    Err(e) => Outcome::failed("node_start_failed", e.to_string()),
                };
                let verb = if step.kind == Kind::Stop {
                    "stop"
                } else {
                    "start"
                };
                StepReport::of(step, "", &format!("{verb} {org}"), outcome)
            }
        };
        for o in &step.kill {
            // The dead process is gone for good; a new one starts from its store.
            self.federation.stop_node(o).await?;
            if let Some(links) = self.relays.get(o) {
                links.coordinator.cut(false);
            }
        }
        for o in step.offline.iter().chain(&step.kill) {
            self.start_node(o).await?;
        }
        if !step.slow.is_empty() {
            self.set_slow(&BTreeMap::new());
        }
        report.faults = faults;
        report.ok = match step.expect.status {
            ExpectStatus::Completed => {
                report.status == "completed" && report.check.as_ref().is_none_or(|c| c.ok)
            }
            // A room refused by a party carries the party's own code in its message.
            ExpectStatus::Refused => step.expect.code.as_ref().is_some_and(|c| {
                report.status != "completed"
                    && (report.code.as_ref() == Some(c)
                        || report.message.contains(&format!("({c})")))
            }),
        };
        Ok(report)
    }

    async fn query(&self, step: &Step) -> anyhow::Result<StepReport> {
        let (dataset, sql) = (
            step.dataset.clone().unwrap_or_default(),
            step.sql.clone().unwrap_or_default(),
        );
        let backend = step.backend.clone().unwrap_or_default();
        let (_, status, body) = self
            .federation
            .analyst()
            .run_query(&dataset, &sql, &backend, step.epsilon)
            .await?;
        let outcome = Outcome::from_http(status, body);
        let mut r = StepReport::of(step, &backend, &sql, outcome);
        let org = dataset.split_once('.').map_or("", |(o, _)| o).to_string();
        if let Some(e) = r.body["epsilon_consumed"].as_f64() {
            r.epsilon.insert(org, e);
        }
        let ds: Vec<&Dataset> = self.datasets.get(&dataset).into_iter().collect();
        self.check(step, &mut r, &ds);
        Ok(r)
    }

    async fn room(&mut self, step: &Step, faults: &mut Vec<String>) -> anyhow::Result<StepReport> {
        let sql = step.sql.clone().unwrap_or_default();
        let parts = step
            .participants
            .clone()
            .unwrap_or_else(|| self.scenario.org_ids());
        let api = self.federation.analyst();
        let mut body = json!({
            "name": if step.name.is_empty() { "scenario room" } else { step.name.as_str() },
            "description": format!("scenario {}", self.scenario.name),
            "query_text": sql, "participants": parts,
            "release": step.release.clone().unwrap_or_else(|| "dp".into()),
            "participant_epsilon": step.participant_epsilon,
        });
        if let Some(e) = step.epsilon {
            body["epsilon"] = json!(e);
        }
        if let Some(k) = step.min_group_size {
            body["min_group_size"] = json!(k);
        }
        if let Some(d) = step.deadline_ms {
            body["deadline_ms"] = json!(d);
        }
        let (status, room) = api.post("/api/v1/data_rooms", &body).await?;
        if status != 201 {
            return Ok(StepReport::of(
                step,
                "mpc_backend",
                &sql,
                Outcome::from_http(status, room),
            ));
        }
        let id = room["id"].as_str().unwrap_or_default().to_string();
        for org in &parts {
            let declines = step.decline.contains(org);
            if let Some(refusal) = self.answer_invitation(org, &id, declines).await? {
                return Ok(StepReport::of(step, "mpc_backend", &sql, refusal));
            }
            if declines {
                faults.push(format!("{org} declined"));
            }
        }
        if step.decline.is_empty() {
            wait_room(
                &api,
                &id,
                |r| r["status"] != "pending",
                Duration::from_secs(10),
            )
            .await?;
        }
        // Offline after attesting: the party agreed, then went away before the execution.
        for org in &step.offline {
            self.federation.stop_node(org).await?;
            faults.push(format!("{org} offline"));
        }
        for org in &step.kill {
            let slot = self
                .federation
                .nodes
                .get(&OrgId::new(org)?)
                .context("node")?;
            if let Some(h) = &slot.handle {
                h.state
                    .seams
                    .inject_fault(Some(prism_node::testing::Fault::StallBeforeShares));
            }
            faults.push(format!("{org} killed mid-room"));
        }
        let exec = {
            let (api, id) = (api.clone(), id.clone());
            tokio::spawn(async move {
                api.post(
                    &format!("/api/v1/data_rooms/{id}/execute?wait=true"),
                    &json!({}),
                )
                .await
            })
        };
        if !step.kill.is_empty() {
            // The killed parties hold their shares; once the room is executing their links to
            // the coordinator go silent (no close, no reset: what it sees of a `kill -9`).
            wait_room(
                &api,
                &id,
                |r| r["status"] != "ready",
                Duration::from_secs(30),
            )
            .await?;
            tokio::time::sleep(Duration::from_millis(300)).await;
            for org in &step.kill {
                if let Some(links) = self.relays.get(org) {
                    links.coordinator.cut(true);
                }
            }
        }
        let (status, mut room) = exec.await??;
        if status == 202 {
            room = wait_room(
                &api,
                &id,
                |r| r["status"] == "completed" || r["status"] == "failed",
                Duration::from_secs(600),
            )
            .await?;
        }
        let outcome = Outcome::from_http(if status == 202 { 200 } else { status }, room);
        let mut r = StepReport::of(step, "mpc_backend", &sql, outcome);
        if let Some(ps) = r.body["proof_artifacts"]["dp"]["parties"].as_array() {
            for p in ps {
                if let (Some(o), Some(e)) = (p["organization"].as_str(), p["epsilon"].as_f64()) {
                    r.epsilon.insert(o.to_string(), e);
                }
            }
        }
        let table = prism_common::sql::table_name(&sql).unwrap_or_default();
        let ds: Vec<&Dataset> = parts
            .iter()
            .filter_map(|o| self.datasets.get(&format!("{o}.{table}")))
            .collect();
        self.check(step, &mut r, &ds);
        Ok(r)
    }

    /// Attests (or declines) an invitation through the organization's own node; a refusal
    /// of the attestation ends the step with it.
    async fn answer_invitation(
        &self,
        org: &str,
        id: &str,
        decline: bool,
    ) -> anyhow::Result<Option<Outcome>> {
        let node = self.federation.node_admin(org)?;
        let until = Instant::now() + Duration::from_secs(10);
        while node.get(&format!("/v1/invitations/{id}")).await?.0 != 200 {
            if Instant::now() > until {
                return Ok(Some(Outcome::failed(
                    "no_invitation",
                    format!("{org} received no invitation within 10 s"),
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let verb = if decline { "decline" } else { "attest" };
        let (s, body) = node
            .post(&format!("/v1/invitations/{id}/{verb}"), &json!({}))
            .await?;
        Ok((s != 200).then(|| Outcome::from_http(s, body)))
    }

    async fn budget(&self, step: &Step) -> anyhow::Result<StepReport> {
        let dataset = step.dataset.clone().unwrap_or_default();
        let (org, name) = dataset.split_once('.').context("organization.dataset")?;
        let node = self.federation.node_admin(org)?;
        let path = format!("/v1/datasets/{name}/budget");
        let delta = match step.delta {
            Some(d) => d,
            None => node.get(&path).await?.1["total_delta"]
                .as_f64()
                .unwrap_or(1e-6),
        };
        let (s, body) = node
            .put(&path, &json!({"epsilon": step.epsilon, "delta": delta}))
            .await?;
        let outcome = Outcome::from_http(s, body);
        let query = format!(
            "budget of {dataset}: total ε = {}",
            step.epsilon.unwrap_or(0.0)
        );
        Ok(StepReport::of(step, "", &query, outcome))
    }

    /// Computes the plaintext truth and, where the step asks for it, compares the answer.
    fn check(&self, step: &Step, r: &mut StepReport, datasets: &[&Dataset]) {
        let Some(first) = datasets.first() else {
            return;
        };
        let Ok(plan) = prism_common::sql::plan_query(&r.query, &first.schema) else {
            return;
        };
        let Ok(table) = truth::evaluate(&plan, datasets) else {
            return;
        };
        r.truth = super::report::table_text(&json!(table));
        if r.status == "completed" && step.expect.checks_truth() {
            let proof = r.body["proof_artifacts"].clone();
            r.check = Some(truth::compare(
                &plan,
                &r.body["result"],
                &proof,
                &table,
                &step.expect,
            ));
        }
        r.truth_table = Some(json!(table));
    }
}

/// Polls a room until `done` holds (or the time is up), returning it.
async fn wait_room(
    api: &Api,
    id: &str,
    done: impl Fn(&Value) -> bool,
    within: Duration,
) -> anyhow::Result<Value> {
    let until = Instant::now() + within;
    loop {
        let (_, r) = api.get(&format!("/api/v1/data_rooms/{id}")).await?;
        if done(&r) || Instant::now() > until {
            return Ok(r);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How a step is named while it runs: its name, else its kind and position.
fn step_label(step: &Step, i: usize) -> String {
    if step.name.is_empty() {
        format!("step {}: {}", i + 1, step.kind.as_str())
    } else {
        format!("step {}: {}", i + 1, step.name)
    }
}

/// Runs a scenario from start to report.
pub async fn run(scenario: &Scenario) -> anyhow::Result<Report> {
    run_with(scenario, &Progress::hidden()).await
}

/// [`run`], showing progress on `progress`.
pub async fn run_with(scenario: &Scenario, progress: &Progress) -> anyhow::Result<Report> {
    let t = Instant::now();
    let sim = Sim::start(scenario, progress).await?;
    let setup_ms = t.elapsed().as_secs_f64() * 1000.0;
    let mut report = sim.run().await?;
    report.setup_ms = setup_ms;
    Ok(report)
}
