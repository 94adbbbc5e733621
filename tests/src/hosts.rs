//! Test hosts: network namespaces on one bridge, each with its own address, and a federation of
//! the real daemons (`prism-coordinator`, `prism-node`) running on them as separate processes,
//! configured from the shipped samples (`docs/samples/*.toml`) the way docs/DEPLOYMENT.md
//! provisions a federation: `certs init`, `users create`, `serve`, `import`.
//!
//! The test process stays in the root namespace, on the bridge (`x.x.x.1`): it is the analysts'
//! network and the reverse proxy in front of the coordinator's admin API, and it can run
//! [`Relay`](crate::relay::Relay)s there to put a WAN between hosts. A node's admin API stays on
//! its own host's loopback, as in the sample; the test reaches it with `ip netns exec` and the
//! `prism-node` subcommands, as an operator on that host would.
//!
//! Needs root and iproute2. Every namespace, veth and bridge is removed when the
//! [`Network`] is dropped.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use serde_json::Value;

use crate::api::Api;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Runs `ip` with `args`; fails with its stderr.
fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip (iproute2)")?;
    ensure!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// Hosts on one layer-2 segment: a bridge in the root namespace, one namespace per host joined to
/// it by a veth pair.
pub struct Network {
    tag: String,
    net: [u8; 3],
    names: Vec<String>,
}

impl Network {
    /// Creates one host per name, `10.a.b.11`, `10.a.b.12`, …; the test process is
    /// `10.a.b.1`. Each host resolves every host's name (its own `/etc/hosts`, which
    /// `ip netns exec` mounts from `/etc/netns/<namespace>/hosts`).
    pub fn create(names: &[&str]) -> anyhow::Result<Network> {
        let hosts = names.len();
        ensure!(hosts <= 50, "at most 50 hosts");
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        // Interface names have at most 15 bytes: "v" + tag + index.
        let tag = format!("p{:04x}{:02x}", pid & 0xffff, n & 0xff);
        let net = [10, 200 + (pid % 50) as u8, (n % 250) as u8];
        let network = Network {
            tag,
            net,
            names: names.iter().map(|n| n.to_string()).collect(),
        };
        network.remove(); // leftovers of an earlier run that died with the same names
        let bridge = network.bridge();
        let gw = format!("{}/24", network.gateway());
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        ip(&["addr", "add", &gw, "dev", &bridge])?;
        ip(&["link", "set", &bridge, "up"])?;
        for i in 0..hosts {
            let (ns, outer, inner) = (network.ns(i), network.outer(i), network.inner(i));
            ip(&["netns", "add", &ns])?;
            ip(&[
                "link", "add", &outer, "type", "veth", "peer", "name", &inner,
            ])?;
            ip(&["link", "set", &inner, "netns", &ns])?;
            ip(&["link", "set", &outer, "master", &bridge, "up"])?;
            let addr = format!("{}/24", network.host(i));
            ip(&["-n", &ns, "addr", "add", &addr, "dev", &inner])?;
            ip(&["-n", &ns, "link", "set", &inner, "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        let mut hosts_file = String::from("127.0.0.1 localhost\n");
        for (i, name) in names.iter().enumerate() {
            hosts_file.push_str(&format!("{} {name}\n", network.host(i)));
        }
        for i in 0..hosts {
            let dir = network.etc(i);
            std::fs::create_dir_all(&dir)?;
            std::fs::write(dir.join("hosts"), &hosts_file)?;
        }
        Ok(network)
    }

    /// `/etc/netns/<namespace>`: files `ip netns exec` mounts over `/etc` on host `i`.
    fn etc(&self, i: usize) -> PathBuf {
        Path::new("/etc/netns").join(self.ns(i))
    }

    /// Host `i`'s name, which every host resolves.
    pub fn name(&self, i: usize) -> &str {
        &self.names[i]
    }

    fn bridge(&self) -> String {
        format!("b{}", self.tag)
    }

    /// The namespace of host `i`.
    pub fn ns(&self, i: usize) -> String {
        format!("{}-{i}", self.tag)
    }

    fn outer(&self, i: usize) -> String {
        format!("v{}{i}", self.tag)
    }

    fn inner(&self, i: usize) -> String {
        format!("e{}{i}", self.tag)
    }

    /// Host `i`'s address.
    pub fn host(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(self.net[0], self.net[1], self.net[2], 11 + i as u8)
    }

    /// The test process's address on the bridge.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(self.net[0], self.net[1], self.net[2], 1)
    }

    /// A command that runs `program` on host `i`.
    pub fn command(&self, i: usize, program: &Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns(i)]).arg(program);
        c
    }

