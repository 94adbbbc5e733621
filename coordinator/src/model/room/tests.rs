use super::*;
use prism_common::backend::BackendId;
use prism_common::plan::Plan;
use prism_common::room::{Manifest, RoomParams};

fn org(s: &str) -> OrgId {
    OrgId::new(s).expect("org")
}

fn room(parties: &[&str]) -> Room {
    let participants: Vec<OrgId> = parties.iter().map(|p| org(p)).collect();
    let manifest = Manifest {
        version: 1,
        room_id: "r".into(),
        query_text: "SELECT COUNT(*) FROM patients".into(),
        plan: Plan {
            dataset: "patients".into(),
            outputs: vec![],
            filter: None,
            group_by: vec![],
            having_min_count: None,
        },
        backend: BackendId::MpcBackend,
        participants: participants.clone(),
        params: RoomParams {
            fixed_point_decimals: 2,
            group_keys: vec![],
            deadline_ms: 30_000,
            release: prism_common::release::ReleaseMode::Dp,
            epsilon: vec![],
            min_group_size: 10,
        },
        expires_at: "2030-01-01T00:00:00Z".into(),
    };
    Room {
        id: "r".into(),
        name: "n".into(),
        description: String::new(),
        query_text: manifest.query_text.clone(),
        backend: BackendId::MpcBackend,
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
        created_by: "u".into(),
        created_at: "t".into(),
        executed_at: None,
        execution_time_ms: None,
        origin_run: None,
        execution_id: None,
    }
}

fn attest(r: &mut Room, o: &str) -> Option<bool> {
    r.attest(&org(o), "sig", "pk".into(), "t".into())
}

#[test]
fn a_room_is_ready_only_when_every_participant_attested() {
    let mut r = room(&["hospital-a", "hospital-b"]);
    assert_eq!(attest(&mut r, "hospital-a"), Some(false));
    assert_eq!(r.status, RoomStatus::Pending);
    assert_eq!(r.waiting_for(), vec![org("hospital-b")]);
    assert!(r.begin_execution("t".into()).is_err());
    assert_eq!(attest(&mut r, "hospital-b"), Some(true));
    assert_eq!(r.status, RoomStatus::Ready);
    assert!(r.waiting_for().is_empty());
    assert!(r.participants.iter().all(|p| p.invitation_delivered));
}

#[test]
fn a_stranger_cannot_attest() {
    let mut r = room(&["hospital-a", "hospital-b"]);
    assert_eq!(attest(&mut r, "hospital-z"), None);
    assert_eq!(r.waiting_for().len(), 2);
}

#[test]
fn a_withdrawal_sends_a_ready_room_back_to_pending() {
    let mut r = room(&["hospital-a", "hospital-b"]);
    attest(&mut r, "hospital-a");
    attest(&mut r, "hospital-b");
    assert!(r.decline(&org("hospital-b"), ParticipantStatus::Withdrawn, None));
    assert_eq!(r.status, RoomStatus::Pending);
    let b = &r.participants[1];
    assert_eq!(b.status, ParticipantStatus::Withdrawn);
    assert_eq!(b.signature, None);
    let (status, waiting) = r.begin_execution("t".into()).expect_err("not ready");
    assert_eq!(status, RoomStatus::Pending);
    assert_eq!(waiting, vec![org("hospital-b")]);
}

