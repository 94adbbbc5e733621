//! Framing: every message is one frame, a 4-byte big-endian length and then that many bytes of
//! JSON; blobs (keys, ciphertexts) are length-prefixed raw bytes. A reader refuses a length
//! over its maximum before reading the body, so a peer cannot make it buffer more than the
//! limit, and it buffers only the bytes that actually arrived. See docs/PROTOCOL.md.

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The protocol version this build speaks. 2: a peer's share travels as a blob of
/// little-endian words after its frame, no longer as a JSON array.
pub const PROTOCOL_VERSION: u32 = 2;
/// Default maximum frame size: 16 MiB.
pub const DEFAULT_MAX_FRAME: usize = 16 << 20;

/// QUIC application close codes.
pub mod close {
    /// Orderly shutdown.
    pub const NORMAL: u32 = 0;
    /// The peer broke the protocol (bad frame, unexpected message).
    pub const PROTOCOL: u32 = 1;
    /// The peer is not allowed (wrong organization, unknown version, not admitted).
    pub const REFUSED: u32 = 2;
    /// A frame exceeded the maximum size.
    pub const FRAME_TOO_LARGE: u32 = 3;
}

/// Errors reading or writing frames.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The stream ended cleanly before a frame started.
    #[error("stream closed")]
    Closed,
    /// The announced frame is larger than allowed.
    #[error("frame of {len} bytes exceeds the {max}-byte maximum")]
    FrameTooLarge {
        /// Announced length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Transport error.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The frame did not decode as the expected message.
    #[error("malformed message: {0}")]
    Decode(String),
}

/// Writes one message as a frame.
pub async fn write_msg<W, T>(w: &mut W, msg: &T) -> Result<(), WireError>
where
    W: AsyncWrite + Unpin,
    T: Serialize,
{
    let body = serde_json::to_vec(msg).map_err(|e| WireError::Decode(e.to_string()))?;
    let len = u32::try_from(body.len()).map_err(|_| WireError::FrameTooLarge {
        len: body.len(),
        max: u32::MAX as usize,
    })?;
    let mut buf = Vec::with_capacity(4 + body.len());
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(&body);
    w.write_all(&buf).await?;
    Ok(())
}

/// Reads one frame of at most `max` bytes and decodes it.
pub async fn read_msg<R, T>(r: &mut R, max: usize) -> Result<T, WireError>
where
    R: AsyncRead + Unpin,
    T: DeserializeOwned,
{
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(WireError::Closed),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(WireError::FrameTooLarge { len, max });
    }
    decode(&read_body(r, len).await?)
}

/// Reads exactly `len` bytes, growing the buffer only as bytes arrive: a peer that announces a
/// large frame and sends nothing pins no memory for it.
async fn read_body<R: AsyncRead + Unpin>(r: &mut R, len: usize) -> Result<Vec<u8>, WireError> {
    const FIRST: usize = 64 << 10;
    let mut body = Vec::with_capacity(len.min(FIRST));
    let got = r.take(len as u64).read_to_end(&mut body).await?;
    if got < len {
        return Err(WireError::Io(std::io::ErrorKind::UnexpectedEof.into()));
    }
    Ok(body)
}

/// Writes raw bytes as one length-prefixed blob (keys, ciphertexts: no JSON).
pub async fn write_bytes<W: AsyncWrite + Unpin>(w: &mut W, bytes: &[u8]) -> Result<(), WireError> {
    let len = u64::try_from(bytes.len()).map_err(|_| WireError::FrameTooLarge {
        len: bytes.len(),
        max: usize::MAX,
    })?;
    w.write_all(&len.to_be_bytes()).await?;
    w.write_all(bytes).await?;
    Ok(())
}

/// Reads one blob written by [`write_bytes`], refusing one over `max` bytes before reading it.
pub async fn read_bytes<R: AsyncRead + Unpin>(r: &mut R, max: usize) -> Result<Vec<u8>, WireError> {
    let mut len = [0u8; 8];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(WireError::Closed),
        Err(e) => return Err(e.into()),
    }
    let len = usize::try_from(u64::from_be_bytes(len)).unwrap_or(usize::MAX);
    if len > max {
        return Err(WireError::FrameTooLarge { len, max });
    }
    read_body(r, len).await
}

/// Decodes a frame body.
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, WireError> {
    serde_json::from_slice(body).map_err(|e| WireError::Decode(e.to_string()))
}
