//! Why the proxy turns a peer away: a connection it does not admit, or a
//! worker's announcement it does not list.

use cocoon_protocol::ra_tls::RaTlsRefusal;
use cocoon_protocol::tls::Fingerprint;
use cocoon_protocol::{ProtocolError, Role};

use crate::SettlementError;

/// A connection that did not become a peer.
#[derive(Debug, thiserror::Error)]
pub enum AdmitError {
    /// The TLS handshake or Cocoon's hello failed.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error("key {key} is not allowed to connect as {role:?}")]
    NotAllowed { key: Fingerprint, role: Role },
    #[error("worker {key} is refused: {reason}")]
    Disabled { key: Fingerprint, reason: String },
    #[error("key {key}: this proxy admits unpinned workers by their RA-TLS evidence, and its certificate carries none")]
    NoEvidence { key: Fingerprint },
    #[error("key {key}: an unpinned worker's evidence is refused: {refusal}")]
    Evidence {
        key: Fingerprint,
        refusal: cocoon_protocol::ra_tls::RaTlsRefusal,
    },
}

/// A worker's announcement the proxy refused (the connection is closed
/// with this reason).
#[derive(Debug, thiserror::Error)]
pub enum AnnounceRefused {
    #[error("the worker announced no sealing key")]
    NoSealingKey,
    #[error("the announced key is not this connection's identity")]
    NotThisIdentity,
    #[error(transparent)]
    Evidence(#[from] RaTlsRefusal),
    #[error(transparent)]
    Model(#[from] cocoon_attestation::Refusal),
    #[error("this proxy pays workers on TON: announce a payout wallet ([payout] in worker.toml)")]
    NoPayout,
    #[error("the announcement offers {0} models; at most {max} are accepted", max = crate::server::MAX_OFFERS)]
    TooManyModels(usize),
    #[error("a model name must be 1 to {max} bytes, got {0}", max = crate::server::MAX_MODEL_NAME)]
    ModelName(usize),
    #[error("a price coefficient must be 1 to {max}, got {0}", max = cocoon_protocol::MAX_PRICE_COEFFICIENT)]
    Price(u32),
    #[error(transparent)]
    Payout(#[from] SettlementError),
}
