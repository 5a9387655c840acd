//! The client node's side of paying: its contract with the proxy on TON (read
//! through TON's HTTP API), the network's prices from the root contract, and
//! what this node has spent according to the workers' verified receipts but
//! the proxy has not charged on chain yet. A request the contract cannot
//! cover at its worst case (`max_tokens` of completion) is refused before it
//! is sent, with HTTP 402 and how much to top up; with a wallet configured,
//! the node tops its contract up itself when the balance falls below a mark,
//! and, without a contract configured, deploys one on first use of its proxy
//! (remembered in a file, found there on later starts).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use cocoon_chain::pricing::TokenCounts;
use cocoon_chain::{Chain, ClientState, Prices, StdAddr, TonHttp};
use cocoon_protocol::AccountTerms;
use cocoon_protocol::Usage;
use serde_json::{json, Value};

use crate::api::ApiError;

/// How long a read of the chain is reused.
const FRESH: Duration = Duration::from_secs(2);

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

/// Where this node pays from.
pub struct Billing {
    ton: TonHttp,
    /// This node's client contract with its proxy (deployed on first use
    /// when `deploy` is set).
    contract: std::sync::RwLock<Option<StdAddr>>,
    /// Deploy a contract on first use of a proxy.
    pub deploy: Option<Deploy>,
    deploying: tokio::sync::Mutex<()>,
    /// The network's root contract (prices).
    root: StdAddr,
    /// Completion tokens reserved for a request without `max_tokens`.
    pub default_max_tokens: u32,
    cache: tokio::sync::Mutex<Option<(Instant, Snapshot)>>,
    /// Priced verified receipts since this node started, nano-TON.
    spent: Mutex<u128>,
    /// `charged` on chain when this node started.
    charged_at_start: Mutex<Option<u128>>,
    last_prices: Mutex<Option<Prices>>,
    /// Automatic top-up, if configured.
    pub top_up: Option<TopUp>,
    topping_up: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Debug for Billing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.contract() {
            Some(c) => write!(f, "Billing({c})"),
            None => f.write_str("Billing(no contract yet)"),
        }
    }
}

#[derive(Debug, Clone)]
struct Snapshot {
    state: ClientState,
    prices: Prices,
}

impl Billing {
    /// Billing from `contract` (`None`: deployed on first use, see `deploy`).
    pub fn new(ton: TonHttp, contract: Option<StdAddr>, root: StdAddr) -> Self {
        Self {
            ton,
            contract: std::sync::RwLock::new(contract),
            deploy: None,
            deploying: tokio::sync::Mutex::new(()),
            root,
            default_max_tokens: 1024,
            cache: tokio::sync::Mutex::new(None),
            spent: Mutex::new(0),
            charged_at_start: Mutex::new(None),
            last_prices: Mutex::new(None),
            top_up: None,
            topping_up: Default::default(),
        }
    }

