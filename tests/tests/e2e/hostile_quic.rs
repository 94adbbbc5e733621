//! Hostile QUIC clients holding a CA-issued certificate: what one connection can pin on a node's
//! peer endpoint is bounded, a sender that trickles a frame is closed at the deadline, and a bad
//! frame closes the connection with the code docs/PROTOCOL.md gives; a CA-issued certificate
//! of a non-member is refused by the peer endpoint, and connections beyond the per-organization
//! cap are refused on both endpoints while members still get through.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use prism_common::certs::FederationCa;
use prism_common::identity::{COORDINATOR_NAME, OrgId};
use prism_common::wire;
use prism_tests::{Federation, FederationSpec};

fn spec() -> FederationSpec {
    FederationSpec {
        orgs: vec!["hospital-a".into(), "hospital-b".into()],
        rows_per_org: 0,
        ..Default::default()
    }
}

fn peer_addr(f: &Federation) -> SocketAddr {
    f.nodes
        .get(&OrgId::new("hospital-a").expect("org"))
        .and_then(|n| n.handle.as_ref())
        .expect("running")
        .peer_addr
}

/// Connects to hospital-a's peer endpoint (or, with `coordinator`, to the coordinator) with
/// hospital-b's certificate, a member's, issued by the federation CA.
async fn connect(f: &Federation, coordinator: bool) -> (quinn::Endpoint, quinn::Connection) {
    connect_as(f, "hospital-b", false, coordinator).await
}

/// Connects to hospital-a's peer endpoint (or the coordinator) with `org`'s certificate;
/// `issue` makes a fresh CA-issued one for an organization the federation has no files for.
async fn connect_as(
    f: &Federation,
    org: &str,
    issue: bool,
    coordinator: bool,
) -> (quinn::Endpoint, quinn::Connection) {
    let ep = quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("endpoint");
    let (addr, name) = if coordinator {
        let c = f.coordinator.as_ref().expect("coordinator");
        (c.quic_addr, COORDINATOR_NAME)
    } else {
        (peer_addr(f), "hospital-a.org.prism")
    };
    let cfg = if issue {
        let read = |n: &str| std::fs::read_to_string(f.dir.join("certs").join(n)).expect("pem");
        let ca = FederationCa::from_pem(&read("ca.pem"), &read("ca.key.pem")).expect("ca");
        let pair = ca
            .issue_org(&OrgId::new(org).expect("org"), 30)
            .expect("cert");
        prism_common::tls::TlsMaterial::from_pem(
            read("ca.pem").as_bytes(),
            pair.cert_pem.as_bytes(),
            pair.key_pem.as_bytes(),
            None,
        )
        .expect("tls")
        .client_config()
        .expect("tls")
    } else {
        f.org_client_config(org).expect("tls")
    };
    let conn = ep
        .connect_with(cfg, addr, name)
        .expect("connect")
        .await
        .expect("handshake");
    (ep, conn)
}

/// Pings hospital-a's peer endpoint on `conn`: the Pong, or why there was none.
async fn ping(conn: &quinn::Connection) -> Result<wire::PeerResponse, String> {
    let go = async {
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
        wire::write_peer_request(&mut send, &wire::PeerRequest::Ping)
            .await
            .map_err(|e| e.to_string())?;
        send.finish().map_err(|e| e.to_string())?;
        wire::read_msg::<_, wire::PeerResponse>(&mut recv, 1 << 20)
            .await
            .map_err(|e| e.to_string())
    };
    tokio::time::timeout(Duration::from_secs(5), go)
        .await
        .map_err(|_| "no answer within 5 s".to_string())?
}

