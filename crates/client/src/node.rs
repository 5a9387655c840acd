//! [`ClientNode`]: everything a client node runs, started and stopped
//! together: its connections to proxies (and the root contract's registry
//! when it follows one) and the OpenAI-compatible API. The `cocoon client`
//! command, the devnet and the tests all start a client node through here.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use cocoon_protocol::tls::Fingerprint;

use crate::{ClientConfig, ClientSettings, ConfigError, ProxyPool};

/// A running client node. Stop it with [`ClientNode::stop`].
pub struct ClientNode {
    pub pool: Arc<ProxyPool>,
    /// This node's key, as proxies pin it.
    pub fingerprint: Fingerprint,
    address: SocketAddr,
    /// It pays from a client contract (registered with each proxy).
    pays: bool,
    stop: CancellationToken,
    serving: Option<JoinHandle<()>>,
}

impl ClientNode {
    /// Start the client node a config file describes: load its key, bind
    /// `listen`, dial its proxies.
    pub async fn from_config(config: ClientConfig) -> Result<ClientNode, ConfigError> {
        let settings = config.into_settings()?;
        cocoon_protocol::anchors_ready(&settings.identity, settings.attestation.as_deref()).await?;
        let listener = cocoon_protocol::bind("listen", settings.listen).await?;
        Self::start(settings, listener)
    }

    /// Dial the proxies of `settings` (and follow its registry), and serve
    /// the API on `listener` (`settings.listen` is not used).
    pub fn start(
        settings: ClientSettings,
        listener: TcpListener,
    ) -> Result<ClientNode, ConfigError> {
        let address = listener
            .local_addr()
            .map_err(|e| ConfigError::new("listen", e.to_string()))?;
        let pool = Arc::new(
            ProxyPool::start(
                settings.identity.clone(),
                &settings.proxies,
                settings.mux.clone(),
                settings.attestation.clone(),
                settings.api.billing.clone(),
            )
            .map_err(|e| ConfigError::new("identity_key", e.to_string()))?,
        );
        if let Some(registry) = &settings.registry {
            pool.follow_registry(
                std::iter::once(&registry.chain)
                    .chain(&registry.agree)
                    .map(|c| Arc::new(c.clone()) as Arc<dyn cocoon_chain::Chain>)
                    .collect(),
                registry.root.clone(),
                registry.every,
            );
        }
        let pays = settings.api.billing.is_some();
        let fingerprint = settings.identity.fingerprint();
        let stop = CancellationToken::new();
        let backend: Arc<dyn crate::Backend> = pool.clone();
        let stopped = stop.clone();
        let api = settings.api;
        let serving = tokio::spawn(async move {
            let shutdown = {
                let stopped = stopped.clone();
                async move { stopped.cancelled().await }
            };
            if let Err(e) = crate::serve(listener, backend, api, shutdown).await {
                tracing::error!(error = %e, "API server failed");
            }
            stopped.cancel();
        });
        Ok(ClientNode {
            pool,
            fingerprint,
            address,
            pays,
            stop,
            serving: Some(serving),
        })
    }

    /// Where the API listens.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Base URL of the OpenAI-compatible API, e.g. `http://127.0.0.1:8080/v1`.
    pub fn api_url(&self) -> String {
        format!("http://{}/v1", self.address)
    }

    /// Until `proxies` proxies are connected and have registered this
    /// node's contract (when it pays).
    pub async fn wait_ready(&self, proxies: usize) {
        self.pool.wait_connected(proxies).await;
        if self.pays {
            self.pool.wait_registered(proxies).await;
        }
    }

    /// Resolves when the node stops (its API server ended, or `stop`).
    pub fn stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        let stop = self.stop.clone();
        async move { stop.cancelled().await }
    }

    /// Stop serving the API (requests in flight finish) and close every
    /// connection to proxies.
    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(serving) = self.serving.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), serving).await;
        }
        self.pool.stop();
    }
}

impl Drop for ClientNode {
    fn drop(&mut self) {
        self.stop.cancel();
        self.pool.stop();
    }
}