    /// This node's client contract (none before its first deployment).
    pub fn contract(&self) -> Option<StdAddr> {
        self.contract
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn contract_or_unavailable(&self) -> Result<StdAddr, ApiError> {
        self.contract().ok_or_else(|| {
            ApiError::unavailable(
                "This node's client contract is not deployed yet (it is deployed on the first connection to a proxy).",
            )
        })
    }

    /// The contract to pay `terms`' proxy from: the configured or remembered
    /// one, else a new one deployed from the owner's wallet with the first
    /// deposit (its address saved before it is used).
    pub async fn ensure_contract(&self, terms: &AccountTerms) -> Result<StdAddr, String> {
        if let Some(contract) = self.contract() {
            return Ok(contract);
        }
        let deploy = self
            .deploy
            .as_ref()
            .ok_or("no client contract is configured ([billing] contract)")?;
        let _one = self.deploying.lock().await;
        if let Some(contract) = self.contract() {
            return Ok(contract);
        }
        let mut known = read_contracts(&deploy.file)?;
        let proxy = cocoon_chain::ton_http::parse_address(&terms.proxy_contract)?;
        let remembered = known.get(&terms.proxy_contract).cloned();
        let (nonce, close_delay) = match &remembered {
            Some(r) => (r.nonce, r.close_delay),
            None => {
                let prices = Prices::from_stack(
                    &self
                        .ton
                        .get(&self.root, "get_prices", &[])
                        .await
                        .map_err(|e| format!("reading the root contract's prices: {e:#}"))?,
                )
                .map_err(|e| e.to_string())?;
                (
                    cocoon_chain::random_nonce().map_err(|e| e.to_string())?,
                    prices.client_close_delay,
                )
            }
        };
        let data = cocoon_chain::ClientTerms {
            proxy,
            owner: deploy.wallet.address().clone(),
            proxy_key: cocoon_chain::HashBytes(terms.proxy_key),
            close_delay,
            nonce,
        }
        .initial_data()
        .map_err(|e| e.to_string())?;
        let code = cocoon_chain::Contract::Client.code();
        let contract = cocoon_chain::contract_address(&code, &data).map_err(|e| e.to_string())?;
        let deployed = self
            .ton
            .account(&contract)
            .await
            .map_err(|e| e.to_string())?
            .is_active();
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
            deploy
                .wallet
                .send(&[cocoon_chain::Outgoing {
                    to: contract.clone(),
                    value: deploy.deposit + cocoon_chain::client::GAS_RESERVE,
                    bounce: false,
                    body: cocoon_chain::client::top_up().map_err(|e| e.to_string())?,
                    init: Some((code, data)),
                }])
                .await
                .map_err(|e| format!("deploying the client contract: {e:#}"))?;
            tracing::info!(%contract, deposit = %deploy.deposit, "client contract deployed");
        }
        *self.contract.write().unwrap_or_else(|e| e.into_inner()) = Some(contract.clone());
        Ok(contract)
    }

    async fn snapshot(&self) -> Result<Snapshot, ApiError> {
        {
            let cache = self.cache.lock().await;
            if let Some((at, snapshot)) = cache.as_ref() {
                if at.elapsed() < FRESH {
                    return Ok(snapshot.clone());
                }
            }
        }
        // Read without holding the cache: requests never queue behind a slow
        // chain API, at the cost of the occasional duplicate read.
        let unavailable = |e: anyhow::Error| {
            ApiError::unavailable(format!("cannot read this node's TON contract: {e}"))
        };
        // (Stack values are not Send: parse each result before the next await.)
        let state = ClientState::from_stack(
            &self
                .ton
                .get(&self.contract_or_unavailable()?, "get_client_data", &[])
                .await
                .map_err(unavailable)?,
        )
        .map_err(unavailable)?;
        let prices = Prices::from_stack(
            &self
                .ton
                .get(&self.root, "get_prices", &[])
                .await
                .map_err(unavailable)?,
        )
        .map_err(unavailable)?;
        self.charged_at_start
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert(state.charged);
        if let Ok(mut last) = self.last_prices.lock() {
            *last = Some(prices.clone());
        }
        self.maybe_top_up(&state);
        let snapshot = Snapshot { state, prices };
        *self.cache.lock().await = Some((Instant::now(), snapshot.clone()));
        Ok(snapshot)
    }

    /// Below the mark: deposit from the owner's wallet in the background
    /// (one top-up at a time; confirmed on chain before the next).
    fn maybe_top_up(&self, state: &ClientState) {
        use std::sync::atomic::Ordering;
        let Some(top_up) = &self.top_up else { return };
        if state.balance >= top_up.below || state.close_requested_at != 0 {
            return;
        }
        if self.topping_up.swap(true, Ordering::AcqRel) {
            return;
        }
        let Some(contract) = self.contract() else {
            return;
        };
        let (wallet, amount) = (top_up.wallet.clone(), top_up.amount);
        let busy = self.topping_up.clone();
        tokio::spawn(async move {
            let body = match cocoon_chain::client::top_up() {
                Ok(body) => body,
                Err(e) => {
                    tracing::error!(error = %e, "cannot build a top-up");
                    busy.store(false, Ordering::Release);
                    return;
                }
            };
            let sent = wallet
                .send(&[cocoon_chain::Outgoing {
                    to: contract.clone(),
                    value: amount + cocoon_chain::client::GAS_RESERVE,
                    bounce: true,
                    body,
                    init: None,
                }])
                .await;
            match sent {
                Ok(_) => tracing::info!(%contract, %amount, "client contract topped up"),
                Err(e) => {
                    tracing::warn!(%contract, error = %e, "top-up failed; retrying on a later request")
                }
            }
            busy.store(false, Ordering::Release);
        });
    }

