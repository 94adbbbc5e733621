//! The release gate of a data room on this node: which rooms it may attest and execute, and in
//! a `dp` room the party's own noise and its charge to the dataset's ledger.
//!
//! - A `dp` room must give this organization an ε in its manifest: finite, > 0, within the
//!   policy's `max_epsilon_per_query` and what is left of the dataset's budget. At execution the
//!   ε is reserved before the local vector is computed (so before any share leaves), committed
//!   before the partial sum is sent to the coordinator (from then on a release is possible) and
//!   rolled back if the room fails before that. A node in `exact` mode may take part in a `dp`
//!   room.
//! - An `exact` room needs this node's effective mpc_backend mode for the dataset to be
//!   `exact` (the owner's opt-in), at most `max_group_keys` GROUP BY keys, no filtering or
//!   grouping on identifying columns, and a room minimum group size no smaller than the
//!   policy's; the coordinator suppresses the groups below it when it decodes the total.
//! - Every room's minimum group size must be at least the policy's `min_group_size`.

use prism_common::backend::BackendId;
use prism_common::mpc::noise::{self, PartyNoise};
use prism_common::mpc::{self, Layout};
use prism_common::release::ReleaseMode;
use prism_common::room::Manifest;
use prism_common::wire::ErrorBody;

use crate::NodeState;
use crate::policy::Admitted;

fn refuse(code: &str, message: impl Into<String>) -> ErrorBody {
    ErrorBody::new(code, message)
}

/// The ε this node spends on a `dp` room, checked against its policy and budget.
fn epsilon(state: &NodeState, m: &Manifest) -> Result<f64, ErrorBody> {
    let (org, room) = (&state.org, &m.room_id);
    let eps = m.params.epsilon_of(org).ok_or_else(|| {
        refuse(
            "epsilon_required",
            format!(
                "room {room} releases under dp but its manifest gives {org} no ε; open the room \
                 with an epsilon for {org} (\"epsilon\" or \"participant_epsilon\")"
            ),
        )
    })?;
    if !(eps.is_finite() && eps > 0.0) {
        return Err(refuse(
            "invalid_epsilon",
            format!("room {room}: the ε for {org} must be a finite number > 0, got {eps}"),
        ));
    }
    let limit = state.config.policy.max_epsilon_per_query;
    if eps > limit {
        return Err(refuse(
            "epsilon_exceeds_policy",
            format!("room {room}: ε {eps} for {org} exceeds its node's per-query limit of {limit}"),
        ));
    }
    let ds = &m.plan.dataset;
    let budget = state
        .store
        .budget(ds)
        .map_err(|e| refuse("node_store_error", e.to_string()))?;
    if budget.remaining_epsilon() < eps {
        return Err(refuse(
            "budget_exhausted",
            format!(
                "room {room}: dataset {ds} on {org} has ε {} left, the room needs {eps}",
                budget.remaining_epsilon()
            ),
        ));
    }
    Ok(eps)
}

/// Checks a room against this node's release policy (at attestation and at execution).
pub fn check(state: &NodeState, m: &Manifest, ds: &Admitted, l: &Layout) -> Result<(), ErrorBody> {
    let (org, room, name) = (&state.org, &m.room_id, &ds.schema().name);
    let mode = crate::policy::served_mode(state, BackendId::MpcBackend, name)?;
    let policy = &state.config.policy;
    if m.params.min_group_size < policy.min_group_size {
        return Err(refuse(
            "min_group_size",
            format!(
                "room {room} suppresses groups below {} rows; {org}'s policy needs at least {}",
                m.params.min_group_size, policy.min_group_size
            ),
        ));
    }
    match m.params.release {
        ReleaseMode::Dp => epsilon(state, m).map(|_| ()),
        ReleaseMode::Off => Err(refuse(
            "bad_request",
            format!("room {room} asks for release mode off"),
        )),
        ReleaseMode::Exact => {
            if mode != ReleaseMode::Exact {
                return Err(refuse(
                    "release_mode",
                    format!(
                        "room {room} asks for an exact total, but {org} releases mpc_backend \
                         answers over dataset {name} only under {mode} (its owner has not opted \
                         in to exact); open the room with release dp and an ε per participant"
                    ),
                ));
            }
            if l.key_count() > policy.max_group_keys {
                return Err(refuse(
                    "too_many_group_keys",
                    format!(
                        "room {room} declares {} GROUP BY keys; {org} releases at most {} in an \
                         exact room (max_group_keys)",
                        l.key_count(),
                        policy.max_group_keys
                    ),
                ));
            }
            let Admitted::Memory(ds) = ds else {
                return Err(refuse(
                    "source_unsupported",
                    format!(
                        "room {room} asks for an exact total, but {org}'s dataset {name} is a \
                         source queried by pushdown (its rows stay where they are): the node \
                         cannot check there that a grouped or filtered column does not single \
                         out rows; open the room with release dp"
                    ),
                ));
            };
            crate::policy::check_exact_columns(
                state,
                BackendId::MpcBackend,
                ds,
                crate::policy::filtered_columns(&m.plan),
            )
        }
    }
}

