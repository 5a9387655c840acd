//! The proxy's configuration file and its validation.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cocoon_chain::ProxySigner;
use cocoon_protocol::tls::{Fingerprint, Identity, PinnedKeys};
pub use cocoon_protocol::ConfigError;
use cocoon_protocol::{AttestationConfig, MuxOptions, Profile, DEFAULT_MAX_FRAME_BYTES};
use serde::Deserialize;

use crate::{Books, Settlement};

/// `proxy.toml`. See `config/proxy.example.toml` for every key with comments.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyConfig {
    /// Address for client nodes and workers (one TLS port for both).
    pub listen: SocketAddr,
    /// Plain HTTP for the operator: `/healthz`, `/readyz`, `/metrics`
    /// (Prometheus), `/stats`. Keep it on loopback or a private network.
    #[serde(default)]
    pub status_listen: Option<SocketAddr>,
    /// A file holding the admin token (made, mode 0600, when missing): with
    /// it, `status_listen` also serves `/admin/...` to callers presenting
    /// it (`cocoon proxy disable-worker|enable-worker|status`).
    #[serde(default)]
    pub admin_token_file: Option<PathBuf>,
    /// Where the workers the operator disables are kept (JSON), so they
    /// stay disabled after a restart; left out, until the restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_workers_file: Option<PathBuf>,
    /// PEM file with this proxy's Ed25519 key; created if missing.
    pub identity_key: PathBuf,
    /// Keys (`sha256:...`) of client nodes allowed to connect: a private
    /// deployment's filter. Left out, any client node may connect and is
    /// served once it registered a genuine, staked client contract of its
    /// own (needs `[settlement]`).
    #[serde(default)]
    pub allowed_clients: Option<Vec<Fingerprint>>,
    /// Keys (`sha256:...`) of workers allowed to connect: a private
    /// deployment's filter. Left out, any worker whose RA-TLS evidence
    /// passes the network's policy may connect (needs
    /// `[attestation] policy`).
    #[serde(default)]
    pub allowed_workers: Option<Vec<Fingerprint>>,
    /// Models this proxy serves even while no worker for them is connected (answered
    /// 503 rather than 404 then).
    #[serde(default)]
    pub models: Vec<String>,
    /// Ping every peer this often...
    #[serde(default = "default_keepalive")]
    pub keepalive_secs: u64,
    /// ...and drop one silent for this long: a worker that misses its
    /// heartbeats leaves the registry (it is listed again when it reconnects).
    #[serde(default = "default_heartbeat_timeout")]
    pub heartbeat_timeout_secs: u64,
    /// Longest wait for a worker's first token after forwarding a request.
    #[serde(default = "default_hop_timeout")]
    pub first_token_timeout_secs: u64,
    /// Longest silence between two tokens of a worker's answer.
    #[serde(default = "default_hop_timeout")]
    pub idle_timeout_secs: u64,
    /// Waiting for a slot when every worker for a model is full.
    #[serde(default)]
    pub queue: QueueConfig,
    /// Limits on handshakes per source address (anyone can connect to an
    /// open proxy; a handshake costs it more than the peer).
    #[serde(default)]
    pub admission: crate::GateSettings,
    #[serde(default = "default_max_frame")]
    pub max_frame_bytes: usize,
    /// "production" (default) refuses simulated TEEs; "development" allows them.
    #[serde(default)]
    pub profile: Profile,
    /// This proxy's TEE and what clients' and workers' evidence must satisfy.
    #[serde(default)]
    pub attestation: AttestationConfig,
    /// Billing on TON: without it the proxy serves for free and settles nothing.
    #[serde(default)]
    pub settlement: Option<SettlementConfig>,
}

