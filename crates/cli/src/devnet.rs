//! A whole Cocoon network in one process on loopback: a proxy, a worker dialling
//! it, and a client node serving the OpenAI API, each with a fresh key and each
//! pinning the others' keys, talking over real TLS connections. Every hop is
//! RA-TLS with a SIMULATED TEE per node (there is no TDX here): certificates
//! carry simulated evidence bound to their keys, and each side checks it under a
//! development policy that allows simulated evidence.
//!
//! Money runs as it does on TON: an embedded chain with the network's
//! contracts, served over TON's HTTP API, and each role settling through
//! that API with its own wallet: the client node registers its contract with
//! the proxy, the proxy charges it and commits its books, the worker claims
//! the proxy's signed vouchers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use cocoon_attestation::simulated::SimulatedTee;
use cocoon_attestation::{AllowedModel, Attester, Policy};
use cocoon_chain::devnet::TonDevnet;
use cocoon_client::{ApiSettings, ProxyPool};
use cocoon_protocol::ra_tls::AttestationCheck;
use cocoon_protocol::tls::{Identity, PinnedKeys};
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
    /// The chain makes a block this often, running the external messages
    /// sent since the last one (`None`: each runs when it arrives).
    pub block_interval: Option<Duration>,
    /// Keep the chain, the node keys, the wallets, the books and the
    /// worker's earnings here, and resume from them on the next start.
    pub state_dir: Option<std::path::PathBuf>,
    /// More accounts funded at genesis, nano-TON.
    pub genesis_accounts: Vec<(cocoon_chain::StdAddr, u128)>,
    /// The client node tops its contract up from its wallet by `.1` when it
    /// holds less than `.0` nano-TON.
    pub client_top_up: Option<(u128, u128)>,
    /// The client node deploys its own contract (with `client_deposit`) on
    /// first use of the proxy, instead of using the genesis one.
    pub client_auto_deploy: bool,
    /// The worker's price coefficient (1000 = base price).
    pub price_coefficient: u32,
    /// More workers beside the first: each an engine and its price
    /// coefficient (paid to the same wallet as the first).
    pub more_workers: Vec<(EngineConfig, u32)>,
    /// The proxy's deadlines on workers' answers.
    pub proxy_timeouts: cocoon_proxy::HopTimeouts,
    /// The proxy's queue when every worker is full.
    pub proxy_queue: cocoon_proxy::QueueSettings,
    /// More proxies beside the first, each with its own operator wallet and
    /// proxy contract. Every proxy is published in the root contract's
    /// registry; the client node finds the others there (and deploys a
    /// client contract for each), the workers dial them all.
    pub more_proxies: usize,
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
            block_interval: Some(Duration::from_millis(100)),
            state_dir: None,
            genesis_accounts: Vec::new(),
            client_top_up: None,
            client_auto_deploy: false,
            price_coefficient: cocoon_protocol::BASE_PRICE_COEFFICIENT,
            more_workers: Vec::new(),
            proxy_timeouts: Default::default(),
            proxy_queue: Default::default(),
            more_proxies: 0,
        }
    }
}

/// One of the devnet's proxies beyond the first.
pub struct DevnetProxy {
    pub identity: Arc<Identity>,
    pub endpoint: ProxyEndpoint,
    pub handle: ProxyHandle,
    pub settlement: Arc<cocoon_proxy::Settlement>,
    /// Its proxy contract.
    pub contract: cocoon_chain::StdAddr,
}

/// What the chain shows as settled, nano-TON.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Settled {
    /// Charged to the client's contract (once it is closed: received by the
    /// proxy's contract).
    pub charged: u128,
    /// Paid to the worker by its contract.
    pub claimed: u128,
    /// Books hashes committed to the proxy contract.
    pub books_seqno: u64,
}

