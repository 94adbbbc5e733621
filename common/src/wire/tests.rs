use super::*;
use crate::backend::BackendId;
use crate::identity::OrgId;
use crate::plan::{AggFunc, Aggregate, Output};
use crate::plan::{Plan, Table};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::AsyncWriteExt;

async fn roundtrip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(msg: T) {
    let (mut a, mut b) = tokio::io::duplex(1 << 20);
    write_msg(&mut a, &msg).await.expect("write");
    let back: T = read_msg(&mut b, DEFAULT_MAX_FRAME).await.expect("read");
    assert_eq!(back, msg);
}

fn plan() -> Plan {
    Plan {
        dataset: "patients".into(),
        outputs: vec![Output::Aggregate(Aggregate {
            func: AggFunc::Count,
            column: None,
            weight: None,
            alias: "count".into(),
        })],
        filter: None,
        group_by: vec![],
        having_min_count: None,
    }
}

#[tokio::test]
async fn every_message_roundtrips() {
    let org = OrgId::new("hospital-a").expect("org");
    roundtrip(Hello {
        version: 1,
        org: org.clone(),
        software: "x".into(),
        peer_addr: Some("127.0.0.1:1".into()),
        he_keys: Some(vec!["k".into()]),
    })
    .await;
    roundtrip(HelloReply::Welcome {
        version: 1,
        software: "y".into(),
        members: vec![org.clone()],
    })
    .await;
    roundtrip(HelloReply::Refused(ErrorBody::new("org_mismatch", "no"))).await;
    roundtrip(NodeEvent::Catalog { datasets: vec![] }).await;
    let params = PrivacyParams {
        epsilon: 0.5,
        delta: 1e-6,
    };
    roundtrip(Request::Ping).await;
    roundtrip(Request::Estimate {
        backend: BackendId::DpSandbox,
        dataset: "p".into(),
        plan: plan(),
        params,
    })
    .await;
    roundtrip(Request::Execute {
        run_id: "r".into(),
        backend: BackendId::DpSandbox,
        dataset: "p".into(),
        plan: plan(),
        params,
        requester: Some(Requester {
            user: "ana".into(),
            organization: Some(OrgId::new("research-lab").expect("org")),
            query: Some("SELECT COUNT(*) FROM p".into()),
        }),
    })
    .await;
    roundtrip(Response::Pong).await;
    roundtrip(Response::Estimated {
        epsilon: 0.5,
        delta: 0.0,
        release: Some(crate::release::ReleaseMode::Dp),
    })
    .await;
    roundtrip(Response::Executed(Execution {
        table: Table {
            columns: vec!["count".into()],
            rows: vec![vec![serde_json::json!(3)]],
        },
        proof: serde_json::json!({"mechanism": "discrete_laplace"}),
        epsilon_spent: 0.5,
        delta_spent: 0.0,
        compute_ms: 1.5,
    }))
    .await;
    roundtrip(Response::Refused(ErrorBody::new("budget_exhausted", "no"))).await;
    roundtrip(NodeEvent::Progress(Progress {
        run_id: "r".into(),
        rows: 1000,
        groups: 68,
        cells: 1,
        steps: 12,
        elapsed_ms: 500,
    }))
    .await;
    roundtrip(NodeEvent::Held {
        run_ids: vec!["r1".into(), "r2".into()],
    })
    .await;
    roundtrip(Request::Collect {
        run_ids: vec!["r1".into()],
    })
    .await;
    roundtrip(Request::Acknowledge {
        run_ids: vec!["r1".into()],
    })
    .await;
    roundtrip(Response::Collected {
        held: vec![
            HeldAnswer::dp(
                "r1",
                Execution {
                    table: Table {
                        columns: vec!["count".into()],
                        rows: vec![vec![serde_json::json!(3)]],
                    },
                    proof: serde_json::json!({"mechanism": "discrete_laplace"}),
                    epsilon_spent: 0.1,
                    delta_spent: 0.0,
                    compute_ms: 0.1 + 0.2,
                },
            ),
            HeldAnswer {
                run_id: "r3".into(),
                result: HeldResult::He(HeldHe {
                    evaluation: HeEvaluation {
                        cells: vec![],
                        homomorphic: true,
                        ops: Default::default(),
                        groups: 4,
                        distinct_values: vec![4],
                        rows: 100,
                        timings: Default::default(),
                        result_bytes: 5,
                        release: None,
                    },
                    epsilon_spent: 0.25,
                    result: vec![0, 1, 255, 7, 128],
                }),
            },
            HeldAnswer::mpc(
                "e1",
                HeldPartial {
                    room_id: "room".into(),
                    partial: vec![u64::MAX, 0, 1 << 63, 7],
                    compute_ms: 0.1 + 0.2,
                    exchange_ms: 1.5,
                    noise: crate::mpc::noise::PartyNoise {
                        epsilon: 0.3,
                        scales: vec![20.0, 1e6 / 3.0],
                        sensitivities: vec![1, 100],
                        privacy_unit: "unit: patient_id, max_rows 3, max_groups 1".into(),
                    },
                },
            ),
        ],
        answering: vec!["r2".into()],
    })
    .await;
    roundtrip(Response::Acknowledged { count: 1 }).await;
    for req in [
        PeerRequest::Ping,
        PeerRequest::Share {
            room_id: "r".into(),
            execution_id: "e".into(),
            manifest_hash: "h".into(),
            share: vec![u64::MAX, 0, 7, 1 << 63],
        },
        PeerRequest::Share {
            room_id: "r".into(),
            execution_id: "e".into(),
            manifest_hash: "h".into(),
            share: vec![],
        },
    ] {
        let mut buf = Vec::new();
        write_peer_request(&mut buf, &req).await.expect("write");
        let back = read_peer_request(&mut buf.as_slice(), 1 << 20)
            .await
            .expect("read");
        assert_eq!(back, req);
    }
    roundtrip(PeerResponse::ShareAccepted).await;
    roundtrip(Response::Mpc(MpcResponse::Partial {
        room_id: "r".into(),
        partial: vec![u64::MAX],
        compute_ms: 1.0,
        exchange_ms: 2.0,
        noise: Some(crate::mpc::noise::PartyNoise {
            epsilon: 0.5,
            scales: vec![2.0],
            sensitivities: vec![1],
            privacy_unit: "row".into(),
        }),
    }))
    .await;
    roundtrip(NodeEvent::Declined {
        room_id: "r".into(),
        reason: "no".into(),
    })
    .await;
    roundtrip(PeerResponse::Pong {
        org: OrgId::new("bank").expect("org"),
    })
    .await;
}

