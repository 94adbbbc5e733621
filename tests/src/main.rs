//! `prism-sim`: a local federation — certificates, a coordinator and three hospitals — either
//! walked through the demo (`demo`) or kept up for exploring (`serve`).

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use prism_tests::demo;
use prism_tests::{Federation, FederationSpec};

#[derive(Parser)]
#[command(name = "prism-sim", version, about = "Prism local federation")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a temporary federation, walk the demo flow, print the results.
    Demo {
        /// Patients per organization.
        #[arg(long, default_value_t = 10_000)]
        rows: usize,
    },
    /// Start a federation in DIR and keep it up until Ctrl-C; writes DIR/federation.json.
    Serve {
        /// Working directory (certificates, stores, federation.json).
        #[arg(long)]
        dir: PathBuf,
        /// Patients per organization.
        #[arg(long, default_value_t = 10_000)]
        rows: usize,
    },
}

fn main() -> anyhow::Result<()> {
    // An HE evaluation in flight cannot be interrupted; it gets this long before the exit.
    prism_common::process::run(std::time::Duration::from_secs(2), run())
}

async fn run() -> anyhow::Result<()> {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Demo { rows } => {
            println!(
                "Starting a local federation: CA + coordinator + hospital-a, hospital-b, hospital-c ({rows} patients each)…"
            );
            let f = Federation::start(FederationSpec {
                rows_per_org: rows,
                ..Default::default()
            })
            .await?;
            println!("Coordinator API at {}\n", f.api_url());
            let steps = demo::run(&f).await;
            f.shutdown().await;
            let steps = steps?;
            demo::print(&steps);
            let bad = steps.iter().filter(|s| !s.ok).count();
            if bad > 0 {
                bail!("{bad} demo step(s) did not have the expected outcome");
            }
            println!("\nAll {} steps had the expected outcome.", steps.len());
            Ok(())
        }
        Command::Serve { dir, rows } => {
            std::fs::create_dir_all(&dir)?;
            let f = Federation::start_in(
                &dir,
                FederationSpec {
                    rows_per_org: rows,
                    ..Default::default()
                },
            )
            .await?;
            let path = dir.join("federation.json");
            std::fs::write(&path, serde_json::to_string_pretty(&f.describe())?)
                .with_context(|| format!("writing {}", path.display()))?;
            println!(
                "Federation up. API: {}  (details in {})\nCtrl-C (or SIGTERM) to stop.",
                f.api_url(),
                path.display()
            );
            let signal = prism_common::process::stop_signal().await?;
            eprintln!("{signal}: stopping the federation");
            prism_common::process::exit_on_second_signal();
            f.shutdown().await;
            eprintln!("stopped");
            Ok(())
        }
    }
}
