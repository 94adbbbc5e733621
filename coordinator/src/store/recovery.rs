//! Restart recovery, all of it: what a previous process left in flight is ended here, with a
//! reason, before the coordinator serves anything.
//!
//! A run is committed before it is acknowledged, and its answer only after the node charged
//! it. A DP run left `pending` or `running` may have been charged by its node, which holds the
//! answer until the coordinator acknowledges it: the run stays `running`, awaiting collection
//! (`crate::collect`), and ends when its node reconnects. Other runs left in flight are failed,
//! never resumed. A room left `executing` failed the same way and can be executed again.

use prism_common::backend::BackendId;

use super::{Audit, ROOMS, RUNS, Store, StoreError};
use crate::model::{Room, RoomStatus, RunRecord, RunStatus, now};

/// What [`Store::recover`] ended.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Runs failed as `coordinator_restarted`.
    pub runs: Vec<String>,
    /// Rooms failed as `coordinator_restarted`.
    pub rooms: Vec<String>,
    /// DP runs left in flight: their answers are collected from their nodes.
    pub awaiting: Vec<String>,
}

/// What an awaiting run's record says while its node has not been asked yet.
pub const AWAITING_NOTE: &str = "the coordinator restarted while this run was in flight; its answer is collected \
     from the holding node when it reconnects (the node keeps every charged answer until the coordinator has recorded it)";

impl Store {
    /// Fails every run and room a previous process left in flight.
    pub fn recover(&self) -> Result<Recovered, StoreError> {
        let awaiting = self.await_collection()?;
        let runs = self.fail_unfinished_runs(
            "coordinator_restarted",
            "the coordinator stopped while this run was in flight, so its answer was lost; no node holds \
             a charged answer for it; execute the query again to retry",
        )?;
        let rooms = self.fail_interrupted_rooms()?;
        Ok(Recovered {
            runs,
            rooms,
            awaiting,
        })
    }

    /// Marks every unfinished DP run `running`, awaiting collection; returns their ids.
    fn await_collection(&self) -> Result<Vec<String>, StoreError> {
        let stale: Vec<RunRecord> = self
            .list(RUNS)?
            .into_iter()
            .filter(|r| !r.status.is_final() && r.backend_used == BackendId::DpSandbox)
            .collect();
        let mut ids = Vec::new();
        for mut run in stale {
            run.status = RunStatus::Running;
            run.proof_artifacts = serde_json::json!({"awaiting_collection": AWAITING_NOTE});
            let id = run.id.clone();
            self.put(
                RUNS,
                &id,
                &run,
                Some(Audit {
                    actor: "system",
                    action: "run_awaiting_collection",
                    target: &id,
                    details: serde_json::json!({"reason": "coordinator_restarted"}),
                }),
            )?;
            ids.push(id);
        }
        Ok(ids)
    }

    /// Fails every run that is not final with `code` and `message`; returns their ids.
    pub fn fail_unfinished_runs(
        &self,
        code: &str,
        message: &str,
    ) -> Result<Vec<String>, StoreError> {
        let stale: Vec<RunRecord> = self
            .list(RUNS)?
            .into_iter()
            .filter(|r| !r.status.is_final() && !awaiting_collection(r))
            .collect();
        let mut ids = Vec::new();
        for mut run in stale {
            run.status = RunStatus::Failed;
            run.error_code = Some(code.into());
            run.error_message = Some(message.into());
            run.finished_at = Some(now());
            let id = run.id.clone();
            self.put(
                RUNS,
                &id,
                &run,
                Some(Audit {
                    actor: "system",
                    action: "run_failed",
                    target: &id,
                    details: serde_json::json!({"reason": code}),
                }),
            )?;
            ids.push(id);
        }
        Ok(ids)
    }

    /// A room left `executing` by a stopped coordinator failed; it can be executed again.
    fn fail_interrupted_rooms(&self) -> Result<Vec<String>, StoreError> {
        let rooms: Vec<Room> = self.list(ROOMS)?;
        let mut ids = Vec::new();
        for mut r in rooms
            .into_iter()
            .filter(|r| r.status == RoomStatus::Executing)
        {
            r.fail(
                "coordinator_restarted",
                "the coordinator stopped during execution; no result was released; execute the room again",
            );
            self.put(
                ROOMS,
                &r.id,
                &r,
                Some(Audit {
                    actor: "system",
                    action: "room_failed",
                    target: &r.id,
                    details: serde_json::json!({"reason": "coordinator_restarted"}),
                }),
            )?;
            ids.push(r.id);
        }
        Ok(ids)
    }
}

/// Whether a run is awaiting collection after a restart.
pub fn awaiting_collection(run: &RunRecord) -> bool {
    run.status == RunStatus::Running && run.proof_artifacts.get("awaiting_collection").is_some()
}
