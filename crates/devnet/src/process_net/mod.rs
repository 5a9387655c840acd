//! [`ProcessNet`]: a Cocoon network of separate `cocoon` processes on
//! loopback (proxies, workers and a client node, each run from the TOML file
//! an operator would write), paying on an embedded TON chain that this
//! process serves over TON's HTTP API. Each node's memory is its own
//! process's, and a node can be killed (SIGKILL, no clean shutdown) and
//! started again from the same files: the soak (`cocoon soak`) and the
//! fault tests use it.
//!
//! Every hop is RA-TLS with a SIMULATED TEE (development profile, a policy
//! allowing the simulated image), as on `cocoon devnet`.
//!
//! * `node` - [`Node`]: one process, started, killed and measured.

mod node;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use cocoon_chain::mnemonic::Mnemonic;
use cocoon_chain::{Chain, StdAddr, Wallet};
use cocoon_client::{BillingConfig, ClientConfig};
use cocoon_protocol::tls::Identity;
use cocoon_protocol::{AttestationConfig, Profile, ProxyEndpoint, TeeChoice};
use cocoon_proxy::{ProxyConfig, SettlementConfig};
use cocoon_ton_devnet::{Genesis, TonDevnet, Wallets};
use cocoon_worker::{EngineConfig, PayoutConfig, WorkerConfig};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use node::Node;

/// What to start.
#[derive(Debug, Clone)]
pub struct ProcessNetOptions {
    /// The `cocoon` binary to run the nodes with.
    pub binary: PathBuf,
    /// Proxies (each its own operator wallet and proxy contract).
    pub proxies: usize,
    /// Instant-engine workers, each dialling every proxy: (delay before each
    /// token in ms, price coefficient) per worker.
    pub workers: Vec<(u64, u32)>,
    /// The instant engine's model name.
    pub model: String,
    /// Requests each worker runs at once.
    pub worker_concurrency: u32,
    /// The client node's `max_concurrent_requests`.
    pub client_concurrency: usize,
    /// Proxies' `settlement.every_secs` and workers' `payout.check_every_secs`.
    pub settle_every_secs: u64,
    /// The proxies' `settlement.every_secs` when it differs from the
    /// workers' (`None`: `settle_every_secs`).
    pub proxy_settle_every_secs: Option<u64>,
    /// The genesis client contract's deposit (the one paying the first
    /// proxy), nano-TON; the node deploys one with this much for each other.
    pub client_deposit: u128,
}

impl ProcessNetOptions {
    pub fn new(binary: PathBuf, model: &str) -> Self {
        Self {
            binary,
            proxies: 1,
            workers: vec![(0, cocoon_protocol::BASE_PRICE_COEFFICIENT)],
            model: model.to_string(),
            worker_concurrency: 64,
            client_concurrency: 256,
            settle_every_secs: 1,
            proxy_settle_every_secs: None,
            client_deposit: cocoon_ton_devnet::CLIENT_DEPOSIT,
        }
    }
}

/// A proxy process and its accounts.
pub struct ProxyNode {
    pub node: Node,
    pub contract: StdAddr,
    pub key: cocoon_chain::HashBytes,
    /// Its books database (redb): readable once the process is gone.
    pub books: PathBuf,
    /// The client node's contract that pays this proxy (known for the first
    /// at genesis; the node deploys the others, see
    /// [`ProcessNet::client_contract`]).
    genesis_client: Option<StdAddr>,
}

/// A worker process and where it is paid.
pub struct WorkerNode {
    pub node: Node,
    pub wallet: StdAddr,
}

