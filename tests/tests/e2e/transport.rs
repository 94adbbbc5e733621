//! Transport security against a real coordinator and node: who may connect, and what happens
//! to a client that breaks the protocol.

use std::net::SocketAddr;
use std::time::Duration;

use prism_common::certs::{FederationCa, PemPair};
use prism_common::identity::{COORDINATOR_NAME, OrgId};
use prism_common::tls::TlsMaterial;
use prism_common::wire::{self, Hello, HelloReply, PROTOCOL_VERSION, PeerRequest, PeerResponse};
use prism_tests::{Federation, FederationSpec};
use tokio::io::AsyncWriteExt;

fn spec() -> FederationSpec {
    FederationSpec {
        rows_per_org: 0,
        ..Default::default()
    }
}

fn read(f: &Federation, name: &str) -> String {
    std::fs::read_to_string(f.dir.join("certs").join(name)).expect("cert file")
}

fn endpoint() -> quinn::Endpoint {
    quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("endpoint")
}

fn client(ca: &str, pair: &PemPair) -> quinn::ClientConfig {
    TlsMaterial::from_pem(
        ca.as_bytes(),
        pair.cert_pem.as_bytes(),
        pair.key_pem.as_bytes(),
        None,
    )
    .expect("tls")
    .client_config()
    .expect("client config")
}

fn org_pair(f: &Federation, org: &str) -> PemPair {
    PemPair {
        cert_pem: read(f, &format!("{org}.pem")),
        key_pem: read(f, &format!("{org}.key.pem")),
    }
}

fn fed_ca(f: &Federation) -> FederationCa {
    FederationCa::from_pem(&read(f, "ca.pem"), &read(f, "ca.key.pem")).expect("ca")
}

fn quic_addr(f: &Federation) -> SocketAddr {
    f.coordinator.as_ref().expect("coordinator").quic_addr
}

/// Connects and says hello; returns the reply, or the error that ended the attempt.
async fn hello(
    addr: SocketAddr,
    cfg: quinn::ClientConfig,
    server_name: &str,
    claim: &str,
    version: u32,
) -> Result<HelloReply, String> {
    let ep = endpoint();
    let attempt = async {
        let conn = ep
            .connect_with(cfg, addr, server_name)
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())?;
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
        let h = Hello {
            version,
            org: OrgId::new(claim).expect("org"),
            software: "test".into(),
            peer_addr: None,
            he_keys: None,
        };
        wire::write_msg(&mut send, &h)
            .await
            .map_err(|e| e.to_string())?;
        wire::read_msg::<_, HelloReply>(&mut recv, 1 << 20)
            .await
            .map_err(|e| format!("{e}: {:?}", conn.close_reason()))
    };
    tokio::time::timeout(Duration::from_secs(10), attempt)
        .await
        .map_err(|_| "timed out".to_string())?
}

