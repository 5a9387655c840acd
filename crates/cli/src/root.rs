//! `cocoon root deploy|show|add-image|remove-image|add-model|remove-model|
//! add-proxy|remove-proxy|set-prices|set-params|set-rules|transfer-owner|
//! accept-owner`:
//! the network operator's tool for the root contract, which every node
//! following it (`[attestation] root`, the client's `[registry]`, the
//! proxy's prices) trusts. Each change is read first, printed, confirmed
//! (or `--yes`), signed by the owner's wallet (the proposed owner's, for
//! `accept-owner`), sent, and counted as done only when the contract's
//! version is seen to move and the change reads back.

mod deploy;
mod flags;

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use cocoon_attestation::{ConfigurationRules, PublishedLists};
use cocoon_chain::published::read_lists;
use cocoon_chain::root::{self as root_msg, ImageRole};
use cocoon_chain::{Chain, HashBytes, Outgoing, Prices, StdAddr, WalletSender, TON};
use serde_json::json;

/// Where the root contract is read: every command takes these.
#[derive(clap::Args, Debug)]
pub struct RootAt {
    /// TON HTTP API: `testnet`, `mainnet`, or a URL (the devnet prints its own).
    #[arg(long, value_name = "URL")]
    api: String,
    /// The root contract (`0:<hex>` or user-friendly).
    #[arg(long, value_name = "ADDR")]
    root: String,
}