/// The client node pays from its contract on the embedded chain: the one
/// made at genesis, or (`client_auto_deploy`) one it deploys itself from its
/// wallet on first use of the proxy.
fn client_billing(
    options: &DevnetOptions,
    ton: &TonDevnet,
    ton_api_url: &str,
    state_dir: &std::path::Path,
) -> anyhow::Result<cocoon_client::Billing> {
    let ton_http = cocoon_chain::TonHttp::new(ton_api_url, None)?;
    let wallet = || {
        Arc::new(cocoon_chain::WalletSender::new(
            Arc::new(ton_http.clone()),
            ton.wallets.client(),
        ))
    };
    let contracts = if options.client_auto_deploy {
        Vec::new()
    } else {
        vec![ton.client_contract.clone()]
    };
    let mut billing = cocoon_client::Billing::new(ton_http.clone(), contracts, ton.root.clone());
    // A contract per proxy: the others' are deployed on first use.
    if options.client_auto_deploy || options.more_proxies > 0 {
        billing.deploy = Some(cocoon_client::billing::Deploy {
            wallet: wallet(),
            deposit: options.client_deposit,
            file: state_dir.join("client-contracts.json"),
        });
    }
    if let Some((below, amount)) = options.client_top_up {
        billing.top_up = Some(cocoon_client::billing::TopUp {
            wallet: wallet(),
            below,
            amount,
        });
    }
    Ok(billing)
}

/// The TON API, unless the devnet's chain is cut off.
async fn ton_unless_out(
    axum::extract::State(out): axum::extract::State<Arc<std::sync::atomic::AtomicBool>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if out.load(std::sync::atomic::Ordering::SeqCst) {
        return (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "the devnet's chain is cut off (ton_outage)",
        )
            .into_response();
    }
    next.run(request).await
}

/// Start a proxy on a free loopback port, served until `stop`.
async fn spawn_proxy(
    settings: ProxySettings,
    stop: &CancellationToken,
    tasks: &mut Vec<JoinHandle<()>>,
) -> anyhow::Result<(ProxyHandle, SocketAddr)> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding a proxy")?;
    let address = listener.local_addr()?;
    let (handle, serve) = cocoon_proxy::start(listener, settings)?;
    let stop = stop.clone();
    tasks.push(tokio::spawn(async move {
        tokio::select! { _ = serve => {}, _ = stop.cancelled() => {} }
    }));
    Ok((handle, address))
}

/// The embedded chain: resumed from `state_dir` when it holds one, else a
/// new genesis (saved there when given).
fn ton_chain(
    options: &DevnetOptions,
    prices: &cocoon_chain::Prices,
    proxy_key: [u8; 32],
) -> anyhow::Result<TonDevnet> {
    use cocoon_chain::devnet::{Addresses, Genesis, Wallets};
    let dir = options.state_dir.as_deref();
    if let Some(dir) = dir.filter(|d| d.join("chain.json").exists()) {
        let read = |name: &str| {
            std::fs::read_to_string(dir.join(name))
                .with_context(|| format!("--state: {}", dir.join(name).display()))
        };
        let chain = cocoon_chain::Emulator::load(&dir.join("chain.json"))?;
        let addresses: Addresses = serde_json::from_str(&read("devnet.json")?)
            .with_context(|| format!("--state: {}", dir.join("devnet.json").display()))?;
        let wallets = Wallets::from_hex(&zeroize::Zeroizing::new(read("wallets.hex")?))?;
        let ton = TonDevnet::resume(chain, &addresses, wallets)?;
        anyhow::ensure!(
            ton.proxy_key.0 == proxy_key,
            "--state {}: the saved chain's proxy contract has another key than proxy.pem",
            dir.display()
        );
        return Ok(ton);
    }
    let ton = TonDevnet::genesis(
        prices,
        options.client_deposit,
        proxy_key,
        &Genesis {
            wallets: None,
            accounts: options.genesis_accounts.clone(),
        },
    )?;
    if let Some(dir) = dir {
        std::fs::write(
            dir.join("devnet.json"),
            serde_json::to_string_pretty(&ton.addresses())?,
        )?;
        cocoon_protocol::tls::write_secret_file(
            &dir.join("wallets.hex"),
            ton.wallets.to_hex().as_bytes(),
        )?;
        save_chain(&ton, dir)?;
    }
    Ok(ton)
}

fn save_chain(ton: &TonDevnet, dir: &std::path::Path) -> anyhow::Result<()> {
    let chain = ton
        .chain
        .lock()
        .map_err(|_| anyhow::anyhow!("chain poisoned"))?;
    chain.save(&dir.join("chain.json"))
}

