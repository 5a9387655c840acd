//! [`Devnet`]: a whole Cocoon network in one process on loopback: proxies,
//! workers dialling every proxy, and a client node serving the OpenAI API,
//! each with a fresh key and each pinning the others' keys, talking over real
//! TLS connections. Every hop is RA-TLS with a SIMULATED TEE per node (there
//! is no TDX here): certificates carry simulated evidence bound to their
//! keys, and each side checks it under a development policy that allows
//! simulated evidence. Each node is started as its role starts it
//! ([`ProxyNode`], [`WorkerNode`], [`ClientNode`]); the first proxy and the
//! first worker differ from the others only in the chain's genesis.
//!
//! Money runs as it does on TON: an embedded chain with the network's
//! contracts, served over TON's HTTP API, and each role settling through
//! that API with its own wallet: the client node registers its contract with
//! each proxy, each proxy charges it and commits its books, the workers
//! claim the proxies' signed vouchers.

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use cocoon_attestation::gpu::{simulated::SimulatedGpu, GpuReferences};
use cocoon_attestation::simulated::SimulatedTee;
use cocoon_attestation::{AllowedModel, Attester, Policy, Published};
use cocoon_chain::root::ImageRole;
use cocoon_chain::StdAddr;
use cocoon_client::{ClientNode, ClientSettings, ProxyPool, RegistrySettings};
use cocoon_protocol::ra_tls::AttestationCheck;
use cocoon_protocol::tls::{Identity, PinnedKeys};
use cocoon_protocol::{ProxyEndpoint, DEFAULT_MAX_FRAME_BYTES};
use cocoon_proxy::{ProxyHandle, ProxyListeners, ProxyNode, ProxySettings, Settlement};
use cocoon_ton_devnet::TonDevnet;
use cocoon_worker::{Worker, WorkerNode, WorkerSettings};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::chain;
use crate::DevnetOptions;

/// One of the devnet's proxies.
pub struct DevnetProxy {
    pub node: ProxyNode,
    pub identity: Arc<Identity>,
    pub endpoint: ProxyEndpoint,
    pub settlement: Arc<Settlement>,
    /// Its proxy contract.
    pub contract: StdAddr,
}

