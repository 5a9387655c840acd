//! A whole Cocoon network in one process on loopback: a proxy, a worker dialling
//! it, and a client node serving the OpenAI API, each with a fresh key and each
//! pinning the others' keys, talking over real TLS connections. Every hop is
//! RA-TLS with a SIMULATED TEE per node (there is no TDX here): certificates
//! carry simulated evidence bound to their keys, and each side checks it under a
//! development policy that allows simulated evidence.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use cocoon_attestation::simulated::SimulatedTee;
use cocoon_attestation::{AllowedModel, Attester, Policy};
use cocoon_chain::devnet::TonDevnet;
use cocoon_client::{ApiSettings, ProxyPool};
use cocoon_protocol::ra_tls::AttestationCheck;
use cocoon_protocol::tls::{Fingerprint, Identity, PinnedKeys};
use cocoon_protocol::{MuxOptions, ProxyEndpoint, DEFAULT_MAX_FRAME_BYTES};
use cocoon_proxy::{ProxyHandle, ProxySettings};
use cocoon_worker::{EngineConfig, Worker, WorkerSettings};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// What to start.
#[derive(Debug, Clone)]
pub struct DevnetOptions {
    /// Address of the OpenAI-compatible API (port 0 picks a free one).
    pub listen: SocketAddr,
    /// The worker's engine.
    pub engine: EngineConfig,
    pub api: ApiSettings,
    pub mux: MuxOptions,
    /// The proxy's audit hook (see [`cocoon_proxy::Inspector`]).
    pub proxy_inspect: Option<cocoon_proxy::Inspector>,
    /// Address of the embedded TON chain's HTTP API (port 0 picks a free one).
    pub ton_listen: SocketAddr,
    /// Settle the proxy's books on the embedded chain this often (`None`:
    /// only on `settle_now`).
    pub settle_every: Option<Duration>,
    /// What the client deposits in its contract at genesis, nano-TON.
    pub client_deposit: u128,
}

impl DevnetOptions {
    /// The instant test engine on ephemeral loopback ports.
    pub fn instant(model: &str) -> Self {
        Self {
            listen: "127.0.0.1:0".parse().expect("valid address"),
            engine: EngineConfig::Instant {
                model: model.to_string(),
                max_concurrent: 64,
                token_delay_ms: 0,
            },
            api: ApiSettings::default(),
            mux: MuxOptions::default(),
            proxy_inspect: None,
            ton_listen: "127.0.0.1:0".parse().expect("valid address"),
            settle_every: Some(Duration::from_secs(10)),
            client_deposit: cocoon_chain::devnet::CLIENT_DEPOSIT,
        }
    }
}

/// Cumulative amounts put on chain, nano-TON.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Settled {
    pub charged: u128,
    pub claimed: u128,
    /// Books hashes committed to the proxy contract.
    pub books_seqno: u64,
}

fn settle(
    ton: &TonDevnet,
    settled: &std::sync::Mutex<Settled>,
    books: Option<&cocoon_proxy::Books>,
    client: Fingerprint,
    worker: Fingerprint,
) -> anyhow::Result<Settled> {
    let Some(books) = books else {
        anyhow::bail!("the proxy keeps no books");
    };
    let mut done = settled.lock().unwrap_or_else(|e| e.into_inner());
    let owes = books.client(&client).total;
    let charged_now = owes > done.charged;
    if charged_now {
        ton.charge(owes)?;
        done.charged = owes;
    }
    let owed = books.worker(&worker).total;
    let mut moved = false;
    if owed > done.claimed {
        ton.claim(owed)?;
        done.claimed = owed;
        moved = true;
    }
    if moved || charged_now {
        ton.commit_books(done.books_seqno + 1, books.hash())?;
        done.books_seqno += 1;
    }
    Ok(*done)
}