    /// Partitions host `i` (`true`) from every other host, or heals it: its port leaves the
    /// bridge, so packets go nowhere, silently, in both directions (no reset, no unreachable),
    /// while its own interface stays up — a cut cable further down the line.
    pub fn partition(&self, i: usize, cut: bool) -> anyhow::Result<()> {
        let outer = self.outer(i);
        if cut {
            ip(&["link", "set", &outer, "nomaster"])
        } else {
            ip(&["link", "set", &outer, "master", &self.bridge()])
        }
    }

    fn remove(&self) {
        for i in 0..self.names.len() {
            let _ = ip(&["netns", "del", &self.ns(i)]);
            let _ = ip(&["link", "del", &self.outer(i)]);
            let _ = std::fs::remove_dir_all(self.etc(i));
        }
        let _ = ip(&["link", "del", &self.bridge()]);
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        self.remove();
    }
}

/// A daemon process on a test host; killed (SIGKILL) when dropped.
pub struct Daemon {
    child: Child,
    /// Its standard output and error.
    pub log: PathBuf,
}

impl Daemon {
    fn spawn(mut cmd: Command, log: PathBuf) -> anyhow::Result<Daemon> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("opening {}", log.display()))?;
        let child = cmd
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("spawning a daemon")?;
        Ok(Daemon { child, log })
    }

    /// `kill -9`.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends `signal` (TERM, INT) and waits, at most `within`, for the exit.
    pub fn stop(mut self, signal: &str, within: Duration) -> anyhow::Result<ExitStatus> {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-s", signal, &pid]).status()?;
        ensure!(sent.success(), "kill -s {signal} {pid} failed");
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if started.elapsed() > within {
                bail!(
                    "no exit {within:?} after SIG{signal}; log {}",
                    self.log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the process has exited (and how).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where the daemons' binaries are (the directory cargo built them into).
#[derive(Clone)]
pub struct Bins {
    pub coordinator: PathBuf,
    pub node: PathBuf,
}

impl Bins {
    /// The binaries next to `sibling` (e.g. `env!("CARGO_BIN_EXE_prism-sim")`).
    pub fn beside(sibling: &Path) -> anyhow::Result<Bins> {
        let bins = Bins {
            coordinator: sibling.with_file_name("prism-coordinator"),
            node: sibling.with_file_name("prism-node"),
        };
        for b in [&bins.coordinator, &bins.node] {
            ensure!(
                b.exists(),
                "{} is missing: run `cargo test --workspace`, which builds it",
                b.display()
            );
        }
        Ok(bins)
    }
}

/// Ports from the samples.
pub const QUIC_PORT: u16 = 7443;
pub const PEER_PORT: u16 = 7444;
pub const HTTP_PORT: u16 = 8080;

/// What a host federation is made of.
pub struct HostSpec {
    pub orgs: Vec<String>,
    pub rows_per_org: usize,
    /// Backends the nodes serve (the sample serves `dp_sandbox` only).
    pub backends: Vec<String>,
    /// Attest data rooms without an admin (the sample says `false`).
    pub auto_attest: bool,
}

impl Default for HostSpec {
    fn default() -> Self {
        HostSpec {
            orgs: ["hospital-a", "hospital-b", "hospital-c"]
                .map(String::from)
                .to_vec(),
            rows_per_org: 200,
            backends: vec!["dp_sandbox".into(), "mpc_backend".into()],
            auto_attest: true,
        }
    }
}

/// A coordinator on host 0 and one node per organization on hosts 1…n, each a real daemon.
pub struct HostFederation {
    pub net: Network,
    pub dir: PathBuf,
    pub bins: Bins,
    pub orgs: Vec<String>,
    pub admin_token: String,
    pub analyst_token: String,
    coordinator: Option<Daemon>,
    nodes: Vec<Option<Daemon>>,
    tmp: Option<tempfile::TempDir>,
}

impl Drop for HostFederation {
    /// Kills the daemons before their hosts go; a failed test keeps the directory (configs,
    /// stores, logs) and says where.
    fn drop(&mut self) {
        self.coordinator.take();
        self.nodes.iter_mut().for_each(|n| drop(n.take()));
        if std::thread::panicking()
            && let Some(t) = self.tmp.take()
        {
            eprintln!("the federation's files are kept in {}", t.keep().display());
        }
    }
}

fn sample(name: &str) -> anyhow::Result<toml::Table> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../docs/samples")
        .join(name);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(toml::from_str(&text)?)
}

fn set(t: &mut toml::Table, key: &str, v: impl Into<toml::Value>) {
    t.insert(key.into(), v.into());
}

fn table<'a>(t: &'a mut toml::Table, key: &str) -> &'a mut toml::Table {
    t.entry(key)
        .or_insert_with(|| toml::Value::Table(Default::default()))
        .as_table_mut()
        .expect("a table")
}

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

