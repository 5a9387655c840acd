//! Sending from a node's own wallet, with confirmation: [`WalletSender`]
//! reads the wallet's seqno from the chain, signs one transfer carrying up to
//! four internal messages, sends it, and counts it as done only when it is
//! seen to have done what it was for, not when the API accepted it: the
//! wallet's seqno moves past it, the wallet's transaction is the one whose
//! inbound message is this transfer (found by its hash: a seqno that moved
//! proves only that *some* transfer ran), it sent every message, and each
//! destination took its message (its compute and action phases succeeded,
//! nothing bounced); otherwise the error names the message, the destination
//! and the exit code. One transfer at a time per wallet, so two settlements
//! in one process never race for a seqno (and a process keeps one sender
//! per wallet).

use std::sync::Arc;
use std::time::Duration;

use tycho_types::cell::Cell;
use tycho_types::models::StdAddr;

use crate::access::Chain;
use crate::wallet::{internal_message, SEND_PAY_FEES_SEPARATELY};
use crate::{Error, Wallet};

/// At most this many internal messages per wallet transfer (v4).
pub const MAX_MESSAGES: usize = 4;

/// One internal message for the wallet to send.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub to: StdAddr,
    /// Nano-TON attached.
    pub value: u128,
    pub bounce: bool,
    pub body: Cell,
    /// Code and data to deploy at `to` with this message.
    pub init: Option<(Cell, Cell)>,
}

/// A transfer seen on chain, and what each of its messages did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confirmed {
    /// The seqno the transfer was signed with.
    pub seqno: u32,
    /// The wallet's transaction (logical time).
    pub lt: u64,
    /// Each message's transaction at its destination, in order.
    pub delivered: Vec<crate::TxSummary>,
}

/// A wallet that sends through a chain.
pub struct WalletSender {
    chain: Arc<dyn Chain>,
    wallet: Wallet,
    turn: tokio::sync::Mutex<()>,
    /// How long to wait for the transfer to appear on chain.
    pub confirm_timeout: Duration,
    /// How often to look.
    pub poll: Duration,
}

impl std::fmt::Debug for WalletSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WalletSender({})", self.wallet.address)
    }
}

fn unix_now() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(0)
}

impl WalletSender {
    pub fn new(chain: Arc<dyn Chain>, wallet: Wallet) -> Self {
        Self {
            chain,
            wallet,
            turn: tokio::sync::Mutex::new(()),
            confirm_timeout: Duration::from_secs(60),
            poll: Duration::from_millis(200),
        }
    }

    pub fn address(&self) -> &StdAddr {
        &self.wallet.address
    }

    pub fn chain(&self) -> &Arc<dyn Chain> {
        &self.chain
    }

    /// The wallet's seqno on chain (0 before its first transfer deploys it).
    pub async fn seqno(&self) -> Result<u32, Error> {
        if !self.chain.account(&self.wallet.address).await?.is_active() {
            return Ok(0);
        }
        let stack = self.chain.get(&self.wallet.address, "seqno", &[]).await?;
        Ok(crate::stack_int(&stack)? as u32)
    }

    /// The wallet's balance, nano-TON.
    pub async fn balance(&self) -> Result<u128, Error> {
        Ok(self.chain.account(&self.wallet.address).await?.balance)
    }

