//! Prometheus counters shared by the coordinator and the node, served on `/metrics`.
//!
//! Each daemon owns one [`Metrics`] (its own registry, not a process-global recorder), so an
//! in-process federation keeps every node's counters apart. Failures are counted next to
//! successes: refusals by code, peers that could not be reached, rooms that failed. The text is
//! the OpenMetrics exposition format, which Prometheus scrapes with [`CONTENT_TYPE`].

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::backend::BackendId;

/// The `Content-Type` of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// How a run (or a node's execution of one) ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A result was released.
    Completed,
    /// A party refused it (policy, budget, validation, unsupported backend).
    Refused,
    /// It broke: a party offline, a timeout, a transport or store failure.
    Failed,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::Refused => "refused",
            Outcome::Failed => "failed",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunLabels {
    backend: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    backend: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DatasetLabels {
    dataset: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerLabels {
    peer: String,
}

type FloatCounter = Counter<f64, AtomicU64>;

/// Room executions take milliseconds (MPC on a LAN) to tens of seconds (a deadline): 1 ms
/// doubling up to about 33 s.
fn room_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// One daemon's counters.
pub struct Metrics {
    registry: Registry,
    runs: Family<RunLabels, Counter>,
    refusals: Family<RefusalLabels, Counter>,
    epsilon: Family<DatasetLabels, FloatCounter>,
    delta: Family<DatasetLabels, FloatCounter>,
    rooms: Family<OutcomeLabels, Histogram, fn() -> Histogram>,
    peer_failures: Family<PeerLabels, Counter>,
}

impl Metrics {
    /// A registry whose metric names start with `prefix` (`prism_coordinator`, `prism_node`).
    pub fn new(prefix: &str) -> Self {
        let mut registry = Registry::with_prefix(prefix);
        let runs = Family::<RunLabels, Counter>::default();
        registry.register(
            "runs",
            "Runs that ended, by backend and outcome (completed, refused, failed)",
            runs.clone(),
        );
        let refusals = Family::<RefusalLabels, Counter>::default();
        registry.register(
            "refusals",
            "Refusals by backend and the refusal's error code",
            refusals.clone(),
        );
        let epsilon = Family::<DatasetLabels, FloatCounter>::default();
        registry.register(
            "budget_epsilon_spent",
            "Privacy budget ε charged for released results, by dataset",
            epsilon.clone(),
        );
        let delta = Family::<DatasetLabels, FloatCounter>::default();
        registry.register(
            "budget_delta_spent",
            "Privacy budget δ charged for released results, by dataset",
            delta.clone(),
        );
        let rooms: Family<OutcomeLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(room_histogram);
        registry.register_with_unit(
            "room_execution",
            "Data-room execution latency, by outcome",
            Unit::Seconds,
            rooms.clone(),
        );
        let peer_failures = Family::<PeerLabels, Counter>::default();
        registry.register(
            "peer_failures",
            "Calls to another party (node or peer) that failed: offline, unreachable, timed out",
            peer_failures.clone(),
        );
        Metrics {
            registry,
            runs,
            refusals,
            epsilon,
            delta,
            rooms,
            peer_failures,
        }
    }

    /// Counts a run that ended.
    pub fn run(&self, backend: BackendId, outcome: Outcome) {
        self.runs
            .get_or_create(&RunLabels {
                backend: backend.as_str().into(),
                outcome: outcome.as_str().into(),
            })
            .inc();
    }

    /// Counts a refusal with its error code.
    pub fn refusal(&self, backend: BackendId, code: &str) {
        self.refusals
            .get_or_create(&RefusalLabels {
                backend: backend.as_str().into(),
                code: code.into(),
            })
            .inc();
    }

    /// Adds the budget charged for a released result.
    pub fn budget_spent(&self, dataset: &str, epsilon: f64, delta: f64) {
        let l = DatasetLabels {
            dataset: dataset.into(),
        };
        self.epsilon.get_or_create(&l).inc_by(epsilon);
        self.delta.get_or_create(&l).inc_by(delta);
    }

    /// Records how long a room execution took.
    pub fn room_executed(&self, outcome: Outcome, seconds: f64) {
        self.rooms
            .get_or_create(&OutcomeLabels {
                outcome: outcome.as_str().into(),
            })
            .observe(seconds);
    }

    /// Counts a failed call to another party.
    pub fn peer_failure(&self, peer: &str) {
        self.peer_failures
            .get_or_create(&PeerLabels { peer: peer.into() })
            .inc();
    }

    /// The exposition text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_appear_with_their_labels() {
        let m = Metrics::new("prism_test");
        m.run(BackendId::DpSandbox, Outcome::Completed);
        m.run(BackendId::DpSandbox, Outcome::Completed);
        m.refusal(BackendId::EnclaveBackend, "backend_not_implemented");
        m.budget_spent("hospital-a.patients", 0.25, 0.0);
        m.budget_spent("hospital-a.patients", 0.5, 1e-6);
        m.room_executed(Outcome::Failed, 0.003);
        m.peer_failure("hospital-b");
        let text = m.encode();
        for line in [
            r#"prism_test_runs_total{backend="dp_sandbox",outcome="completed"} 2"#,
            r#"prism_test_refusals_total{backend="enclave_backend",code="backend_not_implemented"} 1"#,
            r#"prism_test_budget_epsilon_spent_total{dataset="hospital-a.patients"} 0.75"#,
            r#"prism_test_room_execution_seconds_count{outcome="failed"} 1"#,
            r#"prism_test_room_execution_seconds_bucket{le="0.004",outcome="failed"} 1"#,
            r#"prism_test_peer_failures_total{peer="hospital-b"} 1"#,
            "# EOF",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
        }
    }
}
