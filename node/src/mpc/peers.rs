//! Verified connections to other participants' peer endpoints, kept between executions.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use prism_common::identity::{OrgId, PeerIdentity, peer_identity};
use prism_common::refusal::RefusalCode;
use prism_common::room;
use prism_common::wire::{self, Attestation, ErrorBody, PeerRequest, PeerResponse};

use crate::NodeState;
use crate::policy::refuse;

/// A connection to participant `org` at `addr` whose certificate carries the key that signed
/// `org`'s attestation of the manifest `hash`: `(org, address, connection, whether it was kept)`.
pub(super) async fn dial_verified(
    state: &NodeState,
    org: &OrgId,
    addr: Option<&str>,
    hash: &[u8; 32],
    attestations: &[Attestation],
) -> Result<(OrgId, std::net::SocketAddr, quinn::Connection, bool), ErrorBody> {
    let addr = addr.ok_or_else(|| {
        refuse(
            RefusalCode::PartyUnreachable.as_str(),
            format!("no peer address for {org}"),
        )
    })?;
    let host: prism_common::addr::HostPort = addr.parse().map_err(|_| {
        refuse(
            RefusalCode::PartyUnreachable.as_str(),
            format!("bad peer address {addr} for {org}"),
        )
    })?;
    let sock = host.resolve().await.map_err(|e| {
        refuse(
            RefusalCode::PartyUnreachable.as_str(),
            format!("the peer address {addr} of {org} does not resolve: {e}"),
        )
    })?;
    let (conn, cached) = peer_connection(state, org, sock, false).await?;
    let cert = peer_cert(&conn)
        .ok_or_else(|| refuse("bad_attestation", format!("no certificate from {org}")))?;
    let pk =
        room::public_key_from_cert(&cert).map_err(|e| refuse("bad_attestation", e.to_string()))?;
    let a = attestations.iter().find(|a| &a.org == org).ok_or_else(|| {
        refuse(
            "missing_attestation",
            format!("no attestation from {org} came with the execution request"),
        )
    })?;
    room::verify(org, &pk, hash, &a.signature)
        .map_err(|e| refuse("bad_attestation", e.to_string()))?;
    Ok((org.clone(), sock, conn, cached))
}

/// How long a kept peer connection is reused before it is dialled afresh (so a revoked
/// certificate stops being accepted within this time even on a busy connection).
const PEER_CONNECTION_MAX_AGE: Duration = Duration::from_secs(300);

/// Authenticated connections to other nodes, by organization, with the address dialled and
/// when.
#[derive(Default)]
pub struct PeerCache(
    std::sync::Mutex<HashMap<OrgId, (std::net::SocketAddr, Instant, quinn::Connection)>>,
);

/// A connection to `org` at `sock` whose certificate names `org`: a kept one when it is open,
/// recent and to the same address (unless `fresh`), else a new one, which is kept. Returns
/// whether it was kept.
pub(super) async fn peer_connection(
    state: &NodeState,
    org: &OrgId,
    sock: std::net::SocketAddr,
    fresh: bool,
) -> Result<(quinn::Connection, bool), ErrorBody> {
    if !fresh
        && let Ok(m) = state.peers.0.lock()
        && let Some((addr, at, conn)) = m.get(org)
        && *addr == sock
        && at.elapsed() < PEER_CONNECTION_MAX_AGE
        && conn.close_reason().is_none()
    {
        return Ok((conn.clone(), true));
    }
    let conn = tokio::time::timeout(Duration::from_secs(10), async {
        state
            .endpoint
            .connect(sock, &org.dns_name())
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|_| {
        refuse(
            RefusalCode::PartyUnreachable.as_str(),
            format!("party {org} did not answer at {sock}"),
        )
    })?
    .map_err(|e| {
        refuse(
            RefusalCode::PartyUnreachable.as_str(),
            format!("party {org} unreachable at {sock}: {e}"),
        )
    })?;
    match peer_identity(&conn) {
        Ok(PeerIdentity::Org(o)) if &o == org => {}
        _ => {
            conn.close(wire::close::REFUSED.into(), b"not the organization dialled");
            return Err(refuse(
                RefusalCode::PartyUnreachable.as_str(),
                format!("the endpoint at {sock} is not {org}"),
            ));
        }
    }
    if let Ok(mut m) = state.peers.0.lock() {
        m.insert(org.clone(), (sock, Instant::now(), conn.clone()));
    }
    Ok((conn, false))
}

/// Sends one share on its own stream and reads the peer's answer.
pub(super) async fn send_share(
    conn: &quinn::Connection,
    req: &PeerRequest,
    max: usize,
) -> Result<PeerResponse, String> {
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    wire::write_peer_request(&mut send, req)
        .await
        .map_err(|e| e.to_string())?;
    send.finish().map_err(|e| e.to_string())?;
    wire::read_msg(&mut recv, max)
        .await
        .map_err(|e| e.to_string())
}

fn peer_cert(conn: &quinn::Connection) -> Option<Vec<u8>> {
    let certs = conn
        .peer_identity()?
        .downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
        .ok()?;
    certs.first().map(|c| c.to_vec())
}