/// `[queue]`: requests waiting when every eligible worker is at capacity.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// Requests waiting per model at most; more get 429 at once.
    #[serde(default = "default_max_waiting")]
    pub max_waiting: usize,
    /// The longest one waits, ms (0: no queue, 429 at once).
    #[serde(default = "default_max_wait_ms")]
    pub max_wait_ms: u64,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            max_waiting: default_max_waiting(),
            max_wait_ms: default_max_wait_ms(),
        }
    }
}

fn default_max_waiting() -> usize {
    crate::QueueSettings::default().max_waiting
}

fn default_max_wait_ms() -> u64 {
    crate::QueueSettings::default().max_wait.as_millis() as u64
}

/// `[settlement]`: where and how the proxy settles its books on TON.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct SettlementConfig {
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
    /// File with the 24 words of the proxy's wallet (it pays the fees).
    pub wallet_mnemonic: PathBuf,
    /// This proxy's contract (its key is this node's identity key).
    pub proxy_contract: String,
    /// The network's root contract (prices).
    pub root: String,
    /// The books database (redb), created if missing.
    pub books: PathBuf,
    /// Seconds between settlement rounds.
    #[serde(default = "default_settle_every")]
    pub every_secs: u64,
    /// A charge smaller than this (TON, e.g. "0.01"; "0": every amount)
    /// waits for a later round, unless the contract is closing or the
    /// charge frees half of its stake. Default 0.01 TON.
    #[serde(default)]
    pub min_charge_ton: Option<String>,
    /// Pay the proxy's earnings to its wallet once they reach this much TON
    /// (beyond the stake, workers' unclaimed earnings and a 0.1 TON
    /// reserve); "off": never. Default 1 TON.
    #[serde(default)]
    pub pay_out_above_ton: Option<String>,
}

/// TON from a config field, "0" allowed.
fn ton_or_zero(field: &str, text: &str) -> Result<u128, ConfigError> {
    if text.trim() == "0" {
        return Ok(0);
    }
    cocoon_chain::pricing::parse_ton(text).map_err(|e| ConfigError::new(field, e))
}

fn default_settle_every() -> u64 {
    60
}

impl SettlementConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        use cocoon_chain::ton_http::parse_address;
        cocoon_chain::ton_http::agreeing(&self.ton_api, None, &self.ton_api_agree)
            .map_err(|(key, e)| ConfigError::new(format!("settlement.{key}"), e))?;
        parse_address(&self.proxy_contract)
            .map_err(|e| ConfigError::new("settlement.proxy_contract", e))?;
        parse_address(&self.root).map_err(|e| ConfigError::new("settlement.root", e))?;
        self.min_charge()?;
        self.pay_out_above()?;
        ConfigError::check_range("settlement.every_secs", self.every_secs, 1, 86_400)
    }

    fn min_charge(&self) -> Result<u128, ConfigError> {
        match &self.min_charge_ton {
            None => Ok(crate::settlement::MIN_CHARGE),
            Some(text) => ton_or_zero("settlement.min_charge_ton", text),
        }
    }

    fn pay_out_above(&self) -> Result<Option<u128>, ConfigError> {
        match self.pay_out_above_ton.as_deref() {
            None => Ok(Some(crate::settlement::PAY_OUT_ABOVE)),
            Some("off") => Ok(None),
            Some(text) => ton_or_zero("settlement.pay_out_above_ton", text).map(Some),
        }
    }

    /// Connect to the chain, check the proxy contract is this node's (signed
    /// with `identity`'s key), read the prices and open the books.
    pub async fn connect(&self, identity: &Arc<Identity>) -> Result<Settlement, ConfigError> {
        use cocoon_chain::ton_http::parse_address;
        let ton = cocoon_chain::ton_http::agreeing(
            &self.ton_api,
            self.api_key_env.as_deref(),
            &self.ton_api_agree,
        )
        .map_err(|(key, e)| ConfigError::new(format!("settlement.{key}"), e))?;
        let wallet = cocoon_chain::Wallet::from_mnemonic_file(&self.wallet_mnemonic)
            .map_err(|e| ConfigError::new("settlement.wallet_mnemonic", e.to_string()))?;
        let proxy_contract = parse_address(&self.proxy_contract)
            .map_err(|e| ConfigError::new("settlement.proxy_contract", e))?;
        let root = parse_address(&self.root).map_err(|e| ConfigError::new("settlement.root", e))?;
        let books = self.books.clone();
        let mut settlement = Settlement::connect(
            ton,
            wallet,
            signer_of(identity),
            proxy_contract,
            root,
            move |prices| Books::open(&books, prices),
        )
        .await
        .map_err(|e| ConfigError::new("settlement", e.to_string()))?;
        settlement.min_charge = self.min_charge()?;
        settlement.pay_out_above = self.pay_out_above()?;
        Ok(settlement)
    }
}

