//! Restart recovery, all of it: what a previous process left in flight is ended here, with a
//! reason, before the coordinator serves anything.
//!
//! A run is committed before it is acknowledged, and its answer only after the node charged
//! it. A DP run left `pending` or `running` may have been charged by its node, which holds the
//! answer until the coordinator acknowledges it: the run stays `running`, awaiting collection
//! (`crate::collect`), and ends when its node reconnects; so does an HE run whose request had
//! left (its encoding is kept, `HE_PENDING`, so the key holder can read a collected encrypted
//! answer). A `dp` room left `executing` may have been charged by every party, each holding its
//! partial sum under the execution's id: it stays `executing`, awaiting collection
//! (`crate::mpc::collect`), and so does the `mpc_backend` run it answers. Other runs left in
//! flight are failed, never resumed; an `exact` room left `executing` fails the same way and can
//! be executed again.

use prism_common::backend::BackendId;

use super::{Audit, HE_PENDING, ROOMS, RUNS, Store, StoreError};
use crate::model::{Room, RoomStatus, RunRecord, RunStatus, now};

/// What [`Store::recover`] ended.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Runs failed as `coordinator_restarted`.
    pub runs: Vec<String>,
    /// Rooms failed as `coordinator_restarted`.
    pub rooms: Vec<String>,
    /// DP and HE runs left in flight: their answers are collected from their nodes.
    pub awaiting: Vec<String>,
    /// `dp` rooms left executing: their partial sums are collected from their parties.
    pub awaiting_rooms: Vec<String>,
}

/// What an awaiting room's record says while its parties have not all been asked.
pub const ROOM_AWAITING_NOTE: &str = "the coordinator restarted while this room was executing; every party keeps the partial \
     sum it charged until the coordinator has combined them, so the total is collected from the parties when they reconnect";

/// What an awaiting run's record says while its node has not been asked yet.
pub const AWAITING_NOTE: &str = "the coordinator restarted while this run was in flight; its answer is collected \
     from the holding node when it reconnects (the node keeps every charged answer until the coordinator has recorded it)";

impl Store {
    /// Ends every run and room a previous process left in flight: DP and HE runs await collection,
    /// other runs and rooms fail. One pass over the runs.
    pub fn recover(&self) -> Result<Recovered, StoreError> {
        let mut recovered = Recovered::default();
        (recovered.rooms, recovered.awaiting_rooms) = self.recover_rooms()?;
        for mut run in self
            .list(RUNS)?
            .into_iter()
            .filter(|r| !r.status.is_final())
        {
            // A DP run, or an HE run whose request may have left (its encoding was kept to
            // read the node's encrypted answer), may have been charged.
            let collectible = run.backend_used == BackendId::DpSandbox
                || (run.backend_used == BackendId::HeBackend
                    && self.get(HE_PENDING, &run.id)?.is_some());
            if collectible {
                if !awaiting_collection(&run) {
                    run.status = RunStatus::Running;
                    run.proof_artifacts = serde_json::json!({"awaiting_collection": AWAITING_NOTE});
                    self.put_run(&run, "run_awaiting_collection", "coordinator_restarted")?;
                }
                recovered.awaiting.push(run.id);
            } else if let Some(room) = run
                .proof_artifacts
                .get("room_id")
                .and_then(|r| r.as_str())
                .filter(|r| recovered.awaiting_rooms.iter().any(|a| a == r))
                .map(str::to_string)
            {
                // Its room awaits its parties' partial sums: the run ends with the room.
                if !awaiting_collection(&run) {
                    run.status = RunStatus::Running;
                    run.proof_artifacts = serde_json::json!({"room_id": room, "awaiting_collection": ROOM_AWAITING_NOTE});
                    self.put_run(&run, "run_awaiting_collection", "coordinator_restarted")?;
                }
            } else {
                fail(
                    &mut run,
                    "coordinator_restarted",
                    "the coordinator stopped while this run was in flight, so its answer was lost; no node holds \
                     a charged answer for it; execute the query again to retry",
                );
                self.put_run(&run, "run_failed", "coordinator_restarted")?;
                recovered.runs.push(run.id);
            }
        }
        Ok(recovered)
    }

    /// Fails every run that is not final, nor awaiting collection, with `code` and `message`;
    /// returns their ids.
    pub fn fail_unfinished_runs(
        &self,
        code: &str,
        message: &str,
    ) -> Result<Vec<String>, StoreError> {
        let mut ids = Vec::new();
        for mut run in self
            .list(RUNS)?
            .into_iter()
            .filter(|r| !r.status.is_final() && !awaiting_collection(r))
        {
            fail(&mut run, code, message);
            self.put_run(&run, "run_failed", code)?;
            ids.push(run.id);
        }
        Ok(ids)
    }

    fn put_run(&self, run: &RunRecord, action: &str, reason: &str) -> Result<(), StoreError> {
        self.put(
            RUNS,
            &run.id,
            run,
            Some(Audit {
                actor: "system",
                action,
                target: &run.id,
                details: serde_json::json!({"reason": reason}),
            }),
        )
    }

    fn put_room(
        &self,
        r: &Room,
        action: &str,
        details: serde_json::Value,
    ) -> Result<(), StoreError> {
        self.put(
            ROOMS,
            &r.id,
            r,
            Some(Audit {
                actor: "system",
                action,
                target: &r.id,
                details,
            }),
        )
    }

    /// A `dp` room left `executing` by a stopped coordinator awaits its parties' partial sums;
    /// another room left `executing` failed and can be executed again. Returns the failed and
    /// the awaiting rooms.
    fn recover_rooms(&self) -> Result<(Vec<String>, Vec<String>), StoreError> {
        let rooms: Vec<Room> = self.list(ROOMS)?;
        let (mut ids, mut awaiting) = (Vec::new(), Vec::new());
        for mut r in rooms
            .into_iter()
            .filter(|r| r.status == RoomStatus::Executing)
        {
            if r.manifest.params.release == prism_common::release::ReleaseMode::Dp
                && r.execution_id.is_some()
            {
                if !r.awaiting_collection() {
                    r.proof_artifacts =
                        serde_json::json!({"awaiting_collection": ROOM_AWAITING_NOTE});
                    let details = serde_json::json!({"reason": "coordinator_restarted",
                                                     "execution_id": r.execution_id});
                    self.put_room(&r, "room_awaiting_collection", details)?;
                }
                awaiting.push(r.id);
                continue;
            }
            r.fail(
                "coordinator_restarted",
                "the coordinator stopped during execution; no result was released; execute the room again",
            );
            let details = serde_json::json!({"reason": "coordinator_restarted"});
            self.put_room(&r, "room_failed", details)?;
            ids.push(r.id);
        }
        Ok((ids, awaiting))
    }
}

/// Whether a run is awaiting collection after a restart.
pub fn awaiting_collection(run: &RunRecord) -> bool {
    run.status == RunStatus::Running && run.proof_artifacts.get("awaiting_collection").is_some()
}

fn fail(run: &mut RunRecord, code: &str, message: &str) {
    run.status = RunStatus::Failed;
    run.error_code = Some(code.into());
    run.error_message = Some(message.into());
    run.finished_at = Some(now());
}
