//! The simulated world: one embedded chain (the real contracts on the TVM)
//! with the root, `proxies` proxy contracts, a client contract per client
//! and proxy, and a worker contract per worker and proxy, every key and
//! nonce drawn from the run's seed; each proxy's real [`Settlement`] over a
//! chain connection that an outage can cut; and a proxy's restart from what
//! its books had durably recorded.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use cocoon_chain::{
    client, AccountInfo, Chain, ChainError, ClientChannel, ClientTerms, Contract, HashBytes,
    Prices, ProxySigner, StdAddr, TxSummary, Wallet,
};
use cocoon_protocol::tls::Fingerprint;
use cocoon_proxy::{Books, Settlement};
use cocoon_ton_devnet::{EmbeddedChain, Genesis, TonDevnet, Wallets};
use rand::{Rng, RngCore};
use rand_chacha::ChaCha8Rng;
use tycho_vm::RcStackValue;

use super::SimOptions;

/// The chain as the proxies reach it: the embedded chain, unless an outage
/// cuts them off (the chain itself goes on: clients still act on it).
#[derive(Debug, Clone)]
pub struct Reach {
    pub chain: EmbeddedChain,
    pub down: Arc<AtomicBool>,
}

impl Reach {
    fn check(&self) -> Result<(), ChainError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(ChainError::Api(
                "simulated outage: the chain is out of reach".into(),
            ));
        }
        Ok(())
    }
}

#[async_trait]
impl Chain for Reach {
    async fn send_boc(&self, message: &cocoon_chain::Cell) -> Result<(), ChainError> {
        self.check()?;
        self.chain.send_boc(message).await
    }
    async fn account(&self, address: &StdAddr) -> Result<AccountInfo, ChainError> {
        self.check()?;
        self.chain.account(address).await
    }
    async fn get(
        &self,
        address: &StdAddr,
        method: &str,
        args: &[u128],
    ) -> Result<Vec<RcStackValue>, ChainError> {
        self.check()?;
        self.chain.get(address, method, args).await
    }
    async fn transactions(
        &self,
        address: &StdAddr,
        limit: usize,
    ) -> Result<Vec<TxSummary>, ChainError> {
        self.check()?;
        self.chain.transactions(address, limit).await
    }
    async fn masterchain_head(&self) -> Result<cocoon_chain::MasterchainBlock, ChainError> {
        self.check()?;
        self.chain.masterchain_head().await
    }
    async fn masterchain_block(
        &self,
        seqno: u32,
    ) -> Result<Option<cocoon_chain::MasterchainBlock>, ChainError> {
        self.check()?;
        self.chain.masterchain_block(seqno).await
    }
}

/// A client node: its key fingerprint, its owner wallet's address, and its
/// contract with each proxy.
pub struct SimClient {
    pub key: Fingerprint,
    pub owner: StdAddr,
    pub contracts: Vec<StdAddr>,
}

/// A GPU owner: its payout address, its price coefficient, and its worker
/// contract with each proxy (with its initial data, for the first claim).
pub struct SimWorker {
    pub owner: StdAddr,
    pub coefficient: u32,
    pub contracts: Vec<(StdAddr, cocoon_chain::Cell)>,
}

/// A proxy: its key seed (to sign again after a restart), wallet seed,
/// contract and running settlement.
pub struct SimProxy {
    pub key_seed: [u8; 32],
    pub wallet_seed: [u8; 32],
    pub contract: StdAddr,
    pub settlement: Settlement,
    /// Crashed and not yet started again (it cannot start while the chain
    /// is out of reach): `settlement` is the dead process's, unused.
    pub crashed: bool,
}

pub struct World {
    pub ton: TonDevnet,
    pub reach: Reach,
    pub prices: Prices,
    pub proxies: Vec<SimProxy>,
    pub clients: Vec<SimClient>,
    pub workers: Vec<SimWorker>,
}

const TON: u128 = cocoon_chain::TON;

fn seed(rng: &mut ChaCha8Rng) -> [u8; 32] {
    let mut out = [0u8; 32];
    rng.fill_bytes(&mut out);
    out
}

/// Nothing in the simulated chain moves its clock but the simulation.
fn frozen_clock() -> u32 {
    0
}

/// The simulated chain's time at genesis (2023-11-14): fixed, so runs do not
/// depend on when they run, and in the past, so the wallets' transfers
/// (valid until a minute from the real now) are never expired on it.
const SIM_EPOCH: u32 = 1_700_000_000;

