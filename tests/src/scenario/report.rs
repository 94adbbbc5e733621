//! A scenario's report: one line per step (backend, query, status, answer vs truth, ε per
//! party, time) on the terminal, the same as JSON, and a self-contained HTML page with inline
//! SVG charts (latency per step, budget spent per organization over the scenario).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;
use serde_json::Value;

use super::truth::Comparison;
use super::{Expect, Kind, Scenario, Step};

/// One step's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    /// 1-based position in the script.
    pub index: usize,
    /// Label.
    pub name: String,
    /// Kind.
    pub kind: Kind,
    /// Backend (query, room).
    pub backend: String,
    /// SQL, or what the step did.
    pub query: String,
    /// Final status: `completed`, `failed`, `http 4xx`, ….
    pub status: String,
    /// Error code, if any.
    pub code: Option<String>,
    /// Error message, if any.
    pub message: String,
    /// The released answer, shortened.
    pub answer: String,
    /// The plaintext truth, shortened (query and room steps).
    pub truth: String,
    /// The answer's comparison with the truth, if the step asked for one.
    #[serde(serialize_with = "ser_check")]
    pub check: Option<Comparison>,
    /// ε charged per organization.
    pub epsilon: BTreeMap<String, f64>,
    /// Faults applied (offline, killed, declined, slow).
    pub faults: Vec<String>,
    /// Wall time of the step, ms.
    pub time_ms: f64,
    /// What was expected.
    pub expected: Expect,
    /// Whether the outcome was the expected one.
    pub ok: bool,
    /// The released table.
    pub result: Value,
    /// The truth table.
    pub truth_table: Option<Value>,
    /// The full run / room / error body.
    #[serde(skip)]
    pub body: Value,
}

fn ser_check<S: serde::Serializer>(c: &Option<Comparison>, s: S) -> Result<S::Ok, S::Error> {
    match c {
        None => s.serialize_none(),
        Some(c) => serde_json::json!({
            "ok": c.ok, "compared": c.compared, "max_error": c.max_error, "summary": c.summary,
        })
        .serialize(s),
    }
}

/// How a step ended: final status, error code and message, the body it came with.
pub struct Outcome {
    /// `completed`, `failed`, `http 4xx`, ….
    pub status: String,
    /// Error code.
    pub code: Option<String>,
    /// Error message.
    pub message: String,
    /// The body.
    pub body: Value,
}

impl StepReport {
    /// A step's line before the truth and the expectation are checked.
    pub(super) fn of(step: &Step, backend: &str, query: &str, o: Outcome) -> Self {
        let answer = if o.status == "completed" {
            table_text(&o.body["result"])
        } else {
            short(&o.message, 120)
        };
        StepReport {
            index: 0,
            name: step.label(),
            kind: step.kind,
            backend: backend.into(),
            query: query.into(),
            status: o.status,
            code: o.code,
            message: o.message,
            answer,
            truth: String::new(),
            check: None,
            epsilon: BTreeMap::new(),
            faults: Vec::new(),
            time_ms: 0.0,
            expected: step.expect.clone(),
            ok: false,
            result: o.body["result"].clone(),
            truth_table: None,
            body: o.body,
        }
    }
}

/// A dataset's ledger at the end of the scenario, as its node reports it.
#[derive(Debug, Clone, Serialize)]
pub struct BudgetLine {
    /// `organization.dataset`.
    pub dataset: String,
    /// Organization.
    pub organization: String,
    /// Total ε.
    pub total_epsilon: f64,
    /// ε spent.
    pub spent_epsilon: f64,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// Its description.
    pub description: String,
    /// Organizations, in order.
    pub organizations: Vec<String>,
    /// Time to start the federation and import the data, ms.
    pub setup_ms: f64,
    /// Steps.
    pub steps: Vec<StepReport>,
    /// Ledgers at the end.
    pub budgets: Vec<BudgetLine>,
    /// Steps that missed their expectation.
    pub unexpected: usize,
}

impl Report {
    pub(super) fn new(s: &Scenario, steps: Vec<StepReport>, budgets: Vec<BudgetLine>) -> Self {
        Report {
            scenario: s.name.clone(),
            description: s.description.clone(),
            organizations: s.org_ids(),
            setup_ms: 0.0,
            unexpected: steps.iter().filter(|r| !r.ok).count(),
            steps,
            budgets,
        }
    }