/// The proxy signs charges, vouchers and books with its identity key (in
/// its enclave): the contracts' `proxy_key` is that key.
pub fn signer_of(identity: &Arc<Identity>) -> ProxySigner {
    let mut public = [0u8; 32];
    if let Some(raw) = cocoon_protocol::tls::ed25519_raw_key(identity.spki()) {
        public.copy_from_slice(raw);
    }
    let identity = identity.clone();
    ProxySigner::from_fn(public, move |message| {
        let mut out = [0u8; 64];
        out.copy_from_slice(&identity.sign(message));
        out
    })
}

fn default_keepalive() -> u64 {
    5
}

fn default_heartbeat_timeout() -> u64 {
    15
}

fn default_hop_timeout() -> u64 {
    30
}

fn default_max_frame() -> usize {
    DEFAULT_MAX_FRAME_BYTES
}

impl ProxyConfig {
    /// A config with every optional key at its default (as a file that
    /// names only these would be read).
    pub fn new(
        listen: SocketAddr,
        identity_key: PathBuf,
        allowed_clients: Vec<Fingerprint>,
        allowed_workers: Vec<Fingerprint>,
    ) -> Self {
        Self {
            listen,
            status_listen: None,
            admin_token_file: None,
            disabled_workers_file: None,
            identity_key,
            allowed_clients: Some(allowed_clients),
            allowed_workers: Some(allowed_workers),
            models: Vec::new(),
            keepalive_secs: default_keepalive(),
            heartbeat_timeout_secs: default_heartbeat_timeout(),
            first_token_timeout_secs: default_hop_timeout(),
            idle_timeout_secs: default_hop_timeout(),
            queue: QueueConfig::default(),
            admission: crate::GateSettings::default(),
            max_frame_bytes: default_max_frame(),
            profile: Profile::default(),
            attestation: AttestationConfig::default(),
            settlement: None,
        }
    }

    /// The same settings as a config file (tests and the devnet's
    /// process network write their nodes' files with it).
    pub fn to_toml(&self) -> Result<String, ConfigError> {
        toml::to_string(self).map_err(|e| ConfigError::new("config", e.to_string()))
    }