    /// (priced verified receipts since start, charged on chain since start)
    fn spent_and_charged(&self, state: &ClientState) -> (u128, u128) {
        let spent = *self.spent.lock().unwrap_or_else(|e| e.into_inner());
        let start = self
            .charged_at_start
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .unwrap_or(state.charged);
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

    /// The network's prices (from the root contract, cached briefly).
    pub async fn prices(&self) -> Result<Prices, ApiError> {
        Ok(self.snapshot().await?.prices)
    }

    /// Refuse (402) a request that could cost more than the contract holds,
    /// at price `coefficient` (the request's limit; the base price without one).
    pub async fn check(
        &self,
        prompt_bytes: usize,
        max_tokens: Option<u32>,
        coefficient: Option<u32>,
    ) -> Result<(), ApiError> {
        let Snapshot { state, prices } = self.snapshot().await?;
        let worst = prices.charge_at(
            TokenCounts {
                // At most one token per byte of prompt (plus the chat template's).
                prompt: prompt_bytes as u64 + 64,
                cached_prompt: 0,
                completion: max_tokens.unwrap_or(self.default_max_tokens) as u64,
                reasoning: 0,
            },
            coefficient.unwrap_or(cocoon_protocol::BASE_PRICE_COEFFICIENT),
        );
        let unsettled = self.unsettled(&state);
        let available = state.balance.saturating_sub(unsettled);
        if worst.total > available {
            return Err(ApiError::payment_required(format!(
                "This node's client contract {} holds {} nano-TON ({} after requests not yet settled); this request may cost up to {} nano-TON. Top up at least {} nano-TON, or lower max_tokens.",
                self.contract_or_unavailable()?,
                state.balance,
                available,
                worst.total,
                worst.total - available
            )));
        }
        Ok(())
    }

    /// Count a served request (its receipt verified) at the prices last read
    /// and the worker's price `coefficient`.
    pub fn record(&self, usage: &Usage, coefficient: u32) {
        let Some(prices) = self.last_prices.lock().ok().and_then(|p| p.clone()) else {
            return;
        };
        let charge = prices.charge_at(
            TokenCounts {
                prompt: usage.prompt_tokens,
                cached_prompt: usage.cached_prompt_tokens,
                completion: usage.completion_tokens,
                reasoning: usage.reasoning_tokens,
            },
            coefficient,
        );
        let mut spent = self.spent.lock().unwrap_or_else(|e| e.into_inner());
        *spent = spent.saturating_add(charge.total);
    }

    /// `GET /v1/cocoon/balance`.
    pub async fn balance(&self) -> Result<Value, ApiError> {
        let Snapshot { state, prices } = self.snapshot().await?;
        let unsettled = self.unsettled(&state);
        let overcharged = self.overcharged(&state);
        if overcharged > 0 {
            tracing::warn!(contract = ?self.contract(), %overcharged, "the proxy charged more than the workers' receipts add up to since this node started");
        }
        Ok(json!({
            "object": "cocoon.balance",
            "contract": self.contract_or_unavailable()?.to_string(),
            "balance_nano": state.balance.to_string(),
            "stake_nano": state.stake.to_string(),
            "charged_nano": state.charged.to_string(),
            "unsettled_nano": unsettled.to_string(),
            "available_nano": state.balance.saturating_sub(unsettled).to_string(),
            "closing": state.close_requested_at != 0,
            // Charged beyond the verified receipts since this node started.
            "overcharged_nano": overcharged.to_string(),
            "price_per_token_nano": prices.price_per_token.to_string(),
        }))
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
fn read_contracts(
    path: &std::path::Path,
) -> Result<std::collections::BTreeMap<String, Remembered>, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Default::default()),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

fn write_contracts(
    path: &std::path::Path,
    known: &std::collections::BTreeMap<String, Remembered>,
) -> Result<(), String> {
    let text = serde_json::to_string_pretty(known).map_err(|e| e.to_string())?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| format!("{}: {e}", path.display()))
}
