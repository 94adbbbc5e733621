//! The daemons' life cycle around their `main`: which signal asks them to stop, and a runtime
//! whose end does not wait forever for blocking work that cannot be interrupted.
//!
//! `prism-coordinator serve`, `prism-node` and `prism-sim serve` all stop the same way: the
//! first SIGTERM or SIGINT cancels their one shutdown token and they stop cleanly; a second
//! one exits at once.

use std::future::Future;
use std::time::Duration;

/// Exit status after a second stop signal (the first one is still being honoured).
pub const FORCED_EXIT: i32 = 130;

/// Waits for SIGTERM or SIGINT and names it.
pub async fn stop_signal() -> std::io::Result<&'static str> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        tokio::select! {
            _ = term.recv() => Ok("SIGTERM"),
            _ = int.recv() => Ok("SIGINT"),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await?;
        Ok("ctrl-c")
    }
}

/// After the first stop signal: a second one ends the process at once with [`FORCED_EXIT`].
pub fn exit_on_second_signal() {
    tokio::spawn(async {
        if stop_signal().await.is_ok() {
            tracing::warn!("second stop signal: exiting without waiting");
            std::process::exit(FORCED_EXIT);
        }
    });
}

/// Runs `main` on a multi-threaded runtime. Once it has returned, blocking tasks still running
/// (an HE evaluation is not interruptible) get `grace` before the process exits anyway;
/// `#[tokio::main]` would wait for them however long they take.
pub fn run<F>(grace: Duration, main: F) -> anyhow::Result<()>
where
    F: Future<Output = anyhow::Result<()>>,
{
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let out = rt.block_on(main);
    rt.shutdown_timeout(grace);
    out
}

/// Installs the daemons' log subscriber: `RUST_LOG` (default `info`), human-readable on a
/// terminal, one JSON object per line otherwise (for log collectors).
pub fn init_tracing() {
    use std::io::IsTerminal;
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let b = tracing_subscriber::fmt().with_env_filter(filter);
    if std::io::stdout().is_terminal() {
        b.init()
    } else {
        b.json().init()
    }
}
