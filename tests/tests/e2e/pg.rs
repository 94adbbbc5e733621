//! A real PostgreSQL server for the source tests: Debian's `postgresql` (installed with apt-get
//! when missing, else a clear failure: a source test that silently skipped would pass for
//! nothing), a fresh cluster made by `initdb` in a temporary directory, password authentication
//! (scram-sha-256), listening on a free loopback port, every statement logged
//! (`log_statement = all`, prefixed with the client's `application_name`), stopped and removed
//! when dropped.
//!
//! PostgreSQL refuses to run as root: as root the cluster belongs to the `postgres` user the
//! package creates and every server command runs through `runuser -u postgres`.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, bail};

/// The cluster's superuser and the password the node reads from a file.
pub const USER: &str = "prism";
const PASSWORD: &str = "s3cret-Pa55";

/// The directory of `initdb`, `pg_ctl` and `postgres`.
fn bin_dir() -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("postgres").exists() && b.join("initdb").exists())
        .collect();
    found.sort();
    found.pop()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Installs Debian's PostgreSQL if it is not there yet (once, whichever test gets here first).
fn ensure_postgres() -> PathBuf {
    static INSTALL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _once = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(b) = bin_dir() {
        return b;
    }
    eprintln!("source test: installing postgresql with apt-get…");
    let run = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
    };
    let ok = matches!(run(&["update"]), Ok(s) if s.success())
        && matches!(run(&["install", "-y", "postgresql"]), Ok(s) if s.success());
    match (ok, bin_dir()) {
        (true, Some(b)) => b,
        _ => panic!(
            "the source tests need a PostgreSQL server; installing it with \
             `apt-get update && apt-get install -y postgresql` failed (run the tests as root, with \
             access to Debian's package mirror)"
        ),
    }
}

/// A running PostgreSQL cluster.
pub struct Pg {
    bin: PathBuf,
    dir: tempfile::TempDir,
    /// Its port on 127.0.0.1.
    pub port: u16,
    running: bool,
    tls: bool,
}

impl Pg {
    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The server log (every statement, prefixed `[application_name]`).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// The file the node reads the password from.
    pub fn password_file(&self) -> PathBuf {
        self.dir.path().join("password")
    }

    /// The connection string the node is registered with (no password).
    pub fn conninfo(&self) -> String {
        format!(
            "host=127.0.0.1 port={} dbname=postgres user={USER} application_name=prism-node",
            self.port
        )
    }