#[tokio::test]
async fn oversized_frame_is_refused_before_reading_the_body() {
    let (mut a, mut b) = tokio::io::duplex(64);
    // Announce 1 GiB; send nothing else. The reader must fail at once, not wait for the body.
    a.write_all(&(1u32 << 30).to_be_bytes())
        .await
        .expect("write");
    let err = read_msg::<_, Request>(&mut b, 1024)
        .await
        .expect_err("must refuse");
    assert!(
        matches!(err, WireError::FrameTooLarge { len, max: 1024 } if len == 1 << 30),
        "{err}"
    );
}

#[tokio::test]
async fn garbage_is_a_decode_error_and_eof_is_closed() {
    let (mut a, mut b) = tokio::io::duplex(64);
    a.write_all(&3u32.to_be_bytes()).await.expect("write");
    a.write_all(b"{x}").await.expect("write");
    drop(a);
    assert!(matches!(
        read_msg::<_, Request>(&mut b, 1024).await,
        Err(WireError::Decode(_))
    ));
    assert!(matches!(
        read_msg::<_, Request>(&mut b, 1024).await,
        Err(WireError::Closed)
    ));
}

#[test]
fn a_request_without_a_requester_still_decodes() {
    // What a coordinator built before the field existed sends.
    let old = serde_json::json!({"execute": {"run_id": "r", "backend": "dp_sandbox",
        "dataset": "p", "plan": plan(), "params": {"epsilon": 0.5, "delta": 0.0}}});
    let bytes = serde_json::to_vec(&old).expect("json");
    let req: Request = decode(&bytes).expect("decodes");
    assert!(
        matches!(
            req,
            Request::Execute {
                requester: None,
                ..
            }
        ),
        "{req:?}"
    );
    // And a node built before it ignores the field (serde skips unknown fields here).
    let new = Request::Execute {
        run_id: "r".into(),
        backend: BackendId::DpSandbox,
        dataset: "p".into(),
        plan: plan(),
        params: PrivacyParams {
            epsilon: 0.5,
            delta: 0.0,
        },
        requester: Some(Requester {
            user: "ana".into(),
            organization: None,
            query: None,
        }),
    };
    let v = serde_json::to_value(&new).expect("json");
    assert_eq!(v["execute"]["requester"]["user"], "ana");
    assert!(v["execute"]["requester"].get("query").is_none());
}

