//! What this worker has earned and claimed: each proxy signs a voucher over
//! the cumulative amount it owes this worker's contract; the worker checks
//! the voucher (the proxy's key, its own contract), keeps the latest one per
//! proxy in a file, and claims on chain through the GPU owner's wallet when
//! what is owed beyond what was paid reaches a threshold. The first claim
//! deploys the worker contract; the contract pays the owner's wallet.

use cocoon_protocol::sync::LockRecover;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cocoon_chain::{
    signed, verify_amount, worker as worker_msg, worker_contract, Chain, Contract, HashBytes,
    Outgoing, ProxyState, StdAddr, WalletSender, WorkerState,
};
use cocoon_protocol::{AccountTerms, Connection, Event, RequestBody, Voucher};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

const TON: u128 = 1_000_000_000;
/// Attached to a claim for the worker and proxy contracts' gas.
const CLAIM_VALUE: u128 = TON / 10;

/// The latest voucher from one proxy, and what its contract has paid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyEarnings {
    /// The worker contract with that proxy.
    pub contract: String,
    pub proxy_contract: String,
    /// Hex of the proxy's Ed25519 key.
    pub proxy_key: String,
    /// Signed cumulative amount owed, nano-TON (a string: JSON numbers are doubles).
    pub owed_nano: String,
    /// Hex of the signature over `owed_nano`.
    pub signature: String,
    /// Paid by the contract on chain, when last read.
    pub paid_nano: String,
}

impl ProxyEarnings {
    pub fn owed(&self) -> u128 {
        self.owed_nano.parse().unwrap_or(0)
    }
    pub fn paid(&self) -> u128 {
        self.paid_nano.parse().unwrap_or(0)
    }
    /// Owed but not yet paid.
    pub fn pending(&self) -> u128 {
        self.owed().saturating_sub(self.paid())
    }
}

/// The earnings file: proxy key fingerprint -> its latest voucher.
pub type EarningsBook = BTreeMap<String, ProxyEarnings>;

/// Read the earnings file (empty when it does not exist yet).
pub fn read_earnings(path: &std::path::Path) -> Result<EarningsBook, EarningsError> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| EarningsError::file(path, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(EarningsBook::new()),
        Err(e) => Err(EarningsError::file(path, e)),
    }
}

/// Claims for this worker.
pub struct Earnings {
    sender: WalletSender,
    /// Claim when at least this much is pending, nano-TON.
    pub threshold: u128,
    /// The network's root contract: when set, vouchers are kept only from a
    /// proxy contract its registry lists with the key that signed them (a
    /// proxy cannot point its workers at a contract clients do not pay).
    pub root: Option<StdAddr>,
    file: PathBuf,
    book: Mutex<EarningsBook>,
}

impl std::fmt::Debug for Earnings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Earnings({})", self.sender.address())
    }
}

fn unhex32(text: &str) -> Option<[u8; 32]> {
    hex::decode(text).ok()?.try_into().ok()
}

impl Earnings {
    pub fn new(
        chain: Arc<dyn Chain>,
        wallet: cocoon_chain::Wallet,
        threshold: u128,
        file: PathBuf,
    ) -> Result<Self, EarningsError> {
        let book = read_earnings(&file)?;
        Ok(Self {
            sender: WalletSender::new(chain, wallet),
            threshold,
            root: None,
            file,
            book: Mutex::new(book),
        })
    }

    /// The GPU owner's wallet, announced to proxies as the payout address.
    pub fn payout(&self) -> &StdAddr {
        self.sender.address()
    }

    pub fn book(&self) -> EarningsBook {
        self.book.locked().clone()
    }

    /// The highest voucher kept from `proxy` (its key fingerprint), as the
    /// proxy signed it.
    pub fn kept_voucher(&self, proxy: &str) -> Option<Voucher> {
        let book = self.book.locked();
        let kept = book.get(proxy)?;
        Some(Voucher {
            contract: kept.contract.clone(),
            amount_nano: kept.owed(),
            signature: hex::decode(&kept.signature).ok()?,
        })
    }

