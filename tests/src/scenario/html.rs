//! The HTML report: one self-contained page (inline CSS and SVG, no script) with the step
//! table, a bar chart of each step's latency and a line chart of the ε each organization has
//! spent after each step.

use std::fmt::Write as _;

use super::report::{Report, epsilon_text};

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const W: f64 = 760.0;
const H: f64 = 220.0;
const PAD: f64 = 44.0;

/// A distinct colour per series.
fn colour(i: usize) -> String {
    format!("hsl({}, 65%, 45%)", (i * 137) % 360)
}

fn latency_chart(r: &Report) -> String {
    let n = r.steps.len().max(1) as f64;
    let max = r.steps.iter().map(|s| s.time_ms).fold(1.0, f64::max);
    let bw = (W - 2.0 * PAD) / n;
    let mut svg = format!(
        r#"<svg viewBox="0 0 {W} {}" width="{W}" role="img" aria-label="latency per step"><text x="{PAD}" y="14">time per step (ms; max {max:.0})</text>"#,
        H + 30.0
    );
    for (i, s) in r.steps.iter().enumerate() {
        let h = (s.time_ms / max) * (H - 30.0);
        let x = PAD + i as f64 * bw;
        let fill = if s.ok { "#3b7dd8" } else { "#d83b3b" };
        let _ = write!(
            svg,
            r#"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{h:.1}" fill="{fill}"><title>{} {}: {:.0} ms</title></rect><text x="{:.1}" y="{}" font-size="10" text-anchor="middle">{}</text>"#,
            H - h,
            (bw * 0.8).max(1.0),
            s.index,
            esc(&s.name),
            s.time_ms,
            x + bw * 0.4,
            H + 14.0,
            s.index
        );
    }
    svg.push_str("</svg>");
    svg
}

fn budget_chart(r: &Report) -> String {
    let series = r.cumulative_epsilon();
    let steps = r.steps.len().max(1);
    let max = series
        .values()
        .flat_map(|v| v.iter().copied())
        .fold(0.01, f64::max);
    let dx = (W - 2.0 * PAD - 160.0) / steps as f64;
    let mut svg = format!(
        r#"<svg viewBox="0 0 {W} {}" width="{W}" role="img" aria-label="budget spent per organization"><text x="{PAD}" y="14">ε spent per organization after each step (max {max:.2})</text>"#,
        H + 30.0
    );
    for (k, (org, ys)) in series.iter().enumerate() {
        let mut pts = format!("{PAD},{H}");
        for (i, y) in ys.iter().enumerate() {
            let _ = write!(
                pts,
                " {:.1},{:.1}",
                PAD + (i + 1) as f64 * dx,
                H - (y / max) * (H - 30.0)
            );
        }
        let c = colour(k);
        let _ = write!(
            svg,
            r#"<polyline points="{pts}" fill="none" stroke="{c}" stroke-width="2"><title>{}</title></polyline><text x="{:.1}" y="{:.1}" font-size="10" fill="{c}">{} {:.2}</text>"#,
            esc(org),
            W - PAD - 150.0,
            24.0 + k as f64 * 11.0,
            esc(org),
            ys.last().copied().unwrap_or(0.0)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// The page.
pub fn page(r: &Report) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Prism scenario {name}</title>
<style>body{{font:14px system-ui,sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse;font-size:12px}}td,th{{border:1px solid #ccc;padding:3px 6px;text-align:left;vertical-align:top}}tr.bad{{background:#fde2e2}}code{{font-size:11px}}svg{{display:block;margin:1em 0;border:1px solid #eee}}</style></head><body>
<h1>Scenario {name}</h1><p>{desc}</p><p>{n} organizations; set up in {setup:.1} s; <b>{verdict}</b></p>"#,
        name = esc(&r.scenario),
        desc = esc(&r.description),
        n = r.organizations.len(),
        setup = r.setup_ms / 1000.0,
        verdict = if r.unexpected == 0 {
            format!("all {} steps had the expected outcome", r.steps.len())
        } else {
            format!("{} step(s) missed their expectation", r.unexpected)
        },
    );
    h.push_str(&latency_chart(r));
    h.push_str(&budget_chart(r));
    h.push_str("<table><tr><th>#</th><th>step</th><th>backend</th><th>query</th><th>status</th><th>answer</th><th>truth</th><th>check</th><th>ε per party</th><th>faults</th><th>time ms</th></tr>");
    for s in &r.steps {
        let status = match &s.code {
            Some(c) => format!("{} ({c})", s.status),
            None => s.status.clone(),
        };
        let _ = write!(
            h,
            "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td></tr>",
            if s.ok { "ok" } else { "bad" },
            s.index,
            esc(&s.name),
            esc(&s.backend),
            esc(&s.query),
            esc(&status),
            esc(&s.answer),
            esc(&s.truth),
            esc(&s
                .check
                .as_ref()
                .map(|c| c.summary.clone())
                .unwrap_or_default()),
            esc(&epsilon_text(&s.epsilon)),
            esc(&s.faults.join(", ")),
            s.time_ms
        );
    }
    h.push_str("</table><h2>Budgets at the end (node ledgers)</h2><table><tr><th>dataset</th><th>spent ε</th><th>total ε</th></tr>");
    for b in &r.budgets {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{:.3}</td><td>{:.3}</td></tr>",
            esc(&b.dataset),
            b.spent_epsilon,
            b.total_epsilon
        );
    }
    h.push_str("</table></body></html>\n");
    h
}
