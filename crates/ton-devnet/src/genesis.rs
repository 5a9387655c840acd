//! The embedded TON devnet `cocoon devnet` starts beside the nodes: an
//! [`Emulator`] whose clock follows the wall clock, wallets for the operator,
//! the proxy, the client and the worker funded at genesis, and, each deployed
//! through real signed wallet transfers, the root contract, the proxy's
//! contract (with its stake) and the client's contract (with a deposit); the
//! TON HTTP API subset is served on loopback. The nodes settle on it through
//! their own wallets, as on TON itself.

use std::sync::{Arc, Mutex};

use tycho_types::cell::{Cell, CellFamily, HashBytes};
use tycho_types::models::StdAddr;
use zeroize::Zeroizing;

use crate::api::SharedChain;
use crate::{Emulator, TxReport};
use anyhow::Error;
use cocoon_chain::wallet::{internal_message, SEND_PAY_FEES_SEPARATELY};
use cocoon_chain::{client, proxy};
use cocoon_chain::{
    contract_address, worker_contract, ClientTerms, Contract, Prices, ProxyTerms, Wallet,
};

use cocoon_chain::TON;

/// What each genesis wallet holds.
pub const GENESIS_BALANCE: u128 = 1_000_000 * TON;

pub use cocoon_chain::pricing::default_prices;

/// More for the devnet's genesis: known wallet seeds (a devnet resumed from
/// its state directory) and accounts to fund.
#[derive(Default)]
pub struct Genesis {
    pub wallets: Option<Wallets>,
    /// Accounts funded at genesis (e.g. your own wallet), nano-TON.
    pub accounts: Vec<(StdAddr, u128)>,
    /// The chain's Unix time at genesis (`None`: now). A simulation fixes it
    /// so that its runs do not depend on when they run.
    pub now: Option<u32>,
}

/// Where the devnet's contracts are (`devnet.json` in its state directory).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Addresses {
    pub root: String,
    pub proxy_contract: String,
    pub client_contract: String,
    pub worker_contract: String,
    pub proxy_key: String,
}

/// The seeds of the wallets the devnet funds (made at random each start;
/// each role gets its wallet from them).
#[derive(Clone)]
pub struct Wallets {
    pub operator: Zeroizing<[u8; 32]>,
    pub proxy: Zeroizing<[u8; 32]>,
    pub client: Zeroizing<[u8; 32]>,
    pub worker: Zeroizing<[u8; 32]>,
}

impl Wallets {
    /// As hex, for a 0600 file in the devnet's state directory.
    pub fn to_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(
            [&self.operator, &self.proxy, &self.client, &self.worker]
                .iter()
                .map(|s| hex::encode(s.as_slice()))
                .collect::<Vec<_>>()
                .join("\n"),
        )
    }

    /// Read back what `to_hex` wrote.
    pub fn from_hex(text: &str) -> Result<Self, Error> {
        let seeds: Vec<Zeroizing<[u8; 32]>> = text
            .lines()
            .map(|line| {
                let bytes = Zeroizing::new(hex::decode(line.trim())?);
                let seed: [u8; 32] = bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| anyhow::anyhow!("a wallet seed is not 32 bytes"))?;
                Ok(Zeroizing::new(seed))
            })
            .collect::<Result<_, Error>>()?;
        let [operator, proxy, client, worker]: [Zeroizing<[u8; 32]>; 4] = seeds
            .try_into()
            .map_err(|_| anyhow::anyhow!("expected 4 wallet seeds"))?;
        Ok(Self {
            operator,
            proxy,
            client,
            worker,
        })
    }

    fn random() -> Result<Self, Error> {
        Ok(Self {
            operator: Zeroizing::new(cocoon_chain::random_seed()?),
            proxy: Zeroizing::new(cocoon_chain::random_seed()?),
            client: Zeroizing::new(cocoon_chain::random_seed()?),
            worker: Zeroizing::new(cocoon_chain::random_seed()?),
        })
    }

    pub fn operator(&self) -> Wallet {
        Wallet::from_seed(&self.operator).expect("a 32-byte seed is a key")
    }
    pub fn proxy(&self) -> Wallet {
        Wallet::from_seed(&self.proxy).expect("a 32-byte seed is a key")
    }
    pub fn client(&self) -> Wallet {
        Wallet::from_seed(&self.client).expect("a 32-byte seed is a key")
    }
    pub fn worker(&self) -> Wallet {
        Wallet::from_seed(&self.worker).expect("a 32-byte seed is a key")
    }
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
    /// The proxy's public key in its contracts' terms.
    pub proxy_key: HashBytes,
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
        cocoon_chain::stack_int(&chain.get(&wallet.address, "seqno", vec![])?)? as u32
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

