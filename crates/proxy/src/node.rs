//! [`ProxyNode`]: everything one proxy runs, started and stopped together:
//! the accept loop, settlement rounds on TON, and the operator's status
//! endpoints. The `cocoon proxy` command, the devnet and the tests all start
//! a proxy through here.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{ConfigError, ProxyConfig, ProxyHandle, ProxySettings, ProxyStatus};

/// The sockets a proxy serves on.
pub struct ProxyListeners {
    /// Client nodes and workers (one TLS port for both).
    pub node: TcpListener,
    /// `/healthz`, `/readyz`, `/metrics`, `/stats` and the proxy's page.
    pub status: Option<TcpListener>,
}

impl ProxyListeners {
    /// Both on free loopback ports.
    pub async fn loopback() -> std::io::Result<Self> {
        Ok(Self {
            node: TcpListener::bind("127.0.0.1:0").await?,
            status: Some(TcpListener::bind("127.0.0.1:0").await?),
        })
    }
}

/// A running proxy. Stop it with [`ProxyNode::stop`].
pub struct ProxyNode {
    pub handle: ProxyHandle,
    address: SocketAddr,
    status_address: Option<SocketAddr>,
    settle_every: Option<Duration>,
    /// Cancelled when the node stops, or when its accept loop ends.
    stop: CancellationToken,
    serving: Option<JoinHandle<()>>,
    tasks: Vec<JoinHandle<()>>,
}

impl ProxyNode {
    /// Start the proxy a config file describes: bind `listen` and
    /// `status_listen`, connect `[settlement]` to its chain, serve.
    pub async fn from_config(config: ProxyConfig) -> Result<ProxyNode, ConfigError> {
        let listeners = ProxyListeners {
            node: cocoon_protocol::bind("listen", config.listen).await?,
            status: match config.status_listen {
                Some(address) => Some(cocoon_protocol::bind("status_listen", address).await?),
                None => None,
            },
        };
        let settlement = config.settlement.clone();
        let attestation = config.attestation.clone();
        let mut settings = config.into_settings()?;
        settings.identity = cocoon_key_manager::lasting_identity(
            &attestation,
            &settings.identity,
            settings.attestation.as_ref(),
            cocoon_attestation::PeerRole::Proxy,
        )
        .await?;
        cocoon_protocol::anchors_ready(&settings.identity, settings.attestation.as_deref()).await?;
        let mut settle_every = None;
        if let Some(settlement) = settlement {
            settings.settlement = Some(Arc::new(settlement.connect(&settings.identity).await?));
            settle_every = Some(Duration::from_secs(settlement.every_secs));
        }
        Self::start(settings, settle_every, listeners)
    }

    /// Serve `settings` on `listeners`; with a settlement in `settings`,
    /// settle every `settle_every` (`None`: only when asked, through
    /// [`crate::Settlement::settle_once`]).
    pub fn start(
        settings: ProxySettings,
        settle_every: Option<Duration>,
        listeners: ProxyListeners,
    ) -> Result<ProxyNode, ConfigError> {
        let address = local_address(&listeners.node, "listen")?;
        let status_address = match &listeners.status {
            Some(listener) => Some(local_address(listener, "status_listen")?),
            None => None,
        };
        let stop = CancellationToken::new();
        let mut tasks = Vec::new();
        if let (Some(settlement), Some(every)) = (&settings.settlement, settle_every) {
            tasks.push(tokio::spawn(settlement.clone().run(every, stop.clone())));
        }
        let (handle, serve) = crate::start(listeners.node, settings)
            .map_err(|e| ConfigError::new("listen", e.to_string()))?;
        let ended = stop.clone();
        let serving = tokio::spawn(async move {
            tokio::select! {
                _ = serve => {}
                _ = ended.cancelled() => {}
            }
            ended.cancel();
        });
        if let Some(listener) = listeners.status {
            let status = Arc::new(ProxyStatus(handle.clone()));
            let stopped = stop.clone();
            tasks.push(cocoon_metrics::spawn(
                listener,
                handle.metrics.clone(),
                status,
                async move { stopped.cancelled().await },
            ));
        }
        tracing::info!(%address, fingerprint = %handle.fingerprint, "proxy listening");
        Ok(ProxyNode {
            handle,
            address,
            status_address,
            settle_every,
            stop,
            serving: Some(serving),
            tasks,
        })
    }

    /// Where client nodes and workers dial.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// `http://...` of the status endpoints, when served.
    pub fn status_url(&self) -> Option<String> {
        self.status_address.map(|a| format!("http://{a}"))
    }

    /// How often it settles on its own (`None`: only when asked).
    pub fn settle_every(&self) -> Option<Duration> {
        self.settle_every
    }

    /// Until `workers` workers are registered.
    pub async fn wait_ready(&self, workers: usize) {
        while self.handle.registry.worker_count() < workers {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Resolves when the node stops (its accept loop ended, or `stop`).
    pub fn stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        let stop = self.stop.clone();
        async move { stop.cancelled().await }
    }

    /// Close every connection (peers get a goodbye and redial elsewhere),
    /// then stop settling and serving the status endpoints.
    pub async fn stop(mut self) {
        self.handle.shutdown();
        if let Some(serving) = self.serving.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), serving).await;
        }
        // Give the goodbyes a moment to leave (workers leave the registry
        // as their connections close).
        let goodbyes = async {
            while self.handle.registry.worker_count() > 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        let _ = tokio::time::timeout(Duration::from_millis(200), goodbyes).await;
        self.stop.cancel();
        for task in self.tasks.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }
}

impl Drop for ProxyNode {
    fn drop(&mut self) {
        self.handle.shutdown();
        self.stop.cancel();
    }
}

fn local_address(listener: &TcpListener, field: &str) -> Result<SocketAddr, ConfigError> {
    listener
        .local_addr()
        .map_err(|e| ConfigError::new(field, e.to_string()))
}