    /// The terminal table.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Scenario {}: {} organizations, set up in {:.1} s",
            self.scenario,
            self.organizations.len(),
            self.setup_ms / 1000.0
        );
        let _ = writeln!(
            out,
            "{:>2} {:<28} {:<12} {:<40} {:<26} {:<40} {:<42} {:<24} {:>9}",
            "#",
            "step",
            "backend",
            "query",
            "status",
            "answer",
            "vs truth",
            "ε per party",
            "time ms"
        );
        let _ = writeln!(out, "{}", "-".repeat(252));
        for r in &self.steps {
            let status = match &r.code {
                Some(c) => format!("{} {c}", if r.status == "completed" { "" } else { "✗" }),
                None => r.status.clone(),
            };
            let check = match &r.check {
                Some(c) => c.summary.clone(),
                None if !r.truth.is_empty() => format!("truth {}", r.truth),
                None => String::new(),
            };
            let _ = writeln!(
                out,
                "{:>2} {:<28} {:<12} {:<40} {:<26} {:<40} {:<42} {:<24} {:>9.1}{}",
                r.index,
                short(&r.name, 28),
                short(&r.backend, 12),
                short(&r.query, 40),
                short(status.trim(), 26),
                short(&r.answer, 40),
                short(&check, 42),
                short(&epsilon_text(&r.epsilon), 24),
                r.time_ms,
                if r.ok { "" } else { "   <-- unexpected" }
            );
            if !r.faults.is_empty() {
                let _ = writeln!(out, "   faults: {}", r.faults.join(", "));
            }
        }
        let _ = writeln!(out);
        for b in &self.budgets {
            let _ = writeln!(
                out,
                "budget {:<32} spent ε {:>7.3} of {:>7.3}",
                b.dataset, b.spent_epsilon, b.total_epsilon
            );
        }
        out
    }

    /// ε spent per organization after each step (from what each step reported).
    pub fn cumulative_epsilon(&self) -> BTreeMap<String, Vec<f64>> {
        let mut acc: BTreeMap<String, f64> = self
            .organizations
            .iter()
            .map(|o| (o.clone(), 0.0))
            .collect();
        let mut series: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for r in &self.steps {
            for (o, e) in &r.epsilon {
                *acc.entry(o.clone()).or_default() += e;
            }
            for (o, total) in &acc {
                series.entry(o.clone()).or_default().push(*total);
            }
        }
        series
    }

    /// The self-contained HTML report.
    pub fn html(&self) -> String {
        super::html::page(self)
    }
}

/// ε per party, compact.
pub fn epsilon_text(e: &BTreeMap<String, f64>) -> String {
    e.iter()
        .filter(|(_, x)| **x > 0.0)
        .map(|(o, x)| format!("{o} {x:.2}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Shortens text to `n` characters.
pub fn short(s: &str, n: usize) -> String {
    if s.chars().count() > n {
        format!(
            "{}…",
            s.chars().take(n.saturating_sub(1)).collect::<String>()
        )
    } else {
        s.to_string()
    }
}

/// A table (`{"columns", "rows"}`) on one line: `col=value …` for one row, else the first rows.
pub fn table_text(t: &Value) -> String {
    let Some(rows) = t["rows"].as_array() else {
        return String::new();
    };
    let fmt = |v: &Value| match v {
        Value::Number(n) if n.is_f64() => format!("{:.2}", n.as_f64().unwrap_or(0.0)),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if rows.len() == 1 {
        let cols = t["columns"].as_array().cloned().unwrap_or_default();
        cols.iter()
            .zip(rows[0].as_array().into_iter().flatten())
            .map(|(c, v)| format!("{}={}", c.as_str().unwrap_or("?"), fmt(v)))
            .collect::<Vec<_>>()
            .join(" ")
    } else {
        let first: Vec<String> = rows
            .iter()
            .take(3)
            .map(|r| {
                r.as_array()
                    .into_iter()
                    .flatten()
                    .map(fmt)
                    .collect::<Vec<_>>()
                    .join("/")
            })
            .collect();
        format!("{} groups: {} …", rows.len(), first.join(", "))
    }
}
