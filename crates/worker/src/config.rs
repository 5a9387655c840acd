//! The worker's configuration file, its validation, and building its engine.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cocoon_inference::Engine;
pub use cocoon_inference::{EngineConfig, WeightsLocation};
use cocoon_protocol::tls::Identity;
pub use cocoon_protocol::ConfigError;
pub use cocoon_protocol::Profile;
use cocoon_protocol::{AttestationConfig, MuxOptions, ProxyEndpoint};
use serde::Deserialize;

/// `worker.toml`. See `config/worker.example.toml` for every key with comments.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerConfig {
    #[serde(default)]
    pub profile: Profile,
    /// PEM file with this worker's Ed25519 key; created if missing.
    pub identity_key: PathBuf,
    /// Proxies to dial out to.
    pub proxies: Vec<ProxyEndpoint>,
    pub engine: EngineConfig,
    /// Plain HTTP for the operator: `/healthz`, `/readyz`, `/metrics`
    /// (Prometheus), `/stats`. Keep it on loopback or a private network.
    #[serde(default)]
    pub status_listen: Option<std::net::SocketAddr>,
    /// A file holding the admin token (made, mode 0600, when missing): with
    /// it, `status_listen` also serves `/admin/...` to callers presenting
    /// the token (`cocoon worker drain|resume|status --config FILE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_token_file: Option<PathBuf>,
    #[serde(default = "default_keepalive")]
    pub keepalive_secs: u64,
    /// Longest a dial to a proxy may take (TCP connect, TLS handshake, hello).
    #[serde(default = "default_dial_timeout")]
    pub connect_timeout_secs: u64,
    /// Sealed requests sent more than this many seconds ago or ahead (by this
    /// worker's clock) are refused as possible replays.
    #[serde(default = "default_replay_window")]
    pub replay_window_secs: u64,
    /// A new sealing key every this many seconds; the previous one is kept
    /// for the replay window (or the period, if shorter) and then dropped,
    /// so nothing this worker holds opens requests sealed before that.
    #[serde(default = "default_sealing_key_rotation")]
    pub sealing_key_rotation_secs: u64,
    /// This worker's TEE and what proxies' evidence must satisfy.
    #[serde(default)]
    pub attestation: AttestationConfig,
    /// Getting paid on TON (needed by proxies that bill).
    #[serde(default)]
    pub payout: Option<PayoutConfig>,
    /// This worker's price: 1000 = the network's base price (the root
    /// contract's), 800 = 20% cheaper. Clients are charged at it.
    #[serde(default = "default_coefficient")]
    pub price_coefficient: u32,
    /// Milliseconds of generated tokens sealed together in one chunk, so
    /// the proxy sees neither token boundaries nor counts (0: every token
    /// alone). Costs up to this much latency per chunk.
    #[serde(default = "default_coalesce")]
    pub coalesce_ms: u64,
}

fn default_coalesce() -> u64 {
    crate::coalesce::DEFAULT_WINDOW.as_millis() as u64
}

fn default_coefficient() -> u32 {
    cocoon_protocol::BASE_PRICE_COEFFICIENT
}

/// `[payout]`: the GPU owner's wallet and when to claim.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct PayoutConfig {
    /// `"testnet"`, `"mainnet"` or the URL of a TON HTTP API (toncenter v2).
    pub ton_api: String,
    /// Environment variable holding the API key, if the endpoint wants one.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Other parties' TON HTTP APIs (`"testnet"`, `"mainnet"` or URLs, no
    /// key) that must answer every chain read as `ton_api` does before it is
    /// believed (see README, "Chain reads are checked").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ton_api_agree: Vec<String>,
    /// File with the 24 words of the wallet that is paid (and pays claim fees).
    pub wallet_mnemonic: PathBuf,
    /// Claim once at least this much TON is owed and unpaid, e.g. "1.5".
    #[serde(default = "default_threshold")]
    pub claim_threshold_ton: String,
    /// Seconds between asking proxies for vouchers.
    #[serde(default = "default_claim_every")]
    pub check_every_secs: u64,
    /// File keeping the latest signed voucher from each proxy.
    pub earnings: PathBuf,
    /// The network's root contract (`0:...` or a friendly address): vouchers
    /// are kept only from a proxy contract its registry lists with the key
    /// that signs them. Without it, the proxy's word for its contract is
    /// taken.
    #[serde(default)]
    pub root: Option<String>,
}

fn default_threshold() -> String {
    "1".into()
}

fn default_claim_every() -> u64 {
    60
}

impl PayoutConfig {
    fn threshold(&self) -> Result<u128, ConfigError> {
        cocoon_chain::pricing::parse_ton(&self.claim_threshold_ton)
            .map_err(|e| ConfigError::new("payout.claim_threshold_ton", e))
    }

