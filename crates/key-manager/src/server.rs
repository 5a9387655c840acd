//! [`KeyManager`]: accepts RA-TLS connections from any key (nodes' keys are
//! made anew at each start) and judges each request by the evidence in the
//! requester's certificate: for a node's key, the policy for the role its
//! owner's authorization names (image, configuration of that role, fresh
//! evidence, TCB); for the master secret, `key_manager_images`.

use std::sync::Arc;
use std::time::Duration;

use cocoon_attestation::PeerRole;
use cocoon_protocol::ra_tls::{self, AttestationCheck};
use cocoon_protocol::tls::{self, Identity, PinnedKeys};
use futures::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

use crate::wire::{Answer, Ask, Request, MAX_FRAME, VERSION};
use crate::MasterSecret;

/// How long a requester has for the handshake and its one request.
const TIMEOUT: Duration = Duration::from_secs(10);

/// A key manager: its master secret, its own RA-TLS identity (made in
/// memory at start), and the check its requesters' evidence must pass.
pub struct KeyManager {
    master: MasterSecret,
    identity: Arc<Identity>,
    check: Arc<AttestationCheck>,
}

impl std::fmt::Debug for KeyManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyManager")
            .field("identity", &self.identity.fingerprint())
            .finish_non_exhaustive()
    }
}

impl KeyManager {
    /// A key manager holding `master`.
    pub fn new(
        master: MasterSecret,
        identity: Arc<Identity>,
        check: Arc<AttestationCheck>,
    ) -> Self {
        Self {
            master,
            identity,
            check,
        }
    }

    /// Serve `listener` until the task is dropped.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) -> std::io::Result<()> {
        let config = tls::server_config(self.identity.clone(), Arc::new(PinnedKeys::any()))
            .map_err(std::io::Error::other)?;
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        loop {
            let (tcp, peer) = listener.accept().await?;
            let (this, acceptor) = (self.clone(), acceptor.clone());
            tokio::spawn(async move {
                if let Err(e) = tokio::time::timeout(TIMEOUT, this.one(tcp, &acceptor)).await {
                    tracing::warn!(%peer, error = %e, "key request timed out");
                }
            });
        }
    }

    /// One connection: the handshake, one request, one answer.
    async fn one(&self, tcp: tokio::net::TcpStream, acceptor: &tokio_rustls::TlsAcceptor) {
        let Ok((stream, key)) = tls::accept(tcp, acceptor, TIMEOUT).await else {
            return;
        };
        let certificate = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec())
            .unwrap_or_default();
        let mut framed = Framed::new(stream, codec());
        let Some(Ok(frame)) = framed.next().await else {
            return;
        };
        let answer = match postcard::from_bytes::<Request>(&frame) {
            Err(e) => Answer::Refused(format!("not a key manager request: {e}")),
            Ok(r) if r.version != VERSION => Answer::Refused(format!(
                "key manager protocol {} here, {} asked",
                VERSION, r.version
            )),
            Ok(request) => self.answer(&certificate, request.ask).await,
        };
        match &answer {
            Answer::Refused(reason) => tracing::warn!(%key, %reason, "key request refused"),
            Answer::Key { .. } => tracing::info!(%key, "key released"),
            Answer::Master { .. } => tracing::info!(%key, "master secret replicated"),
        }
        let bytes = zeroize::Zeroizing::new(postcard::to_allocvec(&answer).expect("serializes"));
        if let Answer::Key { mut key } | Answer::Master { secret: mut key } = answer {
            zeroize::Zeroize::zeroize(&mut key);
        }
        let _ = framed.send(&bytes[..]).await;
    }

    /// What `certificate`'s holder gets for `ask`.
    pub async fn answer(&self, certificate: &[u8], ask: Ask) -> Answer {
        let role = match &ask {
            Ask::Key { authorization } => authorization.role,
            Ask::Master => PeerRole::KeyManager,
        };
        if let Err(reason) = self.check_evidence(certificate, role).await {
            return Answer::Refused(reason);
        }
        match ask {
            Ask::Master => Answer::Master {
                secret: *self.master.expose(),
            },
            Ask::Key { authorization } => {
                if let Err(reason) = authorization.verify(unix_now()) {
                    return Answer::Refused(format!("authorization: {reason}"));
                }
                let key = self.master.derive(
                    authorization.role,
                    &authorization.purpose,
                    &authorization.owner,
                    &authorization.name,
                );
                Answer::Key { key: *key }
            }
        }
    }

    /// The evidence in `certificate` passes the policy for `role` now (the
    /// block it binds looked up first, so it is never pending here).
    async fn check_evidence(&self, certificate: &[u8], role: PeerRole) -> Result<(), String> {
        if let (Some(anchors), Some(anchor)) =
            (&self.check.anchors, ra_tls::certificate_anchor(certificate))
        {
            let _ = anchors.fetch(&anchor).await;
        }
        let (_, cert) = x509_parser::parse_x509_certificate(certificate)
            .map_err(|e| format!("not a certificate: {e}"))?;
        self.check
            .check(&cert, role, unix_now())
            .map(|_| ())
            .map_err(|refusal| format!("evidence as a {role}: {refusal}"))
    }
}

pub(crate) fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(MAX_FRAME)
        .new_codec()
}

pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
