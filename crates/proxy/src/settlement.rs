//! The proxy's side of the money: which client contract pays for each client
//! node (checked on chain when the node registers it), charging those
//! contracts what the books say, committing the books' hash to the proxy
//! contract, and signing the cumulative vouchers workers claim with. The
//! network's prices come from the root contract and are reloaded when its
//! version changes.
//!
//! A settlement round puts every client charge that moved and the books'
//! hash into as few wallet transfers as it can (four messages each): the
//! number of chain transactions depends on the number of clients with new
//! spending, not on the number of requests.

use cocoon_protocol::sync::LockRecover;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cocoon_chain::pricing::TokenCounts;
use cocoon_chain::{client as client_msg, proxy as proxy_msg};
use cocoon_chain::{
    signed, stack_int, Chain, ClientChannel, HashBytes, Outgoing, Prices, ProxySigner, ProxyState,
    StdAddr, WalletSender,
};
use cocoon_protocol::tls::Fingerprint;
use cocoon_protocol::{AccountTerms, ErrorKind, SealHeader, Voucher, WireError};

use crate::Books;

mod close;
pub use close::Closing;

const TON: u128 = 1_000_000_000;
/// Attached to each charge for the client and proxy contracts' gas; what is
/// left travels on to the proxy contract.
const CHARGE_VALUE: u128 = TON / 20;

/// What the proxy settles with.
pub struct Settlement {
    chain: Arc<dyn Chain>,
    sender: WalletSender,
    signer: ProxySigner,
    proxy_contract: StdAddr,
    root: StdAddr,
    books: Arc<Books>,
    accounts: Mutex<HashMap<Fingerprint, ClientAccount>>,
    /// Per client, the worst cost of its answers still running: credit they
    /// may still use, not offered to its other requests.
    reserved: Arc<Mutex<HashMap<Fingerprint, u128>>>,
    root_version: Mutex<Option<u128>>,
    done: Mutex<Totals>,
    /// The latest rounds that sent anything, newest last.
    history: Mutex<std::collections::VecDeque<SettledRound>>,
    /// Client contracts closed (gone from the chain): out of the rounds.
    gone: Mutex<std::collections::HashSet<StdAddr>>,
    /// Why this proxy no longer serves: a worker showed a voucher of its own
    /// signature beyond what its books owe (they were restored from an old
    /// copy). Clients are refused until an operator restores the newest
    /// books (docs/economics.md, "Recovering from lost books").
    behind: Mutex<Option<String>>,
    /// A charge smaller than this waits for a later round (a charge costs
    /// fees), unless the contract is closing or the charge would free at
    /// least half of its stake (the credit it is served on). Nano-TON;
    /// [`MIN_CHARGE`] by default.
    pub min_charge: u128,
    /// Pay the proxy's earnings (what the proxy contract holds beyond its
    /// stake, what workers are owed but have not claimed, and a reserve
    /// for gas) to the proxy's wallet once they reach this much; `None`:
    /// never. Nano-TON; [`PAY_OUT_ABOVE`] by default.
    pub pay_out_above: Option<u128>,
    /// A contract that looks short is read again at most this often
    /// ([`REREAD`] by default; a simulation sets it beyond reach to keep
    /// runs independent of the machine's speed).
    pub reread: std::time::Duration,
    /// Books that moved in a round that sent no charge (they all wait below
    /// [`Settlement::min_charge`]) are committed only once the last commit
    /// is this old: a commit costs fees too ([`COMMIT_IDLE`] by default;
    /// zero commits every move). A round that charges always commits.
    pub commit_idle: std::time::Duration,
    /// When this process last sent a books commit.
    last_commit: Mutex<Option<std::time::Instant>>,
    /// The proxy contract's close, once a round saw it requested.
    closing: Mutex<Option<Closing>>,
    /// Unix seconds, to tell when the close delay has passed (the system
    /// clock by default; a test sets the chain's).
    pub clock: Arc<dyn Fn() -> u64 + Send + Sync>,
}

/// Default [`Settlement::commit_idle`].
pub const COMMIT_IDLE: std::time::Duration = std::time::Duration::from_secs(3600);

/// Default [`Settlement::min_charge`]: several times a charge's fees
/// (about 0.0023 TON on mainnet, docs/contracts.md).
pub const MIN_CHARGE: u128 = TON / 100;

/// Default [`Settlement::pay_out_above`].
pub const PAY_OUT_ABOVE: u128 = TON;

