//! Framing: every message is a 4-byte big-endian length followed by that many bytes
//! (tokio-util's `LengthDelimitedCodec`, with a maximum frame size), and the bytes
//! are a postcard-encoded [`Frame`]. The first frame each way is the hello:
//! `MAGIC`, the protocol version as a big-endian u16, then a postcard [`Hello`], so
//! a peer on another version is named and refused before anything else is parsed.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::{Framed, LengthDelimitedCodec};

use crate::{Frame, Hello, ProtocolError, PROTOCOL_VERSION};

/// First bytes of every Cocoon connection after TLS.
pub const MAGIC: [u8; 4] = *b"CCN\x01";

/// Default largest frame a node accepts (a request body with a long prompt fits).
pub const DEFAULT_MAX_FRAME_BYTES: usize = 8 * 1024 * 1024;

/// The length-delimited codec with our limit.
pub fn length_codec(max_frame_bytes: usize) -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_length(4)
        .max_frame_length(max_frame_bytes)
        .new_codec()
}

/// Map tokio-util's framing errors to ours.
pub(crate) fn framing_error(err: std::io::Error, max: usize) -> ProtocolError {
    let text = err.to_string();
    if text.contains("frame size too big") {
        ProtocolError::FrameTooLarge { got: 0, max }
    } else if text.contains("bytes remaining on stream") {
        ProtocolError::Truncated
    } else {
        ProtocolError::Io(err)
    }
}

pub fn encode_frame(frame: &Frame) -> Result<Bytes, ProtocolError> {
    // Sized once for the common frames (a sealed chunk is most of them)
    // instead of grown byte by byte.
    let hint = match frame {
        Frame::Event {
            event: crate::Event::Sealed { ciphertext },
            ..
        } => ciphertext.len() + 24,
        Frame::Request {
            body: crate::RequestBody::Generate(request),
            ..
        } => request.ciphertext.len() + 1024,
        _ => 256,
    };
    postcard::to_extend(frame, Vec::with_capacity(hint))
        .map(Bytes::from)
        .map_err(|e| ProtocolError::Malformed(format!("cannot encode frame: {e}")))
}

pub fn decode_frame(bytes: &[u8]) -> Result<Frame, ProtocolError> {
    postcard::from_bytes(bytes).map_err(|e| ProtocolError::Malformed(e.to_string()))
}

pub fn write_hello(hello: &Hello) -> Result<Bytes, ProtocolError> {
    let body = postcard::to_allocvec(hello)
        .map_err(|e| ProtocolError::Malformed(format!("cannot encode hello: {e}")))?;
    let mut out = BytesMut::with_capacity(6 + body.len());
    out.put_slice(&MAGIC);
    out.put_u16(PROTOCOL_VERSION);
    out.put_slice(&body);
    Ok(out.freeze())
}

pub fn read_hello(bytes: &[u8]) -> Result<Hello, ProtocolError> {
    if bytes.len() < 6 || bytes[..4] != MAGIC {
        return Err(ProtocolError::BadMagic);
    }
    let version = u16::from_be_bytes([bytes[4], bytes[5]]);
    if version != PROTOCOL_VERSION {
        return Err(ProtocolError::VersionMismatch {
            peer: version,
            ours: PROTOCOL_VERSION,
        });
    }
    postcard::from_bytes(&bytes[6..]).map_err(|e| ProtocolError::Malformed(format!("hello: {e}")))
}

/// Exchange hellos on a fresh (TLS) stream; returns the framed stream and the
/// peer's hello. Both sides send first, then read, so neither waits on the other.
pub async fn handshake<S>(
    io: S,
    ours: &Hello,
    max_frame_bytes: usize,
    timeout: Duration,
) -> Result<(Framed<S, LengthDelimitedCodec>, Hello), ProtocolError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut framed = Framed::new(io, length_codec(max_frame_bytes));
    let exchange = async {
        framed.send(write_hello(ours)?).await?;
        match framed.next().await {
            Some(Ok(bytes)) => read_hello(&bytes),
            Some(Err(e)) => Err(framing_error(e, max_frame_bytes)),
            None => Err(ProtocolError::Closed),
        }
    };
    let peer = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| ProtocolError::HandshakeTimeout(timeout))??;
    Ok((framed, peer))
}

#[cfg(test)]
mod tests;

/// `bytes` as lowercase hex, written into one buffer (`hex::encode`
/// collects a `String` char by char; receipts are encoded on every answer).
pub fn to_hex(bytes: &[u8]) -> String {
    let mut out = vec![0u8; bytes.len() * 2];
    hex::encode_to_slice(bytes, &mut out).expect("the buffer is twice the input");
    String::from_utf8(out).expect("hex digits are ASCII")
}
