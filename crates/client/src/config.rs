//! The client node's configuration file and its validation.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cocoon_protocol::ra_tls::AttestationCheck;
use cocoon_protocol::tls::Identity;
pub use cocoon_protocol::ConfigError;
use cocoon_protocol::{AttestationConfig, MuxOptions, Profile, ProxyEndpoint};
use serde::Deserialize;

use crate::{ApiSettings, BrowserPolicy};

/// `client.toml`. See `config/client.example.toml` for every key with comments.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// Where the OpenAI-compatible HTTP API listens (keep it on loopback or a
    /// private network: it spends your money).
    pub listen: SocketAddr,
    /// PEM file with this node's Ed25519 key; created if missing.
    pub identity_key: PathBuf,
    /// Proxies to connect to (besides those the root contract's registry
    /// publishes, with `[registry]`).
    #[serde(default)]
    pub proxies: Vec<ProxyEndpoint>,
    /// Also dial the proxies the network's root contract publishes.
    #[serde(default)]
    pub registry: Option<RegistryConfig>,
    /// Environment variable holding comma-separated API keys apps must send as
    /// `Authorization: Bearer KEY`. Unset: no key is required.
    #[serde(default)]
    pub api_keys_env: Option<String>,
    /// Names (besides IP literals and `localhost`) browsers may reach the
    /// API by, e.g. `["cocoon.internal"]`; any other `Host` is refused (DNS
    /// rebinding).
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// Web origins (besides the node's own playground) whose pages may call
    /// the API, e.g. `["https://app.example"]`; requests from other pages
    /// are refused (CSRF).
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Open HTTP connections at most; more are closed as they arrive.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// A request body must arrive within this (headers within 10 s), so a
    /// client sending slowly cannot hold the API's connections and slots.
    #[serde(default = "default_body_timeout")]
    pub body_timeout_secs: u64,
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    #[serde(default = "default_max_concurrent")]
    pub max_concurrent_requests: usize,
    /// Longest wait for the first token (or the whole answer's first event).
    #[serde(default = "default_first_token")]
    pub first_token_timeout_secs: u64,
    /// Longest silence between two tokens of an answer.
    #[serde(default = "default_idle")]
    pub idle_timeout_secs: u64,
    #[serde(default = "default_keepalive")]
    pub keepalive_secs: u64,
    /// Longest a dial to a proxy may take (TCP connect, TLS handshake, hello).
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: u64,
    /// "production" (default) refuses simulated TEEs; "development" allows them.
    #[serde(default)]
    pub profile: Profile,
    /// This node's TEE and what proxies' evidence must satisfy.
    #[serde(default)]
    pub attestation: AttestationConfig,
    /// Pay from a client contract on TON (balance endpoint, 402 checks).
    #[serde(default)]
    pub billing: Option<BillingConfig>,
    /// How requests that say nothing (no `cocoon` field) are routed.
    #[serde(default)]
    pub routing: RoutingConfig,
}

/// `[routing]`: default preferences, like OpenRouter's provider sorting.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingConfig {
    /// Never a worker above this price coefficient (1000 = base price).
    #[serde(default)]
    pub max_coefficient: Option<u32>,
    /// `price` (default), `throughput` or `latency`.
    #[serde(default)]
    pub sort: Option<String>,
}

impl RoutingConfig {
    fn prefs(&self) -> Result<cocoon_protocol::RoutingPrefs, ConfigError> {
        if let Some(c) = self.max_coefficient {
            ConfigError::check_range("routing.max_coefficient", c as u64, 1, 1_000_000)?;
        }
        let sort = match self.sort.as_deref() {
            None => cocoon_protocol::Sort::default(),
            Some(text) => crate::api::parse_sort(text).map_err(|_| {
                ConfigError::new(
                    "routing.sort",
                    format!("expected price, throughput or latency, got {text:?}"),
                )
            })?,
        };
        Ok(cocoon_protocol::RoutingPrefs {
            max_coefficient: self.max_coefficient,
            sort,
            needs: cocoon_protocol::Features::default(),
        })
    }
}

