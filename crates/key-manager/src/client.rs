//! Asking a key manager: a node for its key, a new key manager for the
//! master secret. The key manager's own evidence must pass the asker's
//! policy as a key manager's (its key is made anew at each start, so it is
//! never pinned).

use std::sync::Arc;
use std::time::Duration;

use cocoon_attestation::PeerRole;
use cocoon_protocol::ra_tls::AttestationCheck;
use cocoon_protocol::tls::{self, Identity, PinnedKeys};
use futures::{SinkExt, StreamExt};
use tokio_util::codec::Framed;
use zeroize::Zeroizing;

use crate::server::codec;
use crate::wire::{Answer, Ask, Request, VERSION};
use crate::{Authorization, MasterSecret};

/// Why nothing was released.
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    #[error("key manager at {address}: {message}")]
    Connect { address: String, message: String },
    #[error("the key manager refused: {0}")]
    Refused(String),
    #[error("the key manager answered something else than asked")]
    Unexpected,
}

/// The key `authorization` names, from the key manager at `address`, asked
/// as `identity` (an in-memory key whose certificate carries this node's
/// evidence); the key manager's evidence must pass `check`.
pub async fn fetch_key(
    address: &str,
    identity: Arc<Identity>,
    check: Arc<AttestationCheck>,
    authorization: Authorization,
) -> Result<Zeroizing<[u8; 32]>, AskError> {
    match ask(address, identity, check, Ask::Key { authorization }).await? {
        Answer::Key { key } => Ok(Zeroizing::new(key)),
        _ => Err(AskError::Unexpected),
    }
}

/// The master secret of the key manager at `address`, for a new replica.
pub async fn replicate(
    address: &str,
    identity: Arc<Identity>,
    check: Arc<AttestationCheck>,
) -> Result<MasterSecret, AskError> {
    match ask(address, identity, check, Ask::Master).await? {
        Answer::Master { secret } => Ok(MasterSecret::from_bytes(Zeroizing::new(secret))),
        _ => Err(AskError::Unexpected),
    }
}

async fn ask(
    address: &str,
    identity: Arc<Identity>,
    check: Arc<AttestationCheck>,
    ask: Ask,
) -> Result<Answer, AskError> {
    let fail = |message: String| AskError::Connect {
        address: address.to_string(),
        message,
    };
    let config = tls::client_config_for(
        identity,
        Arc::new(PinnedKeys::any()),
        Some(check),
        PeerRole::KeyManager,
    )
    .map_err(|e| fail(e.to_string()))?;
    // The block the key manager's evidence binds may be looked up while we
    // wait (the handshake never waits on the chain): a few attempts.
    let mut attempt = 0;
    let stream = loop {
        match tls::connect(address, config.clone(), Duration::from_secs(10)).await {
            Ok((stream, _)) => break stream,
            Err(e) if e.to_string().contains("being looked up") && attempt < 50 => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(fail(e.to_string())),
        }
    };
    let mut framed = Framed::new(stream, codec());
    let request = postcard::to_allocvec(&Request {
        version: VERSION,
        ask,
    })
    .expect("serializes");
    framed
        .send(&request[..])
        .await
        .map_err(|e: std::io::Error| fail(e.to_string()))?;
    let frame = framed
        .next()
        .await
        .ok_or_else(|| fail("closed without an answer".into()))?
        .map_err(|e| fail(e.to_string()))?;
    let frame = Zeroizing::new(frame.to_vec());
    match postcard::from_bytes::<Answer>(&frame).map_err(|e| fail(e.to_string()))? {
        Answer::Refused(reason) => Err(AskError::Refused(reason)),
        answer => Ok(answer),
    }
}
