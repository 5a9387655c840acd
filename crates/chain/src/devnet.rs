//! The embedded TON devnet `cocoon devnet` starts beside the nodes: an
//! [`Emulator`] whose clock follows the wall clock, wallets for the operator,
//! the proxy, the client and the worker funded at genesis, and, each deployed
//! through real signed wallet transfers, the root contract, the proxy's
//! contract (with its stake) and the client's contract (with a deposit); the
//! TON HTTP API subset is served on loopback. [`TonDevnet::charge`] and
//! [`TonDevnet::claim`] move money the way the nodes settle: a charge signed
//! by the proxy's key, relayed by the proxy's wallet; a claim relayed by the
//! worker's wallet.

use std::sync::{Arc, Mutex};

use tycho_types::cell::{Cell, CellBuilder, CellFamily};
use tycho_types::models::StdAddr;

use crate::api::SharedChain;
use crate::messages::{client, proxy, signed, worker};
use crate::wallet::{internal_message, state_init, SEND_PAY_FEES_SEPARATELY};
use crate::{
    worker_data, ClientTerms, Contract, Emulator, Error, Prices, ProxySigner, ProxyTerms, TxReport,
    Wallet,
};

const TON: u128 = 1_000_000_000;

/// What each genesis wallet holds.
pub const GENESIS_BALANCE: u128 = 1_000_000 * TON;

/// The devnet's default prices: 20 nano-TON per token (prompt 1x, cached
/// prompt 0.1x, completion and reasoning 4x), 90% to workers.
pub fn default_prices() -> Prices {
    Prices {
        price_per_token: 20,
        worker_share_bps: 9000,
        prompt_bps: 10_000,
        cached_prompt_bps: 1_000,
        completion_bps: 40_000,
        reasoning_bps: 40_000,
        min_client_stake: TON,
        min_proxy_stake: 100 * TON,
        client_close_delay: 3600,
        proxy_close_delay: 86_400,
    }
}

/// The wallets the devnet funds (keys made at random each start).
pub struct Wallets {
    pub operator: Wallet,
    pub proxy: Wallet,
    pub client: Wallet,
    pub worker: Wallet,
}

/// What the client deposits in its contract at genesis by default.
pub const CLIENT_DEPOSIT: u128 = 100 * TON;

/// A running chain with the network's contracts.
pub struct TonDevnet {
    pub chain: SharedChain,
    pub root: StdAddr,
    /// The proxy's contract and the client's contract with that proxy.
    pub proxy_contract: StdAddr,
    pub client_contract: StdAddr,
    /// The worker's contract with that proxy (deployed by its first claim).
    pub worker_contract: StdAddr,
    pub wallets: Wallets,
    /// The proxy's signing key (in production it never leaves the enclave).
    signer: ProxySigner,
}

fn address_of(code: &Cell, data: &Cell) -> Result<StdAddr, Error> {
    let init = CellBuilder::build_from(state_init(code.clone(), data.clone()))?;
    Ok(StdAddr::new(0, *init.repr_hash()))
}

/// Have `wallet` send `body` with `value` to `dest` (deploying `init`),
/// reading its seqno from the chain; the reports of every transaction.
fn relay(
    chain: &mut Emulator,
    wallet: &Wallet,
    dest: &StdAddr,
    value: u128,
    body: Cell,
    init: Option<(Cell, Cell)>,
) -> Result<Vec<TxReport>, Error> {
    let seqno = if chain.is_active(&wallet.address)? {
        crate::stack_int(&chain.get(&wallet.address, "seqno", vec![])?)? as u32
    } else {
        0
    };
    let message = internal_message(dest, value, true, body, init)?;
    let transfer = wallet.transfer(
        seqno,
        chain.now + 60,
        &[(SEND_PAY_FEES_SEPARATELY, message)],
    )?;
    chain.send_external(transfer)
}

/// The first report must be a success at `dest`.
fn ensure_ok(reports: &[TxReport], what: &str) -> Result<(), Error> {
    // reports[0] is the wallet's own transaction; the contract's follows.
    let contract = reports
        .get(1)
        .ok_or_else(|| anyhow::anyhow!("{what}: the wallet sent nothing"))?;
    anyhow::ensure!(
        contract.success,
        "{what}: refused with exit code {:?}",
        contract.exit_code
    );
    Ok(())
}

pub fn unix_now() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(0)
}

fn random_seed() -> Result<[u8; 32], Error> {
    use ring::rand::SecureRandom;
    let mut seed = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut seed)
        .map_err(|_| anyhow::anyhow!("no randomness"))?;
    Ok(seed)
}

fn random_nonce() -> Result<u64, Error> {
    let seed = random_seed()?;
    Ok(u64::from_be_bytes(seed[..8].try_into().expect("8 bytes")))
}

