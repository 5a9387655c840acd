//! One interface to a TON chain, whoever runs it: [`Chain`] sends external
//! messages, reads accounts, runs get-methods and lists an account's
//! transactions. [`crate::TonHttp`] implements it over TON's HTTP API (the
//! embedded devnet's or a toncenter-compatible endpoint on testnet/mainnet);
//! `cocoon_ton_devnet::EmbeddedChain` implements it in process.
//! The nodes' settlement code only sees the trait.

use async_trait::async_trait;
use tycho_types::cell::{Cell, HashBytes};
use tycho_types::models::{ComputePhase, IntAddr, MsgInfo, StdAddr, Transaction, TxInfo};
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
    /// The message was taken: the code ran and succeeded, or there was no
    /// code to run (a transfer to an account not deployed) and nothing
    /// bounced. `false` when it was refused or bounced.
    pub accepted: bool,
    /// The compute phase's exit code (`None` when it was skipped), or the
    /// action phase's result code when the compute phase succeeded but its
    /// actions failed.
    pub exit_code: Option<i32>,
    /// Hash of the message that caused it (an external message's hash is
    /// the hash of the BOC that was sent).
    pub in_msg: Option<HashBytes>,
    /// The message that caused it was a bounce.
    pub bounced_in: bool,
    /// The internal messages it sent: (hash, destination), in order.
    pub out_msgs: Vec<(HashBytes, StdAddr)>,
}

impl TxSummary {
    /// Read fee, time, outcome and messages from a transaction's BOC cell.
    pub fn from_cell(cell: &Cell) -> Result<Self, Error> {
        let tx: Transaction = cell.parse()?;
        let (success, accepted, exit_code) = match tx.load_info()? {
            TxInfo::Ordinary(info) => match &info.compute_phase {
                ComputePhase::Executed(compute) => {
                    let action = info.action_phase.as_ref();
                    let code = match action {
                        Some(a) if compute.success && !a.success => a.result_code,
                        _ => compute.exit_code,
                    };
                    let ok = compute.success && !info.aborted;
                    (ok, ok, Some(code))
                }
                ComputePhase::Skipped(_) => (false, info.bounce_phase.is_none(), None),
            },
            TxInfo::TickTock(info) => (!info.aborted, !info.aborted, None),
        };
        let bounced_in = match tx.load_in_msg()? {
            Some(message) => matches!(&message.info, MsgInfo::Int(info) if info.bounced),
            None => false,
        };
        let mut out_msgs = Vec::new();
        for raw in tx.out_msgs.raw_values() {
            let mut slice = raw?;
            let message = slice.load_reference_cloned()?;
            if let MsgInfo::Int(info) = message.parse::<tycho_types::models::Message>()?.info {
                if let IntAddr::Std(dst) = info.dst {
                    out_msgs.push((*message.repr_hash(), dst));
                }
            }
        }
        Ok(Self {
            lt: tx.lt,
            utime: tx.now,
            fee: tx.total_fees.tokens.into_inner(),
            success,
            accepted,
            exit_code,
            in_msg: tx.in_msg.as_ref().map(|c| *c.repr_hash()),
            bounced_in,
            out_msgs,
        })
    }
}

/// A masterchain block, as the chain reports it (what anchors TEE evidence
/// in time: see `cocoon_attestation::freshness`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MasterchainBlock {
    pub seqno: u32,
    pub root_hash: [u8; 32],
    /// When the block was made (Unix seconds).
    pub gen_utime: u32,
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

    /// The newest masterchain block.
    async fn masterchain_head(&self) -> Result<MasterchainBlock, Error>;

    /// Masterchain block `seqno`; `None` when the chain has no such block
    /// (not made yet, or a number it never had).
    async fn masterchain_block(&self, seqno: u32) -> Result<Option<MasterchainBlock>, Error>;
}
