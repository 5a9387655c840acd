//! The proxy's accept loop and its two connection handlers: client nodes send
//! requests that are forwarded to a worker; workers announce offers and answer.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cocoon_protocol::tls::{self, Fingerprint, PinnedKeys};
use cocoon_protocol::{
    handshake, Announce, Connection, ErrorKind, Event, Handler, Hello, RequestBody, Role, WireError,
};
use futures::stream::{self, BoxStream};
use futures::StreamExt;
use tokio::net::TcpListener;

use crate::{ProxySettings, Registry};

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A running proxy, for the devnet and tests.
#[derive(Clone)]
pub struct ProxyHandle {
    pub registry: Arc<Registry>,
    pub fingerprint: Fingerprint,
}

/// Serve on `listener` until `shutdown` resolves.
pub async fn run(
    listener: TcpListener,
    settings: ProxySettings,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let (_handle, serve) = start(listener, settings)?;
    tokio::select! {
        _ = serve => {}
        _ = shutdown => {}
    }
    Ok(())
}

/// Start serving; returns a handle and the accept loop future (drop it to stop).
pub fn start(
    listener: TcpListener,
    settings: ProxySettings,
) -> std::io::Result<(ProxyHandle, impl Future<Output = ()> + Send)> {
    let pins = PinnedKeys::new(
        settings
            .allowed_clients
            .keys()
            .chain(settings.allowed_workers.keys())
            .copied(),
    );
    let server = tls::server_config_attested(
        settings.identity.clone(),
        Arc::new(pins),
        settings.attestation.clone(),
    )
    .map_err(std::io::Error::other)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(server);
    let registry = Arc::new(Registry::new(settings.models.clone()));
    let handle = ProxyHandle {
        registry: registry.clone(),
        fingerprint: settings.identity.fingerprint(),
    };
    let shared = Arc::new(Shared {
        settings,
        registry,
        next_worker: AtomicU64::new(1),
    });
    let serve = async move {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let shared = shared.clone();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Err(e) = shared.admit(tcp, &acceptor).await {
                    tracing::info!(%peer, error = %e, "connection refused");
                }
            });
        }
    };
    Ok((handle, serve))
}

struct Shared {
    settings: ProxySettings,
    registry: Arc<Registry>,
    next_worker: AtomicU64,
}

impl Shared {
    /// TLS, hello, role check against the pins, then hand the connection to its handler.
    async fn admit(
        self: &Arc<Self>,
        tcp: tokio::net::TcpStream,
        acceptor: &tokio_rustls::TlsAcceptor,
    ) -> Result<(), String> {
        let (tls, key) = tls::accept(tcp, acceptor, HANDSHAKE_TIMEOUT)
            .await
            .map_err(|e| e.to_string())?;
        let ours = Hello {
            role: Role::Proxy,
            software: format!("cocoon-proxy/{}", env!("CARGO_PKG_VERSION")),
        };
        let (framed, peer) =
            handshake(tls, &ours, self.settings.max_frame_bytes, HANDSHAKE_TIMEOUT)
                .await
                .map_err(|e| e.to_string())?;
        let mut worker_id = None;
        let handler: Arc<dyn Handler> = match peer.role {
            Role::Client if self.settings.allowed_clients.contains(&key) => Arc::new(ClientSide {
                registry: self.registry.clone(),
            }),
            Role::Worker if self.settings.allowed_workers.contains(&key) => {
                let id = self.next_worker.fetch_add(1, Ordering::Relaxed);
                worker_id = Some(id);
                Arc::new(WorkerSide {
                    registry: self.registry.clone(),
                    id,
                })
            }
            role => return Err(format!("key {key} is not allowed to connect as {role:?}")),
        };
        let conn = Connection::spawn(
            framed,
            peer.clone(),
            Some(key),
            handler,
            self.settings.mux.clone(),
        );
        tracing::info!(role = ?peer.role, %key, software = %peer.software, "peer connected");
        conn.closed().await;
        if let Some(id) = worker_id {
            self.registry.remove(id);
        }
        tracing::info!(role = ?peer.role, %key, reason = ?conn.close_reason(), "peer disconnected");
        Ok(())
    }
}

/// Requests from a client node: list models, or forward a generation to a worker.
struct ClientSide {
    registry: Arc<Registry>,
}

impl Handler for ClientSide {
    fn serve(&self, _conn: &Connection, body: RequestBody) -> BoxStream<'static, Event> {
        match body {
            RequestBody::ListModels => {
                stream::iter([Event::Models(self.registry.models())]).boxed()
            }
            RequestBody::Generate(request) => {
                let picked = self.registry.pick(&request.model);
                let model = request.model.clone();
                stream::once(async move {
                    let (worker, slot) = match picked {
                        Ok(x) => x,
                        Err(e) => return stream::iter([Event::Error(e)]).boxed(),
                    };
                    match worker.request(RequestBody::Generate(request)).await {
                        // The slot is held until the answer stream is dropped; dropping
                        // it early (client hung up) cancels the request at the worker.
                        Ok(answer) => answer
                            .map(move |event| {
                                let _held = &slot;
                                event
                            })
                            .boxed(),
                        Err(e) => {
                            let error = WireError::new(
                                ErrorKind::Upstream,
                                format!("worker for '{model}' went away: {e}"),
                            );
                            stream::iter([Event::Error(error)]).boxed()
                        }
                    }
                })
                .flatten()
                .boxed()
            }
        }
    }
}

/// A worker's connection: it announces offers; it never sends requests.
struct WorkerSide {
    registry: Arc<Registry>,
    id: u64,
}

impl Handler for WorkerSide {
    fn serve(&self, _conn: &Connection, _body: RequestBody) -> BoxStream<'static, Event> {
        let error = WireError::new(
            ErrorKind::InvalidRequest,
            "workers cannot send requests to a proxy",
        );
        stream::iter([Event::Error(error)]).boxed()
    }

    fn on_announce(&self, conn: &Connection, announce: Announce) {
        tracing::info!(worker = self.id, models = ?announce.models.iter().map(|m| &m.name).collect::<Vec<_>>(), "worker announced");
        self.registry.announce(self.id, conn, &announce);
    }
}
