//! The client node's side of paying: its contract with each proxy on TON
//! (read through TON's HTTP API), the network's prices from the root
//! contract, and what this node has spent through each proxy according to
//! the workers' verified receipts but that proxy has not charged on chain
//! yet. A request the contract with a proxy cannot cover at its worst case
//! (`max_tokens` of completion) is not sent through that proxy (HTTP 402
//! with how much to top up when no proxy can take it); with a wallet
//! configured, the node tops each contract up itself when its balance falls
//! below a mark, and deploys a contract on first use of a proxy it has none
//! with (remembered in a file, found there on later starts).

use cocoon_protocol::sync::{LockRecover, RwLockRecover};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use cocoon_chain::pricing::TokenCounts;
use cocoon_chain::{Chain, ClientChannel, ClientState, Prices, StdAddr};
use cocoon_protocol::tls::Fingerprint;
use cocoon_protocol::{AccountTerms, ErrorKind, SignedReceipt, Usage, WireError};
use serde_json::{json, Value};

use crate::api::ApiError;

/// How long a read of the chain is reused, unless [`Billing::fresh`] says
/// otherwise.
pub const FRESH: Duration = Duration::from_secs(2);

/// Automatic top-up from the owner's wallet.
pub struct TopUp {
    pub wallet: std::sync::Arc<cocoon_chain::WalletSender>,
    /// Top up when the contract holds less than this, nano-TON...
    pub below: u128,
    /// ...by this much.
    pub amount: u128,
}

/// Deploying this node's client contract when it has none.
pub struct Deploy {
    pub wallet: std::sync::Arc<cocoon_chain::WalletSender>,
    /// First deposit, nano-TON.
    pub deposit: u128,
    /// Where the deployed contract's address is kept (JSON: proxy contract
    /// -> client contract).
    pub file: std::path::PathBuf,
}

/// Where this node pays from: one client contract per proxy contract it
/// uses (a client contract pays exactly one proxy contract).
pub struct Billing {
    ton: Arc<dyn Chain>,
    /// Contracts from the configuration, matched to a proxy (by the proxy
    /// contract their data names) when that proxy is first connected.
    configured: Vec<StdAddr>,
    /// Proxy contract -> this node's account with it.
    accounts: RwLock<BTreeMap<String, Arc<Account>>>,
    /// Deploy a contract on first use of a proxy.
    pub deploy: Option<Deploy>,
    deploying: tokio::sync::Mutex<()>,
    /// The network's root contract (prices, and the registry of proxies
    /// this node agrees to pay).
    root: StdAddr,
    /// This node's TLS key fingerprint: the one its client contracts name
    /// (a proxy serves on a contract only to the node it names).
    node_key: Fingerprint,
    /// Completion tokens reserved for a request without `max_tokens`.
    pub default_max_tokens: u32,
    /// The root's prices and when they were read (kept past [`Billing::fresh`]: what
    /// is charged is priced with them, and they stand while the chain is
    /// out of reach).
    prices: Mutex<Option<(Instant, Prices)>>,
    /// Automatic top-up, if configured.
    pub top_up: Option<TopUp>,
    /// How long a read of the chain (the contract's state, the root's
    /// prices) is reused: [`FRESH`] by default.
    pub fresh: Duration,
    /// Where every receipt this node pays for is kept.
    pub journal: Option<crate::ReceiptJournal>,
}

/// This node's client contract with one proxy contract, and what it spent
/// through that proxy.
struct Account {
    contract: StdAddr,
    cache: tokio::sync::Mutex<Option<(Instant, ClientState)>>,
    /// Priced verified receipts since this node started, nano-TON.
    spent: Mutex<u128>,
    /// `charged` on chain when this node started.
    charged_at_start: Mutex<Option<u128>>,
    topping_up: Arc<AtomicBool>,
}

impl Account {
    fn new(contract: StdAddr) -> Arc<Self> {
        Arc::new(Self {
            contract,
            cache: tokio::sync::Mutex::new(None),
            spent: Mutex::new(0),
            charged_at_start: Mutex::new(None),
            topping_up: Default::default(),
        })
    }

    /// (priced verified receipts since start, charged on chain since start)
    fn spent_and_charged(&self, state: &ClientState) -> (u128, u128) {
        let spent = *self.spent.locked();
        let start = self.charged_at_start.locked().unwrap_or(state.charged);
        (spent, state.charged.saturating_sub(start))
    }