impl HostFederation {
    /// Provisions and starts the federation; returns once every node is connected and every
    /// dataset is in the catalog.
    pub async fn start(bins: Bins, spec: HostSpec) -> anyhow::Result<HostFederation> {
        let mut names = vec!["coordinator"];
        names.extend(spec.orgs.iter().map(String::as_str));
        let net = Network::create(&names)?;
        let tmp = tempfile::Builder::new().prefix("prism-hosts-").tempdir()?;
        let dir = tmp.path().to_path_buf();
        let ca = dir.join("ca");
        let orgs = spec.orgs.join(",");
        let out = Command::new(&bins.coordinator)
            .args(["certs", "init", "--dir"])
            .arg(&ca)
            .args(["--orgs", &orgs])
            .output()?;
        ensure!(
            out.status.success(),
            "certs init: {}",
            String::from_utf8_lossy(&out.stderr)
        );

        // The coordinator, from docs/samples/coordinator.toml.
        let mut c = sample("coordinator.toml")?;
        set(&mut c, "data_path", path_str(&dir.join("coordinator.redb")));
        let me = net.host(0);
        set(&mut c, "quic_listen", format!("{me}:{QUIC_PORT}"));
        // The reverse proxy of the sample is the test process, on the bridge.
        set(&mut c, "http_listen", format!("{me}:{HTTP_PORT}"));
        set(
            &mut c,
            "organizations",
            toml::Value::Array(spec.orgs.iter().map(|o| o.clone().into()).collect()),
        );
        // As the sample says (`true`) when a node serves HE; otherwise spare the suite the key
        // generation.
        set(
            &mut c,
            "he_keys_at_start",
            spec.backends.iter().any(|b| b == "he_backend"),
        );
        let tls = table(&mut c, "tls");
        set(tls, "ca_cert", path_str(&ca.join("ca.pem")));
        set(tls, "cert", path_str(&ca.join("coordinator.pem")));
        set(tls, "key", path_str(&ca.join("coordinator.key.pem")));
        std::fs::write(dir.join("coordinator.toml"), toml::to_string(&c)?)?;

        let mut f = HostFederation {
            net,
            dir,
            bins,
            orgs: spec.orgs.clone(),
            admin_token: String::new(),
            analyst_token: String::new(),
            coordinator: None,
            nodes: spec.orgs.iter().map(|_| None).collect(),
            tmp: Some(tmp),
        };
        f.admin_token = f.create_user("operator", "admin", None)?;
        f.analyst_token = f.create_user("alice", "analyst", Some(&spec.orgs[0]))?;

        // The nodes, from docs/samples/node.toml.
        for (i, org) in spec.orgs.iter().enumerate() {
            let host = f.dir.join(org);
            std::fs::create_dir_all(&host)?;
            let token_file = host.join("admin-token");
            std::fs::write(&token_file, format!("admin-token-of-{org}\n"))?;
            let mut n = sample("node.toml")?;
            set(&mut n, "org", org.clone());
            set(&mut n, "data_path", path_str(&host.join("node.redb")));
            // By name, as a deployment with DNS would: each host resolves every host's name.
            set(
                &mut n,
                "coordinator_addr",
                format!("{}:{QUIC_PORT}", f.net.name(0)),
            );
            set(&mut n, "peer_listen", format!("0.0.0.0:{PEER_PORT}"));
            set(
                &mut n,
                "peer_advertise",
                format!("{}:{PEER_PORT}", f.net.name(i + 1)),
            );
            set(&mut n, "admin_token_file", path_str(&token_file));
            let tls = table(&mut n, "tls");
            set(tls, "ca_cert", path_str(&ca.join("ca.pem")));
            set(tls, "cert", path_str(&ca.join(format!("{org}.pem"))));
            set(tls, "key", path_str(&ca.join(format!("{org}.key.pem"))));
            let policy = table(&mut n, "policy");
            set(
                policy,
                "backends",
                toml::Value::Array(spec.backends.iter().map(|b| b.clone().into()).collect()),
            );
            set(policy, "auto_attest", spec.auto_attest);
            std::fs::write(f.node_config(org), toml::to_string(&n)?)?;
        }

        f.start_coordinator().await?;
        for org in spec.orgs.clone() {
            f.start_node(&org).await?;
        }
        for (i, org) in spec.orgs.iter().enumerate() {
            let csv = f.dir.join(org).join("patients.csv");
            let rows = crate::data::patients(7, i, spec.rows_per_org);
            std::fs::write(&csv, crate::data::to_csv(&rows))?;
            let schema =
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/samples/patients.schema.toml");
            f.node_cli(
                org,
                &[
                    "import",
                    "--name",
                    "patients",
                    "--csv",
                    &path_str(&csv),
                    "--schema",
                    &path_str(&schema),
                ],
            )?;
        }
        let api = f.analyst();
        let want = spec.orgs.len();
        f.wait(
            "every dataset in the catalog",
            Duration::from_secs(30),
            async || {
                matches!(api.get("/api/v1/datasets").await, Ok((200, v))
                if v.as_array().is_some_and(|a| a.len() == want))
            },
        )
        .await?;
        Ok(f)
    }

