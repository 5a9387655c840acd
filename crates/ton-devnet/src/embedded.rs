//! [`EmbeddedChain`]: the [`Chain`] interface straight on an in-process
//! [`Emulator`], for tests that need no HTTP in between.

use async_trait::async_trait;
use cocoon_chain::{AccountInfo, Chain, ChainError as Error, MasterchainBlock, TxSummary};
use tycho_types::cell::Cell;
use tycho_types::models::{AccountState, StdAddr};
use tycho_vm::RcStackValue;

use crate::api::SharedChain;

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

/// The emulator's error, as the chain bindings report it.
fn embedded(e: anyhow::Error) -> Error {
    Error::Embedded(format!("{e:#}"))
}

impl EmbeddedChain {
    fn lock(&self) -> Result<std::sync::MutexGuard<'_, crate::Emulator>, Error> {
        let mut chain = self
            .chain
            .lock()
            .map_err(|_| Error::Embedded("chain state poisoned".into()))?;
        chain.now = chain.now.max((self.clock)());
        Ok(chain)
    }
}

#[async_trait]
impl Chain for EmbeddedChain {
    async fn send_boc(&self, message: &Cell) -> Result<(), Error> {
        self.lock()?.submit(message.clone()).map_err(embedded)
    }

    async fn account(&self, address: &StdAddr) -> Result<AccountInfo, Error> {
        let chain = self.lock()?;
        Ok(match chain.account(address).map_err(embedded)? {
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
        self.lock()?.get(address, method, args).map_err(embedded)
    }

    async fn transactions(&self, address: &StdAddr, limit: usize) -> Result<Vec<TxSummary>, Error> {
        let chain = self.lock()?;
        chain
            .latest_transactions(address, None, limit)
            .iter()
            .map(|t| TxSummary::from_cell(&t.cell))
            .collect()
    }

    async fn masterchain_head(&self) -> Result<MasterchainBlock, Error> {
        Ok(block(self.lock()?.masterchain_head()))
    }

    async fn masterchain_block(&self, seqno: u32) -> Result<Option<MasterchainBlock>, Error> {
        Ok(self.lock()?.masterchain_block(seqno).map(block))
    }
}

fn block(header: crate::BlockHeader) -> MasterchainBlock {
    MasterchainBlock {
        seqno: header.seqno,
        root_hash: header.root_hash,
        gen_utime: header.gen_utime,
    }
}
