//! The web console's view of runs over time, in a real headless Chromium: the runs tab's chart
//! of the ε each dataset's runs charged (called from the console walk in `console.rs`), and a
//! long HE run followed from the query form — the node's progress on the run's card while it
//! evaluates, then the result scrolled into view.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use fantoccini::Locator;
use prism_common::backend::BackendId;
use prism_node::Policy;
use prism_tests::{Api, Federation, FederationSpec};
use serde_json::{Value, json};

use crate::browser::{Page, Session};

/// What the API says the signed-in user's runs charged: per dataset, (ε in all, runs that
/// charged).
async fn charged_per_dataset(api: &Api) -> anyhow::Result<BTreeMap<String, (f64, usize)>> {
    let (_, me) = api.get("/api/v1/me").await?;
    let (_, runs) = api.get("/api/v1/runs").await?;
    let (_, queries) = api.get("/api/v1/queries").await?;
    let dataset_of: BTreeMap<&str, &str> = queries
        .as_array()
        .context("queries")?
        .iter()
        .filter_map(|q| Some((q["id"].as_str()?, q["dataset_id"].as_str()?)))
        .collect();
    let mut out = BTreeMap::new();
    for r in runs.as_array().context("runs")? {
        let eps = r["epsilon_consumed"].as_f64().unwrap_or(0.0);
        if r["created_by"] != me["id"] || eps <= 0.0 {
            continue;
        }
        let q = r["query_id"].as_str().context("query id")?;
        let ds = dataset_of.get(q).context("the run's query")?;
        let e: &mut (f64, usize) = out.entry(ds.to_string()).or_default();
        e.0 += eps;
        e.1 += 1;
    }
    Ok(out)
}

/// The chart's series as the page draws them: per dataset, (the series' total, its points, the
/// cumulative ε of its last point).
async fn drawn_series(page: &Page) -> anyhow::Result<BTreeMap<String, (f64, usize, f64)>> {
    let v = page
        .c
        .execute(
            "return [...document.querySelectorAll('#spend-chart polyline.series')].map((p) => {
               const d = p.getAttribute('data-dataset');
               const dots = [...document.querySelectorAll('#spend-chart circle.point')]
                 .filter((c) => c.getAttribute('data-dataset') === d);
               const last = dots.length ? Number(dots[dots.length - 1].getAttribute('data-cumulative')) : null;
               return [d, Number(p.getAttribute('data-total')), Number(p.getAttribute('data-points')), last];
             });",
            vec![],
        )
        .await?;
    let rows: Vec<(String, f64, usize, Option<f64>)> = serde_json::from_value(v)?;
    Ok(rows
        .into_iter()
        .map(|(d, total, n, last)| (d, (total, n, last.unwrap_or(f64::NAN))))
        .collect())
}

/// Waits until the chart draws `n` series.
async fn wait_series(page: &Page, n: usize) -> anyhow::Result<()> {
    page.wait_count(&format!("#spend-chart[data-series='{n}']"), 1)
        .await
        .map(|_| ())
}

/// The runs tab (open, signed in as the analyst, no filter set): the chart has one series per
/// dataset the analyst's runs charged, each ending at the ε the API's runs add up to; the
/// dataset filter narrows it to that dataset.
pub async fn spend_history(f: &Federation, page: &Page) -> anyhow::Result<()> {
    let analyst = f.analyst();
    // A second dataset, queried through the API by the same analyst.
    let (_, status, run) = analyst
        .run_query(
            "hospital-b.patients",
            "SELECT COUNT(*) FROM patients WHERE age < 40",
            "dp_sandbox",
            Some(0.3),
        )
        .await?;
    anyhow::ensure!(status == 200 && run["status"] == "completed", "{run}");
    let expected = charged_per_dataset(&analyst).await?;
    assert_eq!(
        expected.keys().map(String::as_str).collect::<Vec<_>>(),
        ["hospital-a.patients", "hospital-b.patients"],
        "the analyst's charged runs: {expected:?}"
    );
    page.click("#refresh-runs").await?;
    wait_series(page, expected.len()).await?;
    let drawn = drawn_series(page).await?;
    assert_eq!(
        drawn.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>()
    );
    for (ds, (total, runs)) in &expected {
        let (shown, points, last) = drawn[ds];
        assert!(
            (shown - total).abs() < 1e-9,
            "{ds}: drawn {shown}, API {total}"
        );
        assert!(
            (last - total).abs() < 1e-9,
            "{ds}: last point {last}, API {total}"
        );
        assert_eq!(points, *runs, "{ds}: one point per charged run");
    }
    assert_eq!(
        page.count("#spend-history ul.legend li").await?,
        expected.len()
    );
    page.shot("05b-spend-history").await;

    // Filtered to one dataset: that dataset's series alone.
    let filter = page.c.find(Locator::Css("#runs-filter-dataset")).await?;
    filter.select_by_value("hospital-b.patients").await?;
    wait_series(page, 1).await?;
    let drawn = drawn_series(page).await?;
    assert_eq!(
        drawn.keys().collect::<Vec<_>>(),
        ["hospital-b.patients"],
        "{drawn:?}"
    );
    page.c
        .find(Locator::Css("#runs-filter-dataset"))
        .await?
        .select_by_value("")
        .await?;
    wait_series(page, expected.len()).await
}