impl TonDevnet {
    /// Genesis: fund the wallets, deploy the root contract from the
    /// operator's wallet with `prices`, the proxy's contract with its minimum
    /// stake and the client's contract with `client_deposit` nano-TON.
    pub fn start(prices: &Prices, client_deposit: u128) -> Result<Self, Error> {
        let mut chain = Emulator::new(unix_now())?;
        let wallets = Wallets {
            operator: Wallet::from_seed(&random_seed()?)?,
            proxy: Wallet::from_seed(&random_seed()?)?,
            client: Wallet::from_seed(&random_seed()?)?,
            worker: Wallet::from_seed(&random_seed()?)?,
        };
        for wallet in [
            &wallets.operator,
            &wallets.proxy,
            &wallets.client,
            &wallets.worker,
        ] {
            chain.fund(&wallet.address, GENESIS_BALANCE)?;
        }
        let code = Contract::Root.code();
        let data = prices.root_data(&wallets.operator.address)?;
        let root = StdAddr::new(
            0,
            *CellBuilder::build_from(state_init(code.clone(), data.clone()))?.repr_hash(),
        );
        let deploy = internal_message(
            &root,
            10 * TON,
            false,
            Cell::empty_cell(),
            Some((code, data)),
        )?;
        let transfer =
            wallets
                .operator
                .transfer(0, chain.now + 60, &[(SEND_PAY_FEES_SEPARATELY, deploy)])?;
        chain.send_external(transfer)?;
        anyhow::ensure!(chain.is_active(&root)?, "the root contract did not deploy");

        let signer = ProxySigner::from_seed(&random_seed()?)?;
        let proxy_data = ProxyTerms {
            owner: wallets.proxy.address.clone(),
            proxy_key: signer.public_key(),
            root: root.clone(),
            close_delay: prices.proxy_close_delay,
            nonce: random_nonce()?,
        }
        .initial_data()?;
        let proxy_contract = address_of(&Contract::Proxy.code(), &proxy_data)?;
        let reports = relay(
            &mut chain,
            &wallets.proxy,
            &proxy_contract,
            prices.min_proxy_stake,
            proxy::add_stake()?,
            Some((Contract::Proxy.code(), proxy_data)),
        )?;
        ensure_ok(&reports, "deploying the proxy contract")?;

        let client_data = ClientTerms {
            proxy: proxy_contract.clone(),
            owner: wallets.client.address.clone(),
            proxy_key: signer.public_key(),
            close_delay: prices.client_close_delay,
            nonce: random_nonce()?,
        }
        .initial_data()?;
        let client_contract = address_of(&Contract::Client.code(), &client_data)?;
        let reports = relay(
            &mut chain,
            &wallets.client,
            &client_contract,
            client_deposit + TON / 50,
            client::top_up()?,
            Some((Contract::Client.code(), client_data)),
        )?;
        ensure_ok(&reports, "deploying the client contract")?;

        let worker_contract = address_of(
            &Contract::Worker.code(),
            &worker_data(
                &proxy_contract,
                &wallets.worker.address,
                &signer.public_key(),
            )?,
        )?;
        Ok(Self {
            chain: Arc::new(Mutex::new(chain)),
            root,
            proxy_contract,
            client_contract,
            worker_contract,
            wallets,
            signer,
        })
    }

    /// The proxy charges the client's contract up to `cumulative` nano-TON:
    /// signed with the proxy's key, relayed by the proxy's wallet.
    pub fn charge(&self, cumulative: u128) -> Result<(), Error> {
        let signature =
            self.signer
                .sign_amount(signed::CHARGE, &self.client_contract, cumulative)?;
        let mut chain = self.lock()?;
        let reports = relay(
            &mut chain,
            &self.wallets.proxy,
            &self.client_contract,
            TON / 20,
            client::charge(cumulative, &signature)?,
            None,
        )?;
        ensure_ok(&reports, "charging the client contract")
    }

    /// The worker claims `owed` nano-TON in all (the proxy signs it; the
    /// worker's wallet relays it, deploying its contract the first time).
    pub fn claim(&self, owed: u128) -> Result<(), Error> {
        let signature = self
            .signer
            .sign_amount(signed::OWED, &self.worker_contract, owed)?;
        let mut chain = self.lock()?;
        let init = if chain.is_active(&self.worker_contract)? {
            None
        } else {
            Some((
                Contract::Worker.code(),
                worker_data(
                    &self.proxy_contract,
                    &self.wallets.worker.address,
                    &self.signer.public_key(),
                )?,
            ))
        };
        let reports = relay(
            &mut chain,
            &self.wallets.worker,
            &self.worker_contract,
            TON / 10,
            worker::claim(owed, &signature)?,
            init,
        )?;
        ensure_ok(&reports, "claiming from the worker contract")
    }

    /// The proxy commits the hash of its books with sequence number `seqno`
    /// (signed with its key, relayed by its wallet).
    pub fn commit_books(&self, seqno: u64, books: [u8; 32]) -> Result<(), Error> {
        let books = tycho_types::cell::HashBytes(books);
        let signature = self
            .signer
            .sign_books(&self.proxy_contract, seqno, &books)?;
        let mut chain = self.lock()?;
        let reports = relay(
            &mut chain,
            &self.wallets.proxy,
            &self.proxy_contract,
            TON / 20,
            proxy::commit_books(seqno, &books, &signature)?,
            None,
        )?;
        ensure_ok(&reports, "committing the books")
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Emulator>, Error> {
        self.chain
            .lock()
            .map_err(|_| anyhow::anyhow!("chain state poisoned"))
            .map(|mut chain| {
                chain.now = chain.now.max(unix_now());
                chain
            })
    }
}