    /// Spent since start but not yet charged on chain.
    fn unsettled(&self, state: &ClientState) -> u128 {
        let (spent, charged) = self.spent_and_charged(state);
        spent.saturating_sub(charged)
    }

    /// Charged on chain since this node started beyond what the workers'
    /// verified receipts add up to: what a proxy took without receipts.
    fn overcharged(&self, state: &ClientState) -> u128 {
        let (spent, charged) = self.spent_and_charged(state);
        charged.saturating_sub(spent)
    }
}

impl std::fmt::Debug for Billing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let contracts: Vec<String> = self
            .contracts()
            .into_iter()
            .map(|(_, c)| c.to_string())
            .collect();
        write!(f, "Billing({contracts:?})")
    }
}

fn chain_unavailable(e: impl std::fmt::Display) -> WireError {
    WireError::new(
        ErrorKind::ChainUnavailable,
        format!("cannot read this node's TON contract: {e}"),
    )
}

impl Billing {
    /// Billing from the `configured` contracts (each matched to the proxy
    /// contract it pays; a proxy without one gets one deployed when
    /// `deploy` is set).
    /// Billing for the node whose key fingerprint is `node_key`.
    pub fn new(
        ton: Arc<dyn Chain>,
        configured: Vec<StdAddr>,
        root: StdAddr,
        node_key: Fingerprint,
    ) -> Self {
        Self {
            ton,
            configured,
            node_key,
            accounts: RwLock::new(BTreeMap::new()),
            deploy: None,
            deploying: tokio::sync::Mutex::new(()),
            root,
            default_max_tokens: 1024,
            prices: Mutex::new(None),
            top_up: None,
            fresh: FRESH,
            journal: None,
        }
    }

    /// This node's client contracts in use: (proxy contract, client contract).
    pub fn contracts(&self) -> Vec<(String, StdAddr)> {
        self.accounts
            .reading()
            .iter()
            .map(|(proxy, a)| (proxy.clone(), a.contract.clone()))
            .collect()
    }

    /// Whether contracts are configured or can be deployed (the node can
    /// pay some proxy without further setup).
    pub fn has_configured_contracts(&self) -> bool {
        !self.configured.is_empty()
    }

    fn account(&self, proxy_contract: &str) -> Option<Arc<Account>> {
        self.accounts.reading().get(proxy_contract).cloned()
    }

    fn open(&self, proxy_contract: &str, contract: StdAddr) -> StdAddr {
        self.accounts
            .writing()
            .entry(proxy_contract.to_string())
            .or_insert_with(|| Account::new(contract))
            .contract
            .clone()
    }