/// Kept in the proxy contract beyond its stake and workers' unclaimed
/// earnings when the proxy's earnings are paid out: gas and storage.
const PROXY_RESERVE: u128 = TON / 10;

/// Rounds kept in [`Settlement::history`].
const HISTORY: usize = 50;

/// One round that sent anything, for the proxy's page.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SettledRound {
    /// Unix seconds.
    pub at: u64,
    pub charges: u64,
    /// Charged to client contracts in this round, nano-TON.
    pub charged_nano: String,
    pub books_committed: bool,
    pub transfers: u64,
}

/// A registered client contract as the proxy knows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ClientView {
    pub contract: String,
    pub balance_nano: String,
    pub charged_nano: String,
    /// What the books say it owes in all (charged or not), nano-TON.
    pub owed_nano: String,
    pub closed: bool,
}

impl std::fmt::Debug for Settlement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Settlement({})", self.proxy_contract)
    }
}

/// A client node's registered contract, as last read from the chain.
#[derive(Debug, Clone)]
struct ClientAccount {
    contract: StdAddr,
    balance: u128,
    /// The part of `balance` the owner cannot withdraw while the channel is
    /// open (and that stays chargeable through the close delay): the
    /// credit this proxy extends between settlements.
    stake: u128,
    charged: u128,
    closed: bool,
    /// When `balance` was last read from the chain.
    read_at: std::time::Instant,
}

/// Credit held for one running answer (see [`Settlement::reserve`]).
pub struct Reservation {
    reserved: Arc<Mutex<HashMap<Fingerprint, u128>>>,
    client: Fingerprint,
    amount: u128,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut reserved = self.reserved.locked();
        if let Some(held) = reserved.get_mut(&self.client) {
            *held = held.saturating_sub(self.amount);
            if *held == 0 {
                reserved.remove(&self.client);
            }
        }
    }
}

/// Completion tokens held for a request that sets no `max_tokens` (the
/// client node's own default reserve).
const DEFAULT_RESERVE_TOKENS: u64 = 1024;

/// What a request can cost at `coefficient`: the most prompt tokens a
/// receipt may claim for its `request_bytes` (what the proxy would believe,
/// [`cocoon_protocol::receipt::prompt_token_bound`]) and its whole
/// completion budget (`max_tokens` × `n`). Without the prompt, answers held
/// just below the stake could together cost more than it (the simulation
/// found a client that withdrew the rest leaving a prompt unpaid).
fn worst_cost(books: &Books, header: &SealHeader, request_bytes: u64, coefficient: u32) -> u128 {
    books
        .prices()
        .charge_at(
            TokenCounts {
                prompt: cocoon_protocol::receipt::prompt_token_bound(request_bytes),
                cached_prompt: 0,
                completion: header.max_tokens.map_or(DEFAULT_RESERVE_TOKENS, u64::from),
                reasoning: 0,
            },
            coefficient,
        )
        .total
}

/// How often a client contract that looks short of funds is read again
/// (its owner may have topped it up since).
pub const REREAD: std::time::Duration = std::time::Duration::from_secs(1);

/// What settlement has put on chain since the proxy started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Settlement rounds that sent anything.
    pub rounds: u64,
    /// Wallet transfers sent (each one external message and its transactions).
    pub transfers: u64,
    pub charges: u64,
    pub books_commits: u64,
}

/// What one round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Round {
    pub charges: u64,
    pub committed: bool,
    pub transfers: u64,
    /// The proxy's earnings paid to its wallet this round, nano-TON.
    pub paid_out: u128,
    /// The proxy contract is closed (this round or before; see [`Closing`]).
    pub closed: bool,
}

/// A wire error for a client whose contract cannot pay.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn payment(message: String) -> WireError {
    WireError::new(ErrorKind::PaymentRequired, message)
}

fn parse_address(field: &'static str, text: &str) -> Result<StdAddr, SettlementError> {
    cocoon_chain::ton_http::parse_address(text)
        .map_err(|source| SettlementError::Address { field, source })
}