#[test]
fn execution_runs_once_and_a_failure_can_be_retried() {
    let mut r = room(&["hospital-a", "hospital-b"]);
    attest(&mut r, "hospital-a");
    attest(&mut r, "hospital-b");
    r.begin_execution("t1".into()).expect("ready");
    assert_eq!(r.status, RoomStatus::Executing);
    let first = r.execution_id.clone().expect("an execution id");
    // Executing, and not awaiting collection after a restart: nothing to collect.
    assert!(!r.collectible(&first));
    // Neither attestations nor declines nor a second execution touch an executing room.
    assert!(r.begin_execution("t2".into()).is_err());
    assert_eq!(attest(&mut r, "hospital-a"), None);
    assert!(!r.decline(&org("hospital-a"), ParticipantStatus::Declined, None));
    assert!(!r.cancel("admin"));
    let failed: RoomOutcome = Err(("party_offline".into(), "gone".into()));
    assert_eq!(r.finish(&failed, 5.0), "room_failed");
    assert_eq!(r.status, RoomStatus::Failed);
    assert_eq!(r.error_code.as_deref(), Some("party_offline"));
    assert_eq!(r.result, None);
    // A party went away: the partial sums the parties charged may still complete it.
    assert!(r.collectible(&first));
    assert!(!r.collectible("another execution"));
    r.begin_execution("t3".into())
        .expect("a failed room may run again");
    assert_eq!(r.error_code, None);
    let second = r.execution_id.clone().expect("an execution id");
    assert_ne!(first, second, "every execution has its own id");
    assert!(
        !r.collectible(&first),
        "only the latest execution is collected"
    );
    let table = Table {
        columns: vec!["count".into()],
        rows: vec![],
    };
    let done: RoomOutcome = Ok((table.clone(), serde_json::json!({"p": 1})));
    assert_eq!(r.finish(&done, 7.0), "room_completed");
    assert_eq!(r.status, RoomStatus::Completed);
    assert_eq!(r.result, Some(table));
    assert_eq!(r.execution_time_ms, Some(7.0));
    assert!(
        !r.collectible(&second),
        "a completed room is never collected again"
    );
    assert!(!r.cancel("admin"));
    assert!(r.begin_execution("t4".into()).is_err());
}

#[test]
fn only_a_room_that_has_not_executed_can_be_cancelled() {
    let mut r = room(&["hospital-a", "hospital-b"]);
    assert!(r.cancel("admin"));
    assert_eq!(r.status, RoomStatus::Cancelled);
    assert!(!r.cancel("admin"));
    assert_eq!(attest(&mut r, "hospital-a"), None);
}

#[test]
fn a_decline_ends_the_room_naming_who_and_why() {
    let mut r = room(&["hospital-a", "hospital-b"]);
    attest(&mut r, "hospital-a");
    assert!(r.decline(
        &org("hospital-b"),
        ParticipantStatus::Declined,
        Some("not this quarter".into())
    ));
    assert_eq!(r.status, RoomStatus::Declined);
    assert_eq!(r.error_code.as_deref(), Some("room_declined"));
    let msg = r.error_message.clone().unwrap_or_default();
    assert!(
        msg.contains("hospital-b") && msg.contains("not this quarter"),
        "{msg}"
    );
    // Terminal: nothing moves it again.
    assert_eq!(attest(&mut r, "hospital-b"), None);
    assert!(r.begin_execution("t".into()).is_err());
    assert!(!r.cancel("admin"));
}

#[test]
fn only_the_latest_execution_of_a_dp_room_lost_to_a_connection_is_collected() {
    let ready = || {
        let mut r = room(&["hospital-a", "hospital-b"]);
        attest(&mut r, "hospital-a");
        attest(&mut r, "hospital-b");
        r.begin_execution("t".into()).expect("ready");
        r
    };
    // A refusal, a timeout or an expiry is not collectible: no party holds a charged total.
    for code in [
        "party_refused",
        "party_timeout",
        "room_expired",
        "mpc_decode",
    ] {
        let mut r = ready();
        let eid = r.execution_id.clone().expect("id");
        r.finish(&Err((code.into(), "no".into())), 1.0);
        assert!(!r.collectible(&eid), "{code}");
    }
    for code in ROOM_COLLECTIBLE {
        let mut r = ready();
        let eid = r.execution_id.clone().expect("id");
        r.finish(&Err((code.to_string(), "gone".into())), 1.0);
        assert!(r.collectible(&eid), "{code}");
    }
    // An exact room's parties charge nothing and hold nothing.
    let mut r = ready();
    r.manifest.params.release = prism_common::release::ReleaseMode::Exact;
    let eid = r.execution_id.clone().expect("id");
    r.finish(&Err(("party_offline".into(), "gone".into())), 1.0);
    assert!(!r.collectible(&eid));
    // Left executing by a restart: collectible while it awaits, and executing it again starts
    // a new attempt that is not (until it is interrupted in turn).
    let mut r = ready();
    let eid = r.execution_id.clone().expect("id");
    assert!(!r.awaiting_collection() && !r.collectible(&eid));
    r.proof_artifacts = serde_json::json!({"awaiting_collection": "restarted"});
    assert!(r.awaiting_collection() && r.collectible(&eid));
    r.begin_execution("t2".into())
        .expect("a room awaiting collection may be executed again");
    let again = r.execution_id.clone().expect("id");
    assert_ne!(again, eid);
    assert!(!r.awaiting_collection());
    assert!(!r.collectible(&eid) && !r.collectible(&again));
}