    /// The contract to pay `terms`' proxy from: a configured one that names
    /// that proxy contract, the one remembered for it, else a new one
    /// deployed from the owner's wallet with the first deposit (its address
    /// saved before it is used).
    pub async fn ensure_contract(&self, terms: &AccountTerms) -> Result<StdAddr, ContractError> {
        if let Some(account) = self.account(&terms.proxy_contract) {
            return Ok(account.contract.clone());
        }
        let proxy = cocoon_chain::ton_http::parse_address(&terms.proxy_contract)
            .map_err(ContractError::ProxyAddress)?;
        // A configured contract needs no lock: registering with one proxy
        // never waits behind a deployment for another.
        for contract in &self.configured {
            let channel = ClientChannel::from_stack(
                &self
                    .ton
                    .get(contract, "get_client_data", &[])
                    .await
                    .map_err(|source| ContractError::Read {
                        contract: contract.clone(),
                        source,
                    })?,
            )
            .map_err(|source| ContractError::Read {
                contract: contract.clone(),
                source,
            })?;
            if channel.proxy == proxy {
                if channel.client_key.0 != self.node_key.0 {
                    return Err(ContractError::NotThisNode {
                        contract: contract.clone(),
                        names: Fingerprint(channel.client_key.0),
                        node: self.node_key,
                    });
                }
                return Ok(self.open(&terms.proxy_contract, contract.clone()));
            }
        }
        let Some(deploy) = &self.deploy else {
            return Err(ContractError::NoContract(terms.proxy_contract.clone()));
        };
        let _one = self.deploying.lock().await;
        if let Some(account) = self.account(&terms.proxy_contract) {
            return Ok(account.contract.clone());
        }
        // Money leaves the wallet only for a proxy contract the network's
        // operator publishes, with the key this proxy signs with.
        self.check_registered(&proxy, &terms.proxy_key).await?;
        let mut known = read_contracts(&deploy.file)?;
        let mut remembered = known.get(&terms.proxy_contract).cloned();
        if let Some(r) = &remembered {
            // A remembered contract that is not active but has history was
            // closed: never deploy it again at the same address, where the
            // proxy's old charge signatures (public on chain) would be valid
            // once more; a new nonce gives a new address and fresh books.
            let address = cocoon_chain::ton_http::parse_address(&r.contract)
                .map_err(ContractError::ProxyAddress)?;
            if !self.ton.account(&address).await?.is_active()
                && !self.ton.transactions(&address, 1).await?.is_empty()
            {
                tracing::info!(contract = %address, proxy_contract = %terms.proxy_contract, "the client contract with this proxy was closed; deploying a new one at a new address");
                remembered = None;
            }
        }
        let (nonce, close_delay) = match &remembered {
            Some(r) => (r.nonce, r.close_delay),
            None => {
                let prices = self.prices().await.map_err(ContractError::Prices)?;
                (cocoon_chain::random_nonce()?, prices.client_close_delay)
            }
        };
        let data = cocoon_chain::ClientTerms {
            proxy,
            owner: deploy.wallet.address().clone(),
            proxy_key: cocoon_chain::HashBytes(terms.proxy_key),
            close_delay,
            nonce,
            client_key: cocoon_chain::HashBytes(self.node_key.0),
        }
        .initial_data()?;
        let code = cocoon_chain::Contract::Client.code();
        let contract = cocoon_chain::contract_address(&code, &data)?;
        let deployed = self.ton.account(&contract).await?.is_active();
        if !deployed {
            // Remembered before the deposit leaves the wallet: a crash in
            // between deploys this same contract next time, never a second one.
            known.insert(
                terms.proxy_contract.clone(),
                Remembered {
                    contract: contract.to_string(),
                    nonce,
                    close_delay,
                },
            );
            write_contracts(&deploy.file, &known)?;
            // All of the deposit is staked: the proxy extends credit only
            // up to the stake, which the owner cannot withdraw while open.
            deploy
                .wallet
                .send(&cocoon_chain::client::deposit(
                    &contract,
                    deploy.deposit,
                    deploy.deposit,
                    Some((code, data)),
                )?)
                .await
                .map_err(ContractError::Deploy)?;
            tracing::info!(%contract, proxy_contract = %terms.proxy_contract, deposit = %deploy.deposit, "client contract deployed");
        }
        Ok(self.open(&terms.proxy_contract, contract))
    }

    /// `proxy` must be in the root contract's proxy registry with `key`: a
    /// proxy cannot have this node fund a contract that pays someone else.
    async fn check_registered(&self, proxy: &StdAddr, key: &[u8; 32]) -> Result<(), ContractError> {
        cocoon_chain::check_proxy_listed(self.ton.as_ref(), &self.root, proxy, key)
            .await?
            .map_err(ContractError::NotRegistered)
    }

    /// The contract's state with `proxy_contract` (read at most every
    /// [`Billing::fresh`]); the account must be open.
    async fn state(&self, proxy_contract: &str) -> Result<(Arc<Account>, ClientState), WireError> {
        let account = self.account(proxy_contract).ok_or_else(|| {
            WireError::new(
                ErrorKind::PaymentRequired,
                format!("this node has no client contract with proxy contract {proxy_contract} yet (it is registered when the node connects)"),
            )
        })?;
        {
            let cache = account.cache.lock().await;
            if let Some((at, state)) = cache.as_ref() {
                if at.elapsed() < self.fresh {
                    return Ok((account.clone(), state.clone()));
                }
            }
        }
        // Read without holding the cache: requests never queue behind a slow
        // chain API, at the cost of the occasional duplicate read.
        let read = match self
            .ton
            .get(&account.contract, "get_client_data", &[])
            .await
        {
            Ok(stack) => ClientState::from_stack(&stack),
            Err(e) => Err(e),
        };
        let state = match read {
            Ok(state) => state,
            Err(e) => {
                // The chain is out of reach: serve on what was last read (the
                // spend since then still counts against it), or refuse.
                let last = account.cache.lock().await.as_ref().map(|(_, s)| s.clone());
                let Some(last) = last else {
                    return Err(chain_unavailable(e));
                };
                tracing::warn!(contract = %account.contract, error = %e, "cannot read the client contract; using its last known state");
                return Ok((account, last));
            }
        };
        account
            .charged_at_start
            .locked()
            .get_or_insert(state.charged);
        self.maybe_top_up(&account, &state);
        *account.cache.lock().await = Some((Instant::now(), state.clone()));
        Ok((account, state))
    }