    /// Runs a server command, as `postgres` when this process is root.
    fn server_cmd(&self, program: &str, args: &[&str]) -> anyhow::Result<()> {
        let exe = self.bin.join(program);
        let out = if is_root() {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&exe)
                .args(args)
                .output()
        } else {
            Command::new(&exe).args(args).output()
        }
        .with_context(|| format!("running {}", exe.display()))?;
        if !out.status.success() {
            bail!(
                "{program} {args:?} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// Makes a cluster and starts it.
    pub fn start() -> anyhow::Result<Pg> {
        Self::start_with(false)
    }

    /// Makes a cluster that also serves TLS, with a certificate for `localhost` (only) signed
    /// by a CA of its own ([`Pg::ca_file`]), and logs every connection (whether it is TLS).
    pub fn start_tls() -> anyhow::Result<Pg> {
        Self::start_with(true)
    }

    /// The PEM file of the CA that signed the server's certificate ([`Pg::start_tls`]).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Writes a CA and a server certificate for `localhost` signed by it.
    fn write_certificates(&self) -> anyhow::Result<()> {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate()?;
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "prism test database CA");
        let ca_cert = ca.self_signed(&ca_key)?;
        std::fs::write(self.ca_file(), ca_cert.pem())?;
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate()?;
        let server = CertificateParams::new(vec!["localhost".to_string()])?;
        let cert = server.signed_by(&key, &issuer)?;
        std::fs::write(self.dir.path().join("server.crt"), cert.pem())?;
        let key_path = self.dir.path().join("server.key");
        std::fs::write(&key_path, key.serialize_pem())?;
        // PostgreSQL refuses a key others may read.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600))?;
        Ok(())
    }

    fn start_with(tls: bool) -> anyhow::Result<Pg> {
        let bin = ensure_postgres();
        let dir = tempfile::tempdir()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let pg = Pg {
            bin,
            dir,
            port,
            running: false,
            tls,
        };
        let pw_server = pg.dir.path().join("initdb-password");
        std::fs::write(&pw_server, PASSWORD)?;
        std::fs::write(pg.password_file(), format!("{PASSWORD}\n"))?;
        if tls {
            pg.write_certificates()?;
        }
        if is_root() {
            let st = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(pg.dir.path())
                .status()?;
            anyhow::ensure!(st.success(), "chown of the cluster directory failed");
        }
        let data = pg.data();
        pg.server_cmd(
            "initdb",
            &[
                "-D",
                &data.to_string_lossy(),
                "-U",
                USER,
                "--pwfile",
                &pw_server.to_string_lossy(),
                "--auth",
                "scram-sha-256",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        )?;
        let mut pg = pg;
        pg.start_server()?;
        Ok(pg)
    }

    /// Starts (or restarts) the server and waits until it accepts connections.
    pub fn start_server(&mut self) -> anyhow::Result<()> {
        let mut opts = format!(
            "-h 127.0.0.1 -p {} -k {} -c log_statement=all -c fsync=off \
             -c synchronous_commit=off -c log_line_prefix='[%a] '",
            self.port,
            self.dir.path().display()
        );
        if self.tls {
            let d = self.dir.path().display();
            opts.push_str(&format!(
                " -c ssl=on -c ssl_cert_file={d}/server.crt -c ssl_key_file={d}/server.key \
                 -c log_connections=on"
            ));
        }
        self.server_cmd(
            "pg_ctl",
            &[
                "-D",
                &self.data().to_string_lossy(),
                "-l",
                &self.log_path().to_string_lossy(),
                "-o",
                &opts,
                "-w",
                "start",
            ],
        )?;
        self.running = true;
        Ok(())
    }

    /// Stops the server (fast shutdown: open connections are closed).
    pub fn stop_server(&mut self) -> anyhow::Result<()> {
        if self.running {
            self.server_cmd(
                "pg_ctl",
                &[
                    "-D",
                    &self.data().to_string_lossy(),
                    "-m",
                    "fast",
                    "-w",
                    "stop",
                ],
            )?;
            self.running = false;
        }
        Ok(())
    }

    /// A client of the test itself (`application_name = prism-test`, so its statements are
    /// told apart from the node's in the log).
    pub async fn client(&self) -> anyhow::Result<tokio_postgres::Client> {
        let (client, conn) = tokio_postgres::connect(
            &format!(
                "host=127.0.0.1 port={} dbname=postgres user={USER} password={PASSWORD} \
                 application_name=prism-test",
                self.port
            ),
            tokio_postgres::NoTls,
        )
        .await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(client)
    }

    /// The node's connections as the server logged them (`connection authorized: …`, which
    /// says `SSL enabled (protocol=…)` for a TLS connection).
    pub fn node_connections(&self) -> anyhow::Result<Vec<String>> {
        let log = std::fs::read_to_string(self.log_path())?;
        Ok(log
            .lines()
            .filter(|l| {
                l.contains("connection authorized") && l.contains("application_name=prism-node")
            })
            .map(str::to_string)
            .collect())
    }

    /// The statements the node sent, from the server log.
    pub fn node_statements(&self) -> anyhow::Result<Vec<String>> {
        let log = std::fs::read_to_string(self.log_path())?;
        Ok(statements(&log, "prism-node"))
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        let _ = self.stop_server();
    }
}

/// The statements a client logged: `[app] LOG:  statement: …` (simple protocol) and
/// `[app] LOG:  execute <name>: …` (extended protocol).
fn statements(log: &str, app: &str) -> Vec<String> {
    let prefix = format!("[{app}] LOG:  ");
    log.lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter_map(|l| {
            l.strip_prefix("statement: ").or_else(|| {
                l.split_once(": ")
                    .filter(|(h, _)| h.starts_with("execute"))
                    .map(|(_, s)| s)
            })
        })
        .map(str::to_string)
        .collect()
}