    /// Parse TOML; unknown keys and wrong types name the key.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let config: Self =
            toml::from_str(text).map_err(|e| ConfigError::new("proxy config", e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        ConfigError::check_range("keepalive_secs", self.keepalive_secs, 1, 3600)?;
        ConfigError::check_range(
            "heartbeat_timeout_secs",
            self.heartbeat_timeout_secs,
            self.keepalive_secs + 1,
            3 * 3600,
        )?;
        ConfigError::check_range(
            "first_token_timeout_secs",
            self.first_token_timeout_secs,
            1,
            3600,
        )?;
        ConfigError::check_range("idle_timeout_secs", self.idle_timeout_secs, 1, 3600)?;
        ConfigError::check_range(
            "queue.max_waiting",
            self.queue.max_waiting as u64,
            0,
            100_000,
        )?;
        ConfigError::check_range("queue.max_wait_ms", self.queue.max_wait_ms, 0, 600_000)?;
        let a = &self.admission;
        ConfigError::check_range(
            "admission.per_source_in_flight",
            a.per_source_in_flight as u64,
            1,
            1_000_000,
        )?;
        ConfigError::check_range("admission.in_flight", a.in_flight as u64, 1, 1_000_000)?;
        for (field, value) in [
            ("admission.per_source_per_sec", a.per_source_per_sec),
            ("admission.per_source_burst", a.per_source_burst),
        ] {
            if !(value.is_finite() && value >= 1.0) {
                return Err(ConfigError::new(
                    field,
                    format!("must be at least 1, got {value}"),
                ));
            }
        }
        if a.pow_difficulty > cocoon_protocol::pow::MAX_DIFFICULTY {
            return Err(ConfigError::new(
                "admission.pow_difficulty",
                format!(
                    "at most {} (dialers refuse more work), got {}",
                    cocoon_protocol::pow::MAX_DIFFICULTY,
                    a.pow_difficulty
                ),
            ));
        }
        if self.max_frame_bytes < 64 * 1024 {
            return Err(ConfigError::new(
                "max_frame_bytes",
                format!("must be at least 65536, got {}", self.max_frame_bytes),
            ));
        }
        if let Some(settlement) = &self.settlement {
            settlement.validate()?;
        }
        if self.admin_token_file.is_some() && self.status_listen.is_none() {
            return Err(ConfigError::new(
                "admin_token_file",
                "the admin endpoints are served on status_listen: set it too (loopback or a private network)",
            ));
        }
        if self.allowed_workers.is_none() && self.attestation.policy.is_none() {
            return Err(ConfigError::new(
                "allowed_workers",
                "left out, any worker whose evidence passes the network's policy is admitted: that needs attestation.policy (or list the workers' keys)",
            ));
        }
        if self.allowed_clients.is_none() && self.settlement.is_none() {
            return Err(ConfigError::new(
                "allowed_clients",
                "left out, any client node with a staked client contract of its own is served: that needs [settlement] (or list the client nodes' keys; [] for none)",
            ));
        }
        if let Some(m) = self.models.iter().find(|m| m.trim().is_empty()) {
            return Err(ConfigError::new(
                "models",
                format!("model names must not be empty, got {m:?}"),
            ));
        }
        Ok(())
    }

    /// Load the identity key and build run-time settings.
    pub fn into_settings(self) -> Result<ProxySettings, ConfigError> {
        // The chain that dates evidence and publishes what the network
        // trusts: attestation.ton_api, or the settlement's.
        let chain_api = match (&self.attestation.ton_api, &self.settlement) {
            (Some(api), _) => Some(("attestation.ton_api", api.as_str(), None)),
            (None, Some(s)) => Some((
                "settlement.ton_api",
                s.ton_api.as_str(),
                s.api_key_env.as_deref(),
            )),
            (None, None) => None,
        };
        let agree = &self.attestation.ton_api_agree;
        let anchors = cocoon_chain::anchors::for_node(chain_api, agree)
            .map_err(|(field, e)| ConfigError::new(field, e))?;
        let (identity, attestation) = self.attestation.load(
            &self.identity_key,
            self.profile,
            Some(cocoon_protocol::PeerRole::Proxy),
            anchors,
        )?;
        cocoon_chain::published::read_through_node(
            attestation.as_ref().and_then(|a| a.published.as_deref()),
            chain_api,
            agree,
            self.attestation.root_refresh(),
        )
        .map_err(|(field, e)| ConfigError::new(field, e))?;
        let admin_token = match &self.admin_token_file {
            Some(path) => Some(
                cocoon_metrics::admin::AdminToken::load_or_create(path).map_err(|e| {
                    ConfigError::new("admin_token_file", format!("{}: {e}", path.display()))
                })?,
            ),
            None => None,
        };
        Ok(ProxySettings {
            identity,
            admin_token,
            disabled_workers_file: self.disabled_workers_file,
            allowed_clients: self
                .allowed_clients
                .map_or_else(PinnedKeys::any, PinnedKeys::new),
            allowed_workers: self
                .allowed_workers
                .map_or_else(PinnedKeys::any, PinnedKeys::new),
            models: self.models,
            mux: MuxOptions {
                keepalive_interval: Duration::from_secs(self.keepalive_secs),
                idle_timeout: Duration::from_secs(self.heartbeat_timeout_secs),
                ..MuxOptions::default()
            },
            max_frame_bytes: self.max_frame_bytes,
            attestation,
            inspect: None,
            settlement: None,
            timeouts: crate::HopTimeouts {
                first_token: Duration::from_secs(self.first_token_timeout_secs),
                idle: Duration::from_secs(self.idle_timeout_secs),
            },
            queue: crate::QueueSettings {
                max_waiting: self.queue.max_waiting,
                max_wait: Duration::from_millis(self.queue.max_wait_ms),
            },
            gate: self.admission,
        })
    }
}

/// Everything the proxy needs to run, resolved from a config or built by the devnet.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    pub identity: Arc<Identity>,
    pub allowed_clients: PinnedKeys,
    pub allowed_workers: PinnedKeys,
    pub models: Vec<String>,
    pub mux: MuxOptions,
    pub max_frame_bytes: usize,
    /// RA-TLS: what peers' TEE evidence must satisfy (none: key pins only).
    pub attestation: Option<Arc<cocoon_protocol::ra_tls::AttestationCheck>>,
    /// Audit hook: sees the wire form of everything the proxy forwards.
    pub inspect: Option<Inspector>,
    /// Billing and settlement on TON (connected by [`SettlementConfig::connect`]);
    /// `None`: the proxy serves for free.
    pub settlement: Option<Arc<Settlement>>,
    /// Deadlines on workers' answers.
    pub timeouts: crate::HopTimeouts,
    /// Waiting for a slot when every worker is full.
    pub queue: crate::QueueSettings,
    /// Per-source limits on handshakes.
    pub gate: crate::GateSettings,
    /// The admin endpoints' token (`admin_token_file`); none: no admin endpoints.
    pub admin_token: Option<cocoon_metrics::admin::AdminToken>,
    /// Where the operator's disabled workers are kept (`disabled_workers_file`).
    pub disabled_workers_file: Option<PathBuf>,
}

