//! [`DevnetOptions`]: what a [`crate::Devnet`] starts (engines, prices,
//! how many proxies and workers, the chain's pace, where state is kept).

use std::net::SocketAddr;
use std::time::Duration;

use cocoon_client::ApiSettings;
use cocoon_protocol::MuxOptions;
use cocoon_worker::EngineConfig;

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
    /// What the client deposits (and stakes) in its contract at genesis,
    /// nano-TON.
    pub client_deposit: u128,
    /// The proxies' smallest charge (see `Settlement::min_charge`): 0 by
    /// default, so the devnet's settlement shows every amount at once.
    pub min_charge: u128,
    /// The root contract's prices and network parameters at genesis
    /// ([`cocoon_chain::pricing::default_prices`]; a deposit below their
    /// `min_client_stake` is refused by the proxies).
    pub prices: cocoon_chain::Prices,
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
    /// The client node reuses what it read of the chain (its contracts'
    /// state, the root's prices) this long (tests shorten it instead of
    /// sleeping it out).
    pub chain_fresh: Duration,
    /// The client node rereads the root contract's proxy registry this often.
    pub registry_every: Duration,
    /// The open market: proxies pin no worker and no client node; workers
    /// are admitted by their RA-TLS evidence alone and client nodes served
    /// on the client contract each registers (`cocoon devnet --open`).
    pub open: bool,
    /// Each worker makes a new sealing key this often (tests shorten it).
    pub sealing_key_rotation: Duration,
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
            client_deposit: cocoon_ton_devnet::CLIENT_DEPOSIT,
            prices: cocoon_chain::pricing::default_prices(),
            min_charge: 0,
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
            chain_fresh: cocoon_client::billing::FRESH,
            registry_every: Duration::from_secs(2),
            open: false,
            sealing_key_rotation: cocoon_worker::DEFAULT_SEALING_KEY_ROTATION,
        }
    }
}
