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
        /// Directory to create the CA and certificates in (the `--dir` of `issue` and
        /// `revoke` afterwards). `--out` is its former name, still accepted.
        #[arg(long, alias = "out")]
        dir: PathBuf,
        /// Comma-separated organization ids (at least one).
        #[arg(long, value_delimiter = ',', required = true, num_args = 1..)]
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
        /// Comma-separated organization ids (at least one).
        #[arg(long, value_delimiter = ',', required = true, num_args = 1..)]
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
        /// Comma-separated organization ids (at least one).
        #[arg(long, value_delimiter = ',', required = true, num_args = 1..)]
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
        /// Print `{user, token}` as JSON instead of words.
        #[arg(long)]
        json: bool,
    },
    /// List users (never their tokens).
    List {
        /// Configuration file (for the store path).
        #[arg(long, short)]
        config: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a user's API token (it stops working at once).
    Revoke {
        /// Configuration file (for the store path).
        #[arg(long, short)]
        config: PathBuf,
        /// The user's id (from `users list`).
        id: String,
        /// Print the revoked user as JSON instead of words.
        #[arg(long)]
        json: bool,
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
            CertsAction::Init { dir, orgs, days } => {
                prism_coordinator::certs_cmd::init(&dir, &orgs, days)?;
                println!(
                    "wrote a federation CA and certificates for coordinator, {} to {}",
                    join(&orgs),
                    dir.display()
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
            action: UsersAction::List { config, json },
        } => {
            let (_, store) = open_store(&config)?;
            let users = prism_coordinator::users::list(&store)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&users)?);
            } else if users.is_empty() {
                println!("no users yet: create one with `prism-coordinator users create`");
            } else {
                print!("{}", prism_coordinator::users::table(&users));
            }
        }
        Command::Users {
            action: UsersAction::Revoke { config, id, json },
        } => {
            let (_, store) = open_store(&config)?;
            let Some(user) = prism_coordinator::users::revoke(&store, &id, "cli")? else {
                bail!("no user has id {id}; `prism-coordinator users list` shows the ids");
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&user)?);
            } else {
                println!(
                    "revoked {} ({}): its API token no longer works",
                    user.name, user.id
                );
            }
        }
        Command::Users {
            action:
                UsersAction::Create {
                    config,
                    name,
                    role,
                    organization,
                    json,
                },
        } => {
            let (config, store) = open_store(&config)?;
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
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &serde_json::json!({"user": user, "token": token})
                    )?
                );
            } else {
                println!(
                    "created {} ({:?}); API token (shown once):\n{token}",
                    user.name, user.role
                );
            }
        }
    }
    Ok(())
}

/// The configuration and the store it names (the coordinator must be stopped: redb allows one
/// process).
fn open_store(
    config: &std::path::Path,
) -> anyhow::Result<(
    prism_coordinator::CoordinatorConfig,
    prism_coordinator::store::Store,
)> {
    let config = prism_coordinator::CoordinatorConfig::from_file(config)?;
    let (store, _) =
        prism_coordinator::store::Store::open(&config.data_path).with_context(|| {
            format!(
                "opening {} (is the coordinator running?)",
                config.data_path.display()
            )
        })?;
    Ok((config, store))
}

fn join(orgs: &[OrgId]) -> String {
    orgs.iter()
        .map(|o| o.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::Cli;

    #[test]
    fn certificates_need_organizations() {
        for args in [
            &["prism-coordinator", "certs", "init", "--dir", "certs"][..],
            &["prism-coordinator", "certs", "issue", "--dir", "certs"][..],
            &[
                "prism-coordinator",
                "certs",
                "init",
                "--dir",
                "certs",
                "--orgs",
            ][..],
        ] {
            let err = Cli::try_parse_from(args).err().map(|e| e.to_string());
            assert!(
                err.as_deref().is_some_and(|e| e.contains("--orgs")),
                "{args:?}: {err:?}"
            );
        }
        assert!(
            Cli::try_parse_from([
                "prism-coordinator",
                "certs",
                "init",
                "--dir",
                "certs",
                "--orgs",
                "hospital-a,hospital-b"
            ])
            .is_ok()
        );
    }

    /// `certs init`, `issue` and `revoke` all name the directory `--dir`; `init --out`, its
    /// former name, still parses for existing scripts.
    #[test]
    fn every_certs_command_takes_dir() {
        for action in ["init", "issue", "revoke"] {
            let args = [
                "prism-coordinator",
                "certs",
                action,
                "--dir",
                "certs",
                "--orgs",
                "a",
            ];
            assert!(Cli::try_parse_from(args).is_ok(), "{action}");
        }
        let old = [
            "prism-coordinator",
            "certs",
            "init",
            "--out",
            "certs",
            "--orgs",
            "a",
        ];
        assert!(Cli::try_parse_from(old).is_ok());
    }

    #[test]
    fn users_list_and_revoke_take_json() {
        assert!(
            Cli::try_parse_from([
                "prism-coordinator",
                "users",
                "list",
                "-c",
                "c.toml",
                "--json"
            ])
            .is_ok()
        );
        assert!(
            Cli::try_parse_from([
                "prism-coordinator",
                "users",
                "revoke",
                "-c",
                "c.toml",
                "u-1"
            ])
            .is_ok()
        );
    }
}