pub struct ProcessNet {
    pub ton: Arc<TonDevnet>,
    pub ton_api_url: String,
    /// The client node's OpenAI-compatible API, `http://…/v1`.
    pub api_url: String,
    pub proxies: Vec<ProxyNode>,
    pub workers: Vec<WorkerNode>,
    pub client: Node,
    /// Where the client node remembers the contracts it deployed.
    client_contracts_file: PathBuf,
    pub dir: tempfile::TempDir,
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

/// A loopback port free now, for another process to listen on later.
///
/// Chosen outside the kernel's ephemeral range
/// (`/proc/sys/net/ipv4/ip_local_port_range`): a port the kernel handed out
/// for `bind(0)` is also one it may hand to any outgoing connection before
/// the process that was meant to listen on it starts (seen in CI: a client
/// node that could not bind its API while parallel tests made connections).
/// Ports are taken in turn from a random start so that two calls in this
/// process never return the same one, and each is checked free by binding.
pub fn free_port() -> anyhow::Result<u16> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let (low, high) = listen_port_range();
    let span = u32::from(high - low);
    if NEXT.load(Ordering::Relaxed) == u32::MAX {
        let start = rand::random::<u32>() % span;
        let _ = NEXT.compare_exchange(u32::MAX, start, Ordering::Relaxed, Ordering::Relaxed);
    }
    for _ in 0..span {
        let port = low + (NEXT.fetch_add(1, Ordering::Relaxed) % span) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    anyhow::bail!("no free loopback port in {low}..{high}")
}

/// Ports that no outgoing connection is given: below the ephemeral range
/// (10000 up to its start, 32768 on a default Linux), or above it if it
/// starts low.
fn listen_port_range() -> (u16, u16) {
    let range: Vec<u16> = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|n| n.parse().ok())
        .collect();
    match range[..] {
        [start, _] if start > 11000 => (10000, start),
        [_, end] if end < 64000 => (end + 1, 65535),
        _ => (10000, 32768),
    }
}

/// A new wallet whose mnemonic is written to `path` (0600).
fn wallet_file(path: &Path) -> anyhow::Result<(Wallet, zeroize::Zeroizing<[u8; 32]>)> {
    let mnemonic = Mnemonic::generate()?;
    cocoon_protocol::tls::write_secret_file(path, mnemonic.phrase().as_bytes())?;
    let seed = mnemonic.key_seed();
    Ok((Wallet::from_seed(&seed)?, seed))
}