    fn validate(&self) -> Result<(), ConfigError> {
        cocoon_chain::ton_http::agreeing(&self.ton_api, None, &self.ton_api_agree)
            .map_err(|(key, e)| ConfigError::new(format!("payout.{key}"), e))?;
        self.threshold()?;
        self.root()?;
        ConfigError::check_range("payout.check_every_secs", self.check_every_secs, 1, 86_400)
    }

    fn root(&self) -> Result<Option<cocoon_chain::StdAddr>, ConfigError> {
        self.root
            .as_deref()
            .map(|text| {
                cocoon_chain::ton_http::parse_address(text)
                    .map_err(|e| ConfigError::new("payout.root", e))
            })
            .transpose()
    }

    /// The wallet, the chain and the earnings file.
    pub fn build(&self) -> Result<crate::Earnings, ConfigError> {
        let ton = cocoon_chain::ton_http::agreeing(
            &self.ton_api,
            self.api_key_env.as_deref(),
            &self.ton_api_agree,
        )
        .map_err(|(key, e)| ConfigError::new(format!("payout.{key}"), e))?;
        let wallet = cocoon_chain::Wallet::from_mnemonic_file(&self.wallet_mnemonic)
            .map_err(|e| ConfigError::new("payout.wallet_mnemonic", e.to_string()))?;
        let mut earnings =
            crate::Earnings::new(ton, wallet, self.threshold()?, self.earnings.clone())
                .map_err(|e| ConfigError::new("payout.earnings", e.to_string()))?;
        earnings.root = self.root()?;
        Ok(earnings)
    }
}

fn default_dial_timeout() -> u64 {
    10
}

fn default_keepalive() -> u64 {
    10
}

fn default_sealing_key_rotation() -> u64 {
    crate::DEFAULT_SEALING_KEY_ROTATION.as_secs()
}

fn default_replay_window() -> u64 {
    60
}

impl WorkerConfig {
    /// A config with every optional key at its default (as a file that
    /// names only these would be read).
    pub fn new(identity_key: PathBuf, proxies: Vec<ProxyEndpoint>, engine: EngineConfig) -> Self {
        Self {
            profile: Profile::default(),
            identity_key,
            proxies,
            engine,
            status_listen: None,
            admin_token_file: None,
            keepalive_secs: default_keepalive(),
            connect_timeout_secs: default_dial_timeout(),
            replay_window_secs: default_replay_window(),
            sealing_key_rotation_secs: default_sealing_key_rotation(),
            attestation: AttestationConfig::default(),
            payout: None,
            price_coefficient: default_coefficient(),
            coalesce_ms: default_coalesce(),
        }
    }

