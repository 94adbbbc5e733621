//! Data rooms: multi-organization queries that every participant attests to before they run.
//!
//! A room is a persisted state machine: `pending` (invitations out) → `ready` (every
//! participant's signature over the manifest hash verified) → `executing` → `completed` |
//! `failed` (retryable); `cancelled` before execution. For `mpc_backend` the coordinator sends
//! each participant the manifest and everyone's attestations, the nodes exchange shares among
//! themselves, and the coordinator receives only partial sums, whose total it decodes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use prism_common::identity::OrgId;
use prism_common::metrics;
use prism_common::mpc;
use prism_common::plan::Table;
use prism_common::release::ReleaseMode;
use prism_common::room::{self, Manifest};
use prism_common::schema::DatasetSchema;
use prism_common::shares;
use prism_common::wire::{Attestation, MpcRequest, MpcResponse, PeerAddr, Request, Response};
use redb::TableDefinition;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::CoordState;
use crate::model::now;
use crate::store::{Audit, StoreError};

/// room id → JSON [`Room`].
pub const ROOMS: TableDefinition<&str, &str> = TableDefinition::new("rooms");

/// A room's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RoomStatus {
    /// Waiting for attestations.
    Pending,
    /// Every participant attested.
    Ready,
    /// Running.
    Executing,
    /// Answered.
    Completed,
    /// Failed; may be executed again.
    Failed,
    /// Cancelled before execution.
    Cancelled,
}

/// A participant's standing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParticipantStatus {
    /// Invitation sent (or waiting for the node to connect).
    Invited,
    /// Signature verified.
    Attested,
    /// Declined.
    Declined,
    /// Attested, then withdrew.
    Withdrawn,
}

/// One participant of a room.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Participant {
    /// Organization.
    pub organization: OrgId,
    /// Standing.
    pub status: ParticipantStatus,
    /// When it attested.
    pub attested_at: Option<String>,
    /// Its Ed25519 signature over the manifest hash (hex).
    pub signature: Option<String>,
    /// The public key from its certificate that verified the signature (hex).
    pub public_key: Option<String>,
    /// Why it declined.
    pub reason: Option<String>,
    /// Whether the invitation reached its node.
    pub invitation_delivered: bool,
}

/// A data room.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Room {
    /// Room id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// SQL.
    pub query_text: String,
    /// Backend.
    pub backend: prism_common::backend::BackendId,
    /// Participants with their standing.
    pub participants: Vec<Participant>,
    /// What everyone attests to.
    pub manifest: Manifest,
    /// Its hash (hex).
    pub manifest_hash: String,
    /// State.
    pub status: RoomStatus,
    /// The answer (carrying every party's noise in a `dp` room).
    pub result: Option<Table>,
    /// Why it failed.
    pub error_message: Option<String>,
    /// Stable code of the failure.
    pub error_code: Option<String>,
    /// Protocol facts: parties, vector length, per-party timings.
    pub proof_artifacts: serde_json::Value,
    /// Creator's user id.
    pub created_by: String,
    /// When created.
    pub created_at: String,
    /// When last executed.
    pub executed_at: Option<String>,
    /// Execute → result, ms.
    pub execution_time_ms: Option<f64>,
    /// The run this room answers, for rooms opened by an `mpc_backend` query.
    pub origin_run: Option<String>,
}

impl Room {
    /// Organizations that have not attested.
    pub fn waiting_for(&self) -> Vec<OrgId> {
        self.participants
            .iter()
            .filter(|p| p.status != ParticipantStatus::Attested)
            .map(|p| p.organization.clone())
            .collect()
    }

    fn schema(&self, state: &CoordState) -> Option<DatasetSchema> {
        let first = self.participants.first()?;
        let d = state.dataset(&format!(
            "{}.{}",
            first.organization, self.manifest.plan.dataset
        ))?;
        Some(DatasetSchema {
            name: d.name,
            columns: d.columns,
        })
    }
}

