//! The headless-Chromium harness the browser tests share: Debian's `chromium` and
//! `chromium-driver` (installed with apt-get when missing, else a clear failure: a browser test
//! that silently skips would pass for nothing), chromedriver on a free loopback port, a session
//! (optionally emulating a phone's viewport), and page-reading helpers.
//!
//! A module of the end-to-end binary; the browser tests use it as `crate::browser`.

#![allow(dead_code)] // Each test file uses its own subset.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
pub const WAIT: Duration = Duration::from_secs(20);

/// Installs Chromium and chromedriver from Debian if they are not there yet (once, whichever
/// browser test gets here first; the others wait for it).
pub fn ensure_browser() {
    static INSTALL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _once = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    if Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists() {
        return;
    }
    eprintln!("console test: installing chromium and chromium-driver with apt-get…");
    let run = |args: &[&str]| {
        std::process::Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
    };
    let ok = matches!(run(&["update"]), Ok(s) if s.success())
        && matches!(run(&["install", "-y", "chromium", "chromium-driver"]), Ok(s) if s.success());
    assert!(
        ok && Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists(),
        "the console test needs {CHROMIUM} and {CHROMEDRIVER}; installing them with \
         `apt-get update && apt-get install -y chromium chromium-driver` failed (run it as root, \
         with access to Debian's package mirror)"
    );
}

/// chromedriver on a free loopback port, killed when dropped.
pub struct Driver {
    /// The chromedriver process.
    pub child: tokio::process::Child,
    /// Its WebDriver URL.
    pub url: String,
}

pub async fn start_driver(log: &Path) -> anyhow::Result<Driver> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let log_file = std::fs::File::create(log)?;
    let child = tokio::process::Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .arg("--allowed-ips=127.0.0.1")
        .stdout(Stdio::null())
        .stderr(log_file)
        .kill_on_drop(true)
        .spawn()
        .context("starting chromedriver")?;
    let deadline = Instant::now() + WAIT;
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        if Instant::now() > deadline {
            bail!("chromedriver did not listen on 127.0.0.1:{port}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    })
}

pub async fn start_browser(driver: &Driver, profile: &Path) -> anyhow::Result<Client> {
    start_browser_as(driver, profile, None).await
}

/// A session whose page is `(width, height)` CSS pixels, as on a phone (Chromium's device
/// emulation: a desktop window cannot be made that narrow), or the default desktop window.
pub async fn start_browser_as(
    driver: &Driver,
    profile: &Path,
    phone: Option<(u32, u32)>,
) -> anyhow::Result<Client> {
    let args = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1280,1500",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([format!("--user-data-dir={}", profile.display())])
    .collect::<Vec<_>>();
    let mut caps = serde_json::Map::new();
    let mut options = json!({"binary": CHROMIUM, "args": args});
    if let Some((width, height)) = phone {
        options["mobileEmulation"] =
            json!({"deviceMetrics": {"width": width, "height": height, "pixelRatio": 2.0}});
    }
    caps.insert("goog:chromeOptions".into(), options);
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    Ok(ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&driver.url)
        .await?)
}

/// Small page-reading helpers on top of the WebDriver session.
pub struct Page {
    /// The WebDriver session.
    pub c: Client,
    /// Where screenshots go, if anywhere.
    pub shots: Option<PathBuf>,
}

impl Page {
    /// The text of the first element matching `css` if it is rendered (not inside `[hidden]`).
    pub async fn visible_text(&self, css: &str) -> anyhow::Result<Option<String>> {
        let v = self
            .c
            .execute(
                "const e = document.querySelector(arguments[0]);
                 return e && !e.closest('[hidden]') ? e.textContent : null;",
                vec![json!(css)],
            )
            .await?;
        Ok(v.as_str().map(|s| s.trim().to_string()))
    }

    /// Number of elements matching `css`.
    pub async fn count(&self, css: &str) -> anyhow::Result<usize> {
        let v = self
            .c
            .execute(
                "return document.querySelectorAll(arguments[0]).length;",
                vec![json!(css)],
            )
            .await?;
        Ok(v.as_u64().unwrap_or(0) as usize)
    }