    /// The same settings as a config file (tests and the devnet's
    /// process network write their nodes' files with it).
    pub fn to_toml(&self) -> Result<String, ConfigError> {
        toml::to_string(self).map_err(|e| ConfigError::new("config", e.to_string()))
    }

    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let config: Self =
            toml::from_str(text).map_err(|e| ConfigError::new("worker config", e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        ProxyEndpoint::check_list(&self.proxies)?;
        ConfigError::check_range("keepalive_secs", self.keepalive_secs, 1, 3600)?;
        ConfigError::check_range("connect_timeout_secs", self.connect_timeout_secs, 1, 300)?;
        ConfigError::check_range("replay_window_secs", self.replay_window_secs, 1, 3600)?;
        ConfigError::check_range(
            "sealing_key_rotation_secs",
            self.sealing_key_rotation_secs,
            60,
            7 * 86_400,
        )?;
        ConfigError::check_range("coalesce_ms", self.coalesce_ms, 0, 1000)?;
        ConfigError::check_range(
            "price_coefficient",
            self.price_coefficient as u64,
            1,
            cocoon_protocol::MAX_PRICE_COEFFICIENT as u64,
        )?;
        if let Some(payout) = &self.payout {
            payout.validate()?;
        }
        if self.admin_token_file.is_some() && self.status_listen.is_none() {
            return Err(ConfigError::new(
                "admin_token_file",
                "the admin endpoints are served on status_listen: set it too (loopback or a private network)",
            ));
        }
        self.engine.validate()?;
        if let EngineConfig::OpenaiHttp { base_url, .. } = &self.engine {
            if self.profile == Profile::Production
                && !cocoon_attestation::configuration::is_loopback_url(base_url)
            {
                return Err(ConfigError::new(
                    "engine.base_url",
                    format!("{base_url:?} is outside this machine: under profile = \"production\" an openai-http engine must reach a server inside the same measured VM (a loopback address, e.g. http://127.0.0.1:8000/v1); prompts sent elsewhere leave the enclave, and peers refuse a worker whose evidence says so"),
                ));
            }
        }
        if matches!(self.engine, EngineConfig::Instant { .. })
            && self.profile == Profile::Production
        {
            return Err(ConfigError::new(
                "engine.kind",
                "\"instant\" is a test engine without a model; it is refused unless profile = \"development\"",
            ));
        }
        Ok(())
    }

    /// The chain whose blocks date evidence: `attestation.ton_api`, or the
    /// payout's chain.
    fn anchors(&self) -> Result<Option<Arc<cocoon_attestation::BlockAnchors>>, ConfigError> {
        cocoon_chain::anchors::for_node(self.chain_api(), &self.attestation.ton_api_agree)
            .map_err(|(field, e)| ConfigError::new(field, e))
    }

    /// The TON HTTP API this worker reads the chain through (its field,
    /// URL and API key variable): `attestation.ton_api`, or the payout's.
    fn chain_api(&self) -> Option<(&'static str, &str, Option<&str>)> {
        match (&self.attestation.ton_api, &self.payout) {
            (Some(api), _) => Some(("attestation.ton_api", api, None)),
            (None, Some(p)) => Some(("payout.ton_api", &p.ton_api, p.api_key_env.as_deref())),
            (None, None) => None,
        }
    }

    /// Load the identity key, build the engine and run-time settings.
    pub fn into_settings(self) -> Result<WorkerSettings, ConfigError> {
        let anchors = self.anchors()?;
        let gpu = self.attestation.gpu_attester(self.profile)?;
        let (identity, attestation) = self.attestation.load(
            &self.identity_key,
            self.profile,
            Some(cocoon_protocol::PeerRole::Worker),
            anchors,
        )?;
        cocoon_chain::published::read_through_node(
            attestation.as_ref().and_then(|a| a.published.as_deref()),
            self.chain_api(),
            &self.attestation.ton_api_agree,
            self.attestation.root_refresh(),
        )
        .map_err(|(field, e)| ConfigError::new(field, e))?;
        Ok(WorkerSettings {
            identity,
            proxies: self.proxies,
            engine: self.engine.build()?,
            mux: MuxOptions::from_keepalive(self.keepalive_secs)
                .with_connect_timeout(self.connect_timeout_secs),
            attestation,
            gpu,
            replay_window: Duration::from_secs(self.replay_window_secs),
            sealing_key_rotation: Duration::from_secs(self.sealing_key_rotation_secs),
            price_coefficient: self.price_coefficient,
            coalesce: Duration::from_millis(self.coalesce_ms),
            admin_token: self
                .admin_token_file
                .as_deref()
                .map(|path| {
                    cocoon_metrics::admin::AdminToken::load_or_create(path).map_err(|e| {
                        ConfigError::new("admin_token_file", format!("{}: {e}", path.display()))
                    })
                })
                .transpose()?,
            payout: self
                .payout
                .as_ref()
                .map(|p| {
                    p.build()
                        .map(|e| (Arc::new(e), Duration::from_secs(p.check_every_secs)))
                })
                .transpose()?,
        })
    }
}

/// Everything a worker needs to run.
#[derive(Clone)]
pub struct WorkerSettings {
    pub identity: Arc<Identity>,
    pub proxies: Vec<ProxyEndpoint>,
    pub engine: Arc<dyn Engine>,
    pub mux: MuxOptions,
    /// RA-TLS: what the proxies' TEE evidence must satisfy (none: key pins only).
    pub attestation: Option<Arc<cocoon_protocol::ra_tls::AttestationCheck>>,
    /// Its GPUs' evidence, put beside its sealing key's (`attestation.gpu`).
    pub gpu: Option<Arc<dyn cocoon_attestation::gpu::GpuAttester>>,
    /// Sealed requests sent longer ago (or further ahead) than this are refused.
    pub replay_window: Duration,
    /// A new sealing key this often (`sealing_key_rotation_secs`).
    pub sealing_key_rotation: Duration,
    /// Earnings on TON, and how often to fetch vouchers and claim.
    pub payout: Option<(Arc<crate::Earnings>, Duration)>,
    /// The price announced for every model (1000 = base).
    pub price_coefficient: u32,
    /// Tokens generated within this are sealed as one chunk.
    pub coalesce: Duration,
    /// The admin endpoints' token (`admin_token_file`): `cocoon worker
    /// drain|resume|status`; none: no admin endpoints.
    pub admin_token: Option<cocoon_metrics::admin::AdminToken>,
}

#[cfg(test)]
mod tests;