/// Make a block every `every`; with a state directory, save the chain after
/// each block that had transactions.
pub(crate) async fn produce_blocks(
    ton: Arc<TonDevnet>,
    every: Duration,
    state_dir: Option<std::path::PathBuf>,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let block = {
            let Ok(mut chain) = ton.chain.lock() else {
                return;
            };
            chain.now = chain.now.max(cocoon_chain::devnet::unix_now());
            chain.produce_block()
        };
        if block.dropped > 0 {
            tracing::info!(
                seqno = block.seqno,
                dropped = block.dropped,
                "block dropped messages no longer accepted"
            );
        }
        if let (Some(dir), true) = (&state_dir, block.transactions > 0) {
            if let Err(e) = save_chain(&ton, dir) {
                tracing::error!(error = %e, "could not save the chain");
            }
        }
    }
}

/// A running devnet. Stop it with [`Devnet::shutdown`].
pub struct Devnet {
    /// Base URL of the OpenAI-compatible API, e.g. `http://127.0.0.1:8080/v1`.
    pub api_url: String,
    /// The proxy's and the worker's `/healthz`, `/readyz`, `/metrics`,
    /// `/stats`, e.g. `http://127.0.0.1:34567`.
    pub proxy_status_url: String,
    pub worker_status_url: String,
    pub proxy_addr: SocketAddr,
    pub proxy: ProxyHandle,
    pub worker: Worker,
    /// The workers of `more_workers`, in order.
    pub more_workers: Vec<Worker>,
    /// The proxies of `more_proxies`, in order.
    pub more_proxies: Vec<DevnetProxy>,
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
    /// The proxy's settlement (charges, books, vouchers).
    pub settlement: Arc<cocoon_proxy::Settlement>,
    /// Set: the chain's HTTP API answers every call with 503 (the chain is
    /// unreachable for every node) until cleared.
    pub ton_outage: Arc<std::sync::atomic::AtomicBool>,
    /// The worker's vouchers and claims.
    pub earnings: Arc<cocoon_worker::Earnings>,
    /// The worker's earnings file lives here (and, with `state_dir`, all state).
    state_dir: std::path::PathBuf,
    /// `state_dir` is a scratch directory, removed at shutdown.
    scratch: bool,
    /// The chain is saved in `state_dir`.
    persist: bool,
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Devnet {
    pub async fn start(options: DevnetOptions) -> anyhow::Result<Devnet> {
        let simulated = || -> Arc<dyn Attester> { Arc::new(SimulatedTee::new()) };
        anyhow::ensure!(
            options.more_proxies == 0 || options.state_dir.is_none(),
            "a devnet with more than one proxy cannot be kept in a state directory yet"
        );
        if let Some(dir) = &options.state_dir {
            std::fs::create_dir_all(dir).with_context(|| format!("--state {}", dir.display()))?;
        }
        // Node keys: fresh ones, or the state directory's.
        let identity = |name: &str| -> anyhow::Result<Arc<Identity>> {
            let id = match &options.state_dir {
                Some(dir) => Identity::load_or_create(&dir.join(format!("{name}.pem")))?,
                None => Identity::generate()?,
            };
            Ok(Arc::new(id.with_attester(simulated())))
        };
        let proxy_id = identity("proxy")?;
        let worker_id = identity("worker")?;
        let client_id = identity("client")?;
        let more_ids = options
            .more_workers
            .iter()
            .map(|_| Identity::generate().map(|id| Arc::new(id.with_attester(simulated()))))
            .collect::<Result<Vec<_>, _>>()?;
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

        // The embedded TON chain: genesis wallets, the root contract, the
        // proxy's and the client's contracts, and its HTTP API, which every
        // role settles through.
        let prices = cocoon_chain::devnet::default_prices();
        let proxy_signer = cocoon_proxy::signer_of(&proxy_id);
        let ton = Arc::new(
            ton_chain(&options, &prices, proxy_signer.public_key().0)
                .context("starting the embedded TON chain")?,
        );
        if let Some(every) = options.block_interval {
            ton.chain
                .lock()
                .map_err(|_| anyhow::anyhow!("chain poisoned"))?
                .in_blocks = true;
            tasks.push(tokio::spawn(produce_blocks(
                ton.clone(),
                every,
                options.state_dir.clone(),
                stop.clone(),
            )));
        }
        let ton_http = TcpListener::bind(options.ton_listen)
            .await
            .with_context(|| format!("binding the TON API on {}", options.ton_listen))?;
        let ton_addr = ton_http.local_addr()?;
        // Tests cut the chain off (`ton_outage`): every API call then fails
        // with 503, as a TON API that is down or unreachable does.
        let ton_outage = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let ton_app =
            cocoon_chain::api::router(ton.chain.clone(), cocoon_chain::devnet::unix_now).layer(
                axum::middleware::from_fn_with_state(ton_outage.clone(), ton_unless_out),
            );
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
        let ton_api_url = format!("http://{ton_addr}/api/v2");
        let ton_api = || -> anyhow::Result<Arc<dyn cocoon_chain::Chain>> {
            Ok(Arc::new(cocoon_chain::TonHttp::new(&ton_api_url, None)?))
        };
        let books_file = options.state_dir.as_ref().map(|d| d.join("books.redb"));
        let settlement = Arc::new(
            cocoon_proxy::Settlement::connect(
                ton_api()?,
                ton.wallets.proxy(),
                proxy_signer,
                ton.proxy_contract.clone(),
                ton.root.clone(),
                |prices| match &books_file {
                    Some(path) => cocoon_proxy::Books::open(path, prices),
                    None => Ok(cocoon_proxy::Books::new(prices)),
                },
            )
            .await
            .map_err(anyhow::Error::msg)
            .context("connecting the proxy's settlement")?,
        );
        // The worker's earnings file: in the state directory, or a scratch
        // directory removed at shutdown.
        let (state_dir, scratch) = match &options.state_dir {
            Some(dir) => (dir.clone(), false),
            None => (
                std::env::temp_dir().join(format!(
                    "cocoon-devnet-{}-{}",
                    std::process::id(),
                    proxy_id.fingerprint()
                )),
                true,
            ),
        };
        std::fs::create_dir_all(&state_dir)
            .with_context(|| format!("creating {}", state_dir.display()))?;
        let earnings = Arc::new(
            cocoon_worker::Earnings::new(
                ton_api()?,
                ton.wallets.worker(),
                1,
                state_dir.join("worker-earnings.json"),
            )
            .map_err(anyhow::Error::msg)?,
        );

        let proxy_settings = ProxySettings {
            identity: proxy_id.clone(),
            allowed_clients: PinnedKeys::new([client_id.fingerprint()]),
            allowed_workers: PinnedKeys::new(
                std::iter::once(worker_id.fingerprint())
                    .chain(more_ids.iter().map(|id| id.fingerprint())),
            ),
            models: vec![model.clone()],
            mux: options.mux.clone(),
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            attestation: attestation.clone(),
            inspect: options.proxy_inspect.clone(),
            settlement: Some(settlement.clone()),
            timeouts: options.proxy_timeouts,
            queue: options.proxy_queue,
        };
        let (proxy, proxy_addr) = spawn_proxy(proxy_settings.clone(), &stop, &mut tasks).await?;
        let endpoint = ProxyEndpoint {
            address: proxy_addr.to_string(),
            fingerprint: proxy_id.fingerprint(),
        };
        // Every proxy is published in the root contract's registry.
        let version = cocoon_protocol::PROTOCOL_VERSION as u32;
        ton.register_proxy(
            &ton.proxy_contract,
            &ton.proxy_key,
            version,
            Some(&endpoint.address),
        )
        .context("publishing the proxy in the root contract")?;
        let mut more_proxies = Vec::new();
        for _ in 0..options.more_proxies {
            let id = Arc::new(Identity::generate()?.with_attester(simulated()));
            let signer = cocoon_proxy::signer_of(&id);
            let key = signer.public_key();
            let (contract, wallet) = ton.add_proxy(key.0).context("deploying a proxy contract")?;
            let settlement = Arc::new(
                cocoon_proxy::Settlement::connect(
                    ton_api()?,
                    wallet,
                    signer,
                    contract.clone(),
                    ton.root.clone(),
                    |prices| Ok(cocoon_proxy::Books::new(prices)),
                )
                .await
                .map_err(anyhow::Error::msg)
                .context("connecting a proxy's settlement")?,
            );
            let settings = ProxySettings {
                identity: id.clone(),
                settlement: Some(settlement.clone()),
                ..proxy_settings.clone()
            };
            let (handle, address) = spawn_proxy(settings, &stop, &mut tasks).await?;
            let endpoint = ProxyEndpoint {
                address: address.to_string(),
                fingerprint: id.fingerprint(),
            };
            ton.register_proxy(&contract, &key, version, Some(&endpoint.address))
                .context("publishing a proxy in the root contract")?;
            more_proxies.push(DevnetProxy {
                identity: id,
                endpoint,
                handle,
                settlement,
                contract,
            });
        }
        let all_proxies: Vec<ProxyEndpoint> = std::iter::once(endpoint.clone())
            .chain(more_proxies.iter().map(|p| p.endpoint.clone()))
            .collect();

        let worker = Worker::start(WorkerSettings {
            identity: worker_id,
            proxies: all_proxies.clone(),
            engine,
            mux: options.mux.clone(),
            attestation: attestation.clone(),
            replay_window: Duration::from_secs(60),
            payout: options
                .settle_every
                .map(|every| (earnings.clone(), every))
                .or(Some((earnings.clone(), Duration::from_secs(86_400)))),
            price_coefficient: options.price_coefficient,
        })
        .await?;
        let mut more_workers = Vec::new();
        for (id, (config, coefficient)) in more_ids.into_iter().zip(&options.more_workers) {
            let config = config.clone();
            let engine = tokio::task::spawn_blocking(move || config.build())
                .await?
                .context("building a worker's engine")?;
            more_workers.push(
                Worker::start(WorkerSettings {
                    identity: id,
                    proxies: all_proxies.clone(),
                    engine,
                    mux: options.mux.clone(),
                    attestation: attestation.clone(),
                    replay_window: Duration::from_secs(60),
                    // Claims are the first worker's (one wallet, one contract).
                    payout: Some((earnings.clone(), Duration::from_secs(86_400))),
                    price_coefficient: *coefficient,
                })
                .await?,
            );
        }
        let mut api = options.api.clone();
        if api.billing.is_none() {
            api.billing = Some(Arc::new(client_billing(
                &options,
                &ton,
                &ton_api_url,
                &state_dir,
            )?));
        }
        let pool = Arc::new(ProxyPool::start(
            client_id.clone(),
            std::slice::from_ref(&endpoint),
            options.mux.clone(),
            attestation,
            api.billing.clone(),
        )?);
        // The first proxy is configured; the client node finds the others in
        // the root contract's registry, as a node on TON would.
        pool.follow_registry(
            Arc::new(cocoon_chain::TonHttp::new(&ton_api_url, None)?),
            ton.root.clone(),
            Duration::from_secs(2),
        );

        let proxies = all_proxies.len();
        let ready = async {
            worker.wait_connected(proxies).await;
            pool.wait_connected(proxies).await;
            pool.wait_registered(proxies).await;
            for w in &more_workers {
                w.wait_connected(proxies).await;
            }
            let handles = std::iter::once(&proxy).chain(more_proxies.iter().map(|p| &p.handle));
            for handle in handles {
                while handle.registry.worker_count() < 1 + more_workers.len() {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(20), ready)
            .await
            .context("the devnet's nodes did not connect to each other within 20 s")?;

        let http = TcpListener::bind(options.listen)
            .await
            .with_context(|| format!("binding the API on {}", options.listen))?;
        let api_addr = http.local_addr()?;
        let backend: Arc<dyn cocoon_client::Backend> = pool.clone();
        let http_stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let shutdown = async move { http_stop.cancelled().await };
            if let Err(e) = cocoon_client::serve(http, backend, api, shutdown).await {
                tracing::error!(error = %e, "API server failed");
            }
        }));

        // The operator's endpoints of the proxy and the worker.
        let status = |metrics: Arc<cocoon_metrics::Metrics>,
                      node: Arc<dyn cocoon_metrics::NodeStatus>|
         -> anyhow::Result<(String, JoinHandle<()>)> {
            let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
            listener.set_nonblocking(true)?;
            let url = format!("http://{}", listener.local_addr()?);
            let listener = TcpListener::from_std(listener)?;
            let stop = stop.clone();
            let task = tokio::spawn(async move {
                let shutdown = async move { stop.cancelled().await };
                if let Err(e) = cocoon_metrics::serve(listener, metrics, node, shutdown).await {
                    tracing::error!(error = %e, "status endpoints failed");
                }
            });
            Ok((url, task))
        };
        let (proxy_status_url, task) = status(
            proxy.metrics.clone(),
            Arc::new(cocoon_proxy::ProxyStatus(proxy.clone())),
        )?;
        tasks.push(task);
        let (worker_status_url, task) =
            status(worker.metrics().clone(), Arc::new(worker.status()))?;
        tasks.push(task);

        Ok(Devnet {
            api_url: format!("http://{api_addr}/v1"),
            proxy_status_url,
            worker_status_url,
            proxy_addr,
            proxy,
            worker,
            more_workers,
            more_proxies,
            pool,
            model,
            client_identity: client_id,
            proxy_endpoint: endpoint,
            ton_api_url,
            ton_root: ton.root.to_string(),
            ton,
            settlement,
            ton_outage,
            earnings,
            state_dir,
            scratch,
            persist: options.state_dir.is_some(),
            stop,
            tasks,
        }
        .with_settlement(options.settle_every))
    }