/// The owner's wallet, and whether to skip the confirmation.
#[derive(clap::Args, Debug)]
pub struct Owner {
    /// The root contract owner's wallet (24 words, `cocoon wallet new`).
    #[arg(long, value_name = "FILE")]
    mnemonic: PathBuf,
    /// Change without asking.
    #[arg(long)]
    yes: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Role {
    Worker,
    Proxy,
}

#[derive(clap::Subcommand, Debug)]
pub enum RootCommand {
    /// Print the root contract as JSON: version, owner, prices,
    /// configuration rules, images, models and proxies.
    Show {
        #[command(flatten)]
        at: RootAt,
    },
    /// Allow an image (hex SHA-256, as `cocoon attest show-cert` prints
    /// `image_hash`) to run workers or proxies.
    AddImage(ImageChange),
    /// Withdraw an image: nodes following the root drop peers running it
    /// within their refresh interval.
    RemoveImage(ImageChange),
    /// Allow weights (hex SHA-256 of the GGUF file) as a model name.
    AddModel {
        #[command(flatten)]
        at: RootAt,
        #[command(flatten)]
        owner: Owner,
        #[arg(long)]
        name: String,
        #[arg(long, value_name = "HEX")]
        sha256: String,
    },
    /// Withdraw weights: workers serving them are dropped.
    RemoveModel {
        #[command(flatten)]
        at: RootAt,
        #[command(flatten)]
        owner: Owner,
        #[arg(long, value_name = "HEX")]
        sha256: String,
    },
    /// Publish a proxy (its contract, Ed25519 key and `host:port`): client
    /// nodes following the registry dial it.
    AddProxy {
        #[command(flatten)]
        at: RootAt,
        #[command(flatten)]
        owner: Owner,
        #[arg(long, value_name = "ADDR")]
        contract: String,
        /// The proxy's Ed25519 public key (hex, 32 bytes).
        #[arg(long, value_name = "HEX")]
        key: String,
        #[arg(long, value_name = "HOST:PORT")]
        endpoint: String,
        /// The protocol version it runs (default: this build's).
        #[arg(long)]
        version: Option<u32>,
    },
    /// Withdraw a proxy: client nodes stop dialling it.
    RemoveProxy {
        #[command(flatten)]
        at: RootAt,
        #[command(flatten)]
        owner: Owner,
        #[arg(long, value_name = "ADDR")]
        contract: String,
    },
    /// Change prices; those not given stay.
    SetPrices {
        #[command(flatten)]
        at: RootAt,
        #[command(flatten)]
        owner: Owner,
        #[command(flatten)]
        prices: PriceFlags,
    },
    /// Change the network's parameters (stakes, close delays); those not
    /// given stay.
    SetParams {
        #[command(flatten)]
        at: RootAt,
        #[command(flatten)]
        owner: Owner,
        #[command(flatten)]
        params: ParamFlags,
    },
    /// Set the rules every worker's and proxy's attested configuration
    /// must follow (nodes following the root add them to their policy):
    /// the flags given are the new rules whole; `--clear` removes them.
    SetRules {
        #[command(flatten)]
        at: RootAt,
        #[command(flatten)]
        owner: Owner,
        #[command(flatten)]
        rules: RuleFlags,
    },
    /// Propose a new owner (nothing moves until it runs `accept-owner`);
    /// `--cancel` withdraws a proposal.
    TransferOwner {
        #[command(flatten)]
        at: RootAt,
        #[command(flatten)]
        owner: Owner,
        /// The proposed owner's wallet address.
        #[arg(long, value_name = "ADDR", required_unless_present = "cancel")]
        to: Option<String>,
        #[arg(long, conflicts_with = "to")]
        cancel: bool,
    },
    /// Take the root contract over, signed by the proposed owner's wallet.
    AcceptOwner {
        #[command(flatten)]
        at: RootAt,
        /// The proposed owner's wallet (24 words).
        #[command(flatten)]
        owner: Owner,
    },
    /// Deploy a new root contract owned by `--mnemonic`'s wallet, with the
    /// default prices and parameters except those given; prints its address.
    Deploy {
        /// TON HTTP API: `testnet`, `mainnet`, or a URL.
        #[arg(long, value_name = "URL")]
        api: String,
        #[command(flatten)]
        owner: Owner,
        #[command(flatten)]
        prices: PriceFlags,
        #[command(flatten)]
        params: ParamFlags,
    },
}

/// `set-rules`: the configuration rules, whole.
#[derive(clap::Args, Debug)]
pub struct RuleFlags {
    /// Peers must present their configuration document (bound by their
    /// evidence).
    #[arg(long)]
    require_configuration: bool,
    /// An `openai-http` engine may only reach an address inside its own
    /// measured VM (loopback).
    #[arg(long)]
    upstream_loopback_only: bool,
    /// The engine kinds workers may run, comma-separated (`embedded`,
    /// `openai-http`, `instant`); none: any.
    #[arg(long, value_name = "KINDS", value_delimiter = ',')]
    engines: Vec<String>,
    /// Remove every rule.
    #[arg(long, conflicts_with_all = ["require_configuration", "upstream_loopback_only", "engines"])]
    clear: bool,
}

/// The engine kinds a worker can run.
const ENGINE_KINDS: [&str; 3] = ["embedded", "openai-http", "instant"];

impl RuleFlags {
    fn rules(&self) -> anyhow::Result<ConfigurationRules> {
        for kind in &self.engines {
            anyhow::ensure!(
                ENGINE_KINDS.contains(&kind.as_str()),
                "--engines: {kind:?} is not an engine kind ({})",
                ENGINE_KINDS.join(", ")
            );
        }
        Ok(ConfigurationRules {
            require_configuration: self.require_configuration,
            upstream_loopback_only: self.upstream_loopback_only,
            worker_engines: self.engines.iter().cloned().collect(),
        })
    }
}

/// `add-image` and `remove-image`: which image, for which role.
#[derive(clap::Args, Debug)]
pub struct ImageChange {
    #[command(flatten)]
    at: RootAt,
    #[command(flatten)]
    owner: Owner,
    #[arg(long, value_enum)]
    role: Role,
    #[arg(value_name = "IMAGE_HASH")]
    image: String,
}

pub use flags::{ParamFlags, PriceFlags};

/// Everything the root contract holds, as read.
struct RootState {
    owner: StdAddr,
    /// Proposed by the owner, not accepted yet.
    pending_owner: Option<StdAddr>,
    /// Whether its code moves ownership in two steps (a root deployed
    /// before has no `get_pending_owner`, and its `ChangeOwner` hands the
    /// contract over at once).
    two_step: bool,
    prices: Prices,
    lists: PublishedLists,
    proxies: Vec<cocoon_chain::RegisteredProxy>,
}

async fn read_state(chain: &dyn Chain, root: &StdAddr) -> anyhow::Result<RootState> {
    let lists = read_lists(chain, root)
        .await
        .with_context(|| format!("--root {root}: not a root contract on chain"))?;
    let owner = cocoon_chain::stack_address(&chain.get(root, "get_owner", &[]).await?)?;
    // The other reads answered: a failing one here is older code.
    let (pending_owner, two_step) = match chain.get(root, "get_pending_owner", &[]).await {
        Ok(stack) => (cocoon_chain::stack_optional_address(&stack)?, true),
        Err(_) => (None, false),
    };
    let prices = Prices::from_stack(&chain.get(root, "get_prices", &[]).await?)?;
    let proxies = cocoon_chain::registered_proxies(chain, root).await?;
    Ok(RootState {
        owner,
        pending_owner,
        two_step,
        prices,
        lists,
        proxies,
    })
}

fn show(state: &RootState) -> serde_json::Value {
    let p = &state.prices;
    json!({
        "version": state.lists.version,
        "owner": state.owner.to_string(),
        "pending_owner": state.pending_owner.as_ref().map(|a| a.to_string()),
        "two_step_ownership": state.two_step,
        "prices": {
            "price_per_token_nano": p.price_per_token.to_string(),
            "worker_share_bps": p.worker_share_bps,
            "prompt_bps": p.prompt_bps,
            "cached_prompt_bps": p.cached_prompt_bps,
            "completion_bps": p.completion_bps,
            "reasoning_bps": p.reasoning_bps,
            "min_client_stake_nano": p.min_client_stake.to_string(),
            "min_proxy_stake_nano": p.min_proxy_stake.to_string(),
            "client_close_delay_secs": p.client_close_delay,
            "proxy_close_delay_secs": p.proxy_close_delay,
        },
        "rules": {
            "require_configuration": state.lists.rules.require_configuration,
            "upstream_loopback_only": state.lists.rules.upstream_loopback_only,
            "worker_engines": state.lists.rules.worker_engines,
        },
        "worker_images": state.lists.worker_images,
        "proxy_images": state.lists.proxy_images,
        "models": state.lists.models.iter().map(|(sha256, name)| json!({"name": name, "sha256": sha256})).collect::<Vec<_>>(),
        "proxies": state.proxies.iter().map(|p| json!({
            "contract": p.contract.to_string(),
            "key": hex::encode(p.key.0),
            "version": p.version,
            "endpoint": p.endpoint,
        })).collect::<Vec<_>>(),
    })
}

fn hash(flag: &str, text: &str) -> anyhow::Result<HashBytes> {
    let bytes: [u8; 32] = hex::decode(text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| anyhow::anyhow!("{flag}: 64 hex digits (a SHA-256), got {text:?}"))?;
    Ok(HashBytes(bytes))
}

fn address(flag: &str, text: &str) -> anyhow::Result<StdAddr> {
    cocoon_chain::ton_http::parse_address(text).map_err(|e| anyhow::anyhow!("{flag}: {e}"))
}

fn chain(api: &str) -> anyhow::Result<Arc<dyn Chain>> {
    Ok(Arc::new(
        cocoon_chain::ton_http::from_config(api, None)
            .map_err(|e| anyhow::anyhow!("--api: {e}"))?,
    ))
}

/// One change: its message, what it does in words, and the check that it
/// reads back.
struct Change {
    body: cocoon_chain::Cell,
    says: String,
    /// Who must sign it, and in words.
    signer: (StdAddr, &'static str),
    landed: Box<dyn Fn(&RootState) -> bool + Send + Sync>,
}

fn image_role(role: Role) -> ImageRole {
    match role {
        Role::Worker => ImageRole::Worker,
        Role::Proxy => ImageRole::Proxy,
    }
}

fn images(state: &RootState, role: Role) -> &std::collections::BTreeSet<String> {
    match role {
        Role::Worker => &state.lists.worker_images,
        Role::Proxy => &state.lists.proxy_images,
    }
}

/// The change `command` asks for, given the state before; `None` for `show`.
fn change(command: &RootCommand, before: &RootState) -> anyhow::Result<Option<Change>> {
    let mut change = match what_changes(command, before)? {
        Some(change) => change,
        None => return Ok(None),
    };
    if matches!(command, RootCommand::AcceptOwner { .. }) {
        let pending = before.pending_owner.clone().ok_or_else(|| {
            anyhow::anyhow!("accept-owner: no new owner is proposed (the owner runs `cocoon root transfer-owner --to ADDR` first)")
        })?;
        change.signer = (pending, "the proposed owner");
    }
    Ok(Some(change))
}

/// What `command` changes, signed by the owner.
fn what_changes(command: &RootCommand, before: &RootState) -> anyhow::Result<Option<Change>> {
    let owner = (before.owner.clone(), "the root contract's owner");
    Ok(Some(match command {
        RootCommand::Show { .. } | RootCommand::Deploy { .. } => return Ok(None),
        RootCommand::AddImage(ImageChange { role, image, .. })
        | RootCommand::RemoveImage(ImageChange { role, image, .. }) => {
            let allow = matches!(command, RootCommand::AddImage(_));
            let hash = hash("IMAGE_HASH", image)?;
            let hex = hex::encode(hash.0);
            let (role, present) = (*role, images(before, *role).contains(&hex));
            anyhow::ensure!(
                allow != present,
                "IMAGE_HASH: {hex} is {} the root contract's {role:?} images already",
                if present { "in" } else { "not in" }
            );
            Change {
                signer: owner,
                body: root_msg::set_image(image_role(role), &hash, allow)?,
                says: format!(
                    "{} {role:?} image {hex}",
                    if allow { "allow" } else { "WITHDRAW" }
                ),
                landed: Box::new(move |s| images(s, role).contains(&hex) == allow),
            }
        }
        RootCommand::AddModel { name, sha256, .. } => {
            let hash = hash("--sha256", sha256)?;
            anyhow::ensure!(
                !name.trim().is_empty() && name.len() <= 128,
                "--name: 1 to 128 bytes, got {name:?}"
            );
            let (hex, name) = (hex::encode(hash.0), name.clone());
            if let Some(held) = before.lists.models.get(&hex) {
                anyhow::ensure!(
                    held != &name,
                    "--sha256: {hex} is published as {name:?} already"
                );
            }
            Change {
                signer: owner,
                body: root_msg::set_model(&hash, Some(&name))?,
                says: format!("allow weights {hex} as model {name:?}"),
                landed: Box::new(move |s| s.lists.models.get(&hex) == Some(&name)),
            }
        }
        RootCommand::RemoveModel { sha256, .. } => {
            let hash = hash("--sha256", sha256)?;
            let hex = hex::encode(hash.0);
            let name = before.lists.models.get(&hex).cloned().ok_or_else(|| {
                anyhow::anyhow!("--sha256: {hex} is not among the root contract's models")
            })?;
            Change {
                signer: owner,
                body: root_msg::set_model(&hash, None)?,
                says: format!("WITHDRAW model {name:?} (weights {hex})"),
                landed: Box::new(move |s| !s.lists.models.contains_key(&hex)),
            }
        }
        RootCommand::AddProxy {
            contract,
            key,
            endpoint,
            version,
            ..
        } => {
            let contract = address("--contract", contract)?;
            let key = hash("--key", key)?;
            anyhow::ensure!(
                endpoint
                    .rsplit_once(':')
                    .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok()),
                "--endpoint: host:port, got {endpoint:?}"
            );
            let version = version.unwrap_or(cocoon_protocol::PROTOCOL_VERSION as u32);
            let endpoint = endpoint.clone();
            Change {
                signer: owner,
                body: root_msg::set_proxy(&contract, Some((&key, version, &endpoint)))?,
                says: format!(
                    "publish proxy {contract} (key {}, protocol {version}) at {endpoint}",
                    hex::encode(key.0)
                ),
                landed: Box::new(move |s| {
                    s.proxies
                        .iter()
                        .any(|p| p.contract == contract && p.key == key && p.endpoint == endpoint)
                }),
            }
        }
        RootCommand::RemoveProxy { contract, .. } => {
            let contract = address("--contract", contract)?;
            anyhow::ensure!(
                before.proxies.iter().any(|p| p.contract == contract),
                "--contract: {contract} is not in the root contract's proxy registry"
            );
            Change {
                signer: owner,
                body: root_msg::set_proxy(&contract, None)?,
                says: format!("WITHDRAW proxy {contract}"),
                landed: Box::new(move |s| s.proxies.iter().all(|p| p.contract != contract)),
            }
        }
        RootCommand::SetPrices { .. } | RootCommand::SetParams { .. } => {
            let (after, name) = match command {
                RootCommand::SetParams { params, .. } => {
                    (params.apply(before.prices.clone())?, "set-params")
                }
                RootCommand::SetPrices { prices, .. } => {
                    (prices.apply(before.prices.clone())?, "set-prices")
                }
                _ => unreachable!(),
            };
            anyhow::ensure!(
                after != before.prices,
                "{name}: nothing to change (give the flags of the values to change)"
            );
            let says = format!("prices {:?} -> {:?}", before.prices, after);
            let body = root_msg::set_prices(&after)?;
            Change {
                signer: owner,
                body,
                says,
                landed: Box::new(move |s| s.prices == after),
            }
        }
        RootCommand::SetRules { rules, .. } => {
            let after = if rules.clear {
                ConfigurationRules::default()
            } else {
                rules.rules()?
            };
            anyhow::ensure!(
                after != before.lists.rules,
                "set-rules: these are the root contract's rules already"
            );
            let says = format!(
                "configuration rules {:?} -> {:?}",
                before.lists.rules, after
            );
            let cleared = after == ConfigurationRules::default();
            Change {
                signer: owner,
                body: root_msg::set_rules((!cleared).then_some(&after))?,
                says,
                landed: Box::new(move |s| s.lists.rules == after),
            }
        }
        RootCommand::TransferOwner { to, cancel, .. } => {
            anyhow::ensure!(
                before.two_step,
                "transfer-owner: this root contract's code predates two-step ownership (no get_pending_owner): its ChangeOwner would hand it over at once, unconfirmed; not sent"
            );
            let to = match (to, cancel) {
                (Some(to), false) => {
                    let to = address("--to", to)?;
                    anyhow::ensure!(
                        to != before.owner,
                        "--to: {to} owns the root contract already (`--cancel` withdraws a proposal)"
                    );
                    Some(to)
                }
                _ => {
                    anyhow::ensure!(
                        before.pending_owner.is_some(),
                        "--cancel: no new owner is proposed"
                    );
                    None
                }
            };
            let says = match &to {
                Some(to) => format!("PROPOSE {to} as the next owner (it takes over when it runs `cocoon root accept-owner`)"),
                None => "withdraw the proposed owner".to_string(),
            };
            Change {
                body: root_msg::change_owner(to.as_ref().unwrap_or(&before.owner))?,
                signer: owner,
                says,
                landed: Box::new(move |s| s.pending_owner == to),
            }
        }
        RootCommand::AcceptOwner { .. } => {
            let new = before.pending_owner.clone();
            Change {
                body: root_msg::accept_owner()?,
                // Replaced by the proposed owner (see `change`).
                signer: owner,
                says: "TAKE OVER the root contract".to_string(),
                landed: Box::new(move |s| {
                    Some(&s.owner) == new.as_ref() && s.pending_owner.is_none()
                }),
            }
        }
    }))
}

fn confirm(question: &str) -> anyhow::Result<bool> {
    print!("{question} [y/N] ");
    std::io::stdout().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

fn parts(command: &RootCommand) -> (&RootAt, Option<&Owner>) {
    match command {
        RootCommand::Show { at } => (at, None),
        RootCommand::AddImage(ImageChange { at, owner, .. })
        | RootCommand::RemoveImage(ImageChange { at, owner, .. })
        | RootCommand::AddModel { at, owner, .. }
        | RootCommand::RemoveModel { at, owner, .. }
        | RootCommand::AddProxy { at, owner, .. }
        | RootCommand::RemoveProxy { at, owner, .. }
        | RootCommand::SetPrices { at, owner, .. }
        | RootCommand::SetParams { at, owner, .. }
        | RootCommand::SetRules { at, owner, .. }
        | RootCommand::TransferOwner { at, owner, .. }
        | RootCommand::AcceptOwner { at, owner } => (at, Some(owner)),
        RootCommand::Deploy { .. } => unreachable!("deploy has no root contract yet"),
    }
}

pub async fn run(command: RootCommand) -> anyhow::Result<()> {
    if let RootCommand::Deploy {
        api,
        owner,
        prices,
        params,
    } = &command
    {
        return deploy::run(api, owner, prices, params).await;
    }
    let (at, owner) = parts(&command);
    let chain = chain(&at.api)?;
    let root = address("--root", &at.root)?;
    let before = read_state(chain.as_ref(), &root).await?;
    let Some(change) = change(&command, &before)? else {
        println!("{}", serde_json::to_string_pretty(&show(&before))?);
        return Ok(());
    };
    let owner = owner.expect("every change has an owner");
    let wallet = cocoon_chain::Wallet::from_mnemonic_file(&owner.mnemonic)
        .with_context(|| format!("--mnemonic {}", owner.mnemonic.display()))?;
    let (signer, who) = &change.signer;
    anyhow::ensure!(
        &wallet.address == signer,
        "--mnemonic: this wallet ({}) is not {who} ({signer})",
        wallet.address,
    );
    println!(
        "root contract {root} (version {}): {}",
        before.lists.version, change.says
    );
    if !owner.yes && !confirm("Sign and send this change?")? {
        anyhow::bail!("not changed");
    }
    let sender = WalletSender::new(chain.clone(), wallet);
    sender
        .send(&[Outgoing {
            to: root.clone(),
            value: TON / 20,
            bounce: true,
            body: change.body,
            init: None,
        }])
        .await
        .context("sending the change from the owner's wallet")?;
    // The wallet's transfer is on chain; the root contract's own
    // transaction follows it.
    let started = std::time::Instant::now();
    loop {
        let after = read_state(chain.as_ref(), &root).await?;
        if after.lists.version > before.lists.version {
            anyhow::ensure!(
                (change.landed)(&after),
                "the root contract's version moved to {}, but the change does not read back (another change landed beside it?)",
                after.lists.version
            );
            println!(
                "done: root contract {root} is at version {}",
                after.lists.version
            );
            return Ok(());
        }
        anyhow::ensure!(
            started.elapsed() < std::time::Duration::from_secs(90),
            "the root contract's version did not move within 90 s: the change was refused or is not on chain yet (`cocoon root show` tells)"
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}
