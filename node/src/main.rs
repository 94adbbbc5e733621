//! `prism-node`: run a party node, or talk to a running node's admin API.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(name = "prism-node", version, about = "Prism party node")]
struct Cli {
    /// Node configuration (TOML). Without a subcommand, runs the node.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    /// Admin API URL (for subcommands; defaults to the config's admin_listen).
    #[arg(long, global = true, env = "PRISM_NODE_ADMIN_URL")]
    admin_url: Option<String>,
    /// Admin API token (for subcommands).
    #[arg(
        long,
        global = true,
        env = "PRISM_NODE_ADMIN_TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve: run the node daemon (the default), like `prism-coordinator serve`. `run` is its
    /// former name, still accepted.
    #[command(alias = "run")]
    Serve,
    /// Import a CSV file as a dataset.
    Import {
        /// Dataset name (the SQL table name).
        #[arg(long)]
        name: String,
        /// CSV file with a header row.
        #[arg(long)]
        csv: PathBuf,
        /// Column declarations: a TOML file with `[[columns]]` entries (name, type, bounds).
        #[arg(long)]
        schema: PathBuf,
        /// Replace an existing dataset's data (its budget ledger is kept).
        #[arg(long)]
        replace: bool,
        /// Store it columnar (Parquet beside the node's store) and stream each query over it,
        /// instead of holding it in memory: for datasets larger than memory. The file is
        /// uploaded as it is read, never whole. DP queries and dp data rooms only.
        #[arg(long)]
        columnar: bool,
        /// Charge the one budget of this population, shared with its other datasets (the same
        /// people in other tables); the first dataset of a population sets that budget.
        #[arg(long)]
        population: Option<String>,
    },
    /// Register a dataset where its data already is (a CSV or Parquet file or directory, a
    /// PostgreSQL table), or re-read one.
    #[command(subcommand)]
    Source(SourceCommand),
    /// List datasets with their budgets.
    Datasets,
    /// Set a dataset's total privacy budget.
    Budget {
        /// Dataset.
        dataset: String,
        /// Total ε.
        #[arg(long)]
        epsilon: f64,
        /// Total δ.
        #[arg(long, default_value_t = 1e-5)]
        delta: f64,
    },
    /// Declare a column's bounds.
    Bounds {
        /// Dataset.
        dataset: String,
        /// Column.
        column: String,
        /// Smallest value.
        #[arg(long, allow_hyphen_values = true)]
        min: f64,
        /// Largest value.
        #[arg(long, allow_hyphen_values = true)]
        max: f64,
    },
    /// Show or set how a dataset's answers may leave this node, per backend (dp, exact, off,
    /// or policy to follow the node policy), and which of its columns identify a person.
    Release {
        /// Dataset.
        dataset: String,
        /// he_backend: dp, exact, off or policy.
        #[arg(long)]
        he_backend: Option<String>,
        /// mpc_backend: dp, exact, off or policy.
        #[arg(long)]
        mpc_backend: Option<String>,
        /// dp_sandbox: dp, off or policy.
        #[arg(long)]
        dp_sandbox: Option<String>,
        /// Identifying columns (comma-separated; replaces the list).
        #[arg(long, value_delimiter = ',')]
        identifying: Option<Vec<String>>,
    },
    /// List data-room invitations: what each asks and what would leave this node.
    Invitations {
        /// Print the raw invitations (with their manifests) as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Attest to a data room's manifest (signs its hash with this organization's key).
    Attest {
        /// Room id.
        room: String,
        /// Print the invitation as JSON instead of a summary.
        #[arg(long)]
        json: bool,
    },
    /// Decline a data room.
    Decline {
        /// Room id.
        room: String,
        /// Why.
        #[arg(long, default_value = "declined by the data owner")]
        reason: String,
    },
    /// Withdraw an attestation before the room executes.
    Withdraw {
        /// Room id.
        room: String,
    },
    /// Show the node: organization, coordinator link, policy, pending rooms.
    Status {
        /// Print the admin API's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show privacy budgets: total, spent, reserved and remaining ε and δ per dataset.
    BudgetShow {
        /// Only this dataset.
        dataset: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the audit log.
    Audit {
        /// Verify the hash chain (and the budget ledger against it) instead.
        #[arg(long)]
        verify: bool,
        /// With --verify: check a stopped node's store file directly instead of asking the
        /// running node (exits non-zero on a broken chain or an edited ledger).
        #[arg(long, requires = "verify")]
        store: Option<PathBuf>,
    },
}

// Parsed once per process: the size of its largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum SourceCommand {
    /// Register a dataset read in place: `--csv PATH` (a file or a directory of CSV files),
    /// `--parquet PATH` (a file or a directory of Parquet files; with `--streamed` its rows stay
    /// in the files), or
    /// `--postgres CONNINFO --table T` (DP aggregates are pushed down; the password comes from
    /// `--password-file` or `--password-env`, never from the connection string).
    Add {
        /// Dataset name (the SQL table name analysts use).
        #[arg(long)]
        name: String,
        /// Column declarations: the same TOML file as `import --schema`.
        #[arg(long)]
        schema: PathBuf,
        /// A CSV file, or a directory of CSV files, read in place.
        #[arg(
            long,
            conflicts_with_all = ["postgres", "parquet"],
            required_unless_present_any = ["postgres", "parquet"]
        )]
        csv: Option<PathBuf>,
        /// A Parquet file, or a directory of Parquet files, read in place.
        #[arg(long, conflicts_with = "postgres")]
        parquet: Option<PathBuf>,
        /// With `--parquet`: leave the rows in the files and stream the columns each query
        /// needs, a chunk at a time, so the node never holds the dataset (for data larger
        /// than memory; DP queries and dp data rooms only).
        #[arg(long, requires = "parquet")]
        streamed: bool,
        /// A libpq-style connection string without a password, e.g.
        /// 'host=db.internal port=5432 dbname=clinic user=prism_reader'.
        #[arg(long, requires = "table")]
        postgres: Option<String>,
        /// The table or view (`table` or `schema.table`).
        #[arg(long, requires = "postgres")]
        table: Option<String>,
        /// A file holding the database password (read by the node at each connection).
        #[arg(long, requires = "postgres", conflicts_with = "password_env")]
        password_file: Option<PathBuf>,
        /// The name of an environment variable of the node that holds the database password.
        #[arg(long, requires = "postgres")]
        password_env: Option<String>,
        /// A PEM file of the CA certificate(s) that sign the database server's certificate
        /// (default: the system's CA bundle). A connection that leaves this host is always
        /// TLS, verified against it; `sslmode=disable` in the connection string turns TLS off.
        #[arg(long, requires = "postgres")]
        ca_file: Option<PathBuf>,
        /// Replace an existing dataset (its budget ledger is kept).
        #[arg(long)]
        replace: bool,
        /// Charge the one budget of this population, shared with its other datasets.
        #[arg(long)]
        population: Option<String>,
    },
    /// Re-read a dataset's source (on failure the previous data stays).
    Refresh {
        /// Dataset.
        name: String,
    },
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SchemaFile {
    columns: Vec<prism_common::schema::ColumnSpec>,
}

fn main() -> anyhow::Result<()> {
    // Blocking work the shutdown could not interrupt (an HE evaluation) gets this long before
    // the process exits anyway.
    prism_common::process::run(std::time::Duration::from_secs(2), run(Cli::parse()))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command.as_ref().unwrap_or(&Command::Serve) {
        Command::Serve => {
            prism_common::process::init_tracing();
            let path = cli
                .config
                .as_deref()
                .context("--config node.toml is required to run the node")?;
            let config = prism_node::NodeConfig::from_file(path)?;
            let shutdown = CancellationToken::new();
            let node = prism_node::start(config, shutdown.clone()).await?;
            let signal = prism_common::process::stop_signal().await?;
            tracing::info!(signal, "stopping");
            prism_common::process::exit_on_second_signal();
            shutdown.cancel();
            node.shutdown().await;
            Ok(())
        }
        Command::Audit {
            verify: true,
            store: Some(path),
        } => verify_store_file(path),
        cmd => admin_command(&cli, cmd).await,
    }
}

/// `audit --verify --store <file>`: the chain and the ledger binding of a stopped node's store.
fn verify_store_file(path: &std::path::Path) -> anyhow::Result<()> {
    match prism_node::store::chain::verify_file(path) {
        Ok((entries, budgets)) => {
            let body =
                serde_json::json!({"valid": true, "entries": entries, "budgets_checked": budgets});
            println!("{}", serde_json::to_string_pretty(&body)?);
            Ok(())
        }
        Err(e) => {
            let body = serde_json::json!({"valid": false, "error": e.to_string()});
            println!("{}", serde_json::to_string_pretty(&body)?);
            bail!("{}: {e}", path.display())
        }
    }
}

async fn admin_command(cli: &Cli, cmd: &Command) -> anyhow::Result<()> {
    let (url, token) = match (&cli.admin_url, &cli.token, &cli.config) {
        (Some(u), Some(t), _) => (u.clone(), t.clone()),
        (u, t, Some(path)) => {
            let cfg = prism_node::NodeConfig::from_file(path)?;
            let url = u
                .clone()
                .unwrap_or_else(|| format!("http://{}", cfg.admin_listen));
            let token = match t {
                Some(t) => t.clone(),
                None => cfg.resolve_admin_token()?,
            };
            (url, token)
        }
        _ => bail!("give --admin-url and --token (or --config node.toml)"),
    };
    let http = reqwest::Client::new();
    let auth = format!("Bearer {token}");
    let resp = match cmd {
        Command::Serve => unreachable!("handled in main"),
        Command::Import {
            name,
            csv,
            schema,
            replace,
            columnar: true,
            population,
        } => {
            let schema: SchemaFile = toml::from_str(&std::fs::read_to_string(schema)?)?;
            let file = tokio::fs::File::open(csv)
                .await
                .with_context(|| format!("reading {}", csv.display()))?;
            let declaration = serde_json::json!({"name": name, "columns": schema.columns,
                                                 "replace": replace, "population": population});
            let form = reqwest::multipart::Form::new()
                .part(
                    "declaration",
                    reqwest::multipart::Part::text(declaration.to_string())
                        .mime_str("application/json")?,
                )
                .part(
                    "csv",
                    reqwest::multipart::Part::stream(reqwest::Body::from(file))
                        .file_name("upload.csv")
                        .mime_str("text/csv")?,
                );
            http.post(format!("{url}/v1/datasets/upload"))
                .header("authorization", &auth)
                .multipart(form)
                .send()
                .await?
        }
        Command::Import {
            name,
            csv,
            schema,
            replace,
            columnar: false,
            population,
        } => {
            let csv = std::fs::read_to_string(csv)
                .with_context(|| format!("reading {}", csv.display()))?;
            let schema: SchemaFile = toml::from_str(&std::fs::read_to_string(schema)?)?;
            http.post(format!("{url}/v1/datasets"))
                .header("authorization", &auth)
                .json(
                    &serde_json::json!({"name": name, "columns": schema.columns, "csv": csv,
                                          "replace": replace, "population": population}),
                )
                .send()
                .await?
        }
        Command::Source(SourceCommand::Add {
            name,
            schema,
            csv,
            parquet,
            streamed,
            postgres,
            table,
            password_file,
            password_env,
            ca_file,
            replace,
            population,
        }) => {
            let schema: SchemaFile = toml::from_str(
                &std::fs::read_to_string(schema)
                    .with_context(|| format!("reading {}", schema.display()))?,
            )?;
            let absolute = |p: &PathBuf| std::path::absolute(p).unwrap_or_else(|_| p.clone());
            let source = match (csv, parquet, postgres) {
                (Some(path), _, _) => serde_json::json!({"kind": "csv", "path": absolute(path)}),
                (None, Some(path), _) => {
                    serde_json::json!({"kind": "parquet", "path": absolute(path),
                                       "streamed": streamed})
                }
                (None, None, Some(conninfo)) => serde_json::json!({
                    "kind": "postgres", "conninfo": conninfo, "table": table,
                    "password_file": password_file.as_ref().map(absolute),
                    "password_env": password_env,
                    "ca_file": ca_file.as_ref().map(absolute),
                }),
                (None, None, None) => {
                    bail!("give --csv PATH, --parquet PATH or --postgres CONNINFO --table T")
                }
            };
            http.post(format!("{url}/v1/sources"))
                .header("authorization", &auth)
                .json(&serde_json::json!({"name": name, "columns": schema.columns,
                                          "source": source, "replace": replace,
                                          "population": population}))
                .send()
                .await?
        }
        Command::Source(SourceCommand::Refresh { name }) => {
            http.post(format!("{url}/v1/datasets/{name}/refresh"))
                .header("authorization", &auth)
                .send()
                .await?
        }
        Command::Datasets => {
            http.get(format!("{url}/v1/datasets"))
                .header("authorization", &auth)
                .send()
                .await?
        }
        Command::Budget {
            dataset,
            epsilon,
            delta,
        } => {
            http.put(format!("{url}/v1/datasets/{dataset}/budget"))
                .header("authorization", &auth)
                .json(&serde_json::json!({"epsilon": epsilon, "delta": delta}))
                .send()
                .await?
        }
        Command::Bounds {
            dataset,
            column,
            min,
            max,
        } => {
            http.patch(format!("{url}/v1/datasets/{dataset}/columns/{column}"))
                .header("authorization", &auth)
                .json(&serde_json::json!({"bounds": {"min": min, "max": max}}))
                .send()
                .await?
        }
        Command::Release {
            dataset,
            he_backend,
            mpc_backend,
            dp_sandbox,
            identifying,
        } => {
            let body = serde_json::json!({
                "he_backend": he_backend, "mpc_backend": mpc_backend,
                "dp_sandbox": dp_sandbox, "identifying_columns": identifying,
            });
            let url = format!("{url}/v1/datasets/{dataset}/release");
            if body
                .as_object()
                .is_some_and(|o| o.values().all(|v| v.is_null()))
            {
                http.get(url).header("authorization", &auth).send().await?
            } else {
                // Unset options are left out, so they keep their current values.
                let body: serde_json::Map<String, serde_json::Value> = body
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter(|(_, v)| !v.is_null())
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                http.put(url)
                    .header("authorization", &auth)
                    .json(&body)
                    .send()
                    .await?
            }
        }
        Command::Invitations { json } => {
            let path = if *json {
                "/v1/invitations"
            } else {
                "/v1/requests"
            };
            http.get(format!("{url}{path}"))
                .header("authorization", &auth)
                .send()
                .await?
        }
        Command::Status { .. } => {
            http.get(format!("{url}/v1/status"))
                .header("authorization", &auth)
                .send()
                .await?
        }
        Command::BudgetShow { .. } => {
            http.get(format!("{url}/v1/datasets"))
                .header("authorization", &auth)
                .send()
                .await?
        }
        Command::Attest { room, .. } => {
            http.post(format!("{url}/v1/invitations/{room}/attest"))
                .header("authorization", &auth)
                .send()
                .await?
        }
        Command::Decline { room, reason } => {
            http.post(format!("{url}/v1/invitations/{room}/decline"))
                .header("authorization", &auth)
                .json(&serde_json::json!({"reason": reason}))
                .send()
                .await?
        }
        Command::Withdraw { room } => {
            http.post(format!("{url}/v1/invitations/{room}/withdraw"))
                .header("authorization", &auth)
                .send()
                .await?
        }
        Command::Audit { verify, .. } => {
            let path = if *verify {
                "/v1/audit/verify"
            } else {
                "/v1/audit"
            };
            http.get(format!("{url}{path}"))
                .header("authorization", &auth)
                .send()
                .await?
        }
    };
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.unwrap_or(serde_json::Value::Null);
    if !status.is_success() {
        println!("{}", serde_json::to_string_pretty(&body)?);
        bail!("the node answered {status}");
    }
    let get = |path: String| {
        let (http, auth, base) = (http.clone(), auth.clone(), url.clone());
        async move {
            let r = http
                .get(format!("{base}{path}"))
                .header("authorization", auth)
                .send()
                .await?;
            anyhow::Ok(r.json::<serde_json::Value>().await?)
        }
    };
    use prism_node::owner_text;
    match cmd {
        Command::Invitations { json: false } => print!("{}", owner_text::requests(&body)),
        Command::Attest { room, json: false } => {
            print!(
                "Attested.\n{}",
                owner_text::request(&get(format!("/v1/requests/{room}")).await?)
            )
        }
        Command::Status { json: false } => {
            let pending = get("/v1/requests".into()).await?["pending"].as_u64();
            print!("{}", owner_text::status(&body, pending))
        }
        Command::BudgetShow { dataset, json } => {
            let text =
                owner_text::budgets(&body, dataset.as_deref()).map_err(anyhow::Error::msg)?;
            if *json {
                let only: Vec<serde_json::Value> = body
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|d| dataset.as_deref().is_none_or(|n| d["name"] == n))
                    .map(|d| serde_json::json!({"dataset": d["name"], "budget": d["budget"]}))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&only)?);
            } else {
                print!("{text}");
            }
        }
        _ => println!("{}", serde_json::to_string_pretty(&body)?),
    }
    // A verification that did not find the chain valid is a failure, whatever the status.
    if matches!(cmd, Command::Audit { verify: true, .. }) && body["valid"] != true {
        bail!(
            "the audit chain is broken: {}",
            body["error"]
                .as_str()
                .unwrap_or("the node did not report it valid")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::{Cli, Command};

    /// One naming across the daemons: `serve` runs the node as it runs the coordinator; the
    /// help names only `serve`, and scripts written for `run` keep working.
    #[test]
    fn serve_runs_the_node() {
        for name in ["serve", "run"] {
            let cli = Cli::try_parse_from(["prism-node", name, "--config", "node.toml"])
                .expect("prism-node serve");
            assert!(matches!(cli.command, Some(Command::Serve)), "{name}");
        }
        let help = <Cli as clap::CommandFactory>::command()
            .render_help()
            .to_string();
        assert!(help.contains("serve") && !help.contains("  run "), "{help}");
    }
}