    /// Waits until `css` is rendered with a text that satisfies `ok`; returns that text.
    pub async fn wait_text(
        &self,
        css: &str,
        what: &str,
        ok: impl Fn(&str) -> bool,
    ) -> anyhow::Result<String> {
        let deadline = Instant::now() + WAIT;
        loop {
            let text = self.visible_text(css).await?;
            if let Some(t) = &text
                && ok(t)
            {
                return Ok(t.clone());
            }
            if Instant::now() > deadline {
                self.shot("timeout").await;
                bail!("waiting for {what}: {css} shows {text:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until at least `n` elements match `css`.
    pub async fn wait_count(&self, css: &str, n: usize) -> anyhow::Result<usize> {
        let deadline = Instant::now() + WAIT;
        loop {
            let k = self.count(css).await?;
            if k >= n {
                return Ok(k);
            }
            if Instant::now() > deadline {
                self.shot("timeout").await;
                bail!("waiting for {n} × {css}, found {k}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn click(&self, css: &str) -> anyhow::Result<()> {
        self.c.find(Locator::Css(css)).await?.click().await?;
        Ok(())
    }

    pub async fn type_into(&self, css: &str, text: &str) -> anyhow::Result<()> {
        let e = self.c.find(Locator::Css(css)).await?;
        e.clear().await?;
        e.send_keys(text).await?;
        Ok(())
    }

    pub async fn sign_in(&self, token: &str) -> anyhow::Result<()> {
        self.type_into("#token", token).await?;
        self.click("#signin").await
    }

    /// Saves a screenshot when `PRISM_CONSOLE_SCREENSHOTS` names a directory.
    pub async fn shot(&self, name: &str) {
        if let Some(dir) = &self.shots
            && let Ok(png) = self.c.screenshot().await
        {
            let _ = std::fs::write(dir.join(format!("{name}.png")), png);
        }
    }

    /// How far the page overflows its viewport horizontally, in CSS pixels (0: no horizontal
    /// scroll), and the viewport's width.
    pub async fn horizontal_overflow(&self) -> anyhow::Result<(f64, f64)> {
        let v = self
            .c
            .execute(
                "const d = document.documentElement;
                 return [Math.max(d.scrollWidth, document.body.scrollWidth) - d.clientWidth,
                         window.innerWidth];",
                vec![],
            )
            .await?;
        let n = |i: usize| v[i].as_f64().context("a number");
        Ok((n(0)?, n(1)?))
    }
}

/// chromedriver and one Chromium session in a temporary profile, with screenshots kept when
/// `PRISM_CONSOLE_SCREENSHOTS` names a directory.
pub struct Session {
    /// The page.
    pub page: Page,
    driver: Driver,
    tmp: tempfile::TempDir,
}

impl Session {
    /// Starts chromedriver and a session (a phone-sized page with `phone`).
    pub async fn start(phone: Option<(u32, u32)>) -> anyhow::Result<Session> {
        ensure_browser();
        let tmp = tempfile::tempdir()?;
        let driver = start_driver(&tmp.path().join("chromedriver.log")).await?;
        let c = start_browser_as(&driver, &tmp.path().join("profile"), phone)
            .await
            .context("a Chromium session")?;
        let shots = std::env::var_os("PRISM_CONSOLE_SCREENSHOTS").map(PathBuf::from);
        if let Some(d) = &shots {
            std::fs::create_dir_all(d)?;
        }
        Ok(Session {
            page: Page { c, shots },
            driver,
            tmp,
        })
    }

    /// Ends the session; on a failed `outcome`, panics with it and chromedriver's last lines.
    pub async fn finish(self, outcome: anyhow::Result<()>) {
        let _ = self.page.c.close().await;
        let mut driver = self.driver;
        let _ = driver.child.kill().await;
        if let Err(e) = outcome {
            let log = std::fs::read_to_string(self.tmp.path().join("chromedriver.log"))
                .unwrap_or_default();
            let tail: String = log.lines().rev().take(20).collect::<Vec<_>>().join("\n");
            panic!("{e:#}\nchromedriver log (last lines, newest first):\n{tail}");
        }
    }
}