/// Loads a room.
pub fn load(state: &CoordState, id: &str) -> Result<Option<Room>, StoreError> {
    state.store.get(ROOMS, id)
}

fn save(
    state: &CoordState,
    room: &Room,
    actor: &str,
    action: &str,
    details: serde_json::Value,
) -> Result<(), StoreError> {
    state.store.put(
        ROOMS,
        &room.id,
        room,
        Some(Audit {
            actor,
            action,
            target: &room.id,
            details,
        }),
    )
}

/// Rooms are updated by node events and executions concurrently: serialise read-modify-write.
fn update<T>(
    state: &CoordState,
    id: &str,
    f: impl FnOnce(&mut Room) -> Option<(T, &'static str, serde_json::Value)>,
) -> Result<Option<(Room, T)>, StoreError> {
    let _guard = state.rooms_lock.lock().unwrap_or_else(|e| e.into_inner());
    let Some(mut room) = load(state, id)? else {
        return Ok(None);
    };
    let Some((out, action, details)) = f(&mut room) else {
        return Ok(None);
    };
    save(state, &room, "system", action, details)?;
    Ok(Some((room, out)))
}

/// Sends invitations to every participant whose node is connected and has not got one yet.
pub async fn deliver_invitations(state: &Arc<CoordState>, room_id: &str) {
    let Ok(Some(room)) = load(state, room_id) else {
        return;
    };
    if !matches!(room.status, RoomStatus::Pending | RoomStatus::Ready) {
        return;
    }
    for p in room.participants.iter().filter(|p| !p.invitation_delivered) {
        let req = Request::Mpc(MpcRequest::Invite {
            manifest: room.manifest.clone(),
            requester: Some(crate::requester::of_room(state, &room)),
        });
        match state
            .nodes
            .call(&p.organization, &req, Duration::from_secs(10))
            .await
        {
            Ok(Response::Mpc(MpcResponse::Invited { status })) => {
                let org = p.organization.clone();
                let _ = update(state, room_id, |r| {
                    let q = r.participants.iter_mut().find(|q| q.organization == org)?;
                    q.invitation_delivered = true;
                    Some((
                        (),
                        "room_invitation_delivered",
                        serde_json::json!({"organization": org, "status": status}),
                    ))
                });
            }
            Ok(Response::Refused(e)) => {
                warn!(room_id, org = %p.organization, code = %e.code, "invitation refused: {}", e.message)
            }
            Ok(other) => {
                warn!(room_id, org = %p.organization, "unexpected answer to an invitation: {other:?}")
            }
            Err(e) => info!(room_id, org = %p.organization, "invitation not delivered yet: {e}"),
        }
    }
}

/// Delivers pending invitations to a node that just connected.
pub async fn on_node_connected(state: Arc<CoordState>, org: OrgId) {
    let rooms: Vec<Room> = state.store.list(ROOMS).unwrap_or_default();
    for r in rooms.into_iter().filter(|r| {
        matches!(r.status, RoomStatus::Pending | RoomStatus::Ready)
            && r.participants
                .iter()
                .any(|p| p.organization == org && !p.invitation_delivered)
    }) {
        deliver_invitations(&state, &r.id).await;
    }
}

/// Records an attestation from `org`, verified with the key of the certificate it connected with.
pub async fn on_attested(
    state: &Arc<CoordState>,
    org: &OrgId,
    cert_public_key: Option<[u8; 32]>,
    a: Attestation,
) {
    let Ok(Some(room)) = load(state, &a.room_id) else {
        warn!(room_id = %a.room_id, %org, "attestation for an unknown room");
        return;
    };
    if a.org != *org || a.manifest_hash != room.manifest_hash {
        let _ = state.store.audit(Audit {
            actor: org.as_str(),
            action: "attestation_rejected",
            target: &a.room_id,
            details: serde_json::json!({"reason": "the attestation is for another organization or manifest", "manifest_hash": a.manifest_hash}),
        });
        return;
    }
    let verified = cert_public_key
        .ok_or_else(|| "no certificate key".to_string())
        .and_then(|pk| {
            room::verify(org, &pk, &room.manifest.hash(), &a.signature)
                .map(|_| pk)
                .map_err(|e| e.to_string())
        });
    let pk = match verified {
        Ok(pk) => pk,
        Err(why) => {
            let _ = state.store.audit(Audit {
                actor: org.as_str(),
                action: "attestation_rejected",
                target: &a.room_id,
                details: serde_json::json!({"reason": why}),
            });
            return;
        }
    };
    let became_ready = update(state, &a.room_id, |r| {
        if !matches!(
            r.status,
            RoomStatus::Pending | RoomStatus::Ready | RoomStatus::Failed
        ) {
            return None;
        }
        let p = r.participants.iter_mut().find(|p| &p.organization == org)?;
        p.status = ParticipantStatus::Attested;
        p.attested_at = Some(now());
        p.signature = Some(a.signature.clone());
        p.public_key = Some(hex::encode(pk));
        p.invitation_delivered = true;
        let ready = r
            .participants
            .iter()
            .all(|p| p.status == ParticipantStatus::Attested);
        if ready && r.status == RoomStatus::Pending {
            r.status = RoomStatus::Ready;
        }
        Some((
            ready,
            "room_attested",
            serde_json::json!({"organization": org, "signature": a.signature}),
        ))
    });
    if let Ok(Some((room, true))) = became_ready
        && room.origin_run.is_some()
        && room.status == RoomStatus::Ready
    {
        let _ = start_execution(state, &room.id, "system");
    }
}

/// Records a decline or a withdrawal.
pub fn on_declined(
    state: &CoordState,
    org: &OrgId,
    room_id: &str,
    status: ParticipantStatus,
    reason: Option<String>,
) {
    let _ = update(state, room_id, |r| {
        if !matches!(
            r.status,
            RoomStatus::Pending | RoomStatus::Ready | RoomStatus::Failed
        ) {
            return None;
        }
        let p = r.participants.iter_mut().find(|p| &p.organization == org)?;
        p.status = status;
        p.signature = None;
        p.reason = reason.clone();
        if r.status == RoomStatus::Ready {
            r.status = RoomStatus::Pending;
        }
        let action = if status == ParticipantStatus::Declined {
            "room_declined"
        } else {
            "room_withdrawn"
        };
        Some((
            (),
            action,
            serde_json::json!({"organization": org, "reason": reason}),
        ))
    });
}

/// Why a room cannot execute now.
#[derive(Debug)]
pub enum ExecuteError {
    /// No such room.
    Unknown,
    /// Not ready: the state and who has not attested.
    NotReady(RoomStatus, Vec<OrgId>),
    /// Store failure.
    Store(StoreError),
}

/// Moves a ready (or failed) room to `executing` and starts it.
pub fn start_execution(
    state: &Arc<CoordState>,
    room_id: &str,
    actor: &str,
) -> Result<Room, ExecuteError> {
    let _guard = state.rooms_lock.lock().unwrap_or_else(|e| e.into_inner());
    let mut room = load(state, room_id)
        .map_err(ExecuteError::Store)?
        .ok_or(ExecuteError::Unknown)?;
    let all_attested = room
        .participants
        .iter()
        .all(|p| p.status == ParticipantStatus::Attested);
    if !matches!(room.status, RoomStatus::Ready | RoomStatus::Failed) || !all_attested {
        return Err(ExecuteError::NotReady(room.status, room.waiting_for()));
    }
    room.status = RoomStatus::Executing;
    room.executed_at = Some(now());
    room.error_message = None;
    room.error_code = None;
    save(state, &room, actor, "room_executing", serde_json::json!({}))
        .map_err(ExecuteError::Store)?;
    drop(_guard);
    let (s, id) = (state.clone(), room.id.clone());
    state.tasks.spawn(async move { execute(s, id).await });
    Ok(room)
}

async fn execute(state: Arc<CoordState>, room_id: String) {
    let started = Instant::now();
    let Ok(Some(room)) = load(&state, &room_id) else {
        return;
    };
    let outcome = run_parties(&state, &room).await;
    state.metrics.room_executed(
        if outcome.is_ok() {
            metrics::Outcome::Completed
        } else {
            metrics::Outcome::Failed
        },
        started.elapsed().as_secs_f64(),
    );
    let elapsed = started.elapsed().as_secs_f64() * 1000.0;
    let finished = update(&state, &room_id, |r| {
        r.execution_time_ms = Some(elapsed);
        let action = match &outcome {
            Ok((table, proof)) => {
                r.status = RoomStatus::Completed;
                r.result = Some(table.clone());
                r.proof_artifacts = proof.clone();
                "room_completed"
            }
            Err((code, message)) => {
                r.status = RoomStatus::Failed;
                r.result = None;
                r.error_code = Some(code.clone());
                r.error_message = Some(message.clone());
                "room_failed"
            }
        };
        Some((
            (),
            action,
            serde_json::json!({"error": r.error_message, "execution_time_ms": elapsed}),
        ))
    });
    if let Ok(Some((room, ()))) = finished
        && let Some(run_id) = &room.origin_run
    {
        crate::runs::finish_from_room(&state, run_id, &room).await;
    }
    let _ = state.room_done.send(room_id);
}

type Outcome = Result<(Table, serde_json::Value), (String, String)>;

async fn run_parties(state: &Arc<CoordState>, room: &Room) -> Outcome {
    let m = &room.manifest;
    if m.expired(time::OffsetDateTime::now_utc()) {
        return Err((
            "room_expired".into(),
            format!("room {} expired at {}", room.id, m.expires_at),
        ));
    }
    let schema = room.schema(state).ok_or_else(|| {
        (
            "unknown_dataset".to_string(),
            "the room's dataset is no longer in the catalog".to_string(),
        )
    })?;
    let mut peers = Vec::new();
    let mut offline = Vec::new();
    for org in &m.participants {
        match state.nodes.info(org).and_then(|i| i.peer_addr) {
            Some(addr) => peers.push(PeerAddr {
                org: org.clone(),
                addr,
            }),
            None => offline.push(org.to_string()),
        }
    }
    if !offline.is_empty() {
        return Err((
            "party_offline".into(),
            format!(
                "party {} is offline; nothing was computed; execute again when it is back",
                offline.join(", ")
            ),
        ));
    }
    let attestations: Vec<Attestation> = room
        .participants
        .iter()
        .map(|p| Attestation {
            room_id: room.id.clone(),
            org: p.organization.clone(),
            manifest_hash: room.manifest_hash.clone(),
            signature: p.signature.clone().unwrap_or_default(),
        })
        .collect();
    let timeout = Duration::from_millis(m.params.deadline_ms) + Duration::from_secs(5);
    let execution_id = uuid::Uuid::new_v4().to_string();
    let calls = m.participants.iter().map(|org| {
        let req = Request::Mpc(MpcRequest::Execute {
            manifest: m.clone(),
            attestations: attestations.clone(),
            peers: peers.clone(),
            execution_id: execution_id.clone(),
        });
        let state = state.clone();
        let org = org.clone();
        async move {
            let r = state.nodes.call(&org, &req, timeout).await;
            (org, r)
        }
    });
    // The first party that fails ends the room at once: the others would only wait for its shares.
    let mut pending: futures::stream::FuturesUnordered<_> = calls.collect();
    let layout = mpc::layout(&m.plan, &schema, &m.params)
        .map_err(|e| (e.code().to_string(), e.to_string()))?;
    let len = layout.len();
    let mut partials = Vec::new();
    let mut noises = Vec::new();
    let mut dropped = Vec::new();
    let mut lost = false;
    let mut refused = Vec::new();
    let mut timings = serde_json::Map::new();
    while let Some((org, r)) = futures::StreamExt::next(&mut pending).await {
        let failed_before = dropped.len() + refused.len();
        match r {
            Ok(Response::Mpc(MpcResponse::Partial {
                partial,
                compute_ms,
                exchange_ms,
                noise,
                ..
            })) if partial.len() == len => {
                if m.params.release == ReleaseMode::Dp {
                    match noise {
                        Some(n) if n.scales.len() == layout.components() => {
                            noises.push((org.clone(), n))
                        }
                        // A dp total is released only if every party says it noised its input.
                        _ => refused.push(format!(
                            "{org}: its partial sum came without the noise report a dp room needs"
                        )),
                    }
                }
                timings.insert(
                    org.to_string(),
                    serde_json::json!({"compute_ms": compute_ms, "exchange_ms": exchange_ms}),
                );
                partials.push(partial);
            }
            Ok(Response::Refused(e)) => {
                state.metrics.refusal(m.backend, &e.code);
                refused.push(format!("{org}: {} ({})", e.message, e.code))
            }
            Ok(other) => refused.push(format!(
                "{org}: unexpected answer {}",
                short(&format!("{other:?}"))
            )),
            Err(crate::nodes::CallError::Stopping(_)) => {
                return Err((
                    "coordinator_stopped".into(),
                    "the coordinator was stopped during execution; no result was released; execute the room again".into(),
                ));
            }
            Err(e) => {
                lost |= !matches!(
                    e,
                    crate::nodes::CallError::Timeout(..) | crate::nodes::CallError::Transport(..)
                );
                dropped.push(format!("{org} ({e})"))
            }
        }
        if dropped.len() + refused.len() > failed_before {
            break;
        }
    }
    drop(pending);
    if !dropped.is_empty() || !refused.is_empty() {
        // Nothing partial is released: without every partial sum the total is meaningless.
        let mut msg = String::new();
        if !dropped.is_empty() {
            msg.push_str(&format!(
                "party {} failed during execution",
                dropped.join(", ")
            ));
        }
        if !refused.is_empty() {
            if !msg.is_empty() {
                msg.push_str("; ");
            }
            msg.push_str(&format!("refused: {}", refused.join("; ")));
        }
        let code = if dropped.is_empty() {
            "party_refused"
        } else if lost {
            // Its connection is gone: died, cut off or shut down.
            "party_offline"
        } else {
            "party_failed"
        };
        return Err((
            code.into(),
            format!("{msg}; no result was released; the room can be executed again"),
        ));
    }
    let total = shares::combine(len, partials.iter().map(Vec::as_slice));
    let decoded = mpc::decode_total(&m.plan, &schema, &m.params, &total)
        .map_err(|e| ("mpc_decode".to_string(), e.to_string()))?;
    let mut proof = serde_json::json!({
        "protocol": "additive secret sharing over Z_2^64",
        "security": "semi-honest, non-colluding parties",
        "release": m.params.release,
        "min_group_size": m.params.min_group_size,
        "suppressed_groups": decoded.suppressed_groups,
        "suppression": "coordinator-enforced: groups whose decoded row count (noisy in a dp room) is below min_group_size are left out of the result",
        "parties": m.participants,
        "vector_length": len,
        "shares_exchanged": m.participants.len() * (m.participants.len().saturating_sub(1)),
        "coordinator_received": "one partial sum per party",
        "manifest_hash": room.manifest_hash,
        "fixed_point_decimals": m.params.fixed_point_decimals,
        "party_timings": timings,
    });
    if m.params.release == ReleaseMode::Dp {
        proof["dp"] = dp_proof(&layout, &noises);
        for (org, n) in &noises {
            state
                .metrics
                .budget_spent(&format!("{org}.{}", m.plan.dataset), n.epsilon, 0.0);
        }
    }
    Ok((decoded.table, proof))
}

/// What a dp room's total carries: every party's ε and scales, and per component the summed
/// noise and a conservative 95 % interval.
fn dp_proof(layout: &mpc::Layout, noises: &[(OrgId, mpc::noise::PartyNoise)]) -> serde_json::Value {
    let reports: Vec<&mpc::noise::PartyNoise> = noises.iter().map(|(_, n)| n).collect();
    let names = layout.component_names();
    serde_json::json!({
        "mechanism": "discrete Laplace (OpenDP), drawn by each party for its own vector before it is split into shares; each party's input is protected by its own noise even if every other party and the coordinator collude",
        "per_key": "one row changes one key's components; keys compose in parallel, and each party splits its ε evenly over a key's components",
        "parties": noises.iter().map(|(org, n)| serde_json::json!({
            "organization": org,
            "epsilon": n.epsilon,
            "scales": names.iter().enumerate().map(|(c, name)| serde_json::json!({
                "component": name,
                "scale": n.scales.get(c).copied().unwrap_or(0.0) / layout.unit(c),
                "sensitivity": n.sensitivities.get(c).copied().unwrap_or(0) as f64 / layout.unit(c),
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "noise": mpc::noise::total_noise(layout, &reports),
        "confidence_interval": format!(
            "95 %, conservative, per released value (in the answer's units): by a union bound over the {} parties, each party's noise is within its discrete Laplace half-width at alpha = 0.05/{} (OpenDP), and the half-widths are summed; an AVG's interval follows from its .sum and .count components",
            noises.len(), noises.len()
        ),
    })
}

fn short(s: &str) -> String {
    s.chars().take(200).collect()
}

/// Cancels a room that has not executed.
pub fn cancel(state: &CoordState, room_id: &str, actor: &str) -> Result<Option<Room>, StoreError> {
    Ok(update(state, room_id, |r| {
        if matches!(
            r.status,
            RoomStatus::Executing | RoomStatus::Completed | RoomStatus::Cancelled
        ) {
            return None;
        }
        r.status = RoomStatus::Cancelled;
        Some(((), "room_cancelled", serde_json::json!({"by": actor})))
    })?
    .map(|(r, _)| r))
}

/// What a new room asks for (validated by [`create`]).
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRoom {
    /// Name.
    pub name: String,
    /// Description.
    #[serde(default)]
    pub description: String,
    /// SQL over a dataset name every participant holds.
    pub query_text: String,
    /// Backend (only `mpc_backend`).
    #[serde(default)]
    pub backend: Option<String>,
    /// Participant organizations.
    #[schema(value_type = Vec<String>)]
    pub participants: Vec<OrgId>,
    /// Declared GROUP BY keys per column; defaults to the columns' declared public keys.
    #[serde(default)]
    pub group_keys: std::collections::BTreeMap<String, Vec<String>>,
    /// Decimal places for float columns (default 2).
    #[serde(default)]
    pub fixed_point_decimals: Option<u32>,
    /// Share-exchange deadline in ms (default 30 000).
    #[serde(default)]
    pub deadline_ms: Option<u64>,
    /// Hours until the manifest expires (default 24).
    #[serde(default)]
    pub expires_in_hours: Option<u64>,
    /// `dp` (default: every party adds noise for its own ε) or `exact` (only where every
    /// participant's owner opted in).
    #[serde(default)]
    pub release: Option<String>,
    /// ε every participant spends in a `dp` room (unless `participant_epsilon` names it).
    #[serde(default)]
    pub epsilon: Option<f64>,
    /// ε per participant organization in a `dp` room, e.g. `{"hospital-a": 0.5}`.
    #[serde(default)]
    pub participant_epsilon: std::collections::BTreeMap<String, f64>,
    /// Groups whose (noisy) row count is below this are suppressed (default 10).
    #[serde(default)]
    pub min_group_size: Option<u64>,
}

/// The default minimum group size of a room (the nodes' default policy).
pub const DEFAULT_MIN_GROUP_SIZE: u64 = 10;

/// ε values in a manifest are kept to six decimals, so their JSON text parses back to exactly
/// the same number on every node (the manifest hash depends on it).
fn canonical_epsilon(e: f64) -> f64 {
    (e * 1e6).round() / 1e6
}

/// The release fields of a new room: mode, per-party ε, minimum group size.
fn release_params(
    state: &CoordState,
    input: &NewRoom,
    participants: &[OrgId],
    table: &str,
) -> Result<(ReleaseMode, Vec<room::PartyEpsilon>, u64), CreateError> {
    let release = match input.release.as_deref() {
        None => ReleaseMode::Dp,
        Some(s) => match ReleaseMode::parse(s) {
            Some(m @ (ReleaseMode::Dp | ReleaseMode::Exact)) => m,
            _ => {
                return Err((
                    "invalid_release",
                    format!("release must be \"dp\" or \"exact\", got {s:?}"),
                ));
            }
        },
    };
    let min_group_size = input.min_group_size.unwrap_or(DEFAULT_MIN_GROUP_SIZE);
    for o in participants {
        let mode = state
            .dataset(&format!("{o}.{table}"))
            .map(|d| d.release.get(prism_common::backend::BackendId::MpcBackend));
        match mode {
            Some(ReleaseMode::Off) => {
                return Err((
                    "release_mode",
                    format!(
                        "{o} does not serve mpc_backend for {table}: its owner's release mode is off"
                    ),
                ));
            }
            Some(ReleaseMode::Dp) if release == ReleaseMode::Exact => {
                return Err((
                    "release_mode",
                    format!(
                        "{o} releases mpc_backend answers over {table} only under dp (its owner has not opted in to exact); open the room with release dp and an epsilon"
                    ),
                ));
            }
            _ => {}
        }
    }
    if let Some(o) = input
        .participant_epsilon
        .keys()
        .find(|o| !participants.iter().any(|p| p.as_str() == o.as_str()))
    {
        return Err((
            "invalid_epsilon",
            format!("participant_epsilon names {o}, which is not a participant of the room"),
        ));
    }
    if release == ReleaseMode::Exact {
        if input.epsilon.is_some() || !input.participant_epsilon.is_empty() {
            return Err((
                "invalid_epsilon",
                "an exact room spends no ε; drop epsilon / participant_epsilon or use release dp"
                    .into(),
            ));
        }
        return Ok((release, Vec::new(), min_group_size));
    }
    let mut epsilon = Vec::new();
    for o in participants {
        let e = input
            .participant_epsilon
            .get(o.as_str())
            .copied()
            .or(input.epsilon)
            .ok_or_else(|| {
                (
                    "epsilon_required",
                    format!(
                        "a dp room needs the ε each participant spends: give \"epsilon\" (for every participant) or \"participant_epsilon\" (per organization); {o} has none"
                    ),
                )
            })?;
        let e = canonical_epsilon(e);
        if !(e.is_finite() && e > 0.0) {
            return Err((
                "invalid_epsilon",
                format!("the ε for {o} must be a finite number ≥ 0.000001, got {e}"),
            ));
        }
        epsilon.push(room::PartyEpsilon {
            org: o.clone(),
            epsilon: e,
        });
    }
    Ok((release, epsilon, min_group_size))
}

/// Why a room cannot be created: a stable code and a message.
pub type CreateError = (&'static str, String);

/// Validates a new room and builds it (not yet saved).
pub fn build(
    state: &CoordState,
    input: NewRoom,
    created_by: &str,
    origin_run: Option<String>,
) -> Result<Room, CreateError> {
    use prism_common::backend::BackendId;
    let backend = match input.backend.as_deref() {
        None | Some("mpc_backend") => BackendId::MpcBackend,
        Some(other) => {
            return Err((
                "backend_unsupported",
                format!("data rooms run mpc_backend; {other} answers single-dataset queries"),
            ));
        }
    };
    let mut participants = input.participants.clone();
    participants.sort();
    participants.dedup();
    if participants.len() < 2 || participants.len() != input.participants.len() {
        return Err((
            "invalid_participants",
            "a room needs at least two distinct participant organizations".into(),
        ));
    }
    if let Some(o) = participants.iter().find(|o| !state.nodes.is_member(o)) {
        return Err((
            "invalid_participants",
            format!("organization {o} is not a member of this federation"),
        ));
    }
    let table = prism_common::sql::table_name(&input.query_text)
        .map_err(|e| (e.code(), e.to_string()))?
        .to_lowercase();
    let datasets: Vec<_> = participants
        .iter()
        .map(|o| (o, state.dataset(&format!("{o}.{table}"))))
        .collect();
    if let Some((o, _)) = datasets.iter().find(|(_, d)| d.is_none()) {
        return Err((
            "unknown_dataset",
            format!("organization {o} holds no dataset named {table}; every participant must"),
        ));
    }
    let first = datasets[0]
        .1
        .clone()
        .ok_or(("unknown_dataset", table.clone()))?;
    let schema = DatasetSchema {
        name: first.name.clone(),
        columns: first.columns.clone(),
    };
    let plan = prism_common::sql::plan_query(&input.query_text, &schema)
        .map_err(|e| (e.code(), e.to_string()))?;
    prism_common::backend::check_supported(backend, &plan)
        .map_err(|m| ("backend_unsupported", m))?;
    for (o, d) in &datasets[1..] {
        let Some(d) = d else { continue };
        for c in &schema.columns {
            if !d.columns.iter().any(|x| x.name == c.name && x.ty == c.ty) {
                return Err((
                    "schema_mismatch",
                    format!(
                        "{o}.{table} has no {} column {}; participants' schemas must match",
                        c.ty, c.name
                    ),
                ));
            }
        }
    }
    let mut group_keys = Vec::new();
    for g in &plan.group_by {
        let keys = input
            .group_keys
            .get(g)
            .cloned()
            .or_else(|| schema.column(g).and_then(|c| c.public_keys.clone()));
        match keys {
            Some(k) if !k.is_empty() => group_keys.push(k),
            _ => {
                return Err((
                    "group_keys_required",
                    format!(
                        "GROUP BY {g}: declare its keys in group_keys (e.g. {{\"{g}\": [\"…\"]}}); only declared keys are computed"
                    ),
                ));
            }
        }
    }
    let (release, epsilon, min_group_size) = release_params(state, &input, &participants, &table)?;
    let params = room::RoomParams {
        fixed_point_decimals: input.fixed_point_decimals.unwrap_or(2).min(9),
        group_keys,
        deadline_ms: input.deadline_ms.unwrap_or(30_000).clamp(100, 600_000),
        release,
        epsilon,
        min_group_size,
    };
    mpc::layout(&plan, &schema, &params).map_err(|e| (e.code(), e.to_string()))?;
    let id = uuid::Uuid::new_v4().to_string();
    let expires = time::OffsetDateTime::now_utc()
        + time::Duration::hours(input.expires_in_hours.unwrap_or(24).clamp(1, 24 * 30) as i64);
    let manifest = Manifest {
        version: 1,
        room_id: id.clone(),
        query_text: input.query_text.clone(),
        plan,
        backend,
        participants: participants.clone(),
        params,
        expires_at: expires
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
    };
    Ok(Room {
        id,
        name: input.name,
        description: input.description,
        query_text: input.query_text,
        backend,
        participants: participants
            .into_iter()
            .map(|organization| Participant {
                organization,
                status: ParticipantStatus::Invited,
                attested_at: None,
                signature: None,
                public_key: None,
                reason: None,
                invitation_delivered: false,
            })
            .collect(),
        manifest_hash: manifest.hash_hex(),
        manifest,
        status: RoomStatus::Pending,
        result: None,
        error_message: None,
        error_code: None,
        proof_artifacts: serde_json::json!({}),
        created_by: created_by.into(),
        created_at: now(),
        executed_at: None,
        execution_time_ms: None,
        origin_run,
    })
}

/// Saves a new room and sends its invitations.
pub fn open(state: &Arc<CoordState>, room: &Room, actor: &str) -> Result<(), StoreError> {
    save(
        state,
        room,
        actor,
        "room_created",
        serde_json::json!({"name": room.name, "participants": room.manifest.participants, "manifest_hash": room.manifest_hash}),
    )?;
    let (s, id) = (state.clone(), room.id.clone());
    state
        .tasks
        .spawn(async move { deliver_invitations(&s, &id).await });
    Ok(())
}
