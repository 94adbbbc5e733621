//! `prism-sim`: a local federation — certificates, a coordinator and any number of
//! organizations — walked through the demo (`demo`), kept up for exploring (`serve`), or
//! driven through a scenario file (`run`).

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use prism_tests::progress::Progress;
use prism_tests::scenario::{self, Scenario};
use prism_tests::{Federation, FederationSpec, cli, demo};

#[derive(Parser)]
#[command(name = "prism-sim", version, about = "Prism local federation")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Show progress on long steps (node start-up, data import, each step) even when stderr
    /// is not a terminal: one line per finished task. On a terminal, bars are drawn anyway.
    #[arg(long, global = true)]
    progress: bool,
}

#[derive(clap::Args)]
struct OrgArgs {
    /// Organizations: a count (`10`: hospital-a … hospital-j) or ids (`bank-a,bank-b`).
    #[arg(long, default_value = "3")]
    orgs: String,
    /// Patients per organization: `10000`, or per organization `hospital-a=5000,…`
    /// (with an optional default first: `1000,hospital-a=5000`).
    #[arg(long, default_value = "10000")]
    rows: String,
}

impl OrgArgs {
    fn spec(&self, progress: &Progress) -> anyhow::Result<FederationSpec> {
        let orgs = cli::parse_orgs(&self.orgs)?;
        let rows = cli::parse_rows(&self.rows, &orgs, 10_000)?;
        Ok(FederationSpec {
            orgs,
            rows_per_org: rows.default,
            rows: rows.per_org,
            progress: progress.clone(),
            ..Default::default()
        })
    }
}

#[derive(Subcommand)]
enum Command {
    /// Start a temporary federation, walk the demo flow, print the results.
    Demo {
        #[command(flatten)]
        orgs: OrgArgs,
    },
    /// Start a federation in DIR and keep it up until Ctrl-C; writes DIR/federation.json.
    /// A DIR used before is started again as it was left (same CA, stores and budgets).
    Serve {
        /// Working directory (certificates, stores, federation.json).
        #[arg(long)]
        dir: PathBuf,
        #[command(flatten)]
        orgs: OrgArgs,
    },
    /// Run a scenario file (the demo scenario if none is given) and report each step;
    /// exits non-zero if a step misses its expected outcome.
    Run {
        /// The scenario (TOML); see docs/SIMULATION.md.
        scenario: Option<PathBuf>,
        /// Write the report as JSON here.
        #[arg(long)]
        report: Option<PathBuf>,
        /// Write the report as a self-contained HTML page here.
        #[arg(long)]
        html: Option<PathBuf>,
        /// Give every synthetic dataset this many rows (a quick run of a large scenario).
        #[arg(long)]
        rows: Option<usize>,
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
    let cli = Cli::parse();
    let progress = Progress::stderr(cli.progress);
    match cli.command {
        Command::Demo { orgs } => demo_cmd(orgs.spec(&progress)?).await,
        Command::Serve { dir, orgs } => serve(dir, orgs, &progress).await,
        Command::Run {
            scenario,
            report,
            html,
            rows,
        } => run_scenario(scenario, report, html, rows, &progress).await,
    }
}

async fn demo_cmd(spec: FederationSpec) -> anyhow::Result<()> {
    let rows = if spec.rows.is_empty() {
        format!("{} patients each", spec.rows_per_org)
    } else {
        spec.orgs
            .iter()
            .map(|o| format!("{o}: {}", spec.rows_of(o)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "Starting a local federation: CA + coordinator + {} ({rows})…",
        spec.orgs.join(", ")
    );
    let f = Federation::start(spec).await?;
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

async fn serve(dir: PathBuf, orgs: OrgArgs, progress: &Progress) -> anyhow::Result<()> {
    std::fs::create_dir_all(&dir)?;
    let f = if Federation::exists_in(&dir) {
        println!(
            "Starting again the federation in {} (its organizations, data and budgets as left; --orgs and --rows apply to a new directory only)",
            dir.display()
        );
        Federation::resume_with(&dir, progress.clone()).await?
    } else {
        Federation::start_in(&dir, orgs.spec(progress)?).await?
    };
    let path = dir.join("federation.json");
    std::fs::write(&path, serde_json::to_string_pretty(&f.describe())?)
        .with_context(|| format!("writing {}", path.display()))?;
    println!(
        "Federation up: {} organizations. API: {}  (details in {})\nCtrl-C (or SIGTERM) to stop.",
        f.nodes.len(),
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

async fn run_scenario(
    file: Option<PathBuf>,
    json_out: Option<PathBuf>,
    html_out: Option<PathBuf>,
    rows: Option<usize>,
    progress: &Progress,
) -> anyhow::Result<()> {
    let mut s = match &file {
        Some(p) => Scenario::load(p)?,
        None => Scenario::parse(scenario::DEMO, std::path::Path::new("."))
            .context("the default scenario")?,
    };
    if let Some(r) = rows {
        s.override_rows(r);
    }
    println!(
        "Running scenario {} ({} organizations, {} steps)…",
        s.name,
        s.organizations.len(),
        s.steps.len()
    );
    let report = scenario::run::run_with(&s, progress).await?;
    print!("{}", report.text());
    if let Some(p) = json_out {
        std::fs::write(&p, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", p.display()))?;
        println!("report: {}", p.display());
    }
    if let Some(p) = html_out {
        std::fs::write(&p, report.html()).with_context(|| format!("writing {}", p.display()))?;
        println!("html report: {}", p.display());
    }
    if report.unexpected > 0 {
        bail!(
            "{} of {} steps missed their expected outcome",
            report.unexpected,
            report.steps.len()
        );
    }
    println!(
        "\nAll {} steps had the expected outcome.",
        report.steps.len()
    );
    Ok(())
}