    /// Below the mark: deposit from the owner's wallet in the background
    /// (one top-up per contract at a time; confirmed on chain before the next).
    fn maybe_top_up(&self, account: &Account, state: &ClientState) {
        let Some(top_up) = &self.top_up else { return };
        if state.balance >= top_up.below || state.close_requested_at != 0 {
            return;
        }
        if account.topping_up.swap(true, Ordering::AcqRel) {
            return;
        }
        let contract = account.contract.clone();
        let (wallet, amount) = (top_up.wallet.clone(), top_up.amount);
        let busy = account.topping_up.clone();
        tokio::spawn(async move {
            // Staked like the first deposit: it raises the credit too.
            let messages = match cocoon_chain::client::deposit(&contract, amount, amount, None) {
                Ok(messages) => messages,
                Err(e) => {
                    tracing::error!(error = %e, "cannot build a top-up");
                    busy.store(false, Ordering::Release);
                    return;
                }
            };
            let sent = wallet.send(&messages).await;
            match sent {
                Ok(_) => tracing::info!(%contract, %amount, "client contract topped up"),
                Err(e) => {
                    tracing::warn!(%contract, error = %e, "top-up failed; retrying on a later request")
                }
            }
            busy.store(false, Ordering::Release);
        });
    }

    /// The network's prices (from the root contract, cached briefly).
    pub async fn prices(&self) -> Result<Prices, WireError> {
        let last = self.prices.locked().clone();
        if let Some((at, prices)) = &last {
            if at.elapsed() < self.fresh {
                return Ok(prices.clone());
            }
        }
        let unavailable = |e: cocoon_chain::ChainError| {
            WireError::new(
                ErrorKind::ChainUnavailable,
                format!("cannot read the network's prices from the root contract: {e}"),
            )
        };
        let read = match self.ton.get(&self.root, "get_prices", &[]).await {
            Ok(stack) => Prices::from_stack(&stack),
            Err(e) => Err(e),
        };
        let prices = match read {
            Ok(prices) => prices,
            Err(e) => {
                // Out of reach: the prices last read still stand.
                return last.map(|(_, p)| p).ok_or_else(|| unavailable(e));
            }
        };
        *self.prices.locked() = Some((Instant::now(), prices.clone()));
        Ok(prices)
    }

    /// Refuse (402) a request through `proxy_contract`'s proxy that could
    /// cost more than this node's contract with it holds, at price
    /// `coefficient` (the request's limit; the base price without one):
    /// `max_tokens` (or the default) for each of its `answers`.
    pub async fn check(
        &self,
        proxy_contract: &str,
        prompt_bytes: usize,
        max_tokens: Option<u32>,
        answers: u32,
        coefficient: Option<u32>,
    ) -> Result<(), WireError> {
        let (account, state) = self.state(proxy_contract).await?;
        let prices = self.prices().await?;
        let worst = prices.charge_at(
            TokenCounts {
                // The most prompt tokens a receipt may claim for the sealed
                // request (at least this big): what the proxy holds too.
                prompt: cocoon_protocol::receipt::prompt_token_bound(
                    cocoon_protocol::sealed::sealed_request_len(prompt_bytes) as u64,
                ),
                cached_prompt: 0,
                completion: u64::from(max_tokens.unwrap_or(self.default_max_tokens))
                    * u64::from(answers.max(1)),
                reasoning: 0,
            },
            coefficient.unwrap_or(cocoon_protocol::BASE_PRICE_COEFFICIENT),
        );
        let unsettled = account.unsettled(&state);
        let available = credit(&state).saturating_sub(unsettled);
        if worst.total > available {
            return Err(WireError::new(
                ErrorKind::PaymentRequired,
                format!(
                    "This node's client contract {} stakes {} nano-TON, the credit a proxy extends between settlements ({} after requests not yet settled; it holds {}); this request may cost up to {} nano-TON. Top up and stake at least {} nano-TON more, or lower max_tokens.",
                    account.contract,
                    credit(&state),
                    available,
                    state.balance,
                    worst.total,
                    worst.total - available
                ),
            ));
        }
        Ok(())
    }

