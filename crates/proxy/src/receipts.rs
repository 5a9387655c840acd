//! The workers' signed usage receipts the proxy has seen: each is checked
//! against the key of the worker the request was routed to before it counts.
//! Totals per worker are what settlement pays from; the most recent receipts
//! are kept for audit.
//!
//! Signatures are checked in batches by one task per proxy: every answer
//! that ends while a batch is being checked joins the next one (one Ed25519
//! batch equation, about half a single check's cost per receipt at 16). An
//! answer's `Done` is forwarded only once its receipt was checked and what
//! follows from it (billing, the worker's ranking) recorded, so a client
//! that hangs up meanwhile is billed all the same.

use cocoon_protocol::sync::LockRecover;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};
use tokio::sync::{mpsc, oneshot};

use cocoon_protocol::receipt::{Delivered, ReceiptError};
use cocoon_protocol::tls::Fingerprint;
use cocoon_protocol::{SealHeader, SignedReceipt, Usage, WorkerKey};

/// Receipts kept for audit.
const KEEP: usize = 10_000;

/// Receipts checked together at most.
const MAX_BATCH: usize = 64;

/// What follows from a receipt's check: its verified usage, or why it was
/// refused.
pub type Outcome = Box<dyn FnOnce(Result<Usage, Refused>) + Send>;

/// Why an answer's receipt was not billed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the worker sent no receipt")]
    Missing,
    #[error("the receipt states price coefficient {stated}, the request was sealed at {listed}")]
    Price { stated: u32, listed: u32 },
    #[error(transparent)]
    Receipt(#[from] ReceiptError),
    #[error("the receipt checker stopped")]
    CheckerStopped,
}

#[derive(Default)]
pub struct ReceiptLog {
    inner: Arc<Mutex<Inner>>,
    /// The batch checker, started on first use (inside the runtime).
    checker: OnceLock<mpsc::UnboundedSender<Pending>>,
}

#[derive(Default)]
struct Inner {
    recent: VecDeque<SignedReceipt>,
    totals: HashMap<Fingerprint, Usage>,
    rejected: u64,
}

/// The answer a receipt is for, as the proxy saw it.
pub struct Answered<'a> {
    pub header: &'a SealHeader,
    /// The worker the request was routed to.
    pub worker: &'a WorkerKey,
    /// The usage sent beside the receipt.
    pub usage: &'a Usage,
    /// The price coefficient the client node listed for the worker (in the seal).
    pub price_coefficient: u32,
    pub delivered: Delivered,
}

/// A receipt whose fields passed, waiting for its signature check.
struct Pending {
    receipt: SignedReceipt,
    identity: Vec<u8>,
    then: Outcome,
    recorded: oneshot::Sender<Result<Usage, Refused>>,
}

impl ReceiptLog {
    /// Check `receipt` for the request with `header` served by `worker`, with
    /// `usage` reported beside it, count it, and run `then` with the verified
    /// usage or why it was rejected: `then` runs even if this future is
    /// dropped once the receipt was handed to the checker (what bills must
    /// go there). Returns the same outcome, once `then` ran.
    pub async fn record(
        &self,
        answer: Answered<'_>,
        receipt: Option<SignedReceipt>,
        then: Outcome,
    ) -> Result<Usage, Refused> {
        let Answered {
            header,
            worker,
            usage,
            price_coefficient,
            delivered,
        } = answer;
        let fields = match receipt {
            None => Err(Refused::Missing),
            Some(r) if r.receipt.price_coefficient != price_coefficient => Err(Refused::Price {
                stated: r.receipt.price_coefficient,
                listed: price_coefficient,
            }),
            Some(r) => r
                .check_fields(&header.request_id, &header.model, usage)
                .and_then(|()| r.receipt.within(&delivered))
                .map(|()| r)
                .map_err(Refused::from),
        };
        let receipt = match fields {
            Ok(r) => r,
            Err(e) => return settle(&self.inner, Err(e), then),
        };
        let (recorded, done) = oneshot::channel();
        let pending = Pending {
            receipt,
            identity: worker.identity.clone(),
            then,
            recorded,
        };
        match self.checker().send(pending) {
            // The checker always answers; a closed channel means the
            // runtime is going down with it.
            Ok(()) => done.await.unwrap_or(Err(Refused::CheckerStopped)),
            // No checker (the runtime stopped it): check here, alone.
            Err(mpsc::error::SendError(pending)) => {
                check(&self.inner, vec![pending]);
                done.await.unwrap_or(Err(Refused::CheckerStopped))
            }
        }
    }

    /// [`Self::record`] for a receipt billed from a destructor: checks the
    /// fields now and hands the receipt to the batch checker (or, before
    /// one was started, checks it here) without waiting; `then` runs with
    /// the outcome either way.
    pub fn record_detached(&self, answer: Answered<'_>, receipt: SignedReceipt, then: Outcome) {
        let fields = receipt
            .check_fields(
                &answer.header.request_id,
                &answer.header.model,
                answer.usage,
            )
            .and_then(|()| receipt.receipt.within(&answer.delivered))
            .map_err(Refused::from);
        if let Err(e) = fields {
            let _ = settle(&self.inner, Err(e), then);
            return;
        }
        let (recorded, _) = oneshot::channel();
        let pending = Pending {
            receipt,
            identity: answer.worker.identity.clone(),
            then,
            recorded,
        };
        let pending = match self.checker.get() {
            Some(checker) => match checker.send(pending) {
                Ok(()) => return,
                Err(mpsc::error::SendError(pending)) => pending,
            },
            None => pending,
        };
        check(&self.inner, vec![pending]);
    }