impl World {
    pub async fn genesis(options: &SimOptions, rng: &mut ChaCha8Rng) -> anyhow::Result<World> {
        let mut prices = cocoon_chain::pricing::default_prices();
        // Small stakes, so that credit runs out and refusals are exercised.
        prices.min_client_stake = TON / 10;
        let proxy_keys: Vec<[u8; 32]> = (0..options.proxies).map(|_| seed(rng)).collect();
        let proxy_wallets: Vec<[u8; 32]> = (0..options.proxies).map(|_| seed(rng)).collect();
        let signer = |s: &[u8; 32]| ProxySigner::from_seed(s);
        let wallets = Wallets {
            operator: seed(rng).into(),
            proxy: proxy_wallets[0].into(),
            client: seed(rng).into(),
            worker: seed(rng).into(),
        };
        let ton = TonDevnet::genesis(
            &prices,
            TON,
            signer(&proxy_keys[0])?.public_key().0,
            [0; 32],
            &Genesis {
                wallets: Some(wallets),
                accounts: Vec::new(),
                now: Some(SIM_EPOCH),
            },
        )?;
        ton.chain
            .lock()
            .map_err(|_| anyhow::anyhow!("chain poisoned"))?
            .in_blocks = false;
        let mut contracts = vec![ton.proxy_contract.clone()];
        for i in 1..options.proxies {
            let wallet = Wallet::from_seed(&proxy_wallets[i])?;
            contracts.push(ton.add_proxy_with(signer(&proxy_keys[i])?.public_key().0, &wallet)?);
        }
        for (i, contract) in contracts.iter().enumerate() {
            let key = signer(&proxy_keys[i])?.public_key();
            ton.register_proxy(contract, &key, 1, Some(&format!("127.0.0.1:{}", 9000 + i)))?;
        }
        let reach = Reach {
            chain: EmbeddedChain {
                chain: ton.chain.clone(),
                clock: frozen_clock,
            },
            down: Arc::default(),
        };

        let mut clients = Vec::with_capacity(options.clients);
        for _ in 0..options.clients {
            let key = Fingerprint(seed(rng));
            let owner = Wallet::from_seed(&seed(rng))?.address;
            let mut mine = Vec::new();
            for (p, proxy) in contracts.iter().enumerate() {
                let terms = ClientTerms {
                    proxy: proxy.clone(),
                    owner: owner.clone(),
                    proxy_key: signer(&proxy_keys[p])?.public_key(),
                    close_delay: prices.client_close_delay,
                    nonce: rng.gen(),
                    client_key: HashBytes(key.0),
                };
                let address = terms.address()?;
                let deposit = TON * rng.gen_range(1..=20u128);
                let stake = prices.min_client_stake * rng.gen_range(1..=10u128);
                let mut chain = ton
                    .chain
                    .lock()
                    .map_err(|_| anyhow::anyhow!("chain poisoned"))?;
                let init = Some((Contract::Client.code(), terms.initial_data()?));
                let r = chain.send(
                    &owner,
                    &address,
                    deposit + client::GAS_RESERVE,
                    client::top_up()?,
                    init,
                )?;
                anyhow::ensure!(r[0].success, "deploying a client contract: {r:?}");
                let r = chain.send(
                    &owner,
                    &address,
                    client::STAKE_GAS,
                    client::increase_stake(stake.min(deposit))?,
                    None,
                )?;
                anyhow::ensure!(r[0].success, "staking a client contract: {r:?}");
                mine.push(address);
            }
            clients.push(SimClient {
                key,
                owner,
                contracts: mine,
            });
        }

        let mut workers = Vec::with_capacity(options.workers);
        for _ in 0..options.workers {
            let owner = Wallet::from_seed(&seed(rng))?.address;
            let mut mine = Vec::new();
            for (p, proxy) in contracts.iter().enumerate() {
                let key = signer(&proxy_keys[p])?.public_key();
                mine.push(cocoon_chain::worker_contract(proxy, &owner, &key)?);
            }
            workers.push(SimWorker {
                owner,
                coefficient: rng.gen_range(500..=2000),
                contracts: mine,
            });
        }

        let mut world = World {
            ton,
            reach,
            prices,
            proxies: Vec::new(),
            clients,
            workers,
        };
        for (i, contract) in contracts.into_iter().enumerate() {
            let settlement = world
                .connect(
                    &proxy_keys[i],
                    &proxy_wallets[i],
                    &contract,
                    Books::new(world.prices.clone()),
                )
                .await?;
            world.proxies.push(SimProxy {
                key_seed: proxy_keys[i],
                wallet_seed: proxy_wallets[i],
                contract,
                settlement,
                crashed: false,
            });
        }
        for p in 0..world.proxies.len() {
            world.register_all(p).await?;
        }
        Ok(world)
    }