/// What can go wrong settling on TON, by kind.
#[derive(Debug, thiserror::Error)]
pub enum SettlementError {
    /// A contract this proxy relies on is not what it must be, or cannot
    /// be read (named by the config key that points at it).
    #[error("{field} {address}: {message}")]
    Contract {
        field: &'static str,
        address: String,
        message: String,
    },
    /// An address that does not parse.
    #[error("{field}: {source}")]
    Address {
        field: &'static str,
        #[source]
        source: cocoon_chain::InputError,
    },
    /// The books database cannot be opened.
    #[error("the books: {0}")]
    Books(#[from] crate::books::BooksError),
    /// Building, signing or sending a message failed.
    #[error(transparent)]
    Chain(#[from] cocoon_chain::ChainError),
    /// A settlement transfer did not go through.
    #[error("settlement transfer: {0}")]
    Transfer(cocoon_chain::ChainError),
    /// The chain holds a books commit these books never made or saw: they
    /// are older than what the proxy already committed (restored from an
    /// old backup, or another database). Serving from them would
    /// undercharge clients and underpay workers.
    #[error("the books are behind the chain: the proxy contract holds books commit #{chain_seqno} (hash {chain_hash}), these books know {known}. Refusing to serve. Restore the newest copy of the books database (the one whose last commit is #{chain_seqno}); if none exists, see docs/economics.md, \"Recovering from lost books\"")]
    BooksBehind {
        chain_seqno: u64,
        chain_hash: String,
        known: String,
    },
    /// The books could not record a commit.
    #[error("the books database: {0}")]
    BooksWrite(#[source] Box<redb::Error>),
}

/// The books may serve only if the chain's last books commit is one they
/// know: none yet, the last they saw confirmed, or the one they were about
/// to send when the proxy stopped.
fn check_books_against_chain(books: &Books, chain: &ProxyState) -> Result<(), SettlementError> {
    if chain.books_seqno == 0 {
        return Ok(());
    }
    let on_chain = crate::books::Commit {
        seqno: chain.books_seqno,
        hash: chain.books_hash,
    };
    let known = books.commits();
    if known.committed == Some(on_chain) || known.pending == Some(on_chain) {
        return Ok(());
    }
    Err(SettlementError::BooksBehind {
        chain_seqno: chain.books_seqno,
        chain_hash: cocoon_protocol::to_hex(&chain.books_hash),
        known: match (known.committed, known.pending) {
            (None, None) => "no commit at all".into(),
            (committed, pending) => format!(
                "commit #{} (and #{} pending)",
                committed.map_or(0, |c| c.seqno),
                pending.map_or(0, |c| c.seqno)
            ),
        },
    })
}

fn contract_error(
    field: &'static str,
    address: &StdAddr,
) -> impl FnOnce(cocoon_chain::ChainError) -> SettlementError {
    let address = address.to_string();
    move |e| SettlementError::Contract {
        field,
        address,
        message: e.to_string(),
    }
}

impl Settlement {
    /// Check on chain that `proxy_contract` is this proxy's (its key is
    /// `signer`'s) and read the prices from `root`.
    pub async fn connect(
        chain: Arc<dyn Chain>,
        wallet: cocoon_chain::Wallet,
        signer: ProxySigner,
        proxy_contract: StdAddr,
        root: StdAddr,
        books: impl FnOnce(Prices) -> Result<Books, crate::books::BooksError>,
    ) -> Result<Self, SettlementError> {
        let field = "settlement.proxy_contract";
        let state = ProxyState::from_stack(
            &chain
                .get(&proxy_contract, "get_proxy_data", &[])
                .await
                .map_err(contract_error(field, &proxy_contract))?,
        )
        .map_err(contract_error(field, &proxy_contract))?;
        if state.proxy_key != signer.public_key() {
            return Err(SettlementError::Contract {
                field,
                address: proxy_contract.to_string(),
                message: "its proxy key is not this proxy's identity key (deploy a proxy contract with this node's key)".into(),
            });
        }
        let prices = read_prices(chain.as_ref(), &root)
            .await
            .map_err(contract_error("settlement.root", &root))?;
        let books = books(prices).map_err(SettlementError::Books)?;
        check_books_against_chain(&books, &state)?;
        Ok(Self {
            sender: WalletSender::new(chain.clone(), wallet),
            chain,
            signer,
            proxy_contract,
            root,
            books: Arc::new(books),
            accounts: Mutex::default(),
            reserved: Arc::default(),
            root_version: Mutex::default(),
            done: Mutex::default(),
            history: Mutex::default(),
            gone: Mutex::default(),
            behind: Mutex::default(),
            min_charge: MIN_CHARGE,
            pay_out_above: Some(PAY_OUT_ABOVE),
            reread: REREAD,
            commit_idle: COMMIT_IDLE,
            last_commit: Mutex::default(),
            closing: Mutex::default(),
            clock: Arc::new(unix_now),
        })
    }

    pub fn books(&self) -> &Arc<Books> {
        &self.books
    }

    /// The network's root contract it reads prices from.
    pub fn root(&self) -> &StdAddr {
        &self.root
    }

    pub fn proxy_contract(&self) -> &StdAddr {
        &self.proxy_contract
    }

    pub fn totals(&self) -> Totals {
        *self.done.locked()
    }

    /// The latest rounds that sent anything, newest last.
    pub fn history(&self) -> Vec<SettledRound> {
        self.history.locked().iter().cloned().collect()
    }

    /// Every registered client contract, as last read, with what it owes.
    pub fn clients(&self) -> Vec<ClientView> {
        let accounts = self.accounts.locked();
        let mut seen = std::collections::BTreeMap::new();
        for a in accounts.values() {
            seen.entry(a.contract.to_string())
                .or_insert_with(|| ClientView {
                    contract: a.contract.to_string(),
                    balance_nano: a.balance.to_string(),
                    charged_nano: a.charged.to_string(),
                    owed_nano: self.books.client(&a.contract).total.to_string(),
                    closed: a.closed,
                });
        }
        seen.into_values().collect()
    }

    /// The proxy's terms (its contract and key), for a client node about to
    /// deploy a contract or a worker checking its vouchers.
    pub fn proxy_terms(&self) -> AccountTerms {
        self.terms(None)
    }

    fn terms(&self, contract: Option<&StdAddr>) -> AccountTerms {
        let (owed, charged) = contract
            .map(|c| {
                let owed = self.books.client(c).total;
                let charged = self
                    .accounts
                    .locked()
                    .values()
                    .find(|a| &a.contract == c)
                    .map(|a| a.charged)
                    .unwrap_or(0);
                (owed, charged)
            })
            .unwrap_or((0, 0));
        AccountTerms {
            proxy_contract: self.proxy_contract.to_string(),
            proxy_key: self.signer.public_key().0,
            root: self.root.to_string(),
            contract: contract.map(|c| c.to_string()),
            owed_nano: owed,
            charged_nano: charged,
        }
    }

    /// Register `contract` as what `client` pays from, after checking on chain
    /// that it is a client contract with this proxy, open, with a balance.
    pub async fn open_account(
        &self,
        client: Fingerprint,
        contract: Option<String>,
    ) -> Result<AccountTerms, WireError> {
        let Some(text) = contract else {
            return Ok(self.terms(None));
        };
        let contract = parse_address("contract", &text)
            .map_err(|e| WireError::new(ErrorKind::InvalidRequest, e.to_string()))?;
        let channel = self.read_channel(&contract).await?;
        let refuse = |why: &str| payment(format!("client contract {contract}: {why}"));
        // Only the network's own client contract code keeps the rules the
        // books rely on, and only with nothing deposited at deployment: the
        // address is the hash of both, so a contract with other code (whose
        // getter could report any balance) or forged initial state lives
        // elsewhere than these terms say.
        let genuine = channel
            .terms()
            .address()
            .map_err(|e| WireError::new(ErrorKind::Internal, e.to_string()))?;
        if genuine != contract {
            return Err(refuse(
                "it is not a genuine client contract (its code or initial state is not the network's)",
            ));
        }
        // A contract spends only for the node it names, so an admitted client
        // cannot register (and spend, or close) another client's contract.
        if channel.client_key.0 != client.0 {
            return Err(refuse(
                "it names another client node's key (its client_key is not this connection's key fingerprint)",
            ));
        }
        if channel.proxy != self.proxy_contract {
            return Err(refuse("it pays another proxy contract"));
        }
        if channel.proxy_key != self.signer.public_key() {
            return Err(refuse("its proxy key is not this proxy's"));
        }
        if channel.state.close_requested_at != 0 {
            return Err(refuse("it is closing"));
        }
        // The stake backs what is served between settlements, and the close
        // delay keeps it chargeable after the owner asks to close: a
        // shorter delay would let the owner take the stake back first.
        let prices = self.books.prices();
        if channel.state.stake < prices.min_client_stake {
            return Err(refuse(&format!(
                "it stakes {} nano-TON, less than the network's minimum client stake of {} (send IncreaseStake from the owner's wallet)",
                channel.state.stake, prices.min_client_stake
            )));
        }
        if channel.close_delay < prices.client_close_delay {
            return Err(refuse(&format!(
                "its close delay is {} s, shorter than the network's {} s",
                channel.close_delay, prices.client_close_delay
            )));
        }
        self.accounts.locked().insert(
            client,
            ClientAccount {
                contract: contract.clone(),
                balance: channel.state.balance,
                stake: channel.state.stake,
                charged: channel.state.charged,
                closed: false,
                read_at: std::time::Instant::now(),
            },
        );
        tracing::info!(%client, %contract, balance = %channel.state.balance, "client contract registered");
        Ok(self.terms(Some(&contract)))
    }

    async fn read_channel(&self, contract: &StdAddr) -> Result<ClientChannel, WireError> {
        let unreadable = |e: cocoon_chain::Error| {
            payment(format!(
                "client contract {contract} cannot be read on chain: {e:#}"
            ))
        };
        let stack = self
            .chain
            .get(contract, "get_client_data", &[])
            .await
            .map_err(unreadable)?;
        ClientChannel::from_stack(&stack).map_err(unreadable)
    }

    /// [`Settlement::payer`], reading the contract again (at most every
    /// [`REREAD`]) when it looks short: a top-up since the last read counts
    /// at once, not at the next settlement.
    pub async fn paying(&self, client: &Fingerprint) -> Result<StdAddr, WireError> {
        let refusal = match self.payer(client) {
            Ok(contract) => return Ok(contract),
            Err(e) => e,
        };
        if !self.reread_if_stale(client).await {
            return Err(refusal);
        }
        self.payer(client)
    }

    /// Read `client`'s contract again if it was last read [`REREAD`] ago
    /// or more; whether it was.
    async fn reread_if_stale(&self, client: &Fingerprint) -> bool {
        let stale = {
            let accounts = self.accounts.locked();
            accounts
                .get(client)
                .filter(|a| !a.closed && a.read_at.elapsed() >= self.reread)
                .map(|a| a.contract.clone())
        };
        let Some(contract) = stale else {
            return false;
        };
        match self.read_channel(&contract).await {
            Ok(channel) => {
                self.remember(&contract, &channel);
                true
            }
            // Unreadable now: what was known stands.
            Err(_) => false,
        }
    }

    /// The contract `client` pays from, if it can pay for more: what it owes
    /// beyond what was charged must stay below its stake.
    pub fn payer(&self, client: &Fingerprint) -> Result<StdAddr, WireError> {
        let accounts = self.accounts.locked();
        Ok(self.covering(&accounts, client, 0)?.contract.clone())
    }

    /// A worker's kept voucher (`vouched`, for its worker contract
    /// `contract`): if it bears this proxy's signature and owes more than
    /// the books do, the books are behind what this proxy signed, so it
    /// stops serving and says why. A voucher this proxy did not sign (a
    /// worker lying to stop it) is ignored. Whether the books are behind.
    pub fn check_vouched(&self, contract: &StdAddr, vouched: &Voucher) -> bool {
        let ours = vouched.contract == contract.to_string()
            && cocoon_chain::verify_amount(
                &self.signer.public_key().0,
                signed::OWED,
                contract,
                vouched.amount_nano,
                &vouched.signature,
            );
        if !ours {
            tracing::warn!(%contract, "a worker showed a voucher this proxy did not sign; ignored");
            return false;
        }
        let books = self.books.worker(contract).total;
        if vouched.amount_nano <= books {
            return false;
        }
        let why = format!(
            "the books are behind what this proxy signed: worker contract {contract} holds a voucher for {} nano-TON, the books owe it {books}; the books were restored from an old copy (restore the newest, see docs/economics.md \"Recovering from lost books\")",
            vouched.amount_nano
        );
        tracing::error!("{why}; no longer serving");
        *self.behind.locked() = Some(why);
        true
    }

    /// Why this proxy no longer serves, if it does not.
    pub fn behind(&self) -> Option<String> {
        self.behind.locked().clone()
    }

    /// `client`'s open account, if its stake covers `wanted` beyond its
    /// unsettled spending and the reservations of its running answers. The
    /// stake, not the balance: the owner can withdraw everything above the
    /// stake at any moment, so only the stake is sure to be there when the
    /// next settlement charges (COCOON caps credit the same way).
    fn covering<'a>(
        &self,
        accounts: &'a HashMap<Fingerprint, ClientAccount>,
        client: &Fingerprint,
        wanted: u128,
    ) -> Result<&'a ClientAccount, WireError> {
        if let Some(why) = self.behind() {
            return Err(WireError::new(ErrorKind::Internal, why));
        }
        self.refuse_if_closing()?;
        let account = accounts.get(client).ok_or_else(|| {
            payment("this client node has registered no client contract with the proxy".into())
        })?;
        if account.closed {
            return Err(payment(format!(
                "client contract {} is closed",
                account.contract
            )));
        }
        let owed = self.books.client(&account.contract).total;
        let unsettled = owed.saturating_sub(account.charged);
        let reserved = self.reserved.locked().get(client).copied().unwrap_or(0);
        let used = unsettled.saturating_add(reserved);
        let credit = account.stake.min(account.balance);
        if used.saturating_add(wanted) >= credit {
            return Err(payment(format!(
                "client contract {} stakes {} nano-TON (the credit between settlements; it holds {}); {} nano-TON of served requests are not yet charged and {} nano-TON are reserved by requests running; this one may cost up to {}: top it up and increase its stake",
                account.contract, credit, account.balance, unsettled, reserved, wanted
            )));
        }
        Ok(account)
    }

    /// Hold the worst cost of the request with `header` at `coefficient`
    /// (see [`worst_cost`]) of `client`'s credit while its answer runs, if
    /// the contract covers it beside what is unsettled and already held;
    /// released when the reservation drops. Without it, many answers
    /// started at once could each pass the balance check and together
    /// spend far beyond the contract.
    pub async fn reserve(
        &self,
        client: &Fingerprint,
        header: &SealHeader,
        request_bytes: u64,
        coefficient: u32,
    ) -> Result<Reservation, WireError> {
        let worst = worst_cost(&self.books, header, request_bytes, coefficient);
        match self.hold(client, worst) {
            Err(_) if self.reread_if_stale(client).await => self.hold(client, worst),
            held => held,
        }
    }

    fn hold(&self, client: &Fingerprint, worst: u128) -> Result<Reservation, WireError> {
        let accounts = self.accounts.locked();
        self.covering(&accounts, client, worst)?;
        *self.reserved.locked().entry(*client).or_default() += worst;
        Ok(Reservation {
            reserved: self.reserved.clone(),
            client: *client,
            amount: worst,
        })
    }

    /// The worker contract of a worker paid to `owner` (its wallet).
    pub fn worker_contract(&self, owner: &str) -> Result<StdAddr, SettlementError> {
        let owner = parse_address("payout", owner)?;
        Ok(
            cocoon_chain::worker_contract(&self.proxy_contract, &owner, &self.signer.public_key())?
                .0,
        )
    }

    /// The signed cumulative amount the `worker` contract may claim.
    pub fn voucher(&self, worker: &StdAddr) -> Result<Voucher, WireError> {
        let owed = self.books.worker(worker).total;
        self.sign(signed::OWED, worker, owed)
    }

    fn sign(&self, op: u32, at: &StdAddr, amount: u128) -> Result<Voucher, WireError> {
        let signature = self
            .signer
            .sign_amount(op, at, amount)
            .map_err(|e| WireError::new(ErrorKind::Internal, e.to_string()))?;
        Ok(Voucher {
            contract: at.to_string(),
            amount_nano: amount,
            signature: signature.to_vec(),
        })
    }

    /// Close `client`'s account: no more requests on it, and the proxy's
    /// signature over the final charge (what it owes, at most what it holds)
    /// for a cooperative close.
    pub async fn close_account(&self, client: &Fingerprint) -> Result<Voucher, WireError> {
        let contract = {
            let mut accounts = self.accounts.locked();
            let account = accounts.get_mut(client).ok_or_else(|| {
                payment("this client node has registered no client contract".into())
            })?;
            account.closed = true;
            account.contract.clone()
        };
        let channel = self.read_channel(&contract).await?;
        let owed = self.books.client(&contract).total;
        let last = owed.min(channel.state.charged + channel.state.balance);
        tracing::info!(%client, %contract, final_charge = %last, "client contract closing");
        self.sign(signed::CLOSE, &contract, last.max(channel.state.charged))
    }

    /// One round: charge every client contract up to what it owes (as much as
    /// it holds), commit the books' hash if it moved, refresh the prices.
    pub async fn settle_once(&self) -> Result<Round, SettlementError> {
        if self.closing().is_some_and(|c| c.finished) {
            return Ok(Round {
                closed: true,
                ..Round::default()
            });
        }
        self.refresh_prices().await;
        let proxy = self.proxy_state().await?;
        self.see_close(&proxy);
        let closing = self.closing().is_some();
        let mut messages = Vec::new();
        let mut charged_to = Vec::new();
        for (contract, account) in self.books.clients() {
            if self.gone.locked().contains(&contract) {
                continue;
            }
            let channel = match self.read_channel(&contract).await {
                Ok(c) => c,
                Err(e) => {
                    // Closed (destroyed) contracts leave the rounds for good.
                    if matches!(self.chain.account(&contract).await, Ok(a) if !a.is_active()) {
                        tracing::info!(%contract, owed = %account.total, "client contract closed; it leaves the settlement rounds");
                        self.gone.locked().insert(contract);
                    } else {
                        tracing::warn!(%contract, error = %e.message, "cannot read a client contract; skipping it this round");
                    }
                    continue;
                }
            };
            self.remember(&contract, &channel);
            let target = account
                .total
                .min(channel.state.charged.saturating_add(channel.state.balance));
            if account.total > target {
                tracing::warn!(%contract, owed = %account.total, holds = %channel.state.balance, "a client contract cannot pay all it owes");
            }
            let delta = target.saturating_sub(channel.state.charged);
            let worth_it = delta >= self.min_charge
                || closing
                || channel.state.close_requested_at != 0
                || delta.saturating_mul(2) >= channel.state.stake;
            if delta > 0 && worth_it {
                let signature = self.signer.sign_amount(signed::CHARGE, &contract, target)?;
                messages.push(Outgoing {
                    to: contract.clone(),
                    value: CHARGE_VALUE,
                    bounce: true,
                    body: client_msg::charge(target, &signature)?,
                    init: None,
                });
                charged_to.push((contract, target, channel.state.charged));
            }
        }
        let hash = self.books.hash();
        let idle = self
            .last_commit
            .locked()
            .is_none_or(|at| at.elapsed() >= self.commit_idle);
        let commit = !messages.is_empty()
            || (idle && !self.books.clients().is_empty() && proxy.books_hash != hash);
        let commit_record = crate::books::Commit {
            seqno: proxy.books_seqno + 1,
            hash,
        };
        if commit {
            *self.last_commit.locked() = Some(std::time::Instant::now());
            // Written ahead: a proxy stopped right after sending still
            // knows the commit the chain may hold.
            self.books
                .record_commit(commit_record, false)
                .map_err(SettlementError::BooksWrite)?;
            let seqno = proxy.books_seqno + 1;
            let signature =
                self.signer
                    .sign_books(&self.proxy_contract, seqno, &HashBytes(hash))?;
            messages.push(Outgoing {
                to: self.proxy_contract.clone(),
                value: CHARGE_VALUE,
                bounce: true,
                body: proxy_msg::commit_books(seqno, &HashBytes(hash), &signature)?,
                init: None,
            });
        }
        let mut round = Round {
            charges: charged_to.len() as u64,
            committed: commit,
            ..Round::default()
        };
        for batch in messages.chunks(cocoon_chain::sender::MAX_MESSAGES) {
            self.sender
                .send(batch)
                .await
                .map_err(SettlementError::Transfer)?;
            round.transfers += 1;
        }
        // Done is what the chain shows, not what was sent.
        if commit {
            let after = self.proxy_state().await?;
            if after.books_seqno == commit_record.seqno && after.books_hash == hash {
                self.books
                    .record_commit(commit_record, true)
                    .map_err(SettlementError::BooksWrite)?;
            }
        }
        for (contract, target, _) in &charged_to {
            let channel =
                self.read_channel(contract)
                    .await
                    .map_err(|e| SettlementError::Contract {
                        field: "client contract",
                        address: contract.to_string(),
                        message: e.message,
                    })?;
            self.remember(contract, &channel);
            if channel.state.charged < *target {
                return Err(SettlementError::Contract {
                    field: "client contract",
                    address: contract.to_string(),
                    message: format!(
                        "charged {} on chain after charging up to {target}",
                        channel.state.charged
                    ),
                });
            }
        }
        if closing {
            round.closed = self.finish_close_if_due().await?;
            round.transfers += u64::from(round.closed);
        } else {
            round.paid_out = self.pay_out().await?;
            round.transfers += u64::from(round.paid_out > 0);
        }
        if round.transfers > 0 {
            let mut done = self.done.locked();
            done.rounds += 1;
            done.transfers += round.transfers;
            done.charges += round.charges;
            done.books_commits += round.committed as u64;
            let charged: u128 = charged_to
                .iter()
                .map(|(_, target, before)| target - before)
                .sum();
            let mut history = self.history.locked();
            if history.len() == HISTORY {
                history.pop_front();
            }
            history.push_back(SettledRound {
                at: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0),
                charges: round.charges,
                charged_nano: charged.to_string(),
                books_committed: round.committed,
                transfers: round.transfers,
            });
        }
        Ok(round)
    }