/// A running devnet. Stop it with [`Devnet::shutdown`].
pub struct Devnet {
    /// Base URL of the OpenAI-compatible API, e.g. `http://127.0.0.1:8080/v1`.
    pub api_url: String,
    pub proxy_addr: SocketAddr,
    pub proxy: ProxyHandle,
    pub worker: Worker,
    pub pool: Arc<ProxyPool>,
    pub model: String,
    /// The client node's identity and the proxy it dials (for tests that
    /// speak the node protocol to the proxy themselves).
    pub client_identity: Arc<Identity>,
    pub proxy_endpoint: ProxyEndpoint,
    /// The embedded TON chain: its HTTP API (toncenter v2 subset), the root
    /// contract's address, and the chain itself.
    pub ton_api_url: String,
    pub ton_root: String,
    pub ton: Arc<TonDevnet>,
    /// What has been settled on chain so far.
    settled: Arc<std::sync::Mutex<Settled>>,
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Devnet {
    pub async fn start(options: DevnetOptions) -> anyhow::Result<Devnet> {
        let simulated = || -> Arc<dyn Attester> { Arc::new(SimulatedTee::new()) };
        let proxy_id = Arc::new(Identity::generate()?.with_attester(simulated()));
        let worker_id = Arc::new(Identity::generate()?.with_attester(simulated()));
        let client_id = Arc::new(Identity::generate()?.with_attester(simulated()));
        let config = options.engine.clone();
        let engine = tokio::task::spawn_blocking(move || config.build())
            .await?
            .context("building the worker's engine")?;
        // The devnet's root configuration: its one simulated image may run
        // workers and proxies, and the worker's loaded weights are the allowed
        // model (an engine that does not hash weights leaves the list open).
        let image = SimulatedTee::measurements().image_hash();
        let attestation = Some(Arc::new(AttestationCheck {
            policy: Policy {
                allow_simulated: true,
                worker_images: [image.clone()].into(),
                proxy_images: [image].into(),
                models: engine
                    .models()
                    .into_iter()
                    .filter_map(|m| {
                        m.weights_sha256.map(|sha256| AllowedModel {
                            name: m.name,
                            sha256,
                        })
                    })
                    .collect(),
                ..Policy::default()
            },
            collateral: None,
            verify_at: None,
        }));
        let model = engine
            .models()
            .first()
            .map(|m| m.name.clone())
            .context("the engine serves no model")?;

        let stop = CancellationToken::new();
        let mut tasks = Vec::new();

        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the proxy")?;
        let proxy_addr = listener.local_addr()?;
        let (proxy, serve) = cocoon_proxy::start(
            listener,
            ProxySettings {
                identity: proxy_id.clone(),
                allowed_clients: PinnedKeys::new([client_id.fingerprint()]),
                allowed_workers: PinnedKeys::new([worker_id.fingerprint()]),
                models: vec![model.clone()],
                mux: options.mux.clone(),
                max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
                attestation: attestation.clone(),
                inspect: options.proxy_inspect.clone(),
                prices: Some(cocoon_chain::devnet::default_prices()),
            },
        )?;
        let proxy_stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            tokio::select! { _ = serve => {}, _ = proxy_stop.cancelled() => {} }
        }));

        let endpoint = ProxyEndpoint {
            address: proxy_addr.to_string(),
            fingerprint: proxy_id.fingerprint(),
        };
        let worker = Worker::start(WorkerSettings {
            identity: worker_id,
            proxies: vec![endpoint.clone()],
            engine,
            mux: options.mux.clone(),
            attestation: attestation.clone(),
            replay_window: Duration::from_secs(60),
        })
        .await?;
        let pool = Arc::new(ProxyPool::start(
            client_id.clone(),
            std::slice::from_ref(&endpoint),
            options.mux.clone(),
            attestation,
        )?);

        let ready = async {
            worker.wait_connected(1).await;
            pool.wait_connected(1).await;
            while proxy.registry.worker_count() < 1 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(20), ready)
            .await
            .context("the devnet's nodes did not connect to each other within 20 s")?;

        // The embedded TON chain: genesis wallets, the root contract, its API.
        let ton = Arc::new(
            TonDevnet::start(
                &cocoon_chain::devnet::default_prices(),
                options.client_deposit,
            )
            .context("starting the embedded TON chain")?,
        );
        let ton_http = TcpListener::bind(options.ton_listen)
            .await
            .with_context(|| format!("binding the TON API on {}", options.ton_listen))?;
        let ton_addr = ton_http.local_addr()?;
        let ton_app = cocoon_chain::api::router(ton.chain.clone(), cocoon_chain::devnet::unix_now);
        let ton_stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let shutdown = async move { ton_stop.cancelled().await };
            if let Err(e) = axum::serve(ton_http, ton_app)
                .with_graceful_shutdown(shutdown)
                .await
            {
                tracing::error!(error = %e, "TON API server failed");
            }
        }));

        let http = TcpListener::bind(options.listen)
            .await
            .with_context(|| format!("binding the API on {}", options.listen))?;
        let api_addr = http.local_addr()?;
        let backend: Arc<dyn cocoon_client::Backend> = pool.clone();
        let http_stop = stop.clone();
        let mut api = options.api.clone();
        if api.billing.is_none() {
            // The client node pays from its contract on the embedded chain.
            let ton_http = cocoon_chain::TonHttp::new(&format!("http://{ton_addr}/api/v2"), None)?;
            api.billing = Some(Arc::new(cocoon_client::Billing::new(
                ton_http,
                ton.client_contract.clone(),
                ton.root.clone(),
            )));
        }
        tasks.push(tokio::spawn(async move {
            let shutdown = async move { http_stop.cancelled().await };
            if let Err(e) = cocoon_client::serve(http, backend, api, shutdown).await {
                tracing::error!(error = %e, "API server failed");
            }
        }));

        Ok(Devnet {
            api_url: format!("http://{api_addr}/v1"),
            proxy_addr,
            proxy,
            worker,
            pool,
            model,
            client_identity: client_id,
            proxy_endpoint: endpoint,
            ton_api_url: format!("http://{ton_addr}/api/v2"),
            ton_root: ton.root.to_string(),
            ton,
            settled: Arc::default(),
            stop,
            tasks,
        }
        .with_settlement(options.settle_every))
    }

    /// Settle every `every` in the background (and on `settle_now`).
    fn with_settlement(mut self, every: Option<Duration>) -> Self {
        if let Some(every) = every {
            let (ton, settled, books, client, worker) = self.settlement_parts();
            let stop = self.stop.clone();
            self.tasks.push(tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(every) => {}
                    }
                    if let Err(e) = settle(&ton, &settled, books.as_deref(), client, worker) {
                        tracing::warn!(error = %e, "settlement failed; retrying later");
                    }
                }
            }));
        }
        self
    }

    #[allow(clippy::type_complexity)]
    fn settlement_parts(
        &self,
    ) -> (
        Arc<TonDevnet>,
        Arc<std::sync::Mutex<Settled>>,
        Option<Arc<cocoon_proxy::Books>>,
        Fingerprint,
        Fingerprint,
    ) {
        (
            self.ton.clone(),
            self.settled.clone(),
            self.proxy.books.clone(),
            self.client_identity.fingerprint(),
            self.worker.fingerprint(),
        )
    }

    /// Put what the proxy's books say on chain now: charge the client's
    /// contract up to what it owes, and claim what the worker is owed.
    pub fn settle_now(&self) -> anyhow::Result<Settled> {
        let (ton, settled, books, client, worker) = self.settlement_parts();
        settle(&ton, &settled, books.as_deref(), client, worker)
    }

    /// Stop everything.
    pub async fn shutdown(self) {
        self.worker.stop();
        self.pool.stop();
        self.stop.cancel();
        for task in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }
}