    fn checker(&self) -> &mpsc::UnboundedSender<Pending> {
        self.checker.get_or_init(|| {
            let (tx, mut rx) = mpsc::unbounded_channel::<Pending>();
            let inner = self.inner.clone();
            tokio::spawn(async move {
                // Ends when the log (the only sender) is dropped, after
                // checking everything sent before.
                while let Some(first) = rx.recv().await {
                    // Let the answers already running end first: under
                    // load their receipts join this batch (4-5 a batch at
                    // 16 in flight in `cocoon bench-gateways`, 1.3 without).
                    tokio::task::yield_now().await;
                    let mut batch = vec![first];
                    while batch.len() < MAX_BATCH {
                        match rx.try_recv() {
                            Ok(next) => batch.push(next),
                            Err(_) => break,
                        }
                    }
                    check(&inner, batch);
                }
            });
            tx
        })
    }

    /// Usage served by `worker` according to its verified receipts.
    pub fn total(&self, worker: &Fingerprint) -> Usage {
        let inner = self.inner.locked();
        inner.totals.get(worker).copied().unwrap_or_default()
    }

    /// Receipts refused (missing, forged, or for another request).
    pub fn rejected(&self) -> u64 {
        self.inner.locked().rejected
    }

    /// Verified receipts kept (the most recent ones).
    pub fn recent(&self) -> Vec<SignedReceipt> {
        let inner = self.inner.locked();
        inner.recent.iter().cloned().collect()
    }
}

/// Check a batch's signatures and record each outcome.
fn check(inner: &Mutex<Inner>, batch: Vec<Pending>) {
    let pairs: Vec<(&SignedReceipt, &[u8])> = batch
        .iter()
        .map(|p| (&p.receipt, p.identity.as_slice()))
        .collect();
    let results = SignedReceipt::verify_many(&pairs);
    for (pending, result) in batch.into_iter().zip(results) {
        let Pending {
            receipt,
            then,
            recorded,
            ..
        } = pending;
        match result {
            Ok(()) => {
                let usage = receipt.receipt.usage;
                {
                    let mut inner = inner.locked();
                    let total = inner.totals.entry(receipt.receipt.worker).or_default();
                    total.prompt_tokens += usage.prompt_tokens;
                    total.completion_tokens += usage.completion_tokens;
                    total.cached_prompt_tokens += usage.cached_prompt_tokens;
                    total.reasoning_tokens += usage.reasoning_tokens;
                    if inner.recent.len() == KEEP {
                        inner.recent.pop_front();
                    }
                    inner.recent.push_back(receipt);
                }
                then(Ok(usage));
                let _ = recorded.send(Ok(usage));
            }
            Err(e) => {
                let _ = recorded.send(settle(inner, Err(e.into()), then));
            }
        }
    }
}

/// Record a refusal and run `then`; returns the refusal.
fn settle(
    inner: &Mutex<Inner>,
    refusal: Result<Usage, Refused>,
    then: Outcome,
) -> Result<Usage, Refused> {
    inner.locked().rejected += 1;
    then(refusal.clone());
    refusal
}

#[cfg(test)]
mod tests {
    use super::*;
    use cocoon_protocol::tls::Identity;
    use cocoon_protocol::{FinishReason, Receipt};

    fn header(id: u8) -> SealHeader {
        SealHeader {
            request_id: [id; 16],
            model: "m".into(),
            max_tokens: Some(64),
            sent_at_ms: 1,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_answers_at_once_are_each_billed_or_refused_on_their_own() {
        let worker = Identity::generate().unwrap();
        let key = WorkerKey {
            identity: worker.spki().to_vec(),
            sealing_key: [0; 32],
            evidence: None,
            configuration: None,
            anchor: None,
            gpus: Vec::new(),
        };
        let log = Arc::new(ReceiptLog::default());
        let usage = Usage {
            prompt_tokens: 3,
            completion_tokens: 4,
            ..Usage::default()
        };
        let delivered = Delivered {
            max_tokens: Some(64),
            streamed_bytes: 64,
            request_bytes: 512,
        };
        let billed = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for id in 0..40u8 {
            let mut signed = SignedReceipt::sign(
                Receipt {
                    request_id: [id; 16],
                    model: "m".into(),
                    model_sha256: None,
                    usage,
                    finish_reason: FinishReason::Stop,
                    chunks: 1,
                    worker: worker.fingerprint(),
                    price_coefficient: 1000,
                    issued_at_ms: 1,
                    partial: false,
                },
                &worker,
            );
            // Every fifth receipt is forged after signing.
            if id % 5 == 0 {
                signed.signature[7] ^= 1;
            }
            let (log, key, billed) = (log.clone(), key.clone(), billed.clone());
            tasks.push(tokio::spawn(async move {
                let outcomes = billed.clone();
                let then: Outcome = Box::new(move |r| outcomes.locked().push((id, r.is_ok())));
                let result = log
                    .record(
                        Answered {
                            header: &header(id),
                            worker: &key,
                            usage: &usage,
                            price_coefficient: 1000,
                            delivered,
                        },
                        Some(signed),
                        then,
                    )
                    .await;
                assert_eq!(result.is_ok(), id % 5 != 0, "receipt {id}");
                // `record` returns only after the outcome was recorded.
                assert!(billed.locked().iter().any(|(i, _)| *i == id));
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let billed = billed.locked();
        assert_eq!(billed.len(), 40);
        for (id, ok) in billed.iter() {
            assert_eq!(*ok, id % 5 != 0, "receipt {id}");
        }
        assert_eq!(log.rejected(), 8);
        assert_eq!(log.recent().len(), 32);
        assert_eq!(log.total(&worker.fingerprint()).completion_tokens, 32 * 4);
    }
}