impl ProcessNet {
    /// Genesis on the embedded chain (root, a proxy contract per proxy, the
    /// client contract for the first), config files for every node, then
    /// every process started. Returns once the client node answers a
    /// request through every proxy's workers.
    pub async fn start(o: ProcessNetOptions) -> anyhow::Result<ProcessNet> {
        anyhow::ensure!(o.proxies >= 1, "at least one proxy");
        anyhow::ensure!(!o.workers.is_empty(), "at least one worker");
        let dir = tempfile::tempdir().context("a scratch directory")?;
        let d = dir.path().to_path_buf();
        let image = cocoon_attestation::simulated::SimulatedTee::measurements().image_hash();
        let policy = d.join("dev-policy.toml");
        std::fs::write(
            &policy,
            format!(
                "allow_simulated = true\nworker_images = [\"{image}\"]\nproxy_images = [\"{image}\"]\n"
            ),
        )?;
        let attestation = AttestationConfig {
            tee: TeeChoice::Simulated,
            policy: Some(policy.clone()),
            ..AttestationConfig::default()
        };

        // Keys and wallets, each in the file its node reads.
        let key = |name: &str| -> anyhow::Result<(PathBuf, Arc<Identity>)> {
            let path = d.join(format!("{name}.pem"));
            let id = Identity::load_or_create(&path)?;
            Ok((path, Arc::new(id)))
        };
        let proxy_keys = (0..o.proxies)
            .map(|i| key(&format!("proxy-{i}")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let worker_keys = (0..o.workers.len())
            .map(|i| key(&format!("worker-{i}")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let client_key = key("client")?;
        let proxy_wallets = (0..o.proxies)
            .map(|i| wallet_file(&d.join(format!("proxy-{i}.words"))))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let worker_wallets = (0..o.workers.len())
            .map(|i| wallet_file(&d.join(format!("worker-{i}.words"))))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let client_wallet = wallet_file(&d.join("client.words"))?;
        let operator = Mnemonic::generate()?.key_seed();

        // The chain: genesis funds the first proxy's, the client's and the
        // first worker's wallets; the other workers' wallets as accounts.
        let public = |id: &Arc<Identity>| cocoon_proxy::signer_of(id).public_key().0;
        let prices = cocoon_chain::pricing::default_prices();
        let ton = TonDevnet::genesis(
            &prices,
            o.client_deposit,
            public(&proxy_keys[0].1),
            client_key.1.fingerprint().0,
            &Genesis {
                wallets: Some(Wallets {
                    operator,
                    proxy: proxy_wallets[0].1.clone(),
                    client: client_wallet.1.clone(),
                    worker: worker_wallets[0].1.clone(),
                }),
                accounts: worker_wallets[1..]
                    .iter()
                    .map(|(w, _)| (w.address.clone(), 100_000_000_000))
                    .collect(),
                now: None,
            },
        )
        .context("genesis")?;
        let mut contracts = vec![ton.proxy_contract.clone()];
        for (i, (_, id)) in proxy_keys.iter().enumerate().skip(1) {
            contracts.push(ton.add_proxy_with(public(id), &proxy_wallets[i].0)?);
        }
        let ton = Arc::new(ton);
        let stop = CancellationToken::new();
        let mut tasks = Vec::new();
        tasks.push(crate::chain::start_blocks(
            &ton,
            Duration::from_millis(100),
            None,
            stop.clone(),
        )?);
        let (ton_api_url, api) = crate::chain::serve_api(
            &ton,
            "127.0.0.1:0".parse()?,
            Default::default(),
            stop.clone(),
        )
        .await?;
        tasks.push(api);

        // Config files, written from the roles' own config types.
        let node = |name: String, role: &'static str, body: String, http: String| {
            let config = d.join(format!("{name}.toml"));
            std::fs::write(&config, body)?;
            anyhow::Ok(Node::new(name, role, config, o.binary.clone(), http))
        };
        let local = |port: u16| std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let worker_prints: Vec<_> = worker_keys.iter().map(|(_, id)| id.fingerprint()).collect();
        let client_print = client_key.1.fingerprint();
        let mut endpoints = Vec::new();
        let mut proxies = Vec::new();
        for (i, (key_path, id)) in proxy_keys.iter().enumerate() {
            let (port, status) = (free_port()?, free_port()?);
            endpoints.push(ProxyEndpoint {
                address: local(port).to_string(),
                fingerprint: id.fingerprint(),
            });
            // Published in the root contract, as the network's operator does:
            // a client node funds a contract only for a registered proxy.
            ton.register_proxy(
                &contracts[i],
                &cocoon_chain::HashBytes(public(id)),
                cocoon_protocol::PROTOCOL_VERSION as u32,
                Some(&local(port).to_string()),
            )
            .context("publishing a proxy in the root contract")?;
            let books = d.join(format!("proxy-{i}-books.redb"));
            let mut config = ProxyConfig::new(
                local(port),
                key_path.clone(),
                vec![client_print],
                worker_prints.clone(),
            );
            config.profile = Profile::Development;
            config.status_listen = Some(local(status));
            config.models = vec![o.model.clone()];
            config.keepalive_secs = 1;
            config.heartbeat_timeout_secs = 3;
            config.attestation = attestation.clone();
            config.settlement = Some(SettlementConfig {
                ton_api: ton_api_url.clone(),
                api_key_env: None,
                ton_api_agree: Vec::new(),
                wallet_mnemonic: d.join(format!("proxy-{i}.words")),
                proxy_contract: contracts[i].to_string(),
                root: ton.root.to_string(),
                books: books.clone(),
                every_secs: o.proxy_settle_every_secs.unwrap_or(o.settle_every_secs),
                // Every amount, so that tests see each settlement at once.
                min_charge_ton: Some("0".into()),
                pay_out_above_ton: None,
            });
            proxies.push(ProxyNode {
                node: node(
                    format!("proxy-{i}"),
                    "proxy",
                    config.to_toml()?,
                    format!("http://{}", local(status)),
                )?,
                contract: contracts[i].clone(),
                key: cocoon_chain::HashBytes(public(id)),
                books,
                genesis_client: (i == 0).then(|| ton.client_contract.clone()),
            });
        }
        let mut workers = Vec::new();
        for (i, ((key_path, _), (delay, coefficient))) in
            worker_keys.iter().zip(&o.workers).enumerate()
        {
            let status = free_port()?;
            let engine = EngineConfig::Instant {
                model: o.model.clone(),
                max_concurrent: o.worker_concurrency,
                token_delay_ms: *delay,
            };
            let mut config = WorkerConfig::new(key_path.clone(), endpoints.clone(), engine);
            config.profile = Profile::Development;
            config.status_listen = Some(local(status));
            config.keepalive_secs = 1;
            config.connect_timeout_secs = 3;
            config.price_coefficient = *coefficient;
            config.attestation = attestation.clone();
            config.payout = Some(PayoutConfig {
                ton_api: ton_api_url.clone(),
                api_key_env: None,
                ton_api_agree: Vec::new(),
                wallet_mnemonic: d.join(format!("worker-{i}.words")),
                claim_threshold_ton: "0.000000001".into(),
                check_every_secs: o.settle_every_secs,
                earnings: d.join(format!("worker-{i}-earnings.json")),
                root: Some(ton.root.to_string()),
            });
            workers.push(WorkerNode {
                node: node(
                    format!("worker-{i}"),
                    "worker",
                    config.to_toml()?,
                    format!("http://{}", local(status)),
                )?,
                wallet: worker_wallets[i].0.address.clone(),
            });
        }
        let api_port = free_port()?;
        let mut config = ClientConfig::new(local(api_port), client_key.0.clone(), endpoints);
        config.profile = Profile::Development;
        config.max_concurrent_requests = o.client_concurrency;
        config.keepalive_secs = 1;
        config.connect_timeout_secs = 3;
        config.first_token_timeout_secs = 20;
        config.idle_timeout_secs = 20;
        config.attestation = attestation;
        let mut billing = BillingConfig::new(ton_api_url.clone(), ton.root.to_string());
        billing.contract = Some(ton.client_contract.to_string());
        billing.wallet_mnemonic = Some(d.join("client.words"));
        billing.deposit_ton = Some(cocoon_chain::pricing::format_ton(o.client_deposit));
        let client_contracts_file = d.join("client-contracts.json");
        billing.contract_file = Some(client_contracts_file.clone());
        config.billing = Some(billing);
        let client = node(
            "client".into(),
            "client",
            config.to_toml()?,
            format!("http://{}", local(api_port)),
        )?;

        let mut net = ProcessNet {
            ton,
            ton_api_url,
            api_url: format!("http://127.0.0.1:{api_port}/v1"),
            proxies,
            workers,
            client,
            client_contracts_file,
            dir,
            stop,
            tasks,
        };
        for p in &mut net.proxies {
            p.node.start()?;
        }
        for w in &mut net.workers {
            w.node.start()?;
        }
        net.client.start()?;
        net.wait_ready(Duration::from_secs(60)).await?;
        Ok(net)
    }

    /// Every worker connected to every proxy, and the client node serves
    /// the model with a contract registered at every proxy.
    /// Fails at once, with its log, if a node has exited.
    pub async fn wait_ready(&mut self, within: Duration) -> anyhow::Result<()> {
        let http = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + within;
        let want = self.workers.len() as u64;
        loop {
            for node in self.nodes_mut() {
                if let Some(status) = node.exited() {
                    anyhow::bail!(
                        "{} exited ({status}) before the network was ready:\n{}",
                        node.name,
                        node.log_tail()
                    );
                }
            }
            let mut ready = true;
            for p in &self.proxies {
                let stats = get_json(&http, &format!("{}/stats", p.node.http)).await;
                if stats.map(|s| s["workers_connected"].as_u64()) != Some(Some(want)) {
                    ready = false;
                }
            }
            if ready {
                // The model is listed, and the node's contract is registered
                // with every proxy (it deploys one for each beyond the first).
                let models = get_json(&http, &format!("{}/models", self.api_url)).await;
                let balance = get_json(&http, &format!("{}/cocoon/balance", self.api_url)).await;
                let accounts = balance
                    .and_then(|b| b["accounts"].as_array().map(Vec::len))
                    .unwrap_or(0);
                if models.is_some_and(|m| m["data"].as_array().is_some_and(|d| !d.is_empty()))
                    && accounts == self.proxies.len()
                {
                    return Ok(());
                }
            }
            if tokio::time::Instant::now() > deadline {
                let logs: Vec<String> = self
                    .nodes()
                    .map(|n| format!("--- {} ---\n{}", n.name, n.log_tail()))
                    .collect();
                anyhow::bail!(
                    "the network was not ready within {within:?}\n{}",
                    logs.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn nodes_mut(&mut self) -> impl Iterator<Item = &mut Node> {
        self.proxies
            .iter_mut()
            .map(|p| &mut p.node)
            .chain(self.workers.iter_mut().map(|w| &mut w.node))
            .chain(std::iter::once(&mut self.client))
    }

    /// Every node, proxies first.
    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.proxies
            .iter()
            .map(|p| &p.node)
            .chain(self.workers.iter().map(|w| &w.node))
            .chain(std::iter::once(&self.client))
    }

    /// The client contract that pays proxy `i`: the genesis one for the
    /// first, one the client node deployed (and remembered) for the others.
    pub fn client_contract(&self, i: usize) -> anyhow::Result<Option<StdAddr>> {
        if let Some(c) = &self.proxies[i].genesis_client {
            return Ok(Some(c.clone()));
        }
        let Ok(text) = std::fs::read_to_string(&self.client_contracts_file) else {
            return Ok(None);
        };
        let json: serde_json::Value = serde_json::from_str(&text)?;
        let proxy = self.proxies[i].contract.to_string();
        // {"<proxy contract>": {"contract": "<client contract>", ...}}
        json[&proxy]["contract"]
            .as_str()
            .map(|s| s.parse().map_err(|e| anyhow::anyhow!("{s}: {e:?}")))
            .transpose()
    }

    /// Charged on chain to the contract paying proxy `i` (0 before it exists).
    pub async fn charged(&self, i: usize) -> anyhow::Result<u128> {
        let Some(contract) = self.client_contract(i)? else {
            return Ok(0);
        };
        let chain = self.ton.embedded();
        if !chain.account(&contract).await?.is_active() {
            return Ok(0);
        }
        let stack = chain.get(&contract, "get_client_data", &[]).await?;
        Ok(cocoon_chain::ClientState::from_stack(&stack)?.charged)
    }

    /// Worker `w`'s contract with proxy `i` (where the proxy's books keep
    /// what it owes that worker).
    pub fn worker_contract(&self, w: usize, i: usize) -> anyhow::Result<StdAddr> {
        let p = &self.proxies[i];
        Ok(cocoon_chain::worker_contract(&p.contract, &self.workers[w].wallet, &p.key)?.0)
    }

    /// Paid on chain to worker `w` by its contract with proxy `i`.
    pub async fn claimed(&self, w: usize, i: usize) -> anyhow::Result<u128> {
        let contract = self.worker_contract(w, i)?;
        let chain = self.ton.embedded();
        if !chain.account(&contract).await?.is_active() {
            return Ok(0);
        }
        let stack = chain.get(&contract, "get_worker_data", &[]).await?;
        Ok(cocoon_chain::WorkerState::from_stack(&stack)?.paid)
    }

    /// Paid on chain to every worker by its contract with proxy `i`, in
    /// worker order.
    pub async fn claims(&self, i: usize) -> anyhow::Result<Vec<u128>> {
        let mut all = Vec::with_capacity(self.workers.len());
        for w in 0..self.workers.len() {
            all.push(self.claimed(w, i).await?);
        }
        Ok(all)
    }

    /// Proxy `i`'s `/stats`; `None` while it does not answer.
    pub async fn proxy_stats(&self, i: usize) -> Option<serde_json::Value> {
        let http = reqwest::Client::new();
        get_json(&http, &format!("{}/stats", self.proxies[i].node.http)).await
    }

    /// What proxy `i`'s status page says the client contracts owe, in all
    /// (charged or not), nano-TON; `None` while it does not answer.
    pub async fn owed_by_clients(&self, i: usize) -> Option<u128> {
        let stats = self.proxy_stats(i).await?;
        stats["clients"]
            .as_array()?
            .iter()
            .map(|c| c["owed_nano"].as_str()?.parse::<u128>().ok())
            .sum()
    }

    /// Proxy `i`'s books, read from its database (the process must be gone).
    pub fn books(&self, i: usize) -> anyhow::Result<cocoon_proxy::Books> {
        cocoon_proxy::Books::open(
            &self.proxies[i].books,
            cocoon_chain::pricing::default_prices(),
        )
        .with_context(|| format!("{}", self.proxies[i].books.display()))
    }

    /// Stop every process (SIGKILL) and the chain.
    pub async fn shutdown(mut self) {
        self.client.kill();
        for w in &mut self.workers {
            w.node.kill();
        }
        for p in &mut self.proxies {
            p.node.kill();
        }
        self.stop.cancel();
        for task in self.tasks.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }
}

/// Dropped without [`ProcessNet::shutdown`] (a failed test): the nodes are
/// killed as their `Node`s drop; the chain's tasks stop here.
impl Drop for ProcessNet {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn get_json(http: &reqwest::Client, url: &str) -> Option<serde_json::Value> {
    let response = http
        .get(url)
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?;
    if !response.status().is_success() {
        return None;
    }
    response.json().await.ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_distinct_and_never_ephemeral() {
        let (low, high) = listen_port_range();
        let ports: Vec<u16> = (0..200).map(|_| free_port().unwrap()).collect();
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), ports.len(), "a port was handed out twice");
        assert!(ports.iter().all(|p| (low..high).contains(p)), "{ports:?}");
        // The kernel's own choice for bind(0) is never in that range.
        let kernel = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        assert!(!(low..high).contains(&kernel.local_addr().unwrap().port()));
    }
}