/// Signed in as an admin on the runs tab: every run is listed, but the chart is the admin's
/// own history, and the admin has run nothing.
pub async fn history_is_per_user(page: &Page) -> anyhow::Result<()> {
    page.click("#tab-runs").await?;
    page.wait_count("#runs-list .run", 1).await?;
    wait_series(page, 0).await?;
    assert_eq!(page.count("#spend-chart polyline.series").await?, 0);
    Ok(())
}

/// The newest run the API lists for `api`'s user.
pub async fn latest_run(api: &Api) -> anyhow::Result<Value> {
    let (_, runs) = api.get("/api/v1/runs").await?;
    runs.as_array()
        .and_then(|r| r.first())
        .cloned()
        .context("the API lists no run")
}

const DATASET: &str = "hospital-a.patients";
const ROWS: usize = 120;

/// Whether the first element matching `css` lies (at least its top edge) in the viewport.
async fn in_view(page: &Page, css: &str) -> anyhow::Result<bool> {
    let v = page
        .c
        .execute(
            "const e = document.querySelector(arguments[0]);
             if (!e) return false;
             const r = e.getBoundingClientRect();
             return r.height > 0 && r.top >= 0 && r.top < window.innerHeight;",
            vec![json!(css)],
        )
        .await?;
    Ok(v == Value::Bool(true))
}

/// Runs a two-filter HE query from the query form on a phone-sized page and follows its card.
async fn he_run_in_console(f: &Federation, page: &Page) -> anyhow::Result<()> {
    let analyst = f.analyst();
    page.c.goto(&format!("{}/", f.api_url())).await?;
    page.sign_in(&f.analyst_token).await?;
    page.wait_count(&format!("#dataset option[value='{DATASET}']"), 1)
        .await?;
    page.click("#backends .backend-card[data-backend='he_backend']")
        .await?;
    // A range filter: two encrypted table lookups, seconds of work on the node, reported as it
    // goes.
    let sql = "SELECT COUNT(*) FROM patients WHERE age BETWEEN 30 AND 60";
    page.type_into("#sql", sql).await?;
    page.wait_count("#validation[data-state='valid']", 1)
        .await?;
    page.click("#run-query").await?;

    // Followed until the card settles: the progress the node reports shows on it meanwhile.
    // The reader scrolls back up to the form while waiting.
    let mut progress: Vec<String> = Vec::new();
    let mut scrolled_away = false;
    let deadline = Instant::now() + Duration::from_secs(300);
    let status = loop {
        let status = page
            .c
            .execute(
                "const e = document.querySelector('#last-run .run'); return e && e.dataset.status;",
                vec![],
            )
            .await?;
        if let Some(s @ ("completed" | "failed")) = status.as_str() {
            break s.to_string();
        }
        if let Some(text) = page.visible_text("#last-run .run .progress").await? {
            if progress.last() != Some(&text) {
                progress.push(text);
            }
            if !scrolled_away {
                page.c.execute("window.scrollTo(0, 0);", vec![]).await?;
                scrolled_away = true;
            }
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the HE run did not finish; the card showed {progress:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    page.shot("11-he-run-done").await;
    let run = latest_run(&analyst).await?;
    assert!(
        !progress.is_empty(),
        "the card never showed the node's progress before the result: {}",
        run["proof_artifacts"]["timings_ms"]
    );
    for p in &progress {
        assert!(
            p.contains("encrypted steps") && p.contains(&format!("of {ROWS} rows")),
            "{p}"
        );
    }

    // The card is the API's run: completed, with its answer, and no progress left on it.
    assert_eq!(Some(status.as_str()), run["status"].as_str(), "{run}");
    assert_eq!(status, "completed", "{run}");
    let card = format!(
        "#last-run .run[data-run-id='{}']",
        run["id"].as_str().context("run id")?
    );
    let shown: f64 = page
        .visible_text(&format!("{card} table.result tbody td .value"))
        .await?
        .context("the result cell")?
        .parse()?;
    assert_eq!(Some(shown), run["result"]["rows"][0][0].as_f64(), "{run}");
    assert_eq!(page.count(&format!("{card} .progress")).await?, 0);
    assert!(run.get("progress").is_none(), "{run}");

    // And the result was scrolled back into view.
    let result = format!("{card} .table-scroll");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !in_view(page, &result).await? {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the result is not in view after the run"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        page.visible_text("#fatal").await?,
        None,
        "the page hit a JS error"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_he_run_shows_its_progress_and_then_its_result_in_view() {
    let policy = Policy {
        backends: vec![BackendId::DpSandbox, BackendId::HeBackend],
        ..Policy::default()
    };
    let f = Federation::start(FederationSpec {
        orgs: vec!["hospital-a".into()],
        rows_per_org: ROWS,
        policy,
        ..Default::default()
    })
    .await
    .expect("federation");
    // The federation's first HE run generates the key set and installs it on the node; done
    // here through the API, so the console's run is the evaluation alone.
    let (_, status, first) = f
        .analyst()
        .run_query(DATASET, "SELECT COUNT(*) FROM patients", "he_backend", None)
        .await
        .expect("the first HE run");
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["status"], "completed", "{first}");
    let session = Session::start(Some((390, 844))).await.expect("a browser");
    let outcome = he_run_in_console(&f, &session.page).await;
    f.shutdown().await;
    session.finish(outcome).await;
}