    /// Pay the proxy's earnings to its wallet (see
    /// [`Settlement::pay_out_above`]): what the proxy contract holds beyond
    /// its stake (at least the network's minimum proxy stake), what workers
    /// are owed and have not claimed (the books' totals less what the
    /// contract paid), and [`PROXY_RESERVE`]. Returns what was paid.
    async fn pay_out(&self) -> Result<u128, SettlementError> {
        let Some(above) = self.pay_out_above else {
            return Ok(0);
        };
        let state = self.proxy_state().await?;
        let balance = self
            .chain
            .account(&self.proxy_contract)
            .await
            .map_err(|e| contract_error("proxy contract", &self.proxy_contract)(e))?
            .balance;
        let unclaimed = self.unclaimed(&state);
        // Workers claiming before their clients' charges arrive are paid
        // from the stake, which the contract then records lower; what the
        // charges bring later makes the backing whole again before anything
        // counts as earnings (the contract's stake field only grows with
        // AddStake, so the balance carries it).
        let backing = state.stake.max(self.books.prices().min_proxy_stake);
        let keep = backing + unclaimed + PROXY_RESERVE;
        let free = balance.saturating_sub(keep);
        if free == 0 || free < above {
            return Ok(0);
        }
        let seqno = state.pay_seqno + 1;
        let to = self.sender.address().clone();
        let signature = self
            .signer
            .sign_pay(&self.proxy_contract, &to, free, seqno)?;
        self.sender
            .send(&[Outgoing {
                to: self.proxy_contract.clone(),
                value: CHARGE_VALUE,
                bounce: true,
                body: proxy_msg::pay(&to, free, seqno, &signature)?,
                init: None,
            }])
            .await
            .map_err(SettlementError::Transfer)?;
        tracing::info!(paid = %free, %unclaimed, stake = %state.stake, "the proxy's earnings paid to its wallet");
        Ok(free)
    }