    /// Send `messages` (1 to 4) in one transfer and wait until it is on chain.
    pub async fn send(&self, messages: &[Outgoing]) -> Result<Confirmed, Error> {
        crate::error::ensure!(
            !messages.is_empty() && messages.len() <= MAX_MESSAGES,
            Transfer,
            "a wallet transfer carries 1 to {MAX_MESSAGES} messages, not {}",
            messages.len()
        );
        let _turn = self.turn.lock().await;
        let needed: u128 = messages.iter().map(|m| m.value).sum();
        let balance = self.balance().await?;
        crate::error::ensure!(
            balance > needed,
            Transfer,
            "wallet {} holds {balance} nano-TON, not enough to send {needed} nano-TON and pay fees",
            self.wallet.address
        );
        let seqno = self.seqno().await?;
        let built = messages
            .iter()
            .map(|m| {
                internal_message(&m.to, m.value, m.bounce, m.body.clone(), m.init.clone())
                    .map(|cell| (SEND_PAY_FEES_SEPARATELY, cell))
            })
            .collect::<Result<Vec<_>, Error>>()?;
        let valid_for = self.confirm_timeout.as_secs().max(30) as u32;
        let transfer = self
            .wallet
            .transfer(seqno, unix_now() + valid_for, &built)?;
        self.chain.send_boc(&transfer).await?;
        let deadline = tokio::time::Instant::now() + self.confirm_timeout;
        loop {
            match self.seqno().await {
                Ok(now) if now > seqno => break,
                Ok(_) => {}
                // A read that fails is retried until the deadline.
                Err(e) => tracing::debug!(error = %e, "reading the wallet's seqno"),
            }
            if tokio::time::Instant::now() >= deadline {
                crate::error::fail!(Transfer,
                    "wallet {}: the transfer with seqno {seqno} was sent but not seen on chain within {:?}",
                    self.wallet.address,
                    self.confirm_timeout
                );
            }
            tokio::time::sleep(self.poll).await;
        }
        // The wallet's transaction with this seqno is on chain: it is ours
        // or another transfer's (an API's transaction index may lag its
        // get-methods a little, hence a short grace).
        let ours = *transfer.repr_hash();
        let grace =
            (tokio::time::Instant::now() + self.confirm_timeout.min(WALLET_TX_GRACE)).min(deadline);
        let tx = self
            .find(&self.wallet.address, &ours, grace)
            .await?
            .ok_or_else(|| {
                crate::ChainError::Transfer(format!(
                    "wallet {}: its seqno moved past {seqno}, but not by this transfer (does another sender use this wallet?)",
                    self.wallet.address
                ))
            })?;
        crate::error::ensure!(
            tx.out_msgs.len() == messages.len(),
            Transfer,
            "wallet {}: the transfer with seqno {seqno} sent {} of its {} messages (action phase result code {:?})",
            self.wallet.address,
            tx.out_msgs.len(),
            messages.len(),
            tx.exit_code
        );
        let mut delivered = Vec::with_capacity(messages.len());
        for (i, (hash, to)) in tx.out_msgs.iter().enumerate() {
            let at = self.find(to, hash, deadline).await?.ok_or_else(|| {
                crate::ChainError::Transfer(format!(
                    "message {} of the transfer with seqno {seqno} to {to} was not seen processed within {:?}",
                    i + 1,
                    self.confirm_timeout
                ))
            })?;
            crate::error::ensure!(
                at.accepted,
                Transfer,
                "message {} of the transfer with seqno {seqno} was refused by {to}: exit code {}{}",
                i + 1,
                at.exit_code
                    .map_or("none (no code ran)".to_string(), |c| c.to_string()),
                if messages[i].bounce {
                    ", its value bounced back"
                } else {
                    ""
                }
            );
            delivered.push(at);
        }
        Ok(Confirmed {
            seqno,
            lt: tx.lt,
            delivered,
        })
    }

    /// The transaction of `account` caused by the message with hash
    /// `message`, looked for among its newest until `deadline`.
    async fn find(
        &self,
        account: &StdAddr,
        message: &tycho_types::cell::HashBytes,
        deadline: tokio::time::Instant,
    ) -> Result<Option<crate::TxSummary>, Error> {
        loop {
            match self.chain.transactions(account, FIND_AMONG).await {
                Ok(list) => {
                    if let Some(tx) = list
                        .into_iter()
                        .find(|t| t.in_msg.as_ref() == Some(message))
                    {
                        return Ok(Some(tx));
                    }
                }
                Err(e) => tracing::debug!(error = %e, %account, "reading transactions"),
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(self.poll).await;
        }
    }
}

/// How many of an account's newest transactions are searched for the one
/// a message caused.
const FIND_AMONG: usize = 32;

/// How long after its seqno moved the wallet's transaction is looked for.
const WALLET_TX_GRACE: Duration = Duration::from_secs(10);
