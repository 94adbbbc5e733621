//! The messages between a node and the coordinator: the handshake, node events on the control
//! stream, and the requests the coordinator sends on streams it opens, with their answers.

use serde::{Deserialize, Serialize};

use super::he::{HeRequest, HeResponse};
use super::mpc::{Attestation, MpcRequest, MpcResponse};
use super::shared::{ErrorBody, PrivacyParams, Requester};
use crate::backend::BackendId;
use crate::identity::OrgId;
use crate::plan::{Plan, Table};
use crate::schema::CatalogEntry;

/// First frame a node sends, on the control stream it opens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// Protocol version the node speaks.
    pub version: u32,
    /// The organization the node claims to be (must match its certificate).
    pub org: OrgId,
    /// Node software version.
    pub software: String,
    /// Where the node's peer endpoint listens (`host:port`), for other nodes to dial.
    pub peer_addr: Option<String>,
    /// When the node serves `he_backend`: the ids of the HE key sets it holds, so the
    /// coordinator can install its own ahead of the first query (`None`: no HE here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub he_keys: Option<Vec<String>>,
}

/// The coordinator's answer to [`Hello`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HelloReply {
    /// Accepted.
    Welcome {
        /// Protocol version the coordinator speaks.
        version: u32,
        /// Coordinator software version.
        software: String,
        /// The federation's member organizations, sorted: the only ones a node's peer
        /// endpoint accepts. Absent from older coordinators (then the node accepts no peer).
        #[serde(default)]
        members: Vec<OrgId>,
    },
    /// Refused; the coordinator closes the connection after this frame.
    Refused(ErrorBody),
}

/// Events a node sends on its control stream after the handshake.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeEvent {
    /// The node's full catalog (replaces what the coordinator had for this organization).
    Catalog {
        /// Datasets: metadata only, never rows.
        datasets: Vec<CatalogEntry>,
    },
    /// The organization attests to a room's manifest.
    Attested(Attestation),
    /// The organization declines a room.
    Declined {
        /// Room.
        room_id: String,
        /// Why, in the owner's words.
        reason: String,
    },
    /// The organization withdraws its attestation before execution.
    Withdrawn {
        /// Room.
        room_id: String,
    },
    /// How far a long HE evaluation has got (sent every half second while it runs).
    Progress(Progress),
    /// Charged answers the node holds because the coordinator has not acknowledged them (sent
    /// after every connect and again while any stays unacknowledged); the coordinator collects
    /// those it has not recorded ([`Request::Collect`]) and acknowledges the rest.
    Held {
        /// The runs whose answers the node holds.
        run_ids: Vec<String>,
    },
}

/// Work the coordinator sends a node on a stream it opens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Request {
    /// Liveness check.
    Ping,
    /// Ask the node what a plan would cost under its policy, without running it.
    Estimate {
        /// Backend requested.
        backend: BackendId,
        /// Dataset name on that node.
        dataset: String,
        /// The plan.
        plan: Plan,
        /// Requested privacy parameters.
        params: PrivacyParams,
    },
    /// Homomorphic-encryption traffic (keys, encrypted queries); see `he`.
    He(HeRequest),
    /// Data-room traffic: invitations and MPC execution.
    Mpc(MpcRequest),
    /// Run a plan.
    Execute {
        /// The coordinator's run id (for audit on both sides).
        run_id: String,
        /// Backend requested.
        backend: BackendId,
        /// Dataset name on that node.
        dataset: String,
        /// The plan.
        plan: Plan,
        /// Requested privacy parameters.
        params: PrivacyParams,
        /// Who asked (recorded, never checked; absent from older coordinators).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        requester: Option<Requester>,
    },
    /// Send again the charged answers of these runs that the node still holds.
    Collect {
        /// Runs the coordinator has not recorded an answer for.
        run_ids: Vec<String>,
    },
    /// The coordinator has recorded these runs' answers: the node may forget them.
    Acknowledge {
        /// Runs recorded.
        run_ids: Vec<String>,
    },
}

