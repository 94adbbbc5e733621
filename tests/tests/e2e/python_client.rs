//! The Python client (`clients/python`) against a live federation: its pytest suite and the
//! documented example (`docs/examples/analyst.py`) run as an analyst would run them.
//!
//! The test makes a throwaway virtual environment in a temp dir and installs the package from
//! a copy of `clients/python` with the versions pinned in `clients/python/constraints.txt`
//! (from PyPI). If `python3` with `venv` is missing it installs Debian's `python3-venv` with
//! apt-get (the project's machines run as root) and fails with a clear message if it cannot: a
//! test that silently skips would pass for nothing. Every step is bounded in time.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use prism_tests::{Federation, FederationSpec};
use serde_json::json;

const PIP_TIMEOUT: Duration = Duration::from_secs(600);
const SUITE_TIMEOUT: Duration = Duration::from_secs(900);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits in the workspace")
        .to_path_buf()
}

fn has_venv() -> bool {
    std::process::Command::new("python3")
        .args(["-m", "venv", "--help"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Installs python3 with venv from Debian if it is not there yet.
fn ensure_python() {
    if has_venv() {
        return;
    }
    eprintln!("python client test: installing python3-venv with apt-get…");
    let run = |args: &[&str]| {
        std::process::Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
    };
    let _ = matches!(run(&["update"]), Ok(s) if s.success())
        && matches!(run(&["install", "-y", "python3", "python3-venv"]), Ok(s) if s.success());
    assert!(
        has_venv(),
        "the Python client test needs python3 with venv; `apt-get install -y python3 python3-venv` \
         failed (run it as root, with access to Debian's package mirror)"
    );
}

/// Runs a command with a deadline; its output goes to `log`. Fails naming the step.
async fn step(
    what: &str,
    cmd: &mut tokio::process::Command,
    log: &Path,
    limit: Duration,
) -> anyhow::Result<()> {
    let out = std::fs::File::create(log)?;
    let err = out.try_clone()?;
    let mut child = cmd
        .stdout(out)
        .stderr(err)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {what}"))?;
    let status = match tokio::time::timeout(limit, child.wait()).await {
        Ok(s) => s?,
        Err(_) => {
            let _ = child.kill().await;
            bail!("{what} did not finish within {limit:?}:\n{}", tail(log));
        }
    };
    if !status.success() {
        bail!("{what} failed ({status}):\n{}", tail(log));
    }
    Ok(())
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let name = entry.file_name();
        // Build and cache leftovers of a local run are not part of the package.
        if [".venv", "build", "__pycache__", ".pytest_cache"]
            .iter()
            .any(|n| name == *n)
            || name.to_string_lossy().ends_with(".egg-info")
        {
            continue;
        }
        let target = to.join(&name);
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

async fn run_suite(f: &Federation, tmp: &Path) -> anyhow::Result<()> {
    let root = repo_root();
    let pkg = tmp.join("prism-client");
    copy_dir(&root.join("clients/python"), &pkg)?;
    let venv = tmp.join("venv");
    step(
        "python3 -m venv",
        tokio::process::Command::new("python3")
            .arg("-m")
            .arg("venv")
            .arg(&venv),
        &tmp.join("venv.log"),
        Duration::from_secs(120),
    )
    .await?;
    let python = venv.join("bin/python");
    step(
        "pip install prism-client",
        tokio::process::Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "-q",
                "-c",
            ])
            .arg(pkg.join("constraints.txt"))
            .arg(format!("{}[test]", pkg.display())),
        &tmp.join("pip.log"),
        PIP_TIMEOUT,
    )
    .await?;

    let mut nodes = serde_json::Map::new();
    for org in f.nodes.keys() {
        let node = f.node_admin(org.as_str())?;
        nodes.insert(
            org.to_string(),
            json!({"url": node.url, "token": node.token}),
        );
    }
    step(
        "the prism-client pytest suite",
        tokio::process::Command::new(&python)
            .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "-rA"])
            .arg(pkg.join("tests"))
            .current_dir(&pkg)
            .env("PRISM_URL", f.api_url())
            .env("PRISM_TOKEN", &f.analyst_token)
            .env("PRISM_NODES", serde_json::Value::Object(nodes).to_string())
            .env("PRISM_EXAMPLE", root.join("docs/examples/analyst.py"))
            .env("PYTHONDONTWRITEBYTECODE", "1"),
        &tmp.join("pytest.log"),
        SUITE_TIMEOUT,
    )
    .await?;
    // Show what ran: the suite's summary lines.
    let log = std::fs::read_to_string(tmp.join("pytest.log")).unwrap_or_default();
    for line in log
        .lines()
        .filter(|l| l.starts_with("PASSED") || l.contains(" passed"))
    {
        eprintln!("pytest: {line}");
    }
    anyhow::ensure!(
        log.contains(" passed") && !log.contains(" failed"),
        "pytest reported no passing run:\n{}",
        tail(&tmp.join("pytest.log"))
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_client_works_against_a_live_federation() {
    ensure_python();
    let f = Federation::start(FederationSpec {
        rows_per_org: 400,
        ..Default::default()
    })
    .await
    .expect("federation");
    let tmp = tempfile::tempdir().expect("temp dir");
    let outcome = run_suite(&f, tmp.path()).await;
    f.shutdown().await;
    if let Err(e) = outcome {
        panic!("{e:#}");
    }
}