/// `[registry]`: follow the root contract's proxy registry (each proxy
/// pinned to the key published with it).
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// `"testnet"`, `"mainnet"` or the URL of a TON HTTP API (toncenter v2).
    pub ton_api: String,
    /// Environment variable holding the API key, if the endpoint wants one.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// The network's root contract (`0:<hex>`).
    pub root: String,
    /// How often the registry is read again.
    #[serde(default = "default_refresh")]
    pub refresh_secs: u64,
    /// Other TON HTTP APIs (`testnet`, `mainnet` or URLs, best run by other
    /// parties) that must read the same registry before it is believed:
    /// one endpoint that lies cannot point this node at other proxies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ton_api_agree: Vec<String>,
}

fn default_refresh() -> u64 {
    60
}

/// What following the registry needs.
#[derive(Debug, Clone)]
pub struct RegistrySettings {
    pub chain: cocoon_chain::TonHttp,
    /// Endpoints that must read the same registry (`ton_api_agree`).
    pub agree: Vec<cocoon_chain::TonHttp>,
    pub root: cocoon_chain::StdAddr,
    pub every: Duration,
}

impl RegistryConfig {
    fn build(&self) -> Result<RegistrySettings, ConfigError> {
        use cocoon_chain::ton_http::{from_config, parse_address};
        let root = parse_address(&self.root).map_err(|e| ConfigError::new("registry.root", e))?;
        let chain = from_config(&self.ton_api, self.api_key_env.as_deref())
            .map_err(|e| ConfigError::new("registry.ton_api", e))?;
        ConfigError::check_range("registry.refresh_secs", self.refresh_secs, 1, 86_400)?;
        let agree = self
            .ton_api_agree
            .iter()
            .map(|api| from_config(api, None))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ConfigError::new("registry.ton_api_agree", e))?;
        Ok(RegistrySettings {
            chain,
            agree,
            root,
            every: Duration::from_secs(self.refresh_secs),
        })
    }
}

/// `[billing]`: this node's client contract and where to read it.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct BillingConfig {
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
    /// This node's client contract with a proxy (`0:<hex>`;
    /// `cocoon wallet deploy-client` makes one). A client contract pays one
    /// proxy contract: the node registers it with the proxy it names on
    /// every connect. With `deposit_ton` (and `contract_file`,
    /// `wallet_mnemonic`), the node deploys one for each proxy no
    /// configured contract pays, on first use, and remembers it in
    /// `contract_file`.
    #[serde(default)]
    pub contract: Option<String>,
    /// More client contracts, for more proxies (same as `contract`).
    #[serde(default)]
    pub contracts: Vec<String>,
    #[serde(default)]
    pub deposit_ton: Option<String>,
    #[serde(default)]
    pub contract_file: Option<std::path::PathBuf>,
    /// The network's root contract (`0:<hex>`).
    pub root: String,
    /// Completion tokens reserved for a request without `max_tokens`.
    #[serde(default = "default_reserve")]
    pub default_max_tokens: u32,
    /// Automatic top-up: the owner's wallet (24 words) that deposits...
    #[serde(default)]
    pub wallet_mnemonic: Option<std::path::PathBuf>,
    /// ...`top_up_ton` whenever the contract holds less than `top_up_below_ton`.
    #[serde(default)]
    pub top_up_below_ton: Option<String>,
    #[serde(default)]
    pub top_up_ton: Option<String>,
    /// Every receipt this node pays for, one JSON line each (see
    /// `cocoon receipts`), rotated at 64 MiB. Default: `receipts.jsonl`
    /// beside `identity_key`.
    #[serde(default)]
    pub receipts_file: Option<std::path::PathBuf>,
}

fn default_max_connections() -> usize {
    1024
}

fn default_body_timeout() -> u64 {
    30
}

fn default_reserve() -> u32 {
    1024
}

impl BillingConfig {
    /// Paying through `ton_api` for the network whose root contract is
    /// `root`, every optional key at its default.
    pub fn new(ton_api: String, root: String) -> Self {
        Self {
            ton_api,
            api_key_env: None,
            ton_api_agree: Vec::new(),
            contract: None,
            contracts: Vec::new(),
            deposit_ton: None,
            contract_file: None,
            root,
            default_max_tokens: default_reserve(),
            wallet_mnemonic: None,
            top_up_below_ton: None,
            top_up_ton: None,
            receipts_file: None,
        }
    }

