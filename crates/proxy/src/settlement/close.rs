//! The proxy contract's close, driven by the node: once its operator asks
//! (`RequestProxyClose`, `cocoon wallet close-proxy`), the node serves no
//! new request, charges every client contract whatever the amount, stops
//! paying out its own earnings, and after the contract's close delay sends
//! `FinishProxyClose` (signed with the proxy's key), which returns the
//! contract's balance to the operator. It waits for its workers to claim
//! what they are owed first; a worker that has not claimed after another
//! close delay (at least a day) is left out, so nothing stays locked for ever. Workers claim
//! everything as soon as they see the close request (`cocoon_worker`'s
//! earnings), so an operator finishing the close itself takes nothing of
//! theirs.

use cocoon_chain::{proxy as proxy_msg, signed, Outgoing, ProxyState};
use cocoon_protocol::sync::LockRecover;
use cocoon_protocol::{ErrorKind, WireError};

use super::{contract_error, Settlement, SettlementError, CHARGE_VALUE};

/// How long after the close is due workers still get to claim before the
/// node closes anyway: the contract's close delay, at least a day.
pub const CLAIM_GRACE_SECS: u64 = 86_400;

/// The close as a round sees it on chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closing {
    /// Chain time (Unix seconds) the operator asked to close.
    pub requested_at: u32,
    /// The contract's close delay, seconds.
    pub delay: u32,
    /// `FinishProxyClose` went through: the contract is gone.
    pub finished: bool,
}

impl Closing {
    /// The earliest chain time the contract accepts `FinishProxyClose`.
    pub fn due(&self) -> u64 {
        u64::from(self.requested_at) + u64::from(self.delay)
    }
}

impl Settlement {
    /// The close this proxy's contract is in, once a round has seen it.
    pub fn closing(&self) -> Option<Closing> {
        *self.closing.locked()
    }

    /// Why no new request is served: the proxy contract is closing.
    pub(super) fn refuse_if_closing(&self) -> Result<(), WireError> {
        match self.closing() {
            None => Ok(()),
            Some(closing) => Err(WireError::new(
                ErrorKind::NoWorker,
                format!(
                    "this proxy is closing: its operator asked to close its contract at {} (Unix time); use another proxy",
                    closing.requested_at
                ),
            )),
        }
    }

    /// Note a close request the proxy contract shows (`state`).
    pub(super) fn see_close(&self, state: &ProxyState) {
        if state.close_requested_at == 0 {
            return;
        }
        let mut closing = self.closing.locked();
        if closing.is_none() {
            tracing::warn!(
                requested_at = state.close_requested_at,
                delay = state.close_delay,
                "the proxy contract is closing: no new requests; every client is charged; the contract closes after the delay once workers have claimed"
            );
            *closing = Some(Closing {
                requested_at: state.close_requested_at,
                delay: state.close_delay,
                finished: false,
            });
        }
    }

    /// Send `FinishProxyClose` if it is due and the workers were paid (or
    /// had another close delay, at least [`CLAIM_GRACE_SECS`], to claim). Whether the contract closed.
    pub(super) async fn finish_close_if_due(&self) -> Result<bool, SettlementError> {
        let Some(closing) = self.closing() else {
            return Ok(false);
        };
        if closing.finished {
            return Ok(true);
        }
        let now = (self.clock)();
        if now < closing.due() {
            return Ok(false);
        }
        let state = self.proxy_state().await?;
        let unclaimed = self.unclaimed(&state);
        if unclaimed > 0 {
            if now < closing.due() + u64::from(closing.delay).max(CLAIM_GRACE_SECS) {
                tracing::info!(%unclaimed, "the close is due; waiting for workers to claim what they are owed");
                return Ok(false);
            }
            tracing::warn!(%unclaimed, "closing although workers have not claimed everything after a second close delay");
        }
        let signature = self
            .signer
            .sign_amount(signed::CLOSE, &self.proxy_contract, 0)?;
        self.sender
            .send(&[Outgoing {
                to: self.proxy_contract.clone(),
                value: CHARGE_VALUE,
                bounce: true,
                body: proxy_msg::finish_close(&signature)?,
                init: None,
            }])
            .await
            .map_err(SettlementError::Transfer)?;
        let gone = !self
            .chain
            .account(&self.proxy_contract)
            .await
            .map_err(|e| contract_error("proxy contract", &self.proxy_contract)(e))?
            .is_active();
        if gone {
            tracing::info!(contract = %self.proxy_contract, "the proxy contract is closed; its balance went to the operator's wallet");
            if let Some(c) = self.closing.locked().as_mut() {
                c.finished = true;
            }
        }
        Ok(gone)
    }
}