async fn organizations_connected(f: &Federation) -> Vec<String> {
    let (_, v) = f.admin().get("/api/v1/organizations").await.expect("req");
    v.as_array()
        .expect("orgs")
        .iter()
        .filter(|o| o["connected"] == true)
        .map(|o| o["id"].as_str().expect("id").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_certified_members_claiming_their_own_organization_may_join() {
    let f = Federation::start(spec()).await.expect("federation");
    let addr = quic_addr(&f);
    let ca = read(&f, "ca.pem");
    let before = organizations_connected(&f).await;
    assert_eq!(before.len(), 3);

    // A genuine member gets a welcome.
    let ok = hello(
        addr,
        client(&ca, &org_pair(&f, "hospital-b")),
        COORDINATOR_NAME,
        "hospital-b",
        PROTOCOL_VERSION,
    )
    .await;
    assert!(matches!(ok, Ok(HelloReply::Welcome { .. })), "{ok:?}");

    // A certificate for hospital-b claiming to be hospital-a is refused, naming both.
    let r = hello(
        addr,
        client(&ca, &org_pair(&f, "hospital-b")),
        COORDINATOR_NAME,
        "hospital-a",
        PROTOCOL_VERSION,
    )
    .await;
    match r {
        Ok(HelloReply::Refused(e)) => {
            assert_eq!(e.code, "org_mismatch");
            assert!(
                e.message.contains("hospital-a") && e.message.contains("hospital-b"),
                "{}",
                e.message
            );
        }
        other => panic!("expected an org_mismatch refusal, got {other:?}"),
    }

    // An unknown protocol version is refused with a clear error.
    let r = hello(
        addr,
        client(&ca, &org_pair(&f, "hospital-c")),
        COORDINATOR_NAME,
        "hospital-c",
        99,
    )
    .await;
    assert!(
        matches!(&r, Ok(HelloReply::Refused(e)) if e.code == "unsupported_version" && e.message.contains("99")),
        "{r:?}"
    );

    // A certificate from another CA fails the TLS handshake.
    let foreign = FederationCa::generate("other", 30).expect("ca");
    let forged = foreign
        .issue_org(&OrgId::new("hospital-a").expect("org"), 30)
        .expect("cert");
    let r = hello(
        addr,
        client(&ca, &forged),
        COORDINATOR_NAME,
        "hospital-a",
        PROTOCOL_VERSION,
    )
    .await;
    assert!(r.is_err(), "a foreign CA's certificate was accepted: {r:?}");

    // An expired certificate from the right CA fails too.
    let old = time::OffsetDateTime::now_utc() - time::Duration::days(10);
    let expired = fed_ca(&f)
        .issue_org_at(&OrgId::new("hospital-a").expect("org"), old, 1)
        .expect("cert");
    let r = hello(
        addr,
        client(&ca, &expired),
        COORDINATOR_NAME,
        "hospital-a",
        PROTOCOL_VERSION,
    )
    .await;
    assert!(r.is_err(), "an expired certificate was accepted: {r:?}");

    // A valid certificate of an organization that is not a member is closed with REFUSED.
    let outsider = fed_ca(&f)
        .issue_org(&OrgId::new("bank-z").expect("org"), 30)
        .expect("cert");
    let r = hello(
        addr,
        client(&ca, &outsider),
        COORDINATOR_NAME,
        "bank-z",
        PROTOCOL_VERSION,
    )
    .await;
    assert!(
        r.as_ref().is_err_and(|e| e.contains("not a member")),
        "{r:?}"
    );

    // A client with no certificate at all fails the handshake.
    let no_cert = rustls::ClientConfig::builder_with_provider(prism_common::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls13")
        .with_root_certificates(
            TlsMaterial::from_pem(
                ca.as_bytes(),
                org_pair(&f, "hospital-a").cert_pem.as_bytes(),
                org_pair(&f, "hospital-a").key_pem.as_bytes(),
                None,
            )
            .expect("tls")
            .roots(),
        )
        .with_no_client_auth();
    let mut no_cert = no_cert;
    no_cert.alpn_protocols = vec![prism_common::tls::ALPN.to_vec()];
    let cfg = quinn::ClientConfig::new(std::sync::Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(no_cert).expect("quic"),
    ));
    let r = hello(addr, cfg, COORDINATOR_NAME, "hospital-a", PROTOCOL_VERSION).await;
    assert!(
        r.is_err(),
        "a client without a certificate was accepted: {r:?}"
    );

    // None of this disturbed the real nodes.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = organizations_connected(&f).await;
    assert!(
        after.contains(&"hospital-a".to_string()) && after.contains(&"hospital-c".to_string()),
        "{after:?}"
    );
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_frame_closes_the_connection_before_it_is_buffered() {
    let f = Federation::start(spec()).await.expect("federation");
    let addr = quic_addr(&f);
    let ep = endpoint();
    let conn = ep
        .connect_with(
            client(&read(&f, "ca.pem"), &org_pair(&f, "hospital-c")),
            addr,
            COORDINATOR_NAME,
        )
        .expect("connect")
        .await
        .expect("handshake");
    let (mut send, _recv) = conn.open_bi().await.expect("stream");
    // Announce a 1 GiB hello and send a little of it.
    send.write_all(&(1u32 << 30).to_be_bytes())
        .await
        .expect("write");
    // The coordinator may close on the length prefix alone, before these bytes are written.
    let _ = send.write_all(&[b'{'; 1024]).await;
    let reason = tokio::time::timeout(Duration::from_secs(10), conn.closed())
        .await
        .expect("closed in time");
    match reason {
        quinn::ConnectionError::ApplicationClosed(c) => {
            assert_eq!(
                c.error_code,
                quinn::VarInt::from_u32(wire::close::FRAME_TOO_LARGE)
            );
            assert!(
                String::from_utf8_lossy(&c.reason).contains("exceeds"),
                "{c:?}"
            );
        }
        other => panic!("expected an application close, got {other:?}"),
    }
    // The coordinator is still serving.
    let (s, _) = f.admin().get("/healthz").await.expect("req");
    assert_eq!(s, 200);
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_certificate_is_refused_when_the_coordinator_has_the_crl() {
    let mut f = Federation::start(spec()).await.expect("federation");
    let certs = f.dir.join("certs");
    prism_coordinator::certs_cmd::revoke(&certs, &[OrgId::new("hospital-c").expect("org")], 7)
        .expect("crl");
    f.stop_coordinator().await;
    // Restart with the CRL configured.
    let quic = f
        .nodes
        .values()
        .next()
        .expect("node")
        .config
        .coordinator_addr
        .socket_addr()
        .expect("an IP address");
    let cfg = prism_coordinator::CoordinatorConfig {
        data_path: f.dir.join("coordinator.redb"),
        quic_listen: quic,
        http_listen: "127.0.0.1:0".parse().expect("addr"),
        tls: prism_common::tls::TlsFiles {
            ca_cert: certs.join("ca.pem"),
            cert: certs.join("coordinator.pem"),
            key: certs.join("coordinator.key.pem"),
            crl: Some(certs.join("crl.pem")),
        },
        organizations: f.nodes.keys().cloned().collect(),
        max_frame: wire::DEFAULT_MAX_FRAME,
        run_timeout_secs: 10,
        he_keys_at_start: false,
        idle_timeout_ms: prism_common::tls::default_idle_timeout_ms(),
    };
    let c = prism_coordinator::start(cfg, tokio_util::sync::CancellationToken::new())
        .await
        .expect("start");
    let ca = read(&f, "ca.pem");
    let r = hello(
        c.quic_addr,
        client(&ca, &org_pair(&f, "hospital-c")),
        COORDINATOR_NAME,
        "hospital-c",
        PROTOCOL_VERSION,
    )
    .await;
    assert!(r.is_err(), "revoked certificate accepted: {r:?}");
    let r = hello(
        c.quic_addr,
        client(&ca, &org_pair(&f, "hospital-a")),
        COORDINATOR_NAME,
        "hospital-a",
        PROTOCOL_VERSION,
    )
    .await;
    assert!(matches!(r, Ok(HelloReply::Welcome { .. })), "{r:?}");
    c.shutdown().await;
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_peer_endpoint_answers_members_and_refuses_strangers() {
    let f = Federation::start(spec()).await.expect("federation");
    let a = f
        .nodes
        .get(&OrgId::new("hospital-a").expect("org"))
        .expect("node");
    let peer = a.handle.as_ref().expect("running").peer_addr;
    let ca = read(&f, "ca.pem");
    let ask = |cfg: quinn::ClientConfig| async move {
        let ep = endpoint();
        let attempt = async {
            let conn = ep
                .connect_with(cfg, peer, "hospital-a.org.prism")
                .map_err(|e| e.to_string())?
                .await
                .map_err(|e| e.to_string())?;
            let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
            wire::write_peer_request(&mut send, &PeerRequest::Ping)
                .await
                .map_err(|e| e.to_string())?;
            send.shutdown().await.map_err(|e| e.to_string())?;
            wire::read_msg::<_, PeerResponse>(&mut recv, 1 << 20)
                .await
                .map_err(|e| e.to_string())
        };
        tokio::time::timeout(Duration::from_secs(10), attempt)
            .await
            .map_err(|_| "timed out".to_string())?
    };
    let r = ask(client(&ca, &org_pair(&f, "hospital-b"))).await;
    assert_eq!(
        r,
        Ok(PeerResponse::Pong {
            org: OrgId::new("hospital-a").expect("org")
        })
    );
    let foreign = FederationCa::generate("other", 30).expect("ca");
    let forged = foreign
        .issue_org(&OrgId::new("hospital-b").expect("org"), 30)
        .expect("cert");
    assert!(ask(client(&ca, &forged)).await.is_err());
    // The coordinator's certificate is not an organization's: refused.
    let coord = PemPair {
        cert_pem: read(&f, "coordinator.pem"),
        key_pem: read(&f, "coordinator.key.pem"),
    };
    assert!(ask(client(&ca, &coord)).await.is_err());
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_configured_for_another_organization_than_its_certificate_refuses_to_start() {
    let f = Federation::start(spec()).await.expect("federation");
    let slot = f
        .nodes
        .get(&OrgId::new("hospital-a").expect("org"))
        .expect("node");
    let mut cfg = slot.config.clone();
    cfg.org = OrgId::new("hospital-b").expect("org");
    cfg.data_path = f.dir.join("misconfigured.redb");
    let err = prism_node::start(cfg, tokio_util::sync::CancellationToken::new())
        .await
        .err()
        .expect("a node whose certificate is for another organization must not start");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("hospital-a.pem") && msg.contains("hospital-a") && msg.contains("hospital-b"),
        "the error names the certificate file and both organizations: {msg}"
    );
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_removed_from_organizations_leaves_the_catalog() {
    let mut f = Federation::start(FederationSpec {
        rows_per_org: 20,
        ..Default::default()
    })
    .await
    .expect("federation");
    f.stop_node("hospital-c").await.expect("stop");
    f.stop_coordinator().await;
    f.coordinator_config
        .organizations
        .retain(|o| o.as_str() != "hospital-c");
    f.restart_coordinator().await.expect("restart");
    let api = f.admin();
    let (_, ds) = api.get("/api/v1/datasets").await.expect("datasets");
    let ids: Vec<&str> = ds
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|d| d["id"].as_str())
        .collect();
    assert_eq!(ids, ["hospital-a.patients", "hospital-b.patients"], "{ds}");
    let (_, orgs) = api.get("/api/v1/organizations").await.expect("orgs");
    assert!(
        orgs.as_array()
            .expect("list")
            .iter()
            .all(|o| o["id"] != "hospital-c"),
        "{orgs}"
    );
    let (_, audit) = api.get("/api/v1/audit?limit=1000").await.expect("audit");
    let entries = audit["entries"]
        .as_array()
        .or(audit.as_array())
        .cloned()
        .unwrap_or_default();
    assert!(
        entries
            .iter()
            .any(|e| e["action"] == "catalog_pruned" && e["target"] == "hospital-c.patients"),
        "the removal is audited: {audit}"
    );
    f.shutdown().await;
}