    /// Every proxy settles every `every` in the background (the worker
    /// claims on the same period, set at its start).
    fn with_settlement(mut self, every: Option<Duration>) -> Self {
        if let Some(every) = every {
            let settlements: Vec<_> = std::iter::once(self.settlement.clone())
                .chain(self.more_proxies.iter().map(|p| p.settlement.clone()))
                .collect();
            for settlement in settlements {
                self.tasks
                    .push(tokio::spawn(settlement.run(every, self.stop.clone())));
            }
        }
        self
    }

    /// Settle now: every proxy charges the client's contract with it and
    /// commits its books; the worker fetches each proxy's voucher and
    /// claims all of it. Returns what the chain shows afterwards (for the
    /// first proxy).
    pub async fn settle_now(&self) -> anyhow::Result<Settled> {
        let proxies = std::iter::once((&self.settlement, &self.proxy_endpoint)).chain(
            self.more_proxies
                .iter()
                .map(|p| (&p.settlement, &p.endpoint)),
        );
        for (i, (settlement, endpoint)) in proxies.enumerate() {
            settlement.settle_once().await.map_err(anyhow::Error::msg)?;
            let proxy = endpoint.fingerprint.to_string();
            if let Some(conn) = self.worker.connection(i) {
                self.earnings
                    .fetch(&proxy, &conn)
                    .await
                    .map_err(anyhow::Error::msg)?;
                self.earnings
                    .claim(&proxy, true)
                    .await
                    .map_err(anyhow::Error::msg)?;
            }
        }
        self.settled().await
    }