/// Waits (at most `within`) for the server to close `conn`; returns its code and reason.
async fn closed(conn: &quinn::Connection, within: Duration) -> (u32, String) {
    match tokio::time::timeout(within, conn.closed()).await {
        Ok(quinn::ConnectionError::ApplicationClosed(c)) => (
            u32::try_from(c.error_code.into_inner()).expect("code"),
            String::from_utf8_lossy(&c.reason).into_owned(),
        ),
        Ok(other) => panic!("expected an application close, got {other:?}"),
        Err(_) => panic!("the connection was still open after {within:?}"),
    }
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kib * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_frame_closes_the_peer_connection_with_the_promised_code() {
    let f = Federation::start(spec()).await.expect("federation");
    // A frame that is not a request.
    let (_ep, conn) = connect(&f, false).await;
    let (mut send, _recv) = conn.open_bi().await.expect("stream");
    let body = b"{\"not\":\"a request\"}";
    send.write_all(&(body.len() as u32).to_be_bytes())
        .await
        .expect("write");
    send.write_all(body).await.expect("write");
    let (code, reason) = closed(&conn, Duration::from_secs(5)).await;
    assert_eq!(code, wire::close::PROTOCOL, "{reason}");
    assert!(reason.contains("bad request frame"), "{reason}");
    // A frame over the maximum, announced and never sent.
    let (_ep, conn) = connect(&f, false).await;
    let (mut send, _recv) = conn.open_bi().await.expect("stream");
    send.write_all(&u32::MAX.to_be_bytes())
        .await
        .expect("write");
    let (code, reason) = closed(&conn, Duration::from_secs(5)).await;
    assert_eq!(code, wire::close::FRAME_TOO_LARGE, "{reason}");
    assert!(reason.contains("exceeds"), "{reason}");
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_frame_is_closed_at_the_deadline_on_both_endpoints() {
    let f = Federation::start(spec()).await.expect("federation");
    for (coordinator, deadline) in [
        (false, prism_node::peer::FRAME_DEADLINE),
        (true, Duration::from_secs(10)),
    ] {
        let (_ep, conn) = connect(&f, coordinator).await;
        let (mut send, _recv) = conn.open_bi().await.expect("stream");
        let started = Instant::now();
        // Announce 200 bytes, then send one byte a second.
        send.write_all(&200u32.to_be_bytes()).await.expect("write");
        let trickle = tokio::spawn(async move {
            loop {
                if send.write_all(b" ").await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        let (code, reason) = closed(&conn, deadline + Duration::from_secs(5)).await;
        let took = started.elapsed();
        trickle.abort();
        println!("coordinator={coordinator}: closed after {took:?}: {code} {reason}");
        assert!(
            took >= deadline - Duration::from_secs(1),
            "closed too early: {took:?}"
        );
        if coordinator {
            assert_eq!(code, wire::close::REFUSED, "{reason}");
            assert!(reason.contains("Hello"), "{reason}");
        } else {
            assert_eq!(code, wire::close::PROTOCOL, "{reason}");
            assert!(reason.contains("no complete request frame"), "{reason}");
        }
    }
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_announcing_large_frames_pin_a_bounded_amount_of_memory() {
    let f = Federation::start(spec()).await.expect("federation");
    let before = rss_bytes();
    let (_ep, conn) = connect(&f, false).await;
    // 24 streams, each announcing a 16 MiB frame (the maximum) and sending as much of it as
    // flow control lets through, never finishing it.
    let frame = wire::DEFAULT_MAX_FRAME;
    let mut writers = Vec::new();
    let mut opened = 0;
    for _ in 0..24 {
        // Beyond the stream limit, opening waits for the server to allow more.
        let Ok(Ok((mut send, _recv))) =
            tokio::time::timeout(Duration::from_millis(500), conn.open_bi()).await
        else {
            continue;
        };
        opened += 1;
        writers.push(tokio::spawn(async move {
            let _keep = _recv;
            let _ = send.write_all(&(frame as u32).to_be_bytes()).await;
            let chunk = vec![b' '; 1 << 20];
            for _ in 0..16 {
                if send.write_all(&chunk).await.is_err() {
                    return;
                }
            }
            // Hold the stream open without the last byte.
            tokio::time::sleep(Duration::from_secs(60)).await;
        }));
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let pinned = rss_bytes().saturating_sub(before);
    println!(
        "{opened} streams opened of 24; the process grew by {} MiB",
        pinned >> 20
    );
    assert!(
        opened <= prism_node::peer::MAX_STREAMS as usize,
        "{opened} streams were allowed"
    );
    // Two receive windows of one frame each on the node, plus what the attacker (in this same
    // process) still holds unsent: far below 24 × 16 MiB.
    assert!(pinned < 160 << 20, "pinned {} MiB", pinned >> 20);
    // The frame deadline then closes the connection, and the node still answers.
    let (code, _) = closed(
        &conn,
        prism_node::peer::FRAME_DEADLINE + Duration::from_secs(5),
    )
    .await;
    assert_eq!(code, wire::close::PROTOCOL);
    for w in writers {
        w.abort();
    }
    let (_ep, conn) = connect(&f, false).await;
    let (mut send, mut recv) = conn.open_bi().await.expect("stream");
    wire::write_peer_request(&mut send, &wire::PeerRequest::Ping)
        .await
        .expect("ping");
    send.finish().expect("finish");
    let pong: wire::PeerResponse = wire::read_msg(&mut recv, 1 << 20).await.expect("pong");
    assert!(matches!(pong, wire::PeerResponse::Pong { .. }), "{pong:?}");
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_peer_endpoint_refuses_a_non_member_certificate() {
    let f = Federation::start(spec()).await.expect("federation");
    // hospital-z holds a certificate of the federation CA but is not a member.
    let (_ep, conn) = connect_as(&f, "hospital-z", true, false).await;
    let (code, reason) = closed(&conn, Duration::from_secs(5)).await;
    assert_eq!(code, wire::close::REFUSED, "{reason}");
    assert!(reason.contains("hospital-z is not a member"), "{reason}");
    assert!(ping(&conn).await.is_err());
    // A member still gets its Pong.
    let (_ep, conn) = connect(&f, false).await;
    let pong = ping(&conn).await.expect("pong");
    assert!(matches!(pong, wire::PeerResponse::Pong { .. }), "{pong:?}");
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_are_refused_while_members_get_through() {
    let f = Federation::start(FederationSpec {
        orgs: vec![
            "hospital-a".into(),
            "hospital-b".into(),
            "hospital-c".into(),
        ],
        rows_per_org: 0,
        ..Default::default()
    })
    .await
    .expect("federation");

    // Peer endpoint: hospital-b fills its cap; the next connection is refused.
    let cap = prism_node::peer::MAX_CONNECTIONS_PER_ORG;
    let mut held = Vec::new();
    for _ in 0..cap {
        let (ep, conn) = connect_as(&f, "hospital-b", false, false).await;
        assert!(ping(&conn).await.is_ok(), "a connection within the cap");
        held.push((ep, conn));
    }
    let (_ep, extra) = connect_as(&f, "hospital-b", false, false).await;
    let (code, reason) = closed(&extra, Duration::from_secs(15)).await;
    assert_eq!(code, wire::close::REFUSED, "{reason}");
    assert!(reason.contains("already holds"), "{reason}");
    // Another member is not affected.
    let (_ep, c) = connect_as(&f, "hospital-c", false, false).await;
    assert!(ping(&c).await.is_ok(), "hospital-c was locked out");
    // A closed connection frees its place: the organization is not locked out.
    let (_, gone) = held.pop().expect("held");
    gone.close(wire::close::NORMAL.into(), b"bye");
    let mut back = false;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (_ep, c) = connect_as(&f, "hospital-b", false, false).await;
        if ping(&c).await.is_ok() {
            back = true;
            break;
        }
    }
    assert!(
        back,
        "hospital-b stayed locked out after closing a connection"
    );
    drop(held);

    // Coordinator: hospital-b's node holds one connection; fill the rest, then one more.
    // Under a loaded suite the node's own link can be between a drop and its reconnect when the
    // test fills the cap: then the extra connection is admitted (and refused 10 s later for
    // sending no Hello). That is no failure of the cap, so the filling is tried again.
    let ccap = prism_coordinator::nodes::MAX_CONNECTIONS_PER_ORG;
    let mut held = Vec::new();
    let mut refusal = None;
    for _ in 0..3 {
        f.wait_connected()
            .await
            .expect("hospital-b's node is connected");
        held.clear();
        for _ in 1..ccap {
            held.push(connect_as(&f, "hospital-b", false, true).await);
        }
        let (_ep, extra) = connect_as(&f, "hospital-b", false, true).await;
        let (code, reason) = closed(&extra, Duration::from_secs(15)).await;
        if code == wire::close::REFUSED && reason.contains("already holds") {
            refusal = None;
            break;
        }
        refusal = Some((code, reason));
    }
    assert!(
        refusal.is_none(),
        "the connection beyond the cap: {refusal:?}"
    );
    // The extras never said Hello, so none replaced the node's link, which still answers.
    for (_, c) in &held {
        assert!(c.close_reason().is_none(), "{:?}", c.close_reason());
    }
    f.wait_connected()
        .await
        .expect("hospital-b's node is still connected");
    // Once they go, a new connection (a node reconnecting) is welcomed, with the members.
    for (_, c) in &held {
        c.close(wire::close::NORMAL.into(), b"bye");
    }
    let mut welcomed = None;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (_ep, c) = connect_as(&f, "hospital-b", false, true).await;
        let hello = async {
            let (mut send, mut recv) = c.open_bi().await.map_err(|e| e.to_string())?;
            wire::write_msg(
                &mut send,
                &wire::Hello {
                    version: wire::PROTOCOL_VERSION,
                    org: OrgId::new("hospital-b").expect("org"),
                    software: "test".into(),
                    peer_addr: None,
                    he_keys: None,
                },
            )
            .await
            .map_err(|e| e.to_string())?;
            wire::read_msg::<_, wire::HelloReply>(&mut recv, 1 << 20)
                .await
                .map_err(|e| e.to_string())
        };
        if let Ok(Ok(reply)) = tokio::time::timeout(Duration::from_secs(5), hello).await {
            welcomed = Some(reply);
            c.close(wire::close::NORMAL.into(), b"done");
            break;
        }
    }
    match welcomed {
        Some(wire::HelloReply::Welcome { members, .. }) => {
            let names: Vec<&str> = members.iter().map(|m| m.as_str()).collect();
            assert_eq!(names, ["hospital-a", "hospital-b", "hospital-c"]);
        }
        other => panic!("expected a Welcome, got {other:?}"),
    }
    f.shutdown().await;
}