/// Deploy a proxy contract under `root` with `proxy_key`, staked with the
/// minimum from `wallet`.
fn deploy_proxy_contract(
    chain: &mut Emulator,
    wallet: &Wallet,
    root: &StdAddr,
    prices: &Prices,
    proxy_key: HashBytes,
) -> Result<StdAddr, Error> {
    let proxy_data = ProxyTerms {
        owner: wallet.address.clone(),
        proxy_key,
        root: root.clone(),
        close_delay: prices.proxy_close_delay,
        nonce: cocoon_chain::random_nonce()?,
    }
    .initial_data()?;
    let proxy_contract = contract_address(&Contract::Proxy.code(), &proxy_data)?;
    let reports = relay(
        chain,
        wallet,
        &proxy_contract,
        prices.min_proxy_stake,
        proxy::add_stake()?,
        Some((Contract::Proxy.code(), proxy_data)),
    )?;
    ensure_ok(&reports, "deploying the proxy contract")?;
    Ok(proxy_contract)
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

impl TonDevnet {
    /// Genesis: fund the wallets, deploy the root contract from the
    /// operator's wallet with `prices`, the proxy's contract (its key
    /// `proxy_key`, the proxy node's own) with its minimum stake and the
    /// client's contract with `client_deposit` nano-TON (all staked), for the client
    /// node whose TLS key fingerprint is `client_key`.
    pub fn start(
        prices: &Prices,
        client_deposit: u128,
        proxy_key: [u8; 32],
        client_key: [u8; 32],
    ) -> Result<Self, Error> {
        Self::genesis(
            prices,
            client_deposit,
            proxy_key,
            client_key,
            &Genesis::default(),
        )
    }

    /// [`TonDevnet::start`] with `genesis`: its wallet seeds (else random
    /// ones) and more accounts funded.
    pub fn genesis(
        prices: &Prices,
        client_deposit: u128,
        proxy_key: [u8; 32],
        client_key: [u8; 32],
        genesis: &Genesis,
    ) -> Result<Self, Error> {
        let mut chain = Emulator::new(genesis.now.unwrap_or_else(unix_now))?;
        let wallets = match &genesis.wallets {
            Some(w) => w.clone(),
            None => Wallets::random()?,
        };
        for (address, balance) in &genesis.accounts {
            chain.fund(address, *balance)?;
        }
        let (operator, proxy_wallet, client_wallet, worker_wallet) = (
            wallets.operator(),
            wallets.proxy(),
            wallets.client(),
            wallets.worker(),
        );
        for wallet in [&operator, &proxy_wallet, &client_wallet, &worker_wallet] {
            chain.fund(&wallet.address, GENESIS_BALANCE)?;
        }
        let code = Contract::Root.code();
        let data = prices.root_data(&operator.address)?;
        let root = contract_address(&code, &data)?;
        let reports = relay(
            &mut chain,
            &operator,
            &root,
            10 * TON,
            Cell::empty_cell(),
            Some((code, data)),
        )?;
        anyhow::ensure!(
            chain.is_active(&root)?,
            "the root contract did not deploy: {reports:?}"
        );

        let proxy_key = HashBytes(proxy_key);
        let proxy_contract =
            deploy_proxy_contract(&mut chain, &proxy_wallet, &root, prices, proxy_key)?;

        let client_data = ClientTerms {
            proxy: proxy_contract.clone(),
            owner: client_wallet.address.clone(),
            proxy_key,
            close_delay: prices.client_close_delay,
            nonce: cocoon_chain::random_nonce()?,
            client_key: HashBytes(client_key),
        }
        .initial_data()?;
        let client_contract = contract_address(&Contract::Client.code(), &client_data)?;
        let reports = relay(
            &mut chain,
            &client_wallet,
            &client_contract,
            client_deposit + client::GAS_RESERVE,
            client::top_up()?,
            Some((Contract::Client.code(), client_data)),
        )?;
        ensure_ok(&reports, "deploying the client contract")?;
        // All of it staked: the credit a proxy extends between settlements.
        let reports = relay(
            &mut chain,
            &client_wallet,
            &client_contract,
            client::STAKE_GAS,
            client::increase_stake(client_deposit)?,
            None,
        )?;
        ensure_ok(&reports, "staking the client contract's deposit")?;

        let (worker_contract, _) =
            worker_contract(&proxy_contract, &worker_wallet.address, &proxy_key)?;
        Ok(Self {
            chain: Arc::new(Mutex::new(chain)),
            root,
            proxy_contract,
            client_contract,
            worker_contract,
            wallets,
            proxy_key,
        })
    }

    /// Another proxy operator: a new wallet, funded, and its proxy
    /// contract with key `proxy_key`, deployed and staked from it (to
    /// clients, a second proxy like any other).
    pub fn add_proxy(&self, proxy_key: [u8; 32]) -> Result<(StdAddr, Wallet), Error> {
        let wallet = Wallet::from_seed(&cocoon_chain::random_seed()?)?;
        let contract = self.add_proxy_with(proxy_key, &wallet)?;
        Ok((contract, wallet))
    }

    /// [`TonDevnet::add_proxy`] with the operator's `wallet` given (e.g.
    /// one from a mnemonic a proxy process reads): funded, then its proxy
    /// contract deployed and staked from it.
    pub fn add_proxy_with(&self, proxy_key: [u8; 32], wallet: &Wallet) -> Result<StdAddr, Error> {
        let mut chain = self.lock()?;
        chain.fund(&wallet.address, GENESIS_BALANCE)?;
        let prices = Prices::from_stack(&chain.get(&self.root, "get_prices", vec![])?)?;
        let contract = deploy_proxy_contract(
            &mut chain,
            wallet,
            &self.root,
            &prices,
            HashBytes(proxy_key),
        )?;
        Ok(contract)
    }

    /// Publish (or, with `endpoint: None`, withdraw) a proxy running
    /// protocol `version` in the root contract's registry, from the
    /// operator's wallet.
    pub fn register_proxy(
        &self,
        proxy_contract: &StdAddr,
        proxy_key: &HashBytes,
        version: u32,
        endpoint: Option<&str>,
    ) -> Result<(), Error> {
        let info = endpoint.map(|e| (proxy_key, version, e));
        self.to_root(
            cocoon_chain::root::set_proxy(proxy_contract, info)?,
            "registering the proxy in the root contract",
        )
    }

    /// Publish (`allowed`) or withdraw an image hash (hex, see
    /// `Measurements::image_hash`) for `role` in the root contract.
    pub fn publish_image(
        &self,
        role: cocoon_chain::root::ImageRole,
        image_hash: &str,
        allowed: bool,
    ) -> Result<(), Error> {
        let hash = hash_bytes(image_hash)?;
        self.to_root(
            cocoon_chain::root::set_image(role, &hash, allowed)?,
            "publishing an image in the root contract",
        )
    }

    /// Publish weights (hex SHA-256) as the model `name`, or withdraw them
    /// (`name: None`), in the root contract.
    pub fn publish_model(&self, weights_sha256: &str, name: Option<&str>) -> Result<(), Error> {
        let hash = hash_bytes(weights_sha256)?;
        self.to_root(
            cocoon_chain::root::set_model(&hash, name)?,
            "publishing a model in the root contract",
        )
    }

    /// Propose `owner` as the root contract's next owner (say, a wallet of
    /// the operator's own, for `cocoon root`); it becomes the owner when it
    /// accepts (`cocoon root accept-owner`).
    pub fn propose_root_owner(&self, owner: &StdAddr) -> Result<(), Error> {
        self.to_root(
            cocoon_chain::root::change_owner(owner)?,
            "proposing a new owner of the root contract",
        )
    }

    /// Set (or, with `None`, clear) the rules every peer's configuration
    /// must follow, in the root contract (as its owner).
    pub fn set_rules(&self, rules: Option<&cocoon_chain::ConfigurationRules>) -> Result<(), Error> {
        self.to_root(
            cocoon_chain::root::set_rules(rules)?,
            "setting the root contract's configuration rules",
        )
    }

    /// Set the network's prices in the root contract (as its owner).
    pub fn set_prices(&self, prices: &Prices) -> Result<(), Error> {
        self.to_root(
            cocoon_chain::root::set_prices(prices)?,
            "setting the root contract's prices",
        )
    }

    /// A message from the operator's wallet to the root contract, which must succeed.
    fn to_root(&self, body: Cell, what: &str) -> Result<(), Error> {
        let mut chain = self.lock()?;
        let reports = relay(
            &mut chain,
            &self.wallets.operator(),
            &self.root,
            TON / 20,
            body,
            None,
        )?;
        ensure_ok(&reports, what)
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Emulator>, Error> {
        self.chain
            .lock()
            .map_err(|_| anyhow::anyhow!("the chain's lock is poisoned"))
    }

    /// The addresses to find this devnet again after a restart.
    pub fn addresses(&self) -> Addresses {
        Addresses {
            root: self.root.to_string(),
            proxy_contract: self.proxy_contract.to_string(),
            client_contract: self.client_contract.to_string(),
            worker_contract: self.worker_contract.to_string(),
            proxy_key: hex::encode(self.proxy_key.as_slice()),
        }
    }

    /// A devnet saved earlier: its chain, addresses and wallets.
    pub fn resume(chain: Emulator, addresses: &Addresses, wallets: Wallets) -> Result<Self, Error> {
        let addr = |field: &str, text: &str| -> Result<StdAddr, Error> {
            text.parse()
                .map_err(|e| anyhow::anyhow!("devnet {field} {text:?}: {e}"))
        };
        let key: [u8; 32] = hex::decode(&addresses.proxy_key)?
            .try_into()
            .map_err(|_| anyhow::anyhow!("devnet proxy_key is not 32 bytes"))?;
        let root = addr("root", &addresses.root)?;
        anyhow::ensure!(
            chain.is_active(&root)?,
            "the saved chain has no root contract at {root}"
        );
        Ok(Self {
            chain: Arc::new(Mutex::new(chain)),
            root,
            proxy_contract: addr("proxy_contract", &addresses.proxy_contract)?,
            client_contract: addr("client_contract", &addresses.client_contract)?,
            worker_contract: addr("worker_contract", &addresses.worker_contract)?,
            wallets,
            proxy_key: HashBytes(key),
        })
    }

    /// The chain in process, behind the [`cocoon_chain::Chain`] interface.
    pub fn embedded(&self) -> crate::EmbeddedChain {
        crate::EmbeddedChain {
            chain: self.chain.clone(),
            clock: unix_now,
        }
    }
}

/// A 32-byte hash from its hex text.
fn hash_bytes(hex_text: &str) -> Result<HashBytes, Error> {
    let bytes: [u8; 32] = hex::decode(hex_text)?
        .try_into()
        .map_err(|_| anyhow::anyhow!("{hex_text:?} is not a 32-byte hash"))?;
    Ok(HashBytes(bytes))
}
