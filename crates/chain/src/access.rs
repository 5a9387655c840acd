//! One interface to a TON chain, whoever runs it: [`Chain`] sends external
//! messages, reads accounts, runs get-methods and lists an account's
//! transactions. [`crate::TonHttp`] implements it over TON's HTTP API (the
//! embedded devnet's or a toncenter-compatible endpoint on testnet/mainnet);
//! [`EmbeddedChain`] implements it in process, straight on an [`Emulator`].
//! The nodes' settlement code only sees the trait.

use async_trait::async_trait;
use tycho_types::cell::Cell;
use tycho_types::models::{AccountState, ComputePhase, StdAddr, Transaction, TxInfo};
use tycho_vm::RcStackValue;

use crate::api::SharedChain;
use crate::Error;

/// An account as the chain reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountInfo {
    pub balance: u128,
    /// `active`, `uninitialized` or `frozen`.
    pub state: String,
}

impl AccountInfo {
    pub fn is_active(&self) -> bool {
        self.state == "active"
    }
}

/// One transaction of an account, newest first in lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxSummary {
    pub lt: u64,
    pub utime: u32,
    /// Total fees, nano-TON.
    pub fee: u128,
    /// The compute phase ran and succeeded, and the transaction was not
    /// aborted (`false` also when the compute phase was skipped).
    pub success: bool,
}

impl TxSummary {
    /// Read fee, time and outcome from a transaction's BOC cell.
    pub fn from_cell(cell: &Cell) -> Result<Self, Error> {
        let tx: Transaction = cell.parse()?;
        let success = match tx.load_info()? {
            TxInfo::Ordinary(info) => match &info.compute_phase {
                ComputePhase::Executed(compute) => compute.success && !info.aborted,
                ComputePhase::Skipped(_) => false,
            },
            TxInfo::TickTock(info) => !info.aborted,
        };
        Ok(Self {
            lt: tx.lt,
            utime: tx.now,
            fee: tx.total_fees.tokens.into_inner(),
            success,
        })
    }
}

/// A TON chain the nodes settle on.
#[async_trait]
pub trait Chain: Send + Sync + std::fmt::Debug {
    /// Send an external message (e.g. a signed wallet transfer). Accepted is
    /// not done: confirm by reading the chain (see [`crate::WalletSender`]).
    async fn send_boc(&self, message: &Cell) -> Result<(), Error>;

    /// Balance and state of an account (an unknown account is
    /// `uninitialized` with 0).
    async fn account(&self, address: &StdAddr) -> Result<AccountInfo, Error>;

    /// Run a get-method with integer arguments; the result stack, first value
    /// first, for the `from_stack` parsers. (Stack values are not `Send`:
    /// parse them before the next `.await`.)
    async fn get(
        &self,
        address: &StdAddr,
        method: &str,
        args: &[u128],
    ) -> Result<Vec<RcStackValue>, Error>;

    /// The newest `limit` transactions of an account, newest first.
    async fn transactions(&self, address: &StdAddr, limit: usize) -> Result<Vec<TxSummary>, Error>;
}

/// The in-process chain of the embedded devnet, without HTTP in between.
/// `clock` moves the chain's time forward before each call.
#[derive(Clone)]
pub struct EmbeddedChain {
    pub chain: SharedChain,
    pub clock: fn() -> u32,
}

impl std::fmt::Debug for EmbeddedChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EmbeddedChain")
    }
}

impl EmbeddedChain {
    fn lock(&self) -> Result<std::sync::MutexGuard<'_, crate::Emulator>, Error> {
        let mut chain = self
            .chain
            .lock()
            .map_err(|_| anyhow::anyhow!("chain state poisoned"))?;
        chain.now = chain.now.max((self.clock)());
        Ok(chain)
    }
}

#[async_trait]
impl Chain for EmbeddedChain {
    async fn send_boc(&self, message: &Cell) -> Result<(), Error> {
        self.lock()?.submit(message.clone())
    }

    async fn account(&self, address: &StdAddr) -> Result<AccountInfo, Error> {
        let chain = self.lock()?;
        Ok(match chain.account(address)? {
            None => AccountInfo {
                balance: 0,
                state: "uninitialized".into(),
            },
            Some(account) => AccountInfo {
                balance: account.balance.tokens.into_inner(),
                state: match account.state {
                    AccountState::Active(_) => "active",
                    AccountState::Frozen(_) => "frozen",
                    AccountState::Uninit => "uninitialized",
                }
                .into(),
            },
        })
    }

    async fn get(
        &self,
        address: &StdAddr,
        method: &str,
        args: &[u128],
    ) -> Result<Vec<RcStackValue>, Error> {
        let args = args
            .iter()
            .map(|n| RcStackValue::new_dyn_value(num_bigint::BigInt::from(*n)))
            .collect();
        self.lock()?.get(address, method, args)
    }

    async fn transactions(&self, address: &StdAddr, limit: usize) -> Result<Vec<TxSummary>, Error> {
        let chain = self.lock()?;
        chain
            .latest_transactions(address, None, limit)
            .iter()
            .map(|t| TxSummary::from_cell(&t.cell))
            .collect()
    }
}