    /// Waits (at most `within`) until `ok`.
    pub async fn wait(
        &self,
        what: &str,
        within: Duration,
        mut ok: impl AsyncFnMut() -> bool,
    ) -> anyhow::Result<()> {
        let started = Instant::now();
        while !ok().await {
            if started.elapsed() > within {
                bail!(
                    "{what}: not within {within:?} (logs in {})",
                    self.dir.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    fn create_user(&self, name: &str, role: &str, org: Option<&str>) -> anyhow::Result<String> {
        let mut cmd = Command::new(&self.bins.coordinator);
        cmd.args(["users", "create", "--config"])
            .arg(self.dir.join("coordinator.toml"))
            .args(["--name", name, "--role", role, "--json"]);
        if let Some(o) = org {
            cmd.args(["--organization", o]);
        }
        let out = cmd.output()?;
        ensure!(
            out.status.success(),
            "users create: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout)?;
        Ok(v["token"].as_str().context("token")?.to_string())
    }

    /// The node's configuration file.
    pub fn node_config(&self, org: &str) -> PathBuf {
        self.dir.join(org).join("node.toml")
    }

    /// The coordinator's configuration file.
    pub fn coordinator_config(&self) -> PathBuf {
        self.dir.join("coordinator.toml")
    }

    fn index(&self, org: &str) -> usize {
        self.orgs.iter().position(|o| o == org).expect("a member")
    }

    /// The host of `org`'s node.
    pub fn host_of(&self, org: &str) -> usize {
        self.index(org) + 1
    }

    /// The coordinator's admin API (through the "reverse proxy": the bridge).
    pub fn url(&self) -> String {
        format!("http://{}:{HTTP_PORT}", self.net.host(0))
    }

    pub fn quic_addr(&self) -> SocketAddr {
        SocketAddr::new(self.net.host(0).into(), QUIC_PORT)
    }

    /// `org`'s peer endpoint.
    pub fn peer_addr(&self, org: &str) -> SocketAddr {
        SocketAddr::new(self.net.host(self.host_of(org)).into(), PEER_PORT)
    }

    pub fn analyst(&self) -> Api {
        Api::new(self.url(), self.analyst_token.clone())
    }

    pub fn admin(&self) -> Api {
        Api::new(self.url(), self.admin_token.clone())
    }

    /// Starts `prism-coordinator serve` on host 0 and waits for its `/readyz`.
    pub async fn start_coordinator(&mut self) -> anyhow::Result<()> {
        ensure!(self.coordinator.is_none(), "the coordinator runs already");
        let mut cmd = self.net.command(0, &self.bins.coordinator);
        cmd.args(["serve", "--config"])
            .arg(self.coordinator_config());
        self.coordinator = Some(Daemon::spawn(cmd, self.dir.join("coordinator.log"))?);
        let ready = format!("{}/readyz", self.url());
        let http = reqwest::Client::new();
        self.wait(
            "the coordinator is ready",
            Duration::from_secs(30),
            async || matches!(http.get(&ready).send().await, Ok(r) if r.status() == 200),
        )
        .await
    }

    /// Starts `prism-node` of `org` on its host and waits until it is connected.
    pub async fn start_node(&mut self, org: &str) -> anyhow::Result<()> {
        self.spawn_node(org)?;
        self.wait_ready(org, Duration::from_secs(30)).await
    }

    /// Starts `prism-node` of `org` on its host without waiting.
    pub fn spawn_node(&mut self, org: &str) -> anyhow::Result<()> {
        let i = self.index(org);
        ensure!(self.nodes[i].is_none(), "{org}'s node runs already");
        let mut cmd = self.net.command(i + 1, &self.bins.node);
        cmd.arg("--config").arg(self.node_config(org));
        self.nodes[i] = Some(Daemon::spawn(cmd, self.dir.join(org).join("node.log"))?);
        Ok(())
    }

    /// Waits until `org`'s node answers `/readyz` 200 on its host and the coordinator lists it
    /// connected.
    pub async fn wait_ready(&self, org: &str, within: Duration) -> anyhow::Result<()> {
        let admin = self.admin();
        self.wait(&format!("{org} is ready"), within, async || {
            self.node_ready(org) == Some(true)
                && matches!(admin.get("/api/v1/organizations").await, Ok((200, v))
                    if v.as_array().is_some_and(|a| a.iter().any(|o| o["id"] == org && o["connected"] == true)))
        })
        .await
    }

    /// `org`'s node `/readyz` on its own host: `Some(true)` for 200, `Some(false)` for 503,
    /// `None` when it does not answer.
    pub fn node_ready(&self, org: &str) -> Option<bool> {
        let out = self
            .net
            .command(self.host_of(org), Path::new("curl"))
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "2"])
            .arg("http://127.0.0.1:9090/readyz")
            .output()
            .ok()?;
        match String::from_utf8_lossy(&out.stdout).trim() {
            "200" => Some(true),
            "503" => Some(false),
            _ => None,
        }
    }

    /// Runs a `prism-node` subcommand on `org`'s host (against its running node); its stdout.
    pub fn node_cli(&self, org: &str, args: &[&str]) -> anyhow::Result<String> {
        let out = self
            .net
            .command(self.host_of(org), &self.bins.node)
            .arg("--config")
            .arg(self.node_config(org))
            .args(args)
            .output()?;
        ensure!(
            out.status.success(),
            "prism-node {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `org`'s `patients` budget from its running node: (spent ε, reserved ε).
    pub fn budget(&self, org: &str) -> anyhow::Result<(f64, f64)> {
        let v: Value = serde_json::from_str(&self.node_cli(org, &["budget-show", "--json"])?)?;
        let d = v
            .as_array()
            .and_then(|a| a.iter().find(|d| d["dataset"] == "patients"))
            .with_context(|| format!("no patients dataset in {v}"))?;
        let b = &d["budget"];
        Ok((
            b["spent_epsilon"].as_f64().context("spent")?,
            b["reserved_epsilon"].as_f64().unwrap_or(0.0),
        ))
    }

    /// Kills (`kill -9`) the coordinator.
    pub fn kill_coordinator(&mut self) {
        if let Some(d) = self.coordinator.take() {
            d.kill();
        }
    }

    /// Kills (`kill -9`) `org`'s node.
    pub fn kill_node(&mut self, org: &str) {
        let i = self.index(org);
        if let Some(d) = self.nodes[i].take() {
            d.kill();
        }
    }

    /// Stops the coordinator with `signal`; its exit status.
    pub fn stop_coordinator(&mut self, signal: &str) -> anyhow::Result<ExitStatus> {
        let d = self.coordinator.take().context("no coordinator")?;
        d.stop(signal, Duration::from_secs(30))
    }

    /// Stops `org`'s node with `signal`; its exit status.
    pub fn stop_node(&mut self, org: &str, signal: &str) -> anyhow::Result<ExitStatus> {
        let i = self.index(org);
        let d = self.nodes[i].take().context("no node")?;
        d.stop(signal, Duration::from_secs(30))
    }

    /// Rewrites `org`'s node configuration with `edit` (it takes effect at the next start).
    pub fn edit_node_config(
        &self,
        org: &str,
        edit: impl FnOnce(&mut toml::Table),
    ) -> anyhow::Result<()> {
        edit_toml(&self.node_config(org), edit)
    }

    /// Rewrites the coordinator's configuration with `edit`.
    pub fn edit_coordinator_config(
        &self,
        edit: impl FnOnce(&mut toml::Table),
    ) -> anyhow::Result<()> {
        edit_toml(&self.coordinator_config(), edit)
    }

    /// The tail of every daemon's log, for a failure message.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        let mut files = vec![self.dir.join("coordinator.log")];
        files.extend(self.orgs.iter().map(|o| self.dir.join(o).join("node.log")));
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(15)..];
            s.push_str(&format!("== {}\n{}\n", f.display(), tail.join("\n")));
        }
        s
    }
}

fn edit_toml(path: &Path, edit: impl FnOnce(&mut toml::Table)) -> anyhow::Result<()> {
    let mut t: toml::Table = toml::from_str(&std::fs::read_to_string(path)?)?;
    edit(&mut t);
    std::fs::write(path, toml::to_string(&t)?)?;
    Ok(())
}

/// Sets `key` of the `[tls]` table.
pub fn set_tls(t: &mut toml::Table, key: &str, v: impl Into<toml::Value>) {
    set(table(t, "tls"), key, v);
}