    /// What the chain shows as settled.
    pub async fn settled(&self) -> anyhow::Result<Settled> {
        use cocoon_chain::{Chain, ClientState, ProxyState};
        let chain = self.ton.embedded();
        let proxy = ProxyState::from_stack(
            &chain
                .get(&self.ton.proxy_contract, "get_proxy_data", &[])
                .await?,
        )?;
        // A closed client contract is gone: all it paid is what the proxy
        // contract received (the devnet has one client).
        let charged = if chain.account(&self.ton.client_contract).await?.is_active() {
            ClientState::from_stack(
                &chain
                    .get(&self.ton.client_contract, "get_client_data", &[])
                    .await?,
            )?
            .charged
        } else {
            proxy.received
        };
        let claimed = self
            .earnings
            .paid_on_chain(&self.ton.worker_contract)
            .await
            .map_err(anyhow::Error::msg)?;
        Ok(Settled {
            charged,
            claimed,
            books_seqno: proxy.books_seqno,
        })
    }

    /// Stop everything.
    pub async fn shutdown(self) {
        self.worker.stop();
        for w in &self.more_workers {
            w.stop();
        }
        self.pool.stop();
        self.stop.cancel();
        for task in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        if self.persist {
            if let Err(e) = save_chain(&self.ton, &self.state_dir) {
                tracing::error!(error = %e, "could not save the chain");
            }
        }
        if self.scratch {
            let _ = std::fs::remove_dir_all(&self.state_dir);
        }
    }
}
