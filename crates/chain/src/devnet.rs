//! The embedded TON devnet `cocoon devnet` starts beside the nodes: an
//! [`Emulator`] whose clock follows the wall clock, wallets for the operator,
//! the proxy, the client and the worker funded at genesis, the root contract
//! deployed by the operator's wallet through a real signed transfer, and the
//! TON HTTP API subset served on loopback.

use std::sync::{Arc, Mutex};

use tycho_types::cell::{Cell, CellBuilder, CellFamily};
use tycho_types::models::StdAddr;

use crate::api::SharedChain;
use crate::wallet::{internal_message, state_init, SEND_PAY_FEES_SEPARATELY};
use crate::{Contract, Emulator, Error, Prices, Wallet};

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

/// A running chain with its root contract.
pub struct TonDevnet {
    pub chain: SharedChain,
    pub root: StdAddr,
    pub wallets: Wallets,
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

impl TonDevnet {
    /// Genesis: fund the wallets, deploy the root contract from the
    /// operator's wallet with `prices`.
    pub fn start(prices: &Prices) -> Result<Self, Error> {
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
        Ok(Self {
            chain: Arc::new(Mutex::new(chain)),
            root,
            wallets,
        })
    }
}
