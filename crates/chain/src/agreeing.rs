//! [`AgreeingChain`]: a [`Chain`] over several TON HTTP endpoints whose
//! answers must agree before a node believes them (`ton_api_agree` beside
//! each role's `ton_api`). TON's HTTP API (toncenter v2) returns account
//! states and get-method results without proofs, so one endpoint, lying or
//! run by the party a read is about, could make a proxy believe that an
//! unfunded client contract pays, or a client node that its channel holds
//! what it does not. With endpoints run by other parties, a lie must be
//! told by all of them alike.
//!
//! Endpoints a block apart disagree for a moment while a contract changes:
//! a read that disagrees is made again (up to [`ATTEMPTS`] times, [`PAUSE`]
//! apart) before it fails as [`ChainError::Disagree`], naming the endpoint.
//! An endpoint that cannot answer fails the read too: it cannot be checked.
//! Sends go to every endpoint at once, and the first acceptance is enough
//! (a wallet's sequence number makes a message land once).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::future::{join_all, select_ok};
use futures::FutureExt;
use tycho_types::cell::{Cell, CellBuilder};
use tycho_types::models::StdAddr;
use tycho_vm::{RcStackValue, Stack};

use crate::{AccountInfo, Chain, ChainError, Error, MasterchainBlock, TxSummary};

/// Reads of one question before endpoints that keep disagreeing fail it.
pub const ATTEMPTS: usize = 3;
/// Between two reads of a question the endpoints disagreed on: about a
/// masterchain block's time, for a lagging endpoint to catch up.
pub const PAUSE: Duration = Duration::from_millis(1500);

/// Several endpoints as one chain: the first is the node's own
/// (`ton_api`), the others those of `ton_api_agree`.
#[derive(Debug)]
pub struct AgreeingChain {
    endpoints: Vec<Arc<dyn Chain>>,
    pause: Duration,
}

impl AgreeingChain {
    /// `endpoints`, the node's own first; one alone is believed as it is.
    pub fn new(endpoints: Vec<Arc<dyn Chain>>) -> Self {
        Self {
            endpoints,
            pause: PAUSE,
        }
    }

    /// The node's own endpoint alone when there is no other, else the
    /// endpoints agreeing.
    pub fn of(mut endpoints: Vec<Arc<dyn Chain>>) -> Arc<dyn Chain> {
        if endpoints.len() == 1 {
            endpoints.remove(0)
        } else {
            Arc::new(Self::new(endpoints))
        }
    }

    /// With `pause` between reads that disagreed (tests).
    pub fn with_pause(mut self, pause: Duration) -> Self {
        self.pause = pause;
        self
    }

    /// `read` from every endpoint at once, the same answer from all, or
    /// why not (`what` names the question).
    async fn agreed<T, F, Fut>(&self, what: &str, read: F) -> Result<T, Error>
    where
        T: PartialEq + Send,
        F: Fn(Arc<dyn Chain>) -> Fut + Send + Sync,
        Fut: Future<Output = Result<T, Error>> + Send,
    {
        let mut differing = 0;
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(self.pause).await;
            }
            let answers = join_all(self.endpoints.iter().cloned().map(&read)).await;
            let mut answers = answers.into_iter().enumerate();
            let (_, first) = answers.next().ok_or_else(no_endpoint)?;
            let first = first?;
            let mut agree = true;
            for (i, answer) in answers {
                let answer = answer.map_err(|e| {
                    ChainError::Api(format!(
                        "ton_api_agree[{}] cannot be read ({what}): {e}",
                        i - 1
                    ))
                })?;
                if answer != first {
                    agree = false;
                    differing = i;
                }
            }
            if agree {
                return Ok(first);
            }
        }
        Err(ChainError::Disagree(format!(
            "TON endpoints disagree on {what}: ton_api and ton_api_agree[{}] answered differently {ATTEMPTS} times in {:.1} s (one of them is wrong); nothing is believed until they agree",
            differing - 1,
            (self.pause * (ATTEMPTS as u32 - 1)).as_secs_f64()
        )))
    }
}

fn no_endpoint() -> ChainError {
    ChainError::Api("no TON endpoint is configured".to_string())
}

/// A get-method's result stack as one cell (comparable, and `Send`).
fn stack_cell(values: Vec<RcStackValue>) -> Result<Cell, Error> {
    let stack = Stack::with_items(values);
    Ok(CellBuilder::build_from(&stack)?)
}

#[async_trait]
impl Chain for AgreeingChain {
    async fn send_boc(&self, message: &Cell) -> Result<(), Error> {
        if self.endpoints.is_empty() {
            return Err(no_endpoint());
        }
        // The first endpoint to accept it is enough: a slow or dead one
        // does not hold the transfer up.
        let sends = self.endpoints.iter().map(|c| c.send_boc(message).boxed());
        select_ok(sends).await.map(|_| ())
    }

    async fn account(&self, address: &StdAddr) -> Result<AccountInfo, Error> {
        let what = format!("account {address}");
        self.agreed(&what, |c| {
            let address = address.clone();
            async move { c.account(&address).await }
        })
        .await
    }

    async fn get(
        &self,
        address: &StdAddr,
        method: &str,
        args: &[u128],
    ) -> Result<Vec<RcStackValue>, Error> {
        let what = format!("{method} of {address}");
        let cell = self
            .agreed(&what, |c| {
                let (address, method, args) = (address.clone(), method.to_string(), args.to_vec());
                async move { stack_cell(c.get(&address, &method, &args).await?) }
            })
            .await?;
        let stack: Stack = cell.parse()?;
        Ok(stack.items)
    }

    async fn transactions(&self, address: &StdAddr, limit: usize) -> Result<Vec<TxSummary>, Error> {
        let what = format!("the transactions of {address}");
        self.agreed(&what, |c| {
            let address = address.clone();
            async move { c.transactions(&address, limit).await }
        })
        .await
    }

    /// The node's own endpoint's newest block, as every endpoint reports
    /// the block at that number (number, hash and time alike).
    async fn masterchain_head(&self) -> Result<MasterchainBlock, Error> {
        let own = self.endpoints.first().ok_or_else(no_endpoint)?;
        let seqno = own.masterchain_head().await?.seqno;
        let what = format!("masterchain block {seqno}");
        let agreed = self
            .agreed(&what, |c| async move { c.masterchain_block(seqno).await })
            .await?;
        agreed.ok_or_else(|| {
            ChainError::Unexpected(format!(
                "ton_api reports masterchain head {seqno} but does not have that block"
            ))
        })
    }

    async fn masterchain_block(&self, seqno: u32) -> Result<Option<MasterchainBlock>, Error> {
        let what = format!("masterchain block {seqno}");
        self.agreed(&what, |c| async move { c.masterchain_block(seqno).await })
            .await
    }
}
