//! Keeping a connection to a proxy up: dial, TLS, hello, then on loss redial with
//! exponential backoff. Client nodes and workers both dial out this way (a worker
//! behind NAT needs no open port).

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::tls::{self, Fingerprint};
use crate::{handshake, ConfigError, Connection, Handler, Hello, MuxOptions, ProtocolError, Role};

/// A proxy to dial: where, and which key it must present.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyEndpoint {
    /// `host:port` of the proxy.
    pub address: String,
    /// The proxy's key, `sha256:<hex>` (printed by `cocoon keygen` and at proxy start).
    pub fingerprint: Fingerprint,
}

impl ProxyEndpoint {
    /// Check a configured `proxies` list: at least one, each `host:port`.
    pub fn check_list(proxies: &[ProxyEndpoint]) -> Result<(), ConfigError> {
        if proxies.is_empty() {
            return Err(ConfigError::new("proxies", "list at least one proxy"));
        }
        for (i, p) in proxies.iter().enumerate() {
            if !p.address.contains(':') {
                return Err(ConfigError::new(
                    format!("proxies[{i}].address"),
                    format!("expected host:port, got {:?}", p.address),
                ));
            }
        }
        Ok(())
    }
}

/// What a dialler needs besides the endpoint.
#[derive(Clone)]
pub struct DialSettings {
    pub tls: Arc<rustls::ClientConfig>,
    pub hello: Hello,
    pub handler: Arc<dyn Handler>,
    pub mux: MuxOptions,
    pub max_frame_bytes: usize,
    pub handshake_timeout: Duration,
    /// Longest wait between attempts.
    pub max_backoff: Duration,
    /// The check the proxy's evidence passed in the handshake (the same as
    /// `tls`'s), kept up on the live connection: a proxy whose evidence
    /// ages out or stops passing is disconnected (see `ra_tls::watch_peer`).
    pub watch: Option<Arc<crate::ra_tls::AttestationCheck>>,
}

/// Connect once: TCP, TLS (the proxy's key is pinned by `settings.tls`), hello.
pub async fn dial_once(
    endpoint: &ProxyEndpoint,
    settings: &DialSettings,
) -> Result<Connection, ProtocolError> {
    let (stream, key) = tls::connect(
        &endpoint.address,
        settings.tls.clone(),
        settings.handshake_timeout,
    )
    .await?;
    if key != endpoint.fingerprint {
        return Err(ProtocolError::Tls(format!(
            "proxy at {} presented key {key}, expected {}",
            endpoint.address, endpoint.fingerprint
        )));
    }
    let certificate = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec());
    let (framed, peer) = handshake(
        stream,
        &settings.hello,
        settings.max_frame_bytes,
        settings.handshake_timeout,
    )
    .await?;
    if peer.role != Role::Proxy {
        return Err(ProtocolError::UnexpectedRole {
            got: peer.role,
            expected: "Proxy",
        });
    }
    let conn = Connection::spawn(
        framed,
        peer,
        Some(key),
        settings.handler.clone(),
        settings.mux.clone(),
    );
    if let (Some(check), Some(certificate)) = (&settings.watch, certificate) {
        crate::ra_tls::watch_peer(
            check.clone(),
            cocoon_attestation::PeerRole::Proxy,
            certificate,
            conn.clone(),
        );
    }
    Ok(conn)
}

/// A connection closed sooner than this after it opened does not reset the backoff.
const SHORT_LIVED: Duration = Duration::from_secs(1);

/// Keep a connection to `endpoint` until `stop` is cancelled. The returned watch
/// holds the live connection, or `None` while (re)connecting. `on_connect` runs on
/// every new connection (workers announce their models there).
pub fn keep_connected(
    endpoint: ProxyEndpoint,
    settings: DialSettings,
    stop: CancellationToken,
    on_connect: impl Fn(&Connection) + Send + 'static,
) -> watch::Receiver<Option<Connection>> {
    let (tx, rx) = watch::channel(None);
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(100);
        let mut failures = 0u32;
        loop {
            let attempt = tokio::select! {
                _ = stop.cancelled() => break,
                r = dial_once(&endpoint, &settings) => r,
            };
            match attempt {
                Ok(conn) => {
                    tracing::info!(proxy = %endpoint.address, "connected to proxy");
                    on_connect(&conn);
                    let _ = tx.send(Some(conn.clone()));
                    let connected_at = std::time::Instant::now();
                    tokio::select! {
                        _ = stop.cancelled() => {
                            conn.close("node shutting down");
                            let _ = tx.send(None);
                            break;
                        }
                        _ = conn.closed() => {}
                    }
                    let _ = tx.send(None);
                    tracing::warn!(proxy = %endpoint.address, reason = ?conn.close_reason(), "lost connection to proxy; reconnecting");
                    // A connection the proxy closes at once (it refused this
                    // node's announcement, say, because the root contract
                    // withdrew its image) counts as a failure: the backoff
                    // grows instead of redialling ten times a second.
                    if connected_at.elapsed() >= SHORT_LIVED {
                        backoff = Duration::from_millis(100);
                        failures = 0;
                    }
                }
                Err(e) => {
                    failures += 1;
                    // Log the first failure and then every tenth, not every retry.
                    if failures == 1 || failures.is_multiple_of(10) {
                        tracing::warn!(proxy = %endpoint.address, error = %e, attempt = failures, "cannot connect to proxy; retrying");
                    }
                }
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(settings.max_backoff);
        }
    });
    rx
}
