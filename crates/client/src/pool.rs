//! The client node's connections to its proxies. Each is kept up in the background
//! (redial with backoff); a request goes to the next live proxy in turn, and to the
//! following one if sending fails.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cocoon_protocol::tls::{self, Identity, PinnedKeys};
use cocoon_protocol::{
    keep_connected, Connection, DialSettings, ErrorKind, Event, GenerateRequest, Handler, Hello,
    ModelInfo, MuxOptions, ProtocolError, ProxyEndpoint, RequestBody, Role, WireError,
    DEFAULT_MAX_FRAME_BYTES,
};
use futures::future::BoxFuture;
use futures::stream::{self, BoxStream};
use futures::StreamExt;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::Backend;

pub struct ProxyPool {
    connections: Vec<watch::Receiver<Option<Connection>>>,
    next: AtomicUsize,
    stop: CancellationToken,
}

/// Proxies never send requests to client nodes.
struct RefuseRequests;

impl Handler for RefuseRequests {
    fn serve(&self, _conn: &Connection, _body: RequestBody) -> BoxStream<'static, Event> {
        let error = WireError::new(
            ErrorKind::InvalidRequest,
            "client nodes do not serve requests",
        );
        stream::iter([Event::Error(error)]).boxed()
    }
}

impl ProxyPool {
    /// Start dialling every proxy in the background.
    pub fn start(
        identity: Arc<Identity>,
        proxies: &[ProxyEndpoint],
        mux: MuxOptions,
        attestation: Option<Arc<cocoon_protocol::ra_tls::AttestationCheck>>,
    ) -> Result<Self, ProtocolError> {
        let pins = PinnedKeys::new(proxies.iter().map(|p| p.fingerprint));
        let dial = DialSettings {
            tls: tls::client_config_attested(identity, Arc::new(pins), attestation)?,
            hello: Hello {
                role: Role::Client,
                software: format!("cocoon-client/{}", env!("CARGO_PKG_VERSION")),
            },
            handler: Arc::new(RefuseRequests),
            mux,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            handshake_timeout: Duration::from_secs(10),
            max_backoff: Duration::from_secs(5),
        };
        let stop = CancellationToken::new();
        let connections = proxies
            .iter()
            .map(|p| keep_connected(p.clone(), dial.clone(), stop.clone(), |_| {}))
            .collect();
        Ok(Self {
            connections,
            next: AtomicUsize::new(0),
            stop,
        })
    }

    /// Live connections, starting with the next one in turn.
    fn live(&self) -> Vec<Connection> {
        let n = self.connections.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .filter_map(|i| self.connections[(start + i) % n].borrow().clone())
            .filter(|c| !c.is_closed())
            .collect()
    }

    /// Proxies connected right now (does not advance the turn).
    pub fn connected(&self) -> usize {
        self.connections
            .iter()
            .filter(|c| c.borrow().as_ref().is_some_and(|c| !c.is_closed()))
            .count()
    }

    /// Wait until at least `n` proxies are connected.
    pub async fn wait_connected(&self, n: usize) {
        while self.connected() < n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn stop(&self) {
        self.stop.cancel();
    }
}

fn no_proxy() -> WireError {
    WireError::new(
        ErrorKind::NoWorker,
        "no proxy is connected; the node keeps retrying",
    )
}

impl Backend for ProxyPool {
    fn list_models(&self) -> BoxFuture<'_, Result<Vec<ModelInfo>, WireError>> {
        Box::pin(async move {
            let mut last = no_proxy();
            for conn in self.live() {
                let Ok(mut answer) = conn.request(RequestBody::ListModels).await else {
                    continue;
                };
                match answer.next().await {
                    Some(Event::Models(models)) => return Ok(models),
                    Some(Event::Error(e)) => last = e,
                    _ => {}
                }
            }
            Err(last)
        })
    }

    fn generate(&self, request: GenerateRequest) -> BoxStream<'static, Event> {
        let live = self.live();
        stream::once(async move {
            for conn in live {
                if let Ok(answer) = conn.request(RequestBody::Generate(request.clone())).await {
                    return answer.boxed();
                }
            }
            stream::iter([Event::Error(no_proxy())]).boxed()
        })
        .flatten()
        .boxed()
    }
}