    fn save(&self, book: &EarningsBook) -> Result<(), EarningsError> {
        let text =
            serde_json::to_string_pretty(book).map_err(|e| EarningsError::file(&self.file, e))?;
        let tmp = self.file.with_extension("tmp");
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, &self.file))
            .map_err(|e| EarningsError::file(&self.file, e))
    }

    /// Ask the proxy on `conn` (key `proxy`) for its voucher, check it, keep it.
    pub async fn fetch(
        &self,
        proxy: &str,
        conn: &Connection,
    ) -> Result<ProxyEarnings, EarningsError> {
        let terms = match ask(conn, RequestBody::OpenAccount { contract: None }).await? {
            Event::Account(terms) => terms,
            other => {
                return Err(EarningsError::Proxy(format!(
                    "answered {other:?} for its terms"
                )))
            }
        };
        let voucher = match ask(conn, RequestBody::Voucher).await? {
            Event::Voucher(v) => v,
            other => {
                return Err(EarningsError::Proxy(format!(
                    "answered {other:?} for a voucher"
                )))
            }
        };
        let earned = self.check(&terms, &voucher)?;
        self.check_registered(&terms).await?;
        let mut book = self.book();
        // Only a higher signed amount replaces the one kept (a proxy that
        // restarted from a lost database cannot lower what it signed).
        let keep = match book.get(proxy) {
            Some(old) if old.contract == earned.contract && old.owed() >= earned.owed() => {
                old.clone()
            }
            _ => earned,
        };
        book.insert(proxy.to_string(), keep.clone());
        self.save(&book)?;
        *self.book.locked() = book;
        Ok(keep)
    }

    /// With [`Earnings::root`] set: `terms`' proxy contract must be in the
    /// root contract's registry with `terms`' key.
    pub async fn check_registered(&self, terms: &AccountTerms) -> Result<(), EarningsError> {
        let Some(root) = &self.root else {
            return Ok(());
        };
        let proxy_contract = cocoon_chain::ton_http::parse_address(&terms.proxy_contract)
            .map_err(|e| EarningsError::Voucher(format!("proxy contract: {e}")))?;
        cocoon_chain::check_proxy_listed(
            self.sender.chain().as_ref(),
            root,
            &proxy_contract,
            &terms.proxy_key,
        )
        .await?
        .map_err(EarningsError::Voucher)
    }

    /// The voucher must be for this worker's contract with that proxy and
    /// signed by the proxy's key.
    fn check(
        &self,
        terms: &AccountTerms,
        voucher: &Voucher,
    ) -> Result<ProxyEarnings, EarningsError> {
        let proxy_contract = cocoon_chain::ton_http::parse_address(&terms.proxy_contract)
            .map_err(|e| EarningsError::Voucher(format!("proxy contract: {e}")))?;
        let (ours, _) =
            worker_contract(&proxy_contract, self.payout(), &HashBytes(terms.proxy_key))?;
        let contract = cocoon_chain::ton_http::parse_address(&voucher.contract)
            .map_err(|e| EarningsError::Voucher(format!("contract: {e}")))?;
        if contract != ours {
            return Err(EarningsError::Voucher(format!(
                "it is for {contract}, not this worker's contract {ours}"
            )));
        }
        if !verify_amount(
            &terms.proxy_key,
            signed::OWED,
            &contract,
            voucher.amount_nano,
            &voucher.signature,
        ) {
            return Err(EarningsError::Voucher(
                "its signature is not the proxy's".into(),
            ));
        }
        Ok(ProxyEarnings {
            contract: contract.to_string(),
            proxy_contract: proxy_contract.to_string(),
            proxy_key: hex::encode(terms.proxy_key),
            owed_nano: voucher.amount_nano.to_string(),
            signature: hex::encode(&voucher.signature),
            paid_nano: self
                .book()
                .values()
                .find(|e| e.contract == contract.to_string())
                .map(|e| e.paid_nano.clone())
                .unwrap_or_else(|| "0".into()),
        })
    }

    /// What the worker contract has paid so far (0 before it is deployed).
    pub async fn paid_on_chain(&self, contract: &StdAddr) -> Result<u128, EarningsError> {
        Ok(self.contract_state(contract).await?.unwrap_or(0))
    }

    /// What the deployed worker contract has paid, `None` before it is deployed.
    async fn contract_state(&self, contract: &StdAddr) -> Result<Option<u128>, EarningsError> {
        let chain = self.sender.chain();
        if !chain.account(contract).await?.is_active() {
            return Ok(None);
        }
        let stack = chain.get(contract, "get_worker_data", &[]).await?;
        Ok(Some(WorkerState::from_stack(&stack)?.paid))
    }

    /// Claim what `proxy`'s voucher allows if at least `threshold` is
    /// pending (`force`: any amount above zero). Returns what was claimed.
    pub async fn claim(&self, proxy: &str, force: bool) -> Result<u128, EarningsError> {
        let Some(earned) = self.book().get(proxy).cloned() else {
            return Ok(0);
        };
        let contract = kept_address(&earned.contract)?;
        let deployed = self.contract_state(&contract).await?;
        let paid = deployed.unwrap_or(0);
        let pending = earned.owed().saturating_sub(paid);
        if pending == 0 || (!force && pending < self.threshold) {
            self.set_paid(proxy, paid)?;
            return Ok(0);
        }
        let signature: [u8; 64] = hex::decode(&earned.signature)
            .ok()
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| EarningsError::Kept("the voucher's signature is malformed".into()))?;
        let init = if deployed.is_none() {
            let proxy_contract = kept_address(&earned.proxy_contract)?;
            let key = unhex32(&earned.proxy_key)
                .ok_or_else(|| EarningsError::Kept("the proxy key is malformed".into()))?;
            let (_, data) = worker_contract(&proxy_contract, self.payout(), &HashBytes(key))?;
            Some((Contract::Worker.code(), data))
        } else {
            None
        };
        let body = worker_msg::claim(earned.owed(), &signature)?;
        self.sender
            .send(&[Outgoing {
                to: contract.clone(),
                value: CLAIM_VALUE,
                bounce: init.is_none(),
                body,
                init,
            }])
            .await
            .map_err(|e| EarningsError::Claim(e.to_string()))?;
        let now_paid = self.paid_on_chain(&contract).await?;
        self.set_paid(proxy, now_paid)?;
        if now_paid < earned.owed() {
            return Err(EarningsError::Claim(format!(
                "claimed {} nano-TON but the contract shows {now_paid} paid",
                earned.owed()
            )));
        }
        tracing::info!(%contract, claimed = %(now_paid - paid), "earnings claimed");
        Ok(now_paid - paid)
    }

    fn set_paid(&self, proxy: &str, paid: u128) -> Result<(), EarningsError> {
        let mut book = self.book();
        if let Some(e) = book.get_mut(proxy) {
            if e.paid() == paid {
                return Ok(());
            }
            e.paid_nano = paid.to_string();
        }
        self.save(&book)?;
        *self.book.locked() = book;
        Ok(())
    }

    /// Whether the proxy contract behind `proxy`'s kept voucher is closing
    /// (its operator asked; after the close delay the operator gets what
    /// the contract holds, so whatever is owed must be claimed before).
    pub async fn proxy_closing(&self, proxy: &str) -> Result<bool, EarningsError> {
        let Some(earned) = self.book().get(proxy).cloned() else {
            return Ok(false);
        };
        let contract = kept_address(&earned.proxy_contract)?;
        let chain = self.sender.chain();
        if !chain.account(&contract).await?.is_active() {
            return Ok(false);
        }
        let state = ProxyState::from_stack(&chain.get(&contract, "get_proxy_data", &[]).await?)?;
        Ok(state.close_requested_at != 0)
    }

    /// One cycle: fetch each connected proxy's voucher, then claim every
    /// kept voucher above the threshold, or any amount from a proxy whose
    /// contract is closing (connected or not).
    pub async fn fetch_and_claim(&self, proxies: &[(String, watch::Receiver<Option<Connection>>)]) {
        for (proxy, conn) in proxies {
            let conn = conn.borrow().clone();
            let Some(conn) = conn.filter(|c| !c.is_closed()) else {
                continue;
            };
            if let Err(e) = self.fetch(proxy, &conn).await {
                tracing::warn!(%proxy, error = %e, "could not get a voucher");
            }
        }
        for proxy in self.book().keys() {
            let closing = match self.proxy_closing(proxy).await {
                Ok(closing) => closing,
                Err(e) => {
                    tracing::warn!(%proxy, error = %e, "cannot read the proxy contract");
                    false
                }
            };
            if closing {
                tracing::warn!(%proxy, "the proxy contract is closing; claiming everything it owes");
            }
            if let Err(e) = self.claim(proxy, closing).await {
                tracing::warn!(%proxy, error = %e, "claim failed; retrying later");
            }
        }
    }

    /// Every `every`: [`Earnings::fetch_and_claim`], until `stop`.
    pub async fn run(
        self: Arc<Self>,
        proxies: Vec<(String, watch::Receiver<Option<Connection>>)>,
        every: Duration,
        stop: CancellationToken,
    ) {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            self.fetch_and_claim(&proxies).await;
        }
    }
}