    /// Check the addresses and URL, naming the key at fault; billing for
    /// the node whose key fingerprint is `node_key`.
    pub fn build(
        &self,
        node_key: cocoon_protocol::tls::Fingerprint,
    ) -> Result<crate::Billing, ConfigError> {
        use cocoon_chain::ton_http::parse_address;
        let mut contracts = Vec::new();
        if let Some(c) = &self.contract {
            contracts.push(parse_address(c).map_err(|e| ConfigError::new("billing.contract", e))?);
        }
        for (i, c) in self.contracts.iter().enumerate() {
            contracts.push(
                parse_address(c)
                    .map_err(|e| ConfigError::new(format!("billing.contracts[{i}]"), e))?,
            );
        }
        let root = parse_address(&self.root).map_err(|e| ConfigError::new("billing.root", e))?;
        let ton = cocoon_chain::ton_http::agreeing(
            &self.ton_api,
            self.api_key_env.as_deref(),
            &self.ton_api_agree,
        )
        .map_err(|(key, e)| ConfigError::new(format!("billing.{key}"), e))?;
        let mut billing = crate::Billing::new(ton.clone(), contracts, root, node_key);
        billing.default_max_tokens = self.default_max_tokens;
        let ton_amount = |field: &str, text: &Option<String>| {
            text.as_deref()
                .map(|t| {
                    cocoon_chain::pricing::parse_ton(t).map_err(|e| ConfigError::new(field, e))
                })
                .transpose()
        };
        // One sender for the wallet, shared by deployment and top-ups: two
        // would race for its seqno.
        let mut shared: Option<Arc<cocoon_chain::WalletSender>> = None;
        let mut wallet = || -> Result<Arc<cocoon_chain::WalletSender>, ConfigError> {
            if let Some(sender) = &shared {
                return Ok(sender.clone());
            }
            let path = self.wallet_mnemonic.as_ref().ok_or_else(|| {
                ConfigError::new(
                    "billing.wallet_mnemonic",
                    "needed to deploy or top up the client contract",
                )
            })?;
            let wallet = cocoon_chain::Wallet::from_mnemonic_file(path)
                .map_err(|e| ConfigError::new("billing.wallet_mnemonic", e.to_string()))?;
            let sender = Arc::new(cocoon_chain::WalletSender::new(ton.clone(), wallet));
            shared = Some(sender.clone());
            Ok(sender)
        };
        // With a deposit, a proxy no configured contract pays gets one deployed.
        let deposit = ton_amount("billing.deposit_ton", &self.deposit_ton)?;
        if !billing.has_configured_contracts() && deposit.is_none() {
            return Err(ConfigError::new(
                "billing.contract",
                "set contract (or contracts), or deposit_ton, contract_file and wallet_mnemonic to deploy one per proxy",
            ));
        }
        if let Some(deposit) = deposit {
            let file = self.contract_file.clone().ok_or_else(|| {
                ConfigError::new(
                    "billing.contract_file",
                    "needed to remember the deployed contract",
                )
            })?;
            billing.deploy = Some(crate::billing::Deploy {
                wallet: wallet()?,
                deposit,
                file,
            });
        }
        let below = ton_amount("billing.top_up_below_ton", &self.top_up_below_ton)?;
        let amount = ton_amount("billing.top_up_ton", &self.top_up_ton)?;
        match (below, amount) {
            (None, None) => {}
            (Some(below), Some(amount)) => {
                billing.top_up = Some(crate::billing::TopUp {
                    wallet: wallet()?,
                    below,
                    amount,
                });
            }
            _ => {
                return Err(ConfigError::new(
                    "billing.top_up_ton",
                    "automatic top-up needs top_up_below_ton and top_up_ton together (and wallet_mnemonic)",
                ))
            }
        }
        Ok(billing)
    }
}

fn default_max_body() -> usize {
    4 * 1024 * 1024
}
fn default_max_concurrent() -> usize {
    256
}
fn default_first_token() -> u64 {
    60
}
fn default_idle() -> u64 {
    60
}
fn default_connect_timeout() -> u64 {
    10
}

fn default_keepalive() -> u64 {
    10
}