impl DevnetProxy {
    pub fn handle(&self) -> &ProxyHandle {
        &self.node.handle
    }
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

/// A running devnet. Stop it with [`Devnet::shutdown`].
pub struct Devnet {
    /// Base URL of the OpenAI-compatible API, e.g. `http://127.0.0.1:8080/v1`.
    pub api_url: String,
    /// Every proxy: the first is the one the client node is configured
    /// with (its client contract made at genesis), then `more_proxies`.
    pub proxies: Vec<DevnetProxy>,
    /// Every worker: the first runs `engine`, then `more_workers`.
    pub workers: Vec<WorkerNode>,
    pub client: ClientNode,
    pub model: String,
    /// The client node's identity (for tests that speak the node protocol
    /// to a proxy themselves).
    pub client_identity: Arc<Identity>,
    /// What every node checks its peers' evidence against (the devnet's
    /// root configuration: its simulated image, its model).
    pub peer_check: Option<Arc<AttestationCheck>>,
    /// The embedded TON chain: its HTTP API (toncenter v2 subset), the root
    /// contract's address, and the chain itself.
    pub ton_api_url: String,
    pub ton_root: String,
    pub ton: Arc<TonDevnet>,
    /// Set: the chain's HTTP API answers every call with 503 (the chain is
    /// unreachable for every node) until cleared.
    pub ton_outage: Arc<AtomicBool>,
    /// The workers' vouchers and claims (one wallet, one worker contract).
    pub earnings: Arc<cocoon_worker::Earnings>,
    /// The workers' and proxies' admin token (`Authorization: Bearer ...`
    /// on their status endpoints' `/admin/...`: drain, resume;
    /// disable-worker, enable-worker).
    pub admin_token: zeroize::Zeroizing<String>,
    /// The earnings file lives here (and, with `state_dir`, all state).
    state_dir: std::path::PathBuf,
    /// `state_dir` is a scratch directory, removed at shutdown.
    scratch: bool,
    /// The chain is saved in `state_dir`.
    persist: bool,
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

/// A new identity with a simulated TEE: from `dir/NAME.pem` when given.
pub(crate) fn simulated_identity(
    dir: Option<&std::path::Path>,
    name: &str,
) -> anyhow::Result<Arc<Identity>> {
    let id = match dir {
        Some(dir) => Identity::load_or_create(&dir.join(format!("{name}.pem")))?,
        None => Identity::generate()?,
    };
    let tee: Arc<dyn Attester> = Arc::new(SimulatedTee::new());
    Ok(Arc::new(id.with_attester(tee)))
}

async fn loopback() -> anyhow::Result<TcpListener> {
    TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding a loopback port")
}

impl Devnet {
    pub async fn start(options: DevnetOptions) -> anyhow::Result<Devnet> {
        anyhow::ensure!(
            options.more_proxies == 0 || options.state_dir.is_none(),
            "a devnet with more than one proxy cannot be kept in a state directory yet"
        );
        let dir = options.state_dir.as_deref();
        if let Some(dir) = dir {
            std::fs::create_dir_all(dir).with_context(|| format!("--state {}", dir.display()))?;
        }
        // Node keys: fresh ones, or the state directory's.
        let proxy_ids = std::iter::once(simulated_identity(dir, "proxy"))
            .chain((0..options.more_proxies).map(|_| simulated_identity(None, "")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let worker_ids = std::iter::once(simulated_identity(dir, "worker"))
            .chain(
                options
                    .more_workers
                    .iter()
                    .map(|_| simulated_identity(None, "")),
            )
            .collect::<anyhow::Result<Vec<_>>>()?;
        let client_id = simulated_identity(dir, "client")?;
        let engines = std::iter::once((options.engine.clone(), options.price_coefficient))
            .chain(options.more_workers.iter().cloned())
            .collect::<Vec<_>>();
        let mut built = Vec::with_capacity(engines.len());
        for (config, coefficient) in engines {
            let engine = tokio::task::spawn_blocking(move || config.build())
                .await?
                .context("building a worker's engine")?;
            built.push((engine, coefficient));
        }
        let engine = built[0].0.clone();
        // What the network trusts is published in the root contract (below):
        // its one simulated image may run workers and proxies, and the
        // workers' loaded weights are the allowed models. The local policy
        // sets the rest: simulated evidence is accepted (development), and
        // workers show (simulated) GPU evidence bound to their keys. An
        // engine that does not hash weights (the instant test engine) has
        // nothing to publish: then the local policy lists the image and
        // leaves models open, as before the chain held them.
        let image = SimulatedTee::measurements().image_hash();
        let models: Vec<_> = built.iter().flat_map(|(e, _)| e.models()).collect();
        let follow_root = models.iter().all(|m| m.weights_sha256.is_some());
        let published_models: Vec<AllowedModel> = models
            .into_iter()
            .filter_map(|m| {
                m.weights_sha256.map(|sha256| AllowedModel {
                    name: m.name,
                    sha256,
                })
            })
            .collect();
        let policy = Policy {
            allow_simulated: true,
            require_gpu: true,
            worker_images: match follow_root {
                true => Default::default(),
                false => [image.clone()].into(),
            },
            proxy_images: match follow_root {
                true => Default::default(),
                false => [image.clone()].into(),
            },
            ..Policy::default()
        };
        let model = engine
            .models()
            .first()
            .map(|m| m.name.clone())
            .context("the engine serves no model")?;

        let stop = CancellationToken::new();
        let mut tasks = Vec::new();

        // The embedded TON chain: genesis wallets, the root contract, the
        // first proxy's and the client's contracts, and its HTTP API, which
        // every role settles through.
        let prices = options.prices.clone();
        let first_signer = cocoon_proxy::signer_of(&proxy_ids[0]);
        let ton = Arc::new(
            chain::ton_chain(
                &options,
                &prices,
                first_signer.public_key().0,
                client_id.fingerprint().0,
            )
            .context("starting the embedded TON chain")?,
        );
        if let Some(every) = options.block_interval {
            tasks.push(chain::start_blocks(
                &ton,
                every,
                options.state_dir.clone(),
                stop.clone(),
            )?);
        }
        // The operator publishes the image and the models in the root contract.
        for role in [ImageRole::Worker, ImageRole::Proxy] {
            ton.publish_image(role, &image, true)?;
        }
        for model in &published_models {
            ton.publish_model(&model.sha256, Some(&model.name))?;
        }
        let ton_outage = Arc::new(AtomicBool::new(false));
        let (ton_api_url, task) =
            chain::serve_api(&ton, options.ton_listen, ton_outage.clone(), stop.clone()).await?;
        tasks.push(task);
        let ton_api = || -> anyhow::Result<Arc<dyn cocoon_chain::Chain>> {
            Ok(Arc::new(cocoon_chain::TonHttp::new(&ton_api_url, None)?))
        };
        // Every node trusts what the root contract publishes, read through
        // the chain's API (one list for all: one chain, one root).
        let published = follow_root.then(|| Arc::new(Published::new(ton.root.to_string())));
        if let Some(published) = &published {
            cocoon_chain::published::read_through(
                published,
                &ton_api_url,
                None,
                &[],
                options.registry_every,
            )
            .map_err(|(field, e)| anyhow::anyhow!("{field}: {e}"))?;
        }
        // Each node dates evidence by the chain's blocks through a cache of
        // its own (its own evidence binds the newest block; its peers'
        // blocks are looked up), as nodes on TON do.
        let attested = |id: &Arc<Identity>| {
            let anchors = cocoon_chain::anchors::block_anchors(ton_api()?);
            id.anchor_to(anchors.clone());
            Ok::<_, anyhow::Error>(Arc::new(AttestationCheck {
                policy: policy.clone(),
                collateral: None,
                verify_at: None,
                anchors: Some(anchors),
                gpu: Some(GpuReferences::new(None, None).map_err(anyhow::Error::msg)?),
                published: published.clone(),
            }))
        };

        // The earnings file: in the state directory, or a scratch
        // directory removed at shutdown.
        let (state_dir, scratch) = match &options.state_dir {
            Some(dir) => (dir.clone(), false),
            None => (
                std::env::temp_dir().join(format!(
                    "cocoon-devnet-{}-{}",
                    std::process::id(),
                    proxy_ids[0].fingerprint()
                )),
                true,
            ),
        };
        std::fs::create_dir_all(&state_dir)
            .with_context(|| format!("creating {}", state_dir.display()))?;
        let mut earnings = cocoon_worker::Earnings::new(
            ton_api()?,
            ton.wallets.worker(),
            1,
            state_dir.join("worker-earnings.json"),
        )
        .map_err(anyhow::Error::msg)?;
        // Vouchers only from proxy contracts the root contract publishes.
        earnings.root = Some(ton.root.clone());
        let earnings = Arc::new(earnings);

        // The proxies: the first with the genesis proxy contract (its books
        // kept with the state), each other with its own operator wallet
        // and contract; every one published in the root contract.
        let version = cocoon_protocol::PROTOCOL_VERSION as u32;
        let admin_token = zeroize::Zeroizing::new(hex::encode(rand::random::<[u8; 32]>()));
        let mut proxies = Vec::with_capacity(proxy_ids.len());
        for (i, id) in proxy_ids.iter().enumerate() {
            let signer = cocoon_proxy::signer_of(id);
            let key = signer.public_key();
            let (contract, wallet) = if i == 0 {
                (ton.proxy_contract.clone(), ton.wallets.proxy())
            } else {
                ton.add_proxy(key.0).context("deploying a proxy contract")?
            };
            let books_file = match (i, &options.state_dir) {
                (0, Some(dir)) => Some(dir.join("books.redb")),
                _ => None,
            };
            let mut settlement = Settlement::connect(
                ton_api()?,
                wallet,
                signer,
                contract.clone(),
                ton.root.clone(),
                |prices| match &books_file {
                    Some(path) => cocoon_proxy::Books::open(path, prices),
                    None => Ok(cocoon_proxy::Books::new(prices)),
                },
            )
            .await
            .map_err(anyhow::Error::msg)
            .context("connecting a proxy's settlement")?;
            settlement.min_charge = options.min_charge;
            let settlement = Arc::new(settlement);
            let attestation = attested(id)?;
            cocoon_protocol::anchors_ready(id, Some(&attestation)).await?;
            let attestation = Some(attestation);
            let settings = ProxySettings {
                identity: id.clone(),
                allowed_clients: if options.open {
                    PinnedKeys::any()
                } else {
                    PinnedKeys::new([client_id.fingerprint()])
                },
                allowed_workers: if options.open {
                    PinnedKeys::any()
                } else {
                    PinnedKeys::new(worker_ids.iter().map(|w| w.fingerprint()))
                },
                models: vec![model.clone()],
                mux: options.mux.clone(),
                max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
                attestation: attestation.clone(),
                inspect: options.proxy_inspect.clone(),
                settlement: Some(settlement.clone()),
                timeouts: options.proxy_timeouts,
                queue: options.proxy_queue,
                gate: Default::default(),
                admin_token: Some(cocoon_metrics::admin::AdminToken::from_secret(&admin_token)),
                disabled_workers_file: None,
            };
            let node = ProxyNode::start(
                settings,
                options.settle_every,
                ProxyListeners::loopback().await?,
            )?;
            let endpoint = ProxyEndpoint {
                address: node.address().to_string(),
                fingerprint: id.fingerprint(),
            };
            ton.register_proxy(&contract, &key, version, Some(&endpoint.address))
                .context("publishing a proxy in the root contract")?;
            proxies.push(DevnetProxy {
                node,
                identity: id.clone(),
                endpoint,
                settlement,
                contract,
            });
        }
        let endpoints: Vec<ProxyEndpoint> = proxies.iter().map(|p| p.endpoint.clone()).collect();

        // The workers dial every proxy; all are paid to one wallet and
        // worker contract, and the first claims (on the settlement period).
        let mut workers = Vec::with_capacity(worker_ids.len());
        for (i, (id, (engine, coefficient))) in worker_ids.into_iter().zip(built).enumerate() {
            let claim_every = match (i, options.settle_every) {
                (0, Some(every)) => every,
                _ => Duration::from_secs(86_400),
            };
            let attestation = Some(attested(&id)?);
            let settings = WorkerSettings {
                identity: id,
                proxies: endpoints.clone(),
                engine,
                mux: options.mux.clone(),
                attestation,
                // SIMULATED, as its TEE is: the whole GPU path runs.
                gpu: Some(Arc::new(SimulatedGpu::new())),
                replay_window: Duration::from_secs(60),
                sealing_key_rotation: options.sealing_key_rotation,
                payout: Some((earnings.clone(), claim_every)),
                price_coefficient: coefficient,
                coalesce: cocoon_worker::DEFAULT_COALESCE,
                admin_token: Some(cocoon_metrics::admin::AdminToken::from_secret(&admin_token)),
            };
            workers.push(WorkerNode::start(settings, Some(loopback().await?)).await?);
        }

        // The client node: configured with the first proxy, it finds the
        // others in the root contract's registry, as a node on TON would.
        let mut api = options.api.clone();
        if api.billing.is_none() {
            api.billing = Some(Arc::new(chain::client_billing(
                &options,
                &ton,
                &ton_api_url,
                &state_dir,
                client_id.fingerprint(),
            )?));
        }
        let listener = TcpListener::bind(options.listen)
            .await
            .with_context(|| format!("binding the API on {}", options.listen))?;
        let attestation = attested(&client_id)?;
        cocoon_protocol::anchors_ready(&client_id, Some(&attestation)).await?;
        let attestation = Some(attestation);
        let client = ClientNode::start(
            ClientSettings {
                identity: client_id.clone(),
                proxies: vec![endpoints[0].clone()],
                registry: Some(RegistrySettings {
                    chain: cocoon_chain::TonHttp::new(&ton_api_url, None)?,
                    agree: Vec::new(),
                    root: ton.root.clone(),
                    every: options.registry_every,
                }),
                api,
                mux: options.mux.clone(),
                listen: options.listen,
                attestation: attestation.clone(),
            },
            listener,
        )?;

        let ready = async {
            for worker in &workers {
                worker.wait_ready(proxies.len()).await;
            }
            client.wait_ready(proxies.len()).await;
            for proxy in &proxies {
                proxy.node.wait_ready(workers.len()).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(20), ready)
            .await
            .context("the devnet's nodes did not connect to each other within 20 s")?;

        Ok(Devnet {
            api_url: client.api_url(),
            proxies,
            workers,
            client,
            model,
            client_identity: client_id,
            peer_check: attestation,
            ton_api_url,
            ton_root: ton.root.to_string(),
            ton,
            ton_outage,
            earnings,
            admin_token,
            state_dir,
            scratch,
            persist: options.state_dir.is_some(),
            stop,
            tasks,
        })
    }

    /// The first proxy's handle (registry, receipts, books).
    pub fn proxy(&self) -> &ProxyHandle {
        self.proxies[0].handle()
    }

    /// The first proxy's settlement (charges, books, vouchers).
    pub fn settlement(&self) -> &Arc<Settlement> {
        &self.proxies[0].settlement
    }

    /// Where the first proxy listens, and its key.
    pub fn proxy_endpoint(&self) -> &ProxyEndpoint {
        &self.proxies[0].endpoint
    }

    pub fn proxy_addr(&self) -> SocketAddr {
        self.proxies[0].node.address()
    }

    /// The first proxy's `/healthz`, `/readyz`, `/metrics`, `/stats`, e.g.
    /// `http://127.0.0.1:34567`.
    pub fn proxy_status_url(&self) -> String {
        self.proxies[0].node.status_url().unwrap_or_default()
    }

    /// The first worker.
    pub fn worker(&self) -> &Worker {
        &self.workers[0]
    }

    /// The first worker's status endpoints.
    pub fn worker_status_url(&self) -> String {
        self.workers[0].status_url().unwrap_or_default()
    }

    /// Another client node with this one's key, dialling `proxies` (say, a
    /// relay in front of the devnet's proxy): no billing of its own (its
    /// proxy knows its key's contract) and `peer_check` as its policy, or
    /// none (key pins only, as the development profile allows).
    pub async fn client_through(
        &self,
        proxies: Vec<ProxyEndpoint>,
        peer_check: Option<Arc<AttestationCheck>>,
    ) -> anyhow::Result<ClientNode> {
        let listen: SocketAddr = "127.0.0.1:0".parse()?;
        let listener = TcpListener::bind(listen).await?;
        let client = ClientNode::start(
            ClientSettings {
                identity: self.client_identity.clone(),
                proxies,
                registry: None,
                api: Default::default(),
                mux: Default::default(),
                listen,
                attestation: peer_check,
            },
            listener,
        )?;
        tokio::time::timeout(Duration::from_secs(10), client.wait_ready(1))
            .await
            .context("the client node did not connect within 10 s")?;
        Ok(client)
    }

    /// Where this devnet keeps its state (a scratch directory unless
    /// `state_dir` was given): the client node's receipts journal, the
    /// worker's earnings, the chain when kept.
    pub fn state_dir(&self) -> &std::path::Path {
        &self.state_dir
    }

    /// The client node's connections to proxies.
    pub fn pool(&self) -> &Arc<ProxyPool> {
        &self.client.pool
    }

    /// Settle now: every proxy charges the client's contract with it and
    /// commits its books; the worker fetches each proxy's voucher and
    /// claims all of it. Returns what the chain shows afterwards (for the
    /// first proxy).
    pub async fn settle_now(&self) -> anyhow::Result<Settled> {
        for (i, proxy) in self.proxies.iter().enumerate() {
            proxy
                .settlement
                .settle_once()
                .await
                .map_err(anyhow::Error::msg)?;
            let key = proxy.endpoint.fingerprint.to_string();
            if let Some(conn) = self.worker().connection(i) {
                self.earnings
                    .fetch(&key, &conn)
                    .await
                    .map_err(anyhow::Error::msg)?;
                self.earnings
                    .claim(&key, true)
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
        for worker in self.workers {
            worker.stop().await;
        }
        self.client.stop().await;
        for proxy in self.proxies {
            proxy.node.stop().await;
        }
        self.stop.cancel();
        for task in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        if self.persist {
            if let Err(e) = chain::save_chain(&self.ton, &self.state_dir) {
                tracing::error!(error = %e, "could not save the chain");
            }
        }
        if self.scratch {
            let _ = std::fs::remove_dir_all(&self.state_dir);
        }
    }
}