/// A node's answer to a [`Request`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    /// Answer to [`Request::Ping`].
    Pong,
    /// Answer to [`Request::Estimate`].
    Estimated {
        /// ε the plan would be charged.
        epsilon: f64,
        /// δ the plan would be charged.
        delta: f64,
        /// The release mode the node applies to this dataset and backend.
        #[serde(default)]
        release: Option<crate::release::ReleaseMode>,
    },
    /// Answer to [`Request::Execute`].
    Executed(Execution),
    /// Answer to [`Request::He`].
    He(HeResponse),
    /// Answer to [`Request::Mpc`].
    Mpc(MpcResponse),
    /// Answer to [`Request::Collect`]. A run in neither list has no charged answer on the node
    /// (never charged, or held past the node's hold time: its audit log says which).
    Collected {
        /// The answers held, each exactly as first sent.
        held: Vec<HeldAnswer>,
        /// Runs the node is still computing: their answers are announced when charged.
        answering: Vec<String>,
    },
    /// Answer to [`Request::Acknowledge`]: how many held answers the node forgot.
    Acknowledged {
        /// Answers dropped.
        count: usize,
    },
    /// The node refused or failed; nothing was charged unless `details` says otherwise.
    Refused(ErrorBody),
}

/// A completed execution on a node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Execution {
    /// The released answer.
    pub table: Table,
    /// Mechanism, parameters and accuracy of the release.
    pub proof: serde_json::Value,
    /// ε charged to the dataset's budget.
    pub epsilon_spent: f64,
    /// δ charged to the dataset's budget.
    pub delta_spent: f64,
    /// Time the node spent computing, in milliseconds.
    pub compute_ms: f64,
}

/// A charged answer a node keeps until the coordinator acknowledges it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeldAnswer {
    /// The coordinator's run id.
    pub run_id: String,
    /// The answer, as charged.
    #[serde(flatten)]
    pub result: HeldResult,
}

/// What a held answer holds: a released DP answer, or an HE evaluation's encrypted result
/// (only the key holder can read it; it was charged when the node's release step noised it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeldResult {
    /// A DP answer, exactly as sent.
    Execution(Execution),
    /// An HE answer: the evaluation report and the compressed result list, exactly as sent.
    He(HeldHe),
    /// A `dp` data room's partial sum, exactly as sent; its run id is the execution's id.
    Mpc(HeldPartial),
}

/// A `dp` data room's partial sum held for collection: this party's own share plus every share
/// it received (uniformly random on its own), and the noise report of its own vector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeldPartial {
    /// Room.
    pub room_id: String,
    /// The partial sum over Z_2^64.
    pub partial: Vec<u64>,
    /// Local aggregation time, ms.
    pub compute_ms: f64,
    /// Share exchange time, ms.
    pub exchange_ms: f64,
    /// The noise this party added to its own vector (its ε and scales).
    pub noise: crate::mpc::noise::PartyNoise,
}

/// An HE answer held for collection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeldHe {
    /// What the node reported with the result.
    pub evaluation: super::he::HeEvaluation,
    /// ε charged for it.
    pub epsilon_spent: f64,
    /// The encrypted result list (base64 in the frame).
    #[serde(with = "super::b64")]
    pub result: Vec<u8>,
}

impl HeldAnswer {
    /// A held DP answer.
    pub fn dp(run_id: impl Into<String>, execution: Execution) -> Self {
        HeldAnswer {
            run_id: run_id.into(),
            result: HeldResult::Execution(execution),
        }
    }

    /// A held partial sum of the room execution `execution_id`.
    pub fn mpc(execution_id: impl Into<String>, partial: HeldPartial) -> Self {
        HeldAnswer {
            run_id: execution_id.into(),
            result: HeldResult::Mpc(partial),
        }
    }

    /// ε charged for the answer.
    pub fn epsilon_spent(&self) -> f64 {
        match &self.result {
            HeldResult::Execution(x) => x.epsilon_spent,
            HeldResult::He(h) => h.epsilon_spent,
            HeldResult::Mpc(p) => p.noise.epsilon,
        }
    }

    /// Bytes the answer takes in a frame, roughly (an HE result is its base64 length).
    pub fn frame_bytes(&self) -> usize {
        match &self.result {
            HeldResult::Execution(_) => 4096,
            HeldResult::He(h) => h.result.len().div_ceil(3) * 4 + 8192,
            // At most 20 digits and a comma a word, as JSON.
            HeldResult::Mpc(p) => p.partial.len() * 21 + 4096,
        }
    }
}

/// Progress of an encrypted evaluation on a node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// The coordinator's run id.
    pub run_id: String,
    /// Rows of the dataset.
    pub rows: u64,
    /// Groups of rows the predicate is evaluated over.
    pub groups: u64,
    /// Result cells.
    pub cells: u64,
    /// Encrypted steps done so far (distinct values, cells, lookups).
    pub steps: u64,
    /// Time spent evaluating so far, in milliseconds.
    pub elapsed_ms: u64,
}
