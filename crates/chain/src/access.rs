//! One interface to a TON chain, whoever runs it: [`Chain`] sends external
//! messages, reads accounts, runs get-methods and lists an account's
//! transactions. [`crate::TonHttp`] implements it over TON's HTTP API (the
//! embedded devnet's or a toncenter-compatible endpoint on testnet/mainnet);
//! `cocoon_ton_devnet::EmbeddedChain` implements it in process.
//! The nodes' settlement code only sees the trait.

use async_trait::async_trait;
use tycho_types::cell::Cell;
use tycho_types::models::{ComputePhase, StdAddr, Transaction, TxInfo};
use tycho_vm::RcStackValue;

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