impl ClientConfig {
    /// A config with every optional key at its default (as a file that
    /// names only these would be read).
    pub fn new(listen: SocketAddr, identity_key: PathBuf, proxies: Vec<ProxyEndpoint>) -> Self {
        Self {
            listen,
            identity_key,
            proxies,
            registry: None,
            api_keys_env: None,
            allowed_hosts: Vec::new(),
            allowed_origins: Vec::new(),
            max_connections: default_max_connections(),
            body_timeout_secs: default_body_timeout(),
            max_body_bytes: default_max_body(),
            max_concurrent_requests: default_max_concurrent(),
            first_token_timeout_secs: default_first_token(),
            idle_timeout_secs: default_idle(),
            keepalive_secs: default_keepalive(),
            connect_timeout_secs: default_connect_timeout(),
            profile: Profile::default(),
            attestation: AttestationConfig::default(),
            billing: None,
            routing: RoutingConfig::default(),
        }
    }

    /// The same settings as a config file (tests and the devnet's
    /// process network write their nodes' files with it).
    pub fn to_toml(&self) -> Result<String, ConfigError> {
        toml::to_string(self).map_err(|e| ConfigError::new("config", e.to_string()))
    }

    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let config: Self =
            toml::from_str(text).map_err(|e| ConfigError::new("client config", e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        match &self.registry {
            None => ProxyEndpoint::check_list(&self.proxies)?,
            Some(registry) => {
                registry.build()?;
                if !self.proxies.is_empty() {
                    ProxyEndpoint::check_list(&self.proxies)?;
                }
            }
        }
        self.routing.prefs()?;
        if let Some(billing) = &self.billing {
            // Checks only: the key the node will load does not change them.
            billing.build(cocoon_protocol::tls::Fingerprint([0; 32]))?;
        }
        ConfigError::check_range(
            "max_body_bytes",
            self.max_body_bytes as u64,
            1024,
            256 * 1024 * 1024,
        )?;
        ConfigError::check_range(
            "max_concurrent_requests",
            self.max_concurrent_requests as u64,
            1,
            1_000_000,
        )?;
        ConfigError::check_range(
            "first_token_timeout_secs",
            self.first_token_timeout_secs,
            1,
            3600,
        )?;
        ConfigError::check_range("idle_timeout_secs", self.idle_timeout_secs, 1, 3600)?;
        ConfigError::check_range("max_connections", self.max_connections as u64, 1, 1_000_000)?;
        ConfigError::check_range("body_timeout_secs", self.body_timeout_secs, 1, 3600)?;
        ConfigError::check_range("keepalive_secs", self.keepalive_secs, 1, 3600)?;
        ConfigError::check_range("connect_timeout_secs", self.connect_timeout_secs, 1, 300)?;
        if self.profile == Profile::Production
            && !self.listen.ip().is_loopback()
            && self.api_keys_env.is_none()
        {
            return Err(ConfigError::new(
                "api_keys_env",
                format!(
                    "required when listen ({}) is not a loopback address under profile = \"production\": anyone who reaches the API spends this node's TON",
                    self.listen
                ),
            ));
        }
        for origin in &self.allowed_origins {
            if !(origin.starts_with("http://") || origin.starts_with("https://")) {
                return Err(ConfigError::new(
                    "allowed_origins",
                    format!("{origin:?} is not a web origin (scheme://host[:port])"),
                ));
            }
        }
        if let Some(var) = &self.api_keys_env {
            match std::env::var(var) {
                Ok(v) if v.split(',').any(|k| !k.trim().is_empty()) => {}
                _ => {
                    return Err(ConfigError::new(
                        "api_keys_env",
                        format!("environment variable {var} is not set or holds no key"),
                    ))
                }
            }
        }
        Ok(())
    }

    /// The chain whose blocks date workers' and proxies' evidence:
    /// `attestation.ton_api`, or the billing's chain, or the registry's.
    fn anchors(&self) -> Result<Option<Arc<cocoon_attestation::BlockAnchors>>, ConfigError> {
        cocoon_chain::anchors::for_node(self.chain_api(), &self.attestation.ton_api_agree)
            .map_err(|(field, e)| ConfigError::new(field, e))
    }

    /// The TON HTTP API this node reads the chain through (its field, URL
    /// and API key variable).
    fn chain_api(&self) -> Option<(&'static str, &str, Option<&str>)> {
        Some(if let Some(api) = &self.attestation.ton_api {
            ("attestation.ton_api", api, None)
        } else if let Some(b) = &self.billing {
            ("billing.ton_api", &b.ton_api, b.api_key_env.as_deref())
        } else if let Some(r) = &self.registry {
            ("registry.ton_api", &r.ton_api, r.api_key_env.as_deref())
        } else {
            return None;
        })
    }

    pub fn into_settings(self) -> Result<ClientSettings, ConfigError> {
        let (identity, attestation) =
            self.attestation
                .load(&self.identity_key, self.profile, None, self.anchors()?)?;
        cocoon_chain::published::read_through_node(
            attestation.as_ref().and_then(|a| a.published.as_deref()),
            self.chain_api(),
            &self.attestation.ton_api_agree,
            self.attestation.root_refresh(),
        )
        .map_err(|(field, e)| ConfigError::new(field, e))?;
        let api_keys = self
            .api_keys_env
            .as_ref()
            .and_then(|v| std::env::var(v).ok())
            .map(|v| {
                v.split(',')
                    .map(|k| k.trim().to_string())
                    .filter(|k| !k.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        let billing = match &self.billing {
            None => None,
            Some(config) => {
                let mut billing = config.build(identity.fingerprint())?;
                let journal = config.receipts_file.clone().unwrap_or_else(|| {
                    self.identity_key
                        .parent()
                        .unwrap_or(std::path::Path::new("."))
                        .join("receipts.jsonl")
                });
                billing.journal = Some(crate::ReceiptJournal::new(journal));
                Some(Arc::new(billing))
            }
        };
        let registry = self.registry.as_ref().map(|r| r.build()).transpose()?;
        Ok(ClientSettings {
            identity,
            proxies: self.proxies,
            registry,
            api: ApiSettings {
                billing,
                routing: self.routing.prefs()?,
                api_keys,
                max_body_bytes: self.max_body_bytes,
                max_concurrent_requests: self.max_concurrent_requests,
                first_token_timeout: Duration::from_secs(self.first_token_timeout_secs),
                idle_timeout: Duration::from_secs(self.idle_timeout_secs),
                http: cocoon_metrics::http::HttpLimits {
                    max_connections: self.max_connections,
                    body_timeout: Duration::from_secs(self.body_timeout_secs),
                    ..Default::default()
                },
                browser: BrowserPolicy {
                    allowed_hosts: self.allowed_hosts,
                    allowed_origins: self.allowed_origins,
                },
                ..ApiSettings::default()
            },
            mux: MuxOptions::from_keepalive(self.keepalive_secs)
                .with_connect_timeout(self.connect_timeout_secs),
            listen: self.listen,
            attestation,
        })
    }
}

/// Everything a client node needs to run.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    pub identity: Arc<Identity>,
    pub proxies: Vec<ProxyEndpoint>,
    /// Follow the root contract's proxy registry too.
    pub registry: Option<RegistrySettings>,
    pub api: ApiSettings,
    pub mux: MuxOptions,
    pub listen: SocketAddr,
    /// RA-TLS: what proxies' TEE evidence must satisfy (none: key pins only).
    pub attestation: Option<Arc<AttestationCheck>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_survives_a_round_trip_through_to_toml() {
        let example = include_str!("../../../config/client.example.toml");
        let config = ClientConfig::from_toml(example).unwrap();
        let written = config.to_toml().unwrap();
        let again = ClientConfig::from_toml(&written).unwrap();
        assert_eq!(again.to_toml().unwrap(), written);
        assert_eq!(again.proxies, config.proxies);
        assert_eq!(again.listen, config.listen);
    }

    const GOOD: &str = r#"
listen = "127.0.0.1:8080"
identity_key = "/tmp/c.pem"
[[proxies]]
address = "127.0.0.1:9100"
fingerprint = "sha256:0000000000000000000000000000000000000000000000000000000000000000"
"#;

    #[test]
    fn proxies_may_come_from_the_registry_alone() {
        let text = format!(
            "listen = \"127.0.0.1:8080\"\nidentity_key = \"/tmp/c.pem\"\n[registry]\nton_api = \"testnet\"\nroot = \"0:{}\"\n",
            "00".repeat(32)
        );
        let c = ClientConfig::from_toml(&text).unwrap();
        assert!(c.proxies.is_empty());
        assert_eq!(c.registry.unwrap().refresh_secs, 60);
    }

    #[test]
    fn good_config_parses_with_defaults() {
        let c = ClientConfig::from_toml(GOOD).unwrap();
        assert_eq!(c.max_concurrent_requests, 256);
        assert!(c.api_keys_env.is_none());
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (format!("max_body_bytes = 1\n{GOOD}"), "max_body_bytes"),
            (
                format!("max_concurrent_requests = 0\n{GOOD}"),
                "max_concurrent_requests",
            ),
            (
                format!("first_token_timeout_secs = -1\n{GOOD}"),
                "first_token_timeout_secs",
            ),
            (
                format!("api_keys_env = \"COCOON_TEST_SURELY_UNSET\"\n{GOOD}"),
                "api_keys_env",
            ),
            (format!("lisen = \"x\"\n{GOOD}"), "lisen"),
            (format!("max_connections = 0\n{GOOD}"), "max_connections"),
            (format!("body_timeout_secs = 0\n{GOOD}"), "body_timeout_secs"),
            // Reachable from the network with no key: anyone spends its TON.
            (
                GOOD.replace("127.0.0.1:8080", "0.0.0.0:8080"),
                "api_keys_env",
            ),
            (
                format!("allowed_origins = [\"app.example\"]\n{GOOD}"),
                "allowed_origins",
            ),
            (
                format!("connect_timeout_secs = 0\n{GOOD}"),
                "connect_timeout_secs",
            ),
            (
                GOOD.replace("127.0.0.1:9100", "nowhere"),
                "proxies[0].address",
            ),
            (
                format!("{GOOD}\n[billing]\nton_api = \"http://x/api/v2\"\ncontract = \"0:zz\"\nroot = \"0:{}\"\n", "00".repeat(32)),
                "billing.contract",
            ),
            (
                format!("{GOOD}\n[billing]\nton_api = \"ftp://x\"\ncontract = \"0:{z}\"\nroot = \"0:{z}\"\n", z = "00".repeat(32)),
                "billing.ton_api",
            ),
            // No contract and nothing to deploy one with.
            (
                format!("{GOOD}\n[billing]\nton_api = \"testnet\"\nroot = \"0:{}\"\n", "00".repeat(32)),
                "billing.contract",
            ),
            (
                format!("{GOOD}\n[billing]\nton_api = \"testnet\"\nroot = \"0:{}\"\ndeposit_ton = \"1\"\n", "00".repeat(32)),
                "billing.contract_file",
            ),
            (
                format!("{GOOD}\n[billing]\nton_api = \"testnet\"\nroot = \"0:{}\"\ndeposit_ton = \"1,5\"\n", "00".repeat(32)),
                "billing.deposit_ton",
            ),
            (
                format!("{GOOD}\n[billing]\nton_api = \"testnet\"\ncontract = \"0:{z}\"\nroot = \"0:{z}\"\ntop_up_ton = \"1\"\n", z = "00".repeat(32)),
                "billing.top_up_ton",
            ),
            (
                format!("{GOOD}\n[billing]\nton_api = \"testnet\"\ncontracts = [\"0:{z}\", \"nope\"]\nroot = \"0:{z}\"\n", z = "00".repeat(32)),
                "billing.contracts[1]",
            ),
            (
                "listen = \"127.0.0.1:8080\"\nidentity_key = \"/tmp/c.pem\"\n".to_string(),
                "proxies",
            ),
            (
                format!("listen = \"127.0.0.1:8080\"\nidentity_key = \"/tmp/c.pem\"\n[registry]\nton_api = \"testnet\"\nroot = \"0:zz{}\"\n", "00".repeat(31)),
                "registry.root",
            ),
            (
                format!("{GOOD}\n[registry]\nton_api = \"gopher://x\"\nroot = \"0:{}\"\n", "00".repeat(32)),
                "registry.ton_api",
            ),
            (
                format!("{GOOD}\n[registry]\nton_api = \"testnet\"\nroot = \"0:{}\"\nrefresh_secs = 0\n", "00".repeat(32)),
                "registry.refresh_secs",
            ),
        ];
        for (text, field) in cases {
            let err = ClientConfig::from_toml(&text).unwrap_err().to_string();
            assert!(
                err.contains(field),
                "error for {field} does not name it: {err}"
            );
        }
    }
}