/// Send `body` and take its one answer (within 30 s).
async fn ask(conn: &Connection, body: RequestBody) -> Result<Event, EarningsError> {
    conn.ask(body, Duration::from_secs(30))
        .await
        .map_err(|e| EarningsError::Proxy(e.to_string()))
}

/// An address kept in the earnings file.
fn kept_address(text: &str) -> Result<StdAddr, EarningsError> {
    cocoon_chain::ton_http::parse_address(text)
        .map_err(|e| EarningsError::Kept(format!("address {text:?}: {e}")))
}

/// What can go wrong with a worker's earnings, by kind.
#[derive(Debug, thiserror::Error)]
pub enum EarningsError {
    /// The earnings file cannot be read, parsed or written.
    #[error("earnings file {path}: {message}")]
    File { path: PathBuf, message: String },
    /// What the earnings file keeps is malformed.
    #[error("earnings file: {0}")]
    Kept(String),
    /// The chain refused, failed or could not be reached.
    #[error(transparent)]
    Chain(#[from] cocoon_chain::ChainError),
    /// The proxy could not be asked, or answered something else.
    #[error("the proxy {0}")]
    Proxy(String),
    /// A voucher the proxy handed over is refused.
    #[error("voucher refused: {0}")]
    Voucher(String),
    /// A claim did not pay what the voucher allows.
    #[error("claim: {0}")]
    Claim(String),
}

impl EarningsError {
    fn file(path: &std::path::Path, e: impl std::fmt::Display) -> Self {
        EarningsError::File {
            path: path.to_path_buf(),
            message: e.to_string(),
        }
    }
}

/// One proxy's line of `cocoon worker earnings`, nano-TON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EarningsLine {
    /// The proxy's key.
    pub proxy: String,
    /// The worker contract that proxy pays through.
    pub contract: StdAddr,
    /// What its latest signed voucher says the worker is owed.
    pub owed: u128,
    /// What the worker contract has paid on chain (the chain is the truth:
    /// the earnings file may be older).
    pub paid: u128,
}

impl EarningsLine {
    pub fn pending(&self) -> u128 {
        self.owed.saturating_sub(self.paid)
    }
}

impl Earnings {
    /// Each proxy's latest voucher beside what the chain shows paid.
    pub async fn report(&self) -> Result<Vec<EarningsLine>, EarningsError> {
        let mut lines = Vec::new();
        for (proxy, earned) in &self.book() {
            let contract = kept_address(&earned.contract)?;
            let paid = self.paid_on_chain(&contract).await?;
            lines.push(EarningsLine {
                proxy: proxy.clone(),
                contract,
                owed: earned.owed(),
                paid,
            });
        }
        Ok(lines)
    }
}
