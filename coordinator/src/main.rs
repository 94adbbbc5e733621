//! `prism-coordinator`: run the coordinator, make certificates, create users.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use prism_common::identity::OrgId;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(name = "prism-coordinator", version, about = "Prism coordinator")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the coordinator daemon.
    Serve {
        /// Configuration file (TOML).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Federation certificates.
    Certs {
        #[command(subcommand)]
        action: CertsAction,
    },
    /// Users and API tokens (run while the coordinator is stopped: redb allows one process).
    Users {
        #[command(subcommand)]
        action: UsersAction,
    },
}

#[derive(Subcommand)]
enum CertsAction {
    /// Create a CA, the coordinator certificate and one per organization.
    Init {
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Comma-separated organization ids.
        #[arg(long, value_delimiter = ',')]
        orgs: Vec<OrgId>,
        /// Validity in days.
        #[arg(long, default_value_t = 365)]
        days: i64,
    },
    /// Issue certificates for more organizations with the CA in DIR.
    Issue {
        /// Directory holding ca.pem and ca.key.pem.
        #[arg(long)]
        dir: PathBuf,
        /// Comma-separated organization ids.
        #[arg(long, value_delimiter = ',')]
        orgs: Vec<OrgId>,
        /// Validity in days.
        #[arg(long, default_value_t = 365)]
        days: i64,
    },
    /// Write DIR/crl.pem revoking these organizations' certificates.
    Revoke {
        /// Directory holding the CA and the certificates.
        #[arg(long)]
        dir: PathBuf,
        /// Comma-separated organization ids.
        #[arg(long, value_delimiter = ',')]
        orgs: Vec<OrgId>,
        /// Days until the CRL's next update.
        #[arg(long, default_value_t = 30)]
        days: i64,
    },
}

#[derive(Subcommand)]
enum UsersAction {
    /// Create a user and print its API token once.
    Create {
        /// Configuration file (for the store path).
        #[arg(long, short)]
        config: PathBuf,
        /// Display name.
        #[arg(long)]
        name: String,
        /// admin or analyst.
        #[arg(long)]
        role: prism_coordinator::model::Role,
        /// The user's organization.
        #[arg(long)]
        organization: Option<OrgId>,
    },
}

fn main() -> anyhow::Result<()> {
    // Blocking work the shutdown could not interrupt gets this long before the process exits.
    prism_common::process::run(std::time::Duration::from_secs(2), run(Cli::parse()))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { config } => {
            prism_common::process::init_tracing();
            let config = prism_coordinator::CoordinatorConfig::from_file(&config)?;
            let shutdown = CancellationToken::new();
            let handle = prism_coordinator::start(config, shutdown.clone()).await?;
            let signal = prism_common::process::stop_signal().await?;
            tracing::info!(signal, "stopping");
            prism_common::process::exit_on_second_signal();
            shutdown.cancel();
            handle.shutdown().await;
        }
        Command::Certs { action } => match action {
            CertsAction::Init { out, orgs, days } => {
                prism_coordinator::certs_cmd::init(&out, &orgs, days)?;
                println!(
                    "wrote a federation CA and certificates for coordinator, {} to {}",
                    join(&orgs),
                    out.display()
                );
            }
            CertsAction::Issue { dir, orgs, days } => {
                prism_coordinator::certs_cmd::issue(&dir, &orgs, days)?;
                println!("issued certificates for {}", join(&orgs));
            }
            CertsAction::Revoke { dir, orgs, days } => {
                prism_coordinator::certs_cmd::revoke(&dir, &orgs, days)?;
                println!(
                    "wrote {} revoking {}",
                    dir.join("crl.pem").display(),
                    join(&orgs)
                );
            }
        },
        Command::Users {
            action:
                UsersAction::Create {
                    config,
                    name,
                    role,
                    organization,
                },
        } => {
            let config = prism_coordinator::CoordinatorConfig::from_file(&config)?;
            let (store, _) = prism_coordinator::store::Store::open(&config.data_path)
                .with_context(|| {
                    format!(
                        "opening {} (is the coordinator running?)",
                        config.data_path.display()
                    )
                })?;
            let name = prism_coordinator::model::user_name(&name).map_err(anyhow::Error::msg)?;
            if let Some(o) = organization
                .as_ref()
                .filter(|o| !config.organizations.contains(o))
            {
                bail!(
                    "organization {o} is not a member: add it to organizations in the config first"
                );
            }
            let (user, token) = store.create_user(&name, role, organization)?;
            println!(
                "created {} ({:?}); API token (shown once):\n{token}",
                user.name, user.role
            );
        }
    }
    Ok(())
}

fn join(orgs: &[OrgId]) -> String {
    orgs.iter()
        .map(|o| o.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}