impl ProxySettings {
    /// A proxy with `identity` admitting the pinned clients and workers,
    /// everything else at its default: no attestation, no billing, no
    /// audit hook, default keepalive, deadlines and queue.
    pub fn pinned(
        identity: Arc<Identity>,
        allowed_clients: PinnedKeys,
        allowed_workers: PinnedKeys,
    ) -> Self {
        Self {
            identity,
            allowed_clients,
            allowed_workers,
            models: Vec::new(),
            mux: MuxOptions::default(),
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            attestation: None,
            inspect: None,
            settlement: None,
            timeouts: crate::HopTimeouts::default(),
            queue: crate::QueueSettings::default(),
            gate: crate::GateSettings::default(),
            admin_token: None,
            disabled_workers_file: None,
        }
    }
}

/// Called with the wire form (postcard) of every request body a proxy forwards
/// to a worker and every answer event it relays to a client node: exactly what
/// the proxy holds of each request. Tests use it to show that no prompt or
/// answer text is among it.
#[derive(Clone)]
pub struct Inspector(pub Arc<InspectFn>);

/// The function an [`Inspector`] calls.
pub type InspectFn = dyn Fn(&[u8]) + Send + Sync;

impl std::fmt::Debug for Inspector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Inspector")
    }
}

impl Inspector {
    pub(crate) fn see<T: serde::Serialize>(&self, value: &T) {
        if let Ok(bytes) = postcard::to_allocvec(value) {
            (self.0)(&bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_example_survives_a_round_trip_through_to_toml() {
        let example = include_str!("../../../config/proxy.example.toml");
        let config = super::ProxyConfig::from_toml(example).unwrap();
        let written = config.to_toml().unwrap();
        let again = super::ProxyConfig::from_toml(&written).unwrap();
        assert_eq!(again.to_toml().unwrap(), written);
        assert_eq!(again.listen, config.listen);
        assert_eq!(again.allowed_workers, config.allowed_workers);
        assert_eq!(
            again.settlement.map(|s| s.proxy_contract),
            config.settlement.map(|s| s.proxy_contract)
        );
    }

    use super::*;

    const GOOD: &str = r#"
listen = "127.0.0.1:9100"
identity_key = "/tmp/x.pem"
allowed_clients = []
allowed_workers = ["sha256:0000000000000000000000000000000000000000000000000000000000000000"]
"#;

    #[test]
    fn good_config_parses() {
        let c = ProxyConfig::from_toml(GOOD).unwrap();
        assert_eq!(c.keepalive_secs, 5);
        assert_eq!(c.heartbeat_timeout_secs, 15);
        assert_eq!(c.allowed_workers.map(|w| w.len()), Some(1));
    }

    /// Open admission (no list) needs what admits instead of the pin: a
    /// policy for workers, billing for client nodes.
    #[test]
    fn open_admission_needs_evidence_or_billing() {
        let open_workers = GOOD.replace(
            "allowed_workers = [\"sha256:0000000000000000000000000000000000000000000000000000000000000000\"]",
            "",
        );
        let err = ProxyConfig::from_toml(&open_workers).unwrap_err();
        assert_eq!(err.field, "allowed_workers");
        assert!(err.message.contains("attestation.policy"), "{err}");
        let with_policy =
            format!("{open_workers}\n[attestation]\npolicy = \"/etc/cocoon/root.toml\"\n");
        let config = ProxyConfig::from_toml(&with_policy).unwrap();
        assert_eq!(config.allowed_workers, None);
        let err = ProxyConfig::from_toml(&GOOD.replace("allowed_clients = []", "")).unwrap_err();
        assert!(err.message.contains("[settlement]"), "{err}");
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (format!("{GOOD}\nlisten_port = 3"), "listen_port"),
            (GOOD.replace("127.0.0.1:9100", "nowhere"), "listen"),
            (
                GOOD.replace("sha256:0000", "sha256:zz00"),
                "allowed_workers",
            ),
            (format!("{GOOD}\nkeepalive_secs = 0"), "keepalive_secs"),
            (
                format!("{GOOD}\nheartbeat_timeout_secs = 5"),
                "heartbeat_timeout_secs",
            ),
            (
                format!("{GOOD}\nfirst_token_timeout_secs = 0"),
                "first_token_timeout_secs",
            ),
            (format!("{GOOD}\n[queue]\nmax_wait_ms = -1"), "max_wait_ms"),
            (format!("{GOOD}\n[queue]\nlength = 3"), "length"),
            (format!("{GOOD}\nmax_frame_bytes = 10"), "max_frame_bytes"),
            (
                format!("{GOOD}\n[admission]\nper_source_burst = 0"),
                "admission.per_source_burst",
            ),
            (
                format!("{GOOD}\n[admission]\nper_source_in_flight = 0"),
                "admission.per_source_in_flight",
            ),
            (GOOD.replace("allowed_clients = []", ""), "allowed_clients"),
            (
                format!("{GOOD}\n[admission]\npow_difficulty = 29"),
                "admission.pow_difficulty",
            ),
            // The admin endpoints live on the status port.
            (
                format!("{GOOD}\nadmin_token_file = \"/tmp/admin.token\""),
                "admin_token_file",
            ),
        ];
        for (text, field) in cases {
            let err = ProxyConfig::from_toml(&text).unwrap_err().to_string();
            assert!(
                err.contains(field),
                "error for {field} does not name it: {err}"
            );
        }
    }
}
