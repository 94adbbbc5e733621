//! Executing a ready room: every participant is sent the manifest, everyone's attestations
//! and the peers' addresses; the nodes exchange shares among themselves and each answers with
//! one partial sum, whose total is decoded here. The first party that fails ends the
//! execution: nothing partial is released.

use std::sync::Arc;
use std::time::Duration;

use prism_common::identity::OrgId;
use prism_common::mpc;
use prism_common::refusal::RefusalCode;
use prism_common::release::ReleaseMode;
use prism_common::schema::DatasetSchema;
use prism_common::shares;
use prism_common::wire::{Attestation, MpcRequest, MpcResponse, PeerAddr, Request, Response};

use crate::CoordState;
use crate::model::{Room, RoomOutcome};
use crate::nodes::CallError;

/// Runs a room's parties and decodes their total.
pub async fn run_parties(state: &Arc<CoordState>, room: &Room) -> RoomOutcome {
    let m = &room.manifest;
    if m.expired(time::OffsetDateTime::now_utc()) {
        return Err((
            "room_expired".into(),
            format!("room {} expired at {}", room.id, m.expires_at),
        ));
    }
    let schema = schema(state, room).ok_or_else(|| {
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
            RefusalCode::PartyOffline.into(),
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
    let execution_id = room.execution_id.clone().ok_or_else(|| {
        (
            "room_not_executing".to_string(),
            "the room has no execution attempt".to_string(),
        )
    })?;
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
    let mut answers = Vec::new();
    let mut dropped = Vec::new();
    let mut lost = false;
    let mut refused = Vec::new();
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
                let answer = PartyAnswer {
                    org,
                    partial,
                    compute_ms,
                    exchange_ms,
                    noise,
                };
                match answer.unfit(m.params.release, &layout) {
                    Some(why) => refused.push(why),
                    None => answers.push(answer),
                }
            }
            Ok(Response::Refused(e)) => {
                state.metrics.refusal(m.backend, &e.code);
                refused.push(format!("{org}: {} ({})", e.message, e.code))
            }
            Ok(other) => refused.push(format!(
                "{org}: unexpected answer {}",
                short(&format!("{other:?}"))
            )),
            Err(CallError::Stopping(_)) => {
                return Err((
                    "coordinator_stopped".into(),
                    "the coordinator was stopped during execution; no result was released; execute the room again".into(),
                ));
            }
            Err(e) => {
                lost |= !matches!(e, CallError::Timeout(..) | CallError::Transport(..));
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
            RefusalCode::PartyRefused
        } else if lost {
            // Its connection is gone: died, cut off or shut down.
            RefusalCode::PartyOffline
        } else {
            RefusalCode::PartyFailed
        };
        return Err((
            code.into(),
            format!("{msg}; no result was released; the room can be executed again"),
        ));
    }
    release(state, room, &schema, &layout, &answers)
}

/// One party's answer to an execution: its partial sum, its timings, and in a `dp` room the
/// report of the noise it added to its own vector.
pub struct PartyAnswer {
    /// The party.
    pub org: OrgId,
    /// Its partial sum over Z_2^64.
    pub partial: Vec<u64>,
    /// Local aggregation time, ms.
    pub compute_ms: f64,
    /// Share exchange time, ms.
    pub exchange_ms: f64,
    /// Its noise report (a `dp` room).
    pub noise: Option<mpc::noise::PartyNoise>,
}

impl PartyAnswer {
    /// Why this answer cannot be combined into a room of `layout` released under `release`.
    pub fn unfit(&self, release: ReleaseMode, layout: &mpc::Layout) -> Option<String> {
        let org = &self.org;
        if self.partial.len() != layout.len() {
            return Some(format!(
                "{org}: its partial sum has {} elements, the room's vector {}",
                self.partial.len(),
                layout.len()
            ));
        }
        let reported = self
            .noise
            .as_ref()
            .is_some_and(|n| n.scales.len() == layout.components());
        // A dp total is released only if every party says it noised its input.
        (release == ReleaseMode::Dp && !reported).then(|| {
            format!("{org}: its partial sum came without the noise report a dp room needs")
        })
    }
}

/// Combines every party's partial sum (each checked with [`PartyAnswer::unfit`]) and decodes
/// the room's total, with its proof.
pub fn release(
    state: &CoordState,
    room: &Room,
    schema: &DatasetSchema,
    layout: &mpc::Layout,
    answers: &[PartyAnswer],
) -> RoomOutcome {
    let m = &room.manifest;
    let len = layout.len();
    let unfit: Vec<String> = answers
        .iter()
        .filter_map(|a| a.unfit(m.params.release, layout))
        .collect();
    if !unfit.is_empty() || answers.len() != m.participants.len() {
        return Err((
            RefusalCode::PartyRefused.into(),
            format!(
                "refused: {}; no result was released; the room can be executed again",
                if unfit.is_empty() {
                    "not every party answered".to_string()
                } else {
                    unfit.join("; ")
                }
            ),
        ));
    }
    let timings: serde_json::Map<String, serde_json::Value> = answers
        .iter()
        .map(|a| {
            (
                a.org.to_string(),
                serde_json::json!({"compute_ms": a.compute_ms, "exchange_ms": a.exchange_ms}),
            )
        })
        .collect();
    let noises: Vec<(OrgId, mpc::noise::PartyNoise)> = answers
        .iter()
        .filter_map(|a| a.noise.clone().map(|n| (a.org.clone(), n)))
        .collect();
    let total = shares::combine(len, answers.iter().map(|a| a.partial.as_slice()));
    let decoded = mpc::decode_total(&m.plan, schema, &m.params, &total)
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
        proof["dp"] = dp_proof(layout, &noises);
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
        "per_key": "one row changes one key's components; keys compose in parallel, and each party splits its ε evenly over a key's components; a party whose dataset declares a privacy unit bounds each unit to max_rows rows first and calibrates to one unit (its privacy_unit)",
        "parties": noises.iter().map(|(org, n)| serde_json::json!({
            "organization": org,
            "epsilon": n.epsilon,
            "privacy_unit": n.privacy_unit,
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

/// The room's dataset schema, as the catalog has it for its first participant.
pub fn schema(state: &CoordState, room: &Room) -> Option<DatasetSchema> {
    let first = room.participants.first()?;
    state
        .dataset(&format!(
            "{}.{}",
            first.organization, room.manifest.plan.dataset
        ))
        .map(|d| d.schema())
}
