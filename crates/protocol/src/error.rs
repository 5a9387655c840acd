//! The protocol crate's one error type.

use std::path::PathBuf;

/// Why a connection, a frame or an identity could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("frame of {got} bytes exceeds the maximum of {max} bytes")]
    FrameTooLarge { got: usize, max: usize },
    #[error("malformed frame: {0}")]
    Malformed(String),
    #[error("connection closed in the middle of a frame")]
    Truncated,
    #[error("peer is not a Cocoon node (bad magic bytes in hello)")]
    BadMagic,
    #[error("peer speaks Cocoon protocol version {peer}, this node speaks version {ours}")]
    VersionMismatch { peer: u16, ours: u16 },
    #[error("peer announced role {got:?}, expected {expected}")]
    UnexpectedRole {
        got: crate::Role,
        expected: &'static str,
    },
    #[error("peer did not complete the handshake within {0:?}")]
    HandshakeTimeout(std::time::Duration),
    #[error("connection closed")]
    Closed,
    #[error("TLS: {0}")]
    Tls(String),
    #[error("identity key {path}: {message}")]
    Identity { path: PathBuf, message: String },
    #[error("invalid fingerprint {got:?}: expected \"sha256:\" followed by 64 hex digits")]
    BadFingerprint { got: String },
}