/// A `dp` room's reserved ε on this node's dataset, and the noise it paid for.
pub struct Charge {
    reservation: String,
    /// ε reserved.
    pub epsilon: f64,
    /// The noise added (reported with the partial sum).
    pub report: PartyNoise,
}

fn mpc_refusal(e: mpc::MpcError) -> ErrorBody {
    refuse(e.code(), e.to_string())
}

/// This party's vector for the room: exact in an exact room; in a `dp` room the ε is reserved
/// on the dataset's ledger first, then the vector is computed and this party's own noise
/// added (the reservation is released again if that fails). Blocking (store, compute); the
/// noise never leaves this function, only what it reports.
pub fn local_vector(
    state: &NodeState,
    m: &Manifest,
    ds: &Admitted,
    execution_id: &str,
) -> Result<(Vec<u64>, Option<Charge>), ErrorBody> {
    let compute = || exact_vector(m, ds);
    if m.params.release != ReleaseMode::Dp {
        return Ok((compute()?, None));
    }
    let eps = epsilon(state, m)?;
    let schema = ds.schema();
    let name = &schema.name;
    let l = mpc::layout(&m.plan, schema, &m.params).map_err(mpc_refusal)?;
    let own = noise::calibrate(&l, name, eps).map_err(mpc_refusal)?;
    let r = state
        .store
        .reserve(
            name,
            eps,
            0.0,
            &format!("room {}/{execution_id}", m.room_id),
        )
        .map_err(crate::policy::store_refusal)?;
    let charge = Charge {
        reservation: r.id,
        epsilon: eps,
        report: own.report.clone(),
    };
    let noisy = compute().and_then(|mut v| {
        own.add_to(&mut v, name).map_err(mpc_refusal)?;
        Ok(v)
    });
    match noisy {
        Ok(v) => Ok((v, Some(charge))),
        Err(e) => {
            rollback(state, &charge, m, &e.message);
            Err(e)
        }
    }
}

/// This party's exact local vector: computed over the rows in memory, or pushed down into the
/// database that holds them (one aggregate statement; only per-group aggregates come back).
/// Blocking: a database source is queried on the runtime from this blocking thread.
fn exact_vector(m: &Manifest, ds: &Admitted) -> Result<Vec<u64>, ErrorBody> {
    match ds {
        Admitted::Memory(d) => mpc::local_vector(&m.plan, d, &m.params).map_err(mpc_refusal),
        Admitted::Remote(r) => {
            let push = mpc::pushdown(&m.plan, &r.schema, &m.params).map_err(mpc_refusal)?;
            let groups = tokio::runtime::Handle::current()
                .block_on(r.aggregate(m.plan.filter.as_ref(), &push))
                .map_err(|e| {
                    refuse(
                        "source_unavailable",
                        format!(
                            "dataset {}: {e}; no share left this node and nothing was charged",
                            r.schema.name
                        ),
                    )
                })?;
            mpc::vector_from_groups(&m.plan, &r.schema, &m.params, &groups).map_err(mpc_refusal)
        }
    }
}

/// Commits the charge: called before the partial sum leaves. Blocking (store). The partial
/// sum is kept with the charge, in the same transaction, until the coordinator acknowledges
/// the execution `held.run_id` (`store/held.rs`): a coordinator that stops before it combines
/// the partial sums collects them when it is back, so the ε is never spent without a total.
pub fn commit(
    state: &NodeState,
    c: &Charge,
    m: &Manifest,
    held: prism_common::wire::HeldAnswer,
) -> Result<(), ErrorBody> {
    state
        .store
        .settle_holding(
            &c.reservation,
            Some((c.epsilon, 0.0)),
            "room partial sum sent",
            crate::provenance::merged(
                serde_json::json!({"backend": "mpc_backend", "room_id": m.room_id,
                                   "execution_id": held.run_id,
                                   "release": "dp", "scales": c.report.scales,
                                   "result": {"group_keys": m.params.key_count()}}),
                crate::provenance::of_room(state, m),
            ),
            Some(held),
        )
        .map_err(crate::policy::store_refusal)?;
    state.metrics.budget_spent(&m.plan.dataset, c.epsilon, 0.0);
    state.budget_changed();
    Ok(())
}

/// Releases the reservation of a room that failed before this node's partial sum left.
/// Blocking (store).
pub fn rollback(state: &NodeState, c: &Charge, m: &Manifest, why: &str) {
    let _ = state.store.settle(
        &c.reservation,
        None,
        "room failed before the partial sum left",
        serde_json::json!({"backend": "mpc_backend", "room_id": m.room_id, "why": why}),
    );
}
