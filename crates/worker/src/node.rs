//! [`WorkerNode`]: everything one worker runs, started and stopped together:
//! its connections to proxies (with claims on TON when it is paid) and the
//! operator's status endpoints. The `cocoon worker` command, the devnet and
//! the tests all start a worker through here.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{ConfigError, Worker, WorkerConfig, WorkerSettings};

/// A running worker (it derefs to its [`Worker`]). Stop it with
/// [`WorkerNode::stop`].
pub struct WorkerNode {
    pub worker: Worker,
    status_address: Option<SocketAddr>,
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl std::ops::Deref for WorkerNode {
    type Target = Worker;
    fn deref(&self) -> &Worker {
        &self.worker
    }
}

impl WorkerNode {
    /// Start the worker a config file describes: load its key and engine
    /// (off the async threads: an embedded model is hashed and mapped),
    /// bind `status_listen`, dial every proxy.
    pub async fn from_config(config: WorkerConfig) -> Result<WorkerNode, ConfigError> {
        let status = match config.status_listen {
            Some(address) => Some(cocoon_protocol::bind("status_listen", address).await?),
            None => None,
        };
        let attestation = config.attestation.clone();
        let mut settings = tokio::task::spawn_blocking(move || config.into_settings())
            .await
            .map_err(|e| ConfigError::new("engine", format!("loading failed: {e}")))??;
        settings.identity = cocoon_key_manager::lasting_identity(
            &attestation,
            &settings.identity,
            settings.attestation.as_ref(),
            cocoon_attestation::PeerRole::Worker,
        )
        .await?;
        Self::start(settings, status).await
    }

    /// Dial the proxies of `settings`, and serve the status endpoints on
    /// `status` when given.
    pub async fn start(
        settings: WorkerSettings,
        status: Option<TcpListener>,
    ) -> Result<WorkerNode, ConfigError> {
        let worker = Worker::start(settings).await?;
        let stop = CancellationToken::new();
        let mut tasks = Vec::new();
        let mut status_address = None;
        if let Some(listener) = status {
            status_address = Some(
                listener
                    .local_addr()
                    .map_err(|e| ConfigError::new("status_listen", e.to_string()))?,
            );
            let stopped = stop.clone();
            tasks.push(cocoon_metrics::spawn(
                listener,
                worker.metrics().clone(),
                Arc::new(worker.status()),
                async move { stopped.cancelled().await },
            ));
        }
        Ok(WorkerNode {
            worker,
            status_address,
            stop,
            tasks,
        })
    }

    /// `http://...` of the status endpoints, when served.
    pub fn status_url(&self) -> Option<String> {
        self.status_address.map(|a| format!("http://{a}"))
    }

    /// Until `proxies` proxies are connected.
    pub async fn wait_ready(&self, proxies: usize) {
        self.worker.wait_connected(proxies).await;
    }

    /// Say goodbye to every proxy, then stop the status endpoints.
    pub async fn stop(mut self) {
        self.worker.stop();
        self.stop.cancel();
        for task in self.tasks.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }
}

impl Drop for WorkerNode {
    fn drop(&mut self) {
        self.worker.stop();
        self.stop.cancel();
    }
}
