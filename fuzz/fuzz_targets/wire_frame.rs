//! The frame decoder and every message type: any byte string read as a frame (length prefix,
//! then JSON) or as a raw blob gives a message or an error, never a panic, and never allocates
//! past the announced limit. A message that decodes must encode and decode back to itself
//! (what one side sends, the other reads).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use prism_common::wire::{
    self, Attestation, ErrorBody, Hello, HelloReply, MpcRequest, MpcResponse, NodeEvent,
    PeerRequest, PeerResponse, Request, Response,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A small limit, so the fuzzer explores the refusal of long frames too.
const MAX: usize = 64 << 10;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
    })
}

fn roundtrip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(msg: &T) {
    let body = serde_json::to_vec(msg).expect("a decoded message encodes");
    let once: T = wire::decode(&body).expect("an encoded message decodes");
    // Floats may move by one ulp on the first parse; from then on the encoding is a fixpoint.
    let body2 = serde_json::to_vec(&once).expect("encodes");
    let twice: T = wire::decode(&body2).expect("decodes");
    assert_eq!(once, twice, "message changed over a JSON round trip");
}

async fn frame<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(data: &[u8]) {
    let mut r = data;
    if let Ok(msg) = wire::read_msg::<_, T>(&mut r, MAX).await {
        roundtrip(&msg);
        // What write_msg frames, read_msg reads back.
        let mut out = Vec::new();
        wire::write_msg(&mut out, &msg).await.expect("write");
        let back: T = wire::read_msg(&mut out.as_slice(), usize::MAX)
            .await
            .expect("a written frame reads back");
        let _ = back;
    }
}

fuzz_target!(|data: &[u8]| {
    runtime().block_on(async {
        frame::<Hello>(data).await;
        frame::<HelloReply>(data).await;
        frame::<NodeEvent>(data).await;
        frame::<Attestation>(data).await;
        frame::<MpcRequest>(data).await;
        frame::<MpcResponse>(data).await;
        frame::<Request>(data).await;
        frame::<Response>(data).await;
        frame::<PeerRequest>(data).await;
        frame::<PeerResponse>(data).await;
        frame::<ErrorBody>(data).await;
        let mut r = data;
        if let Ok(blob) = wire::read_bytes(&mut r, MAX).await {
            assert!(blob.len() <= MAX);
        }
    });
});