    /// A proxy's settlement over the reachable chain, with `books`.
    async fn connect(
        &self,
        key_seed: &[u8; 32],
        wallet_seed: &[u8; 32],
        contract: &StdAddr,
        books: Books,
    ) -> anyhow::Result<Settlement> {
        let mut settlement = Settlement::connect(
            Arc::new(self.reach.clone()),
            Wallet::from_seed(wallet_seed)?,
            ProxySigner::from_seed(key_seed)?,
            contract.clone(),
            self.ton.root.clone(),
            move |_| Ok(books),
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        // Rereads only at settlement rounds, so that runs do not depend on
        // the machine's speed.
        settlement.reread = std::time::Duration::MAX;
        // Every move committed, whatever the machine's speed.
        settlement.commit_idle = std::time::Duration::ZERO;
        settlement.pay_out_above = Some(TON / 2);
        Ok(settlement)
    }

    /// Every client registers its contract with proxy `p`.
    pub async fn register_all(&self, p: usize) -> anyhow::Result<()> {
        for c in 0..self.clients.len() {
            self.register(c, p).await?;
        }
        Ok(())
    }

    /// Client `c` registers its contract with proxy `p`; a contract the
    /// proxy will not serve on (its stake spent below the minimum) stays
    /// unregistered until it is topped up.
    pub async fn register(&self, c: usize, p: usize) -> anyhow::Result<()> {
        let client = &self.clients[c];
        match self.proxies[p]
            .settlement
            .open_account(client.key, Some(client.contracts[p].to_string()))
            .await
        {
            Ok(_) => Ok(()),
            Err(e)
                if e.kind == cocoon_protocol::ErrorKind::PaymentRequired
                    && e.message.contains("stake") =>
            {
                Ok(())
            }
            Err(e) => anyhow::bail!(
                "registering client {c}'s contract with proxy {p}: {}",
                e.message
            ),
        }
    }

    /// Proxy `p` crashes; it starts again from its books (what its database
    /// durably held) at once, or once the chain is in reach again (a proxy
    /// checks its contract at start). Its clients register again as they
    /// reconnect. Whether it runs now.
    pub async fn restart(&mut self, p: usize) -> anyhow::Result<bool> {
        self.proxies[p].crashed = true;
        self.start_again(p).await
    }

    /// The outage ends: the chain is in reach again, and the proxies that
    /// crashed meanwhile start.
    pub async fn reconnect(&mut self) -> anyhow::Result<()> {
        self.reach.down.store(false, Ordering::SeqCst);
        for p in 0..self.proxies.len() {
            if self.proxies[p].crashed {
                self.start_again(p).await?;
            }
        }
        Ok(())
    }

    /// Start crashed proxy `p` if the chain is in reach; whether it runs.
    pub async fn start_again(&mut self, p: usize) -> anyhow::Result<bool> {
        if self.reach.down.load(Ordering::SeqCst) {
            return Ok(false);
        }
        let books = self.proxies[p].settlement.books().duplicate();
        let (key, wallet, contract) = {
            let proxy = &self.proxies[p];
            (proxy.key_seed, proxy.wallet_seed, proxy.contract.clone())
        };
        let settlement = self.connect(&key, &wallet, &contract, books).await?;
        self.proxies[p].settlement = settlement;
        self.proxies[p].crashed = false;
        self.register_all(p).await?;
        Ok(true)
    }

    /// Send `body` with `value` from `from` straight into the chain (an
    /// owner acting from its own wallet); whether the destination took it.
    pub fn act(
        &self,
        from: &StdAddr,
        to: &StdAddr,
        value: u128,
        body: cocoon_chain::Cell,
        init: Option<(cocoon_chain::Cell, cocoon_chain::Cell)>,
    ) -> anyhow::Result<bool> {
        let mut chain = self
            .ton
            .chain
            .lock()
            .map_err(|_| anyhow::anyhow!("chain poisoned"))?;
        let reports = chain.send(from, to, value, body, init)?;
        Ok(reports.first().is_some_and(|r| r.success))
    }

    /// A client contract's channel, read straight from the chain.
    pub async fn channel(&self, contract: &StdAddr) -> anyhow::Result<ClientChannel> {
        Ok(ClientChannel::from_stack(
            &self
                .reach
                .chain
                .get(contract, "get_client_data", &[])
                .await?,
        )?)
    }

    /// What a worker contract has paid (0 before it is deployed).
    pub async fn paid(&self, contract: &StdAddr) -> anyhow::Result<u128> {
        if !self.reach.chain.account(contract).await?.is_active() {
            return Ok(0);
        }
        let stack = self
            .reach
            .chain
            .get(contract, "get_worker_data", &[])
            .await?;
        Ok(cocoon_chain::WorkerState::from_stack(&stack)?.paid)
    }

    /// A proxy contract's state and balance.
    pub async fn proxy_state(&self, p: usize) -> anyhow::Result<(cocoon_chain::ProxyState, u128)> {
        let contract = &self.proxies[p].contract;
        let state = cocoon_chain::ProxyState::from_stack(
            &self
                .reach
                .chain
                .get(contract, "get_proxy_data", &[])
                .await?,
        )?;
        Ok((state, self.reach.chain.account(contract).await?.balance))
    }

    /// Move the chain's clock forward by `seconds`.
    pub fn advance(&self, seconds: u32) -> anyhow::Result<()> {
        let mut chain = self
            .ton
            .chain
            .lock()
            .map_err(|_| anyhow::anyhow!("chain poisoned"))?;
        chain.now += seconds;
        Ok(())
    }
}