#[test]
fn a_welcome_without_members_still_decodes_as_no_members() {
    // What a coordinator built before the field existed sends: the node then accepts no peer.
    let old = serde_json::json!({"welcome": {"version": 1, "software": "0.1.0"}});
    let bytes = serde_json::to_vec(&old).expect("json");
    let reply: HelloReply = decode(&bytes).expect("decodes");
    assert_eq!(
        reply,
        HelloReply::Welcome {
            version: 1,
            software: "0.1.0".into(),
            members: vec![],
        }
    );
}

/// A share frame is a JSON header and one blob of little-endian words; the header's word count
/// must match the blob, the blob is bounded before it is read, and a JSON share is refused.
#[tokio::test]
async fn share_frames_carry_binary_words_and_refuse_what_does_not_add_up() {
    let share = PeerRequest::Share {
        room_id: "r".into(),
        execution_id: "e".into(),
        manifest_hash: "h".into(),
        share: (0..1000u64)
            .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
            .collect(),
    };
    let mut buf = Vec::new();
    write_peer_request(&mut buf, &share).await.expect("write");
    // 8 bytes per word, plus a small header.
    assert!(buf.len() < 1000 * 8 + 200, "{} bytes", buf.len());

    // The header announces more words than the blob carries.
    let mut lie = Vec::new();
    write_msg(
        &mut lie,
        &serde_json::json!({"share": {"room_id": "r", "execution_id": "e", "manifest_hash": "h", "words": 3}}),
    )
    .await
    .expect("write");
    write_bytes(&mut lie, &words_to_bytes(&[1, 2]))
        .await
        .expect("write");
    let e = read_peer_request(&mut lie.as_slice(), 1 << 20)
        .await
        .expect_err("mismatch");
    assert!(matches!(e, WireError::Decode(_)), "{e}");

    // More words than the frame limit: refused from the header, before any blob is read.
    let mut huge = Vec::new();
    write_msg(
        &mut huge,
        &serde_json::json!({"share": {"room_id": "r", "execution_id": "e", "manifest_hash": "h", "words": u64::MAX}}),
    )
    .await
    .expect("write");
    let e = read_peer_request(&mut huge.as_slice(), 1 << 20)
        .await
        .expect_err("too large");
    assert!(matches!(e, WireError::FrameTooLarge { .. }), "{e}");

    // The JSON share of earlier builds is not a frame this build accepts.
    let mut old = Vec::new();
    write_msg(
        &mut old,
        &serde_json::json!({"share": {"room_id": "r", "execution_id": "e", "manifest_hash": "h", "share": [1]}}),
    )
    .await
    .expect("write");
    assert!(
        read_peer_request(&mut old.as_slice(), 1 << 20)
            .await
            .is_err()
    );
}

/// A held DP answer keeps the JSON shape of the answers a node stored before HE answers could
/// be held (`{"run_id", "execution"}`), so an upgraded node still reads them.
#[test]
fn a_held_dp_answer_reads_as_stored_before() {
    let old = serde_json::json!({"run_id": "r1", "execution": {"table": {"columns": ["c"], "rows": [[1]]},
        "proof": {}, "epsilon_spent": 0.5, "delta_spent": 0.0, "compute_ms": 1.0}});
    let h: HeldAnswer = serde_json::from_value(old.clone()).expect("old record");
    assert_eq!(h.epsilon_spent(), 0.5);
    assert_eq!(serde_json::to_value(&h).expect("json"), old);
    let mut he = serde_json::to_value(HeldAnswer {
        run_id: "r2".into(),
        result: HeldResult::He(HeldHe {
            evaluation: HeEvaluation {
                cells: vec![],
                homomorphic: false,
                ops: Default::default(),
                groups: 0,
                distinct_values: vec![],
                rows: 0,
                timings: Default::default(),
                result_bytes: 3,
                release: None,
            },
            epsilon_spent: 0.1,
            result: vec![1, 2, 3],
        }),
    })
    .expect("json");
    assert_eq!(he["he"]["result"], "AQID", "{he}");
    he["he"]["result"] = serde_json::json!("not base64!");
    let e = serde_json::from_value::<HeldAnswer>(he).expect_err("bad base64 is refused");
    assert!(e.to_string().contains("Invalid"), "{e}");
}
