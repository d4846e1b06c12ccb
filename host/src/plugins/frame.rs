//! The framing of messages on the pipe between the host and a plugin worker process.
//!
//! A frame is `u32 length (LE) | u8 kind | u64 id (LE) | payload`, where `length` counts the
//! kind, id and payload. Payloads are the same JSON messages the in-process ABI carries.

use std::io::{self, Read};

use tokio::io::{AsyncRead, AsyncReadExt as _};

/// Largest frame accepted in either direction.
pub const MAX_FRAME: usize = 16 << 20;

/// Host → worker: create the instance from the settings in the payload.
pub const CREATE: u8 = 1;
/// Host → worker: a request; worker → host: its response.
pub const CALL: u8 = 2;
/// Worker → host: the worker cannot serve (payload: the reason, UTF-8); it exits next.
pub const FATAL: u8 = 3;

const HEADER: usize = 1 + 8;

/// One decoded frame.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame {
    /// What the frame carries.
    pub kind: u8,
    /// Matches a response to its request.
    pub id: u64,
    /// The message.
    pub payload: Vec<u8>,
}

/// Encodes a frame.
pub fn encode(kind: u8, id: u64, payload: &[u8]) -> Vec<u8> {
    let len = (HEADER + payload.len()) as u32;
    let mut out = Vec::with_capacity(4 + HEADER + payload.len());
    out.extend_from_slice(&len.to_le_bytes());
    out.push(kind);
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(payload);
    out
}

fn check_len(len: usize) -> io::Result<()> {
    if !(HEADER..=MAX_FRAME).contains(&len) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes is outside 9..={MAX_FRAME}"),
        ));
    }
    Ok(())
}

fn split(mut body: Vec<u8>) -> Frame {
    let kind = body[0];
    let mut id = [0u8; 8];
    id.copy_from_slice(&body[1..HEADER]);
    let payload = body.split_off(HEADER);
    Frame {
        kind,
        id: u64::from_le_bytes(id),
        payload,
    }
}

/// Reads one frame; `None` at a clean end of stream.
pub fn read_sync(r: &mut impl Read) -> io::Result<Option<Frame>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes(len) as usize;
    check_len(len)?;
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    Ok(Some(split(body)))
}

/// Reads one frame asynchronously; `None` at a clean end of stream.
pub async fn read_async(r: &mut (impl AsyncRead + Unpin)) -> io::Result<Option<Frame>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes(len) as usize;
    check_len(len)?;
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    Ok(Some(split(body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let bytes = encode(CALL, 42, b"{\"op\":\"info\"}");
        let f = read_sync(&mut &bytes[..]).unwrap().unwrap();
        assert_eq!(
            f,
            Frame {
                kind: CALL,
                id: 42,
                payload: b"{\"op\":\"info\"}".to_vec()
            }
        );
        assert!(read_sync(&mut &[][..]).unwrap().is_none());
    }

    #[test]
    fn refuses_oversized_and_truncated_frames() {
        let mut bytes = encode(CALL, 1, b"x");
        bytes[..4].copy_from_slice(&(MAX_FRAME as u32 + 1).to_le_bytes());
        assert!(read_sync(&mut &bytes[..]).is_err());
        let bytes = encode(CALL, 1, b"hello");
        assert!(read_sync(&mut &bytes[..bytes.len() - 1]).is_err());
        let short = 3u32.to_le_bytes();
        assert!(read_sync(&mut &short[..]).is_err());
    }
}