    /// What `usage` costs at the prices last read and the worker's price
    /// `coefficient` (none before prices were first read).
    pub fn cost(&self, usage: &Usage, coefficient: u32) -> Option<u128> {
        let prices = self.prices.locked().as_ref()?.1.clone();
        Some(
            prices
                .charge_at(
                    TokenCounts {
                        prompt: usage.prompt_tokens,
                        cached_prompt: usage.cached_prompt_tokens,
                        completion: usage.completion_tokens,
                        reasoning: usage.reasoning_tokens,
                    },
                    coefficient,
                )
                .total,
        )
    }

    /// Count a request served through `proxy_contract`'s proxy (its receipt
    /// verified) at the prices last read and the worker's price `coefficient`.
    /// Count a verified receipt (signed by `worker_key`) as spent through
    /// `proxy_contract`, and keep it in the journal.
    pub fn record(&self, proxy_contract: &str, receipt: &SignedReceipt, worker_key: &[u8]) {
        let r = &receipt.receipt;
        let (Some(charge), Some(account)) = (
            self.cost(&r.usage, r.price_coefficient),
            self.account(proxy_contract),
        ) else {
            return;
        };
        {
            let mut spent = account.spent.locked();
            *spent = spent.saturating_add(charge);
        }
        if let Some(journal) = &self.journal {
            journal.append(proxy_contract, receipt, worker_key, charge);
        }
    }

    /// The spending of an answer about to stream through `proxy_contract`:
    /// its latest running total is recorded if it ends without a final
    /// receipt (the proxy bills that total then).
    pub fn unfinished(self: &Arc<Self>, proxy_contract: &str) -> Unfinished {
        Unfinished {
            payer: Some((self.clone(), proxy_contract.to_string())),
            latest: None,
            ended: false,
        }
    }

    /// `GET /v1/cocoon/balance`: every contract of this node, and their
    /// sums (`contract` names the contract when there is only one).
    pub async fn balance(&self) -> Result<Value, ApiError> {
        let prices = self.prices().await?;
        let proxies: Vec<String> = self.contracts().into_iter().map(|(p, _)| p).collect();
        if proxies.is_empty() {
            return Err(ApiError::unavailable(
                "This node has no client contract with a proxy yet (it is registered, or deployed, when the node connects to one).",
            ));
        }
        let mut accounts = Vec::new();
        let mut total = [0u128; 6];
        let mut closing = false;
        for proxy in &proxies {
            let (account, state) = self.state(proxy).await?;
            let unsettled = account.unsettled(&state);
            let overcharged = account.overcharged(&state);
            if overcharged > 0 {
                tracing::warn!(contract = %account.contract, %overcharged, "the proxy charged more than the workers' receipts add up to since this node started");
            }
            let available = credit(&state).saturating_sub(unsettled);
            let values = [
                state.balance,
                state.stake,
                state.charged,
                unsettled,
                available,
                overcharged,
            ];
            for (sum, v) in total.iter_mut().zip(values) {
                *sum = sum.saturating_add(v);
            }
            closing |= state.close_requested_at != 0;
            accounts.push(json!({
                "proxy_contract": proxy,
                "contract": account.contract.to_string(),
                "balance_nano": state.balance.to_string(),
                "stake_nano": state.stake.to_string(),
                "charged_nano": state.charged.to_string(),
                "unsettled_nano": unsettled.to_string(),
                "available_nano": available.to_string(),
                "closing": state.close_requested_at != 0,
                "overcharged_nano": overcharged.to_string(),
            }));
        }
        let contract = (accounts.len() == 1).then(|| accounts[0]["contract"].clone());
        Ok(json!({
            "object": "cocoon.balance",
            "contract": contract,
            "balance_nano": total[0].to_string(),
            "stake_nano": total[1].to_string(),
            "charged_nano": total[2].to_string(),
            "unsettled_nano": total[3].to_string(),
            "available_nano": total[4].to_string(),
            "closing": closing,
            // Charged beyond the verified receipts since this node started.
            "overcharged_nano": total[5].to_string(),
            "price_per_token_nano": prices.price_per_token.to_string(),
            "accounts": accounts,
        }))
    }
}

