//! The workers' signed usage receipts the proxy has seen: each is checked
//! against the key of the worker the request was routed to before it counts.
//! Totals per worker are what settlement pays from; the most recent receipts
//! are kept for audit. (Persistence and on-chain settlement come with the
//! payments work.)

use cocoon_protocol::sync::LockRecover;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use cocoon_protocol::receipt::Delivered;
use cocoon_protocol::tls::Fingerprint;
use cocoon_protocol::{SealHeader, SignedReceipt, Usage, WorkerKey};

/// Receipts kept for audit.
const KEEP: usize = 10_000;

#[derive(Default)]
pub struct ReceiptLog {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    recent: VecDeque<SignedReceipt>,
    totals: HashMap<Fingerprint, Usage>,
    rejected: u64,
}

impl ReceiptLog {
    /// Check `receipt` for the request with `header` served by `worker`, with
    /// `usage` reported beside it, and count it: the verified usage, or why
    /// it was rejected.
    pub fn record(
        &self,
        header: &SealHeader,
        worker: &WorkerKey,
        receipt: Option<&SignedReceipt>,
        usage: &Usage,
        price_coefficient: u32,
        delivered: &Delivered,
    ) -> Result<Usage, String> {
        let checked = match receipt {
            None => Err("the worker sent no receipt".to_string()),
            Some(r) if r.receipt.price_coefficient != price_coefficient => Err(format!(
                "the receipt states price coefficient {}, the worker announced {price_coefficient}",
                r.receipt.price_coefficient
            )),
            Some(r) => r
                .check(&worker.identity, &header.request_id, &header.model, usage)
                .and_then(|()| r.receipt.within(delivered))
                .map(|()| r)
                .map_err(|e| e.to_string()),
        };
        let mut inner = self.inner.locked();
        match checked {
            Ok(r) => {
                let total = inner.totals.entry(r.receipt.worker).or_default();
                total.prompt_tokens += r.receipt.usage.prompt_tokens;
                total.completion_tokens += r.receipt.usage.completion_tokens;
                total.cached_prompt_tokens += r.receipt.usage.cached_prompt_tokens;
                total.reasoning_tokens += r.receipt.usage.reasoning_tokens;
                if inner.recent.len() == KEEP {
                    inner.recent.pop_front();
                }
                inner.recent.push_back(r.clone());
                Ok(r.receipt.usage)
            }
            Err(e) => {
                inner.rejected += 1;
                Err(e)
            }
        }
    }

    /// Usage served by `worker` according to its verified receipts.
    pub fn total(&self, worker: &Fingerprint) -> Usage {
        let inner = self.inner.locked();
        inner.totals.get(worker).copied().unwrap_or_default()
    }

    /// Receipts refused (missing, forged, or for another request).
    pub fn rejected(&self) -> u64 {
        self.inner.lock().map(|i| i.rejected).unwrap_or(0)
    }

    /// Verified receipts kept (the most recent ones).
    pub fn recent(&self) -> Vec<SignedReceipt> {
        let inner = self.inner.locked();
        inner.recent.iter().cloned().collect()
    }
}