    /// What the books owe workers beyond what the proxy contract (`state`)
    /// has paid them: money in the contract that is not the proxy's.
    fn unclaimed(&self, state: &ProxyState) -> u128 {
        let vouched: u128 = self.books.workers().iter().map(|(_, a)| a.total).sum();
        vouched.saturating_sub(state.workers_paid)
    }

    fn remember(&self, contract: &StdAddr, channel: &ClientChannel) {
        let mut accounts = self.accounts.locked();
        for account in accounts.values_mut().filter(|a| &a.contract == contract) {
            account.balance = channel.state.balance;
            account.stake = channel.state.stake;
            account.charged = channel.state.charged;
            // The owner asked to close: nothing more on credit (what is
            // owed is charged from the stake during the close delay).
            if channel.state.close_requested_at != 0 {
                account.closed = true;
            }
            account.read_at = std::time::Instant::now();
        }
    }

    async fn proxy_state(&self) -> Result<ProxyState, SettlementError> {
        let read = contract_error("proxy contract", &self.proxy_contract);
        let stack = self
            .chain
            .get(&self.proxy_contract, "get_proxy_data", &[])
            .await;
        stack
            .and_then(|stack| ProxyState::from_stack(&stack))
            .map_err(read)
    }

    /// Reload the prices when the root contract's version moved.
    async fn refresh_prices(&self) {
        let version = match self.chain.get(&self.root, "get_version", &[]).await {
            Ok(stack) => stack_int(&stack).ok(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the root contract's version");
                None
            }
        };
        let Some(version) = version else { return };
        let known = *self.root_version.locked();
        if known == Some(version) {
            return;
        }
        match read_prices(self.chain.as_ref(), &self.root).await {
            Ok(prices) => {
                if known.is_some() {
                    tracing::info!(version = %version, price_per_token = %prices.price_per_token, "the root configuration changed; new prices");
                }
                self.books.set_prices(prices);
                *self.root_version.locked() = Some(version);
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the root contract's prices"),
        }
    }

    /// Settle every `every` until `stop`.
    pub async fn run(self: Arc<Self>, every: Duration, stop: tokio_util::sync::CancellationToken) {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            match self.settle_once().await {
                Ok(round) if round.transfers > 0 => {
                    tracing::info!(
                        charges = round.charges,
                        committed = round.committed,
                        transfers = round.transfers,
                        "settled on chain"
                    )
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "settlement failed; retrying next round"),
            }
        }
    }
}

async fn read_prices(
    chain: &dyn Chain,
    root: &StdAddr,
) -> Result<Prices, cocoon_chain::ChainError> {
    Prices::from_stack(&chain.get(root, "get_prices", &[]).await?)
}
