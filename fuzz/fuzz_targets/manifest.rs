//! The manifest canonical encoding: any JSON that decodes as a manifest has canonical bytes
//! that decode back to the same manifest, and the hash every participant computes from the
//! manifest it received (after the wire's encode and decode) is the hash the sender computed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prism_common::room::Manifest;

const DOMAIN: &[u8] = b"prism/room-manifest/v1\0";

fuzz_target!(|data: &[u8]| {
    let Ok(m) = serde_json::from_slice::<Manifest>(data) else {
        return;
    };
    let bytes = m.canonical_bytes();
    assert!(bytes.starts_with(DOMAIN), "domain tag missing");
    let sent: Manifest =
        serde_json::from_slice(&bytes[DOMAIN.len()..]).expect("canonical bytes decode");
    // The participant hashes what it decoded; the sender hashed what it sent.
    assert_eq!(sent, m, "manifest changed over the wire");
    assert_eq!(
        sent.canonical_bytes(),
        bytes,
        "canonical bytes are not a fixpoint"
    );
    assert_eq!(sent.hash(), m.hash(), "participants disagree on the hash");
});