/// What a proxy serves on between settlements: the stake (never more than
/// the balance), since the owner can withdraw the rest at any moment.
fn credit(state: &ClientState) -> u128 {
    state.stake.min(state.balance)
}

/// The bytes of a request's prompt (a bound on its tokens).
pub fn prompt_bytes(input: &cocoon_protocol::Input) -> usize {
    match input {
        cocoon_protocol::Input::Chat(messages) => messages.iter().map(|m| m.content.len()).sum(),
        cocoon_protocol::Input::Prompt(prompt) => prompt.len(),
    }
}

/// A deployed client contract's terms, kept in the contracts file.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Remembered {
    contract: String,
    nonce: u64,
    close_delay: u32,
}

/// The contracts file: proxy contract -> this node's client contract with it.
/// Why this node has no client contract to pay a proxy from.
#[derive(Debug, thiserror::Error)]
pub enum ContractError {
    #[error("the proxy's contract address: {0}")]
    ProxyAddress(cocoon_chain::InputError),
    #[error("reading client contract {contract}: {source}")]
    Read {
        contract: StdAddr,
        #[source]
        source: cocoon_chain::ChainError,
    },
    #[error("no configured client contract pays proxy contract {0} ([billing] contract / contracts), and no wallet to deploy one")]
    NoContract(String),
    #[error("the network's prices: {}", .0.message)]
    Prices(WireError),
    #[error("the file of deployed contracts {}: {message}", path.display())]
    File {
        path: std::path::PathBuf,
        message: String,
    },
    #[error(transparent)]
    Chain(#[from] cocoon_chain::ChainError),
    #[error("deploying the client contract: {0}")]
    Deploy(cocoon_chain::ChainError),
    /// The proxy did not answer with its terms.
    #[error("the proxy's terms: {0}")]
    Terms(String),
    /// A configured contract for that proxy names another node's key.
    #[error("client contract {contract} names client node key {names}, not this node's {node}: a proxy serves on it only to that node (deploy one for this node with `cocoon wallet deploy-client --client-key {node}`)")]
    NotThisNode {
        contract: StdAddr,
        names: Fingerprint,
        node: Fingerprint,
    },
    /// The proxy's contract is not one the network publishes.
    #[error("refusing to deploy a client contract: {0}")]
    NotRegistered(String),
}

fn read_contracts(
    path: &std::path::Path,
) -> Result<std::collections::BTreeMap<String, Remembered>, ContractError> {
    let file = |message: String| ContractError::File {
        path: path.to_path_buf(),
        message,
    };
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| file(e.to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Default::default()),
        Err(e) => Err(file(e.to_string())),
    }
}

fn write_contracts(
    path: &std::path::Path,
    known: &std::collections::BTreeMap<String, Remembered>,
) -> Result<(), ContractError> {
    let file = |message: String| ContractError::File {
        path: path.to_path_buf(),
        message,
    };
    let text = serde_json::to_string_pretty(known).map_err(|e| file(e.to_string()))?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| file(e.to_string()))
}

/// An answer streaming: the worker's latest running total (with its
/// identity), counted as spent if the answer never ends with its final
/// receipt, as the proxy bills it. Answers that end with `Done` are
/// counted by their final receipt instead.
#[derive(Default)]
pub struct Unfinished {
    payer: Option<(Arc<Billing>, String)>,
    latest: Option<(SignedReceipt, Vec<u8>)>,
    ended: bool,
}

impl Unfinished {
    /// A verified running total from the worker with identity `worker_key`.
    pub fn progress(&mut self, signed: SignedReceipt, worker_key: &[u8]) {
        self.latest = Some((signed, worker_key.to_vec()));
    }

    /// The answer ended with its final receipt (recorded by the caller).
    pub fn ended(&mut self) {
        self.ended = true;
    }
}

impl Drop for Unfinished {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        if let (Some((billing, proxy_contract)), Some((signed, key))) = (&self.payer, &self.latest)
        {
            billing.record(proxy_contract, signed, key);
        }
    }
}
