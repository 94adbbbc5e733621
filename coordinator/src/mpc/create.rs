//! A new data room: validating what the creator asked for against the catalog and the
//! participants' release modes, and building the manifest every participant will attest to.

use prism_common::backend::BackendId;
use prism_common::identity::OrgId;
use prism_common::mpc;
use prism_common::release::ReleaseMode;
use prism_common::room::{self, Manifest};
use serde::Deserialize;

use crate::CoordState;
use crate::model::{Participant, ParticipantStatus, Room, RoomStatus, now};

/// What a new room asks for (validated by [`build`]).
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
            .map(|d| d.release.get(BackendId::MpcBackend));
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
    let schema = first.schema();
    let plan = prism_common::sql::plan_query(&input.query_text, &schema)
        .map_err(|e| (e.code(), e.to_string()))?;
    prism_common::support::check_supported(backend, &plan)
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
        execution_id: None,
    })
}
