//! Answers that end without `Done` (the client hung up, the worker failed
//! or went away, a deadline passed) are billed at the worker's last signed
//! running total (`Event::Progress`, sent after the first chunk and then
//! every few tokens). Without it, a client that closed its connection just
//! before the end got the whole answer free and the worker was unpaid.
//! Running totals are checked like receipts (for this request, at the
//! price the request was sealed at, never more than was delivered when it came, never
//! less than the one before) and their signature when billed, in the
//! receipt checker's batches.

use std::sync::Arc;

use cocoon_chain::StdAddr;
use cocoon_protocol::receipt::Delivered;
use cocoon_protocol::{SealHeader, SignedReceipt, WorkerKey};

use crate::books::Books;
use crate::receipts::{self, Answered, ReceiptLog, Refused};

/// Who pays and who is paid for an answer, when the proxy bills.
pub(crate) type Bill = (Option<Arc<Books>>, Option<StdAddr>, Option<StdAddr>);

/// One answer's latest running total, billed if the answer never ends.
pub(crate) struct Unfinished {
    receipts: Arc<ReceiptLog>,
    header: SealHeader,
    worker: Arc<WorkerKey>,
    coefficient: u32,
    bill: Bill,
    latest: Option<(SignedReceipt, Delivered)>,
    /// `Done` came: its receipt bills the answer.
    ended: bool,
}

/// Why a running total was not kept.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProgressRefused {
    #[error("a final receipt sent as a running total")]
    NotPartial,
    #[error("fewer tokens than the running total before")]
    Shrank,
    #[error(transparent)]
    Receipt(#[from] Refused),
}

impl Unfinished {
    pub fn new(
        receipts: Arc<ReceiptLog>,
        header: SealHeader,
        worker: Arc<WorkerKey>,
        coefficient: u32,
        bill: Bill,
    ) -> Self {
        Self {
            receipts,
            header,
            worker,
            coefficient,
            bill,
            latest: None,
            ended: false,
        }
    }

    /// Keep `signed` as the answer's running total if it is one for this
    /// answer that claims no more than `delivered` so far and no less
    /// than the last.
    pub fn progress(
        &mut self,
        signed: &SignedReceipt,
        delivered: Delivered,
    ) -> Result<(), ProgressRefused> {
        let r = &signed.receipt;
        if !r.partial {
            return Err(ProgressRefused::NotPartial);
        }
        if r.price_coefficient != self.coefficient {
            return Err(Refused::Price {
                stated: r.price_coefficient,
                listed: self.coefficient,
            }
            .into());
        }
        signed
            .check_fields(&self.header.request_id, &self.header.model, &r.usage)
            .and_then(|()| r.within(&delivered))
            .map_err(Refused::from)?;
        if let Some((last, _)) = &self.latest {
            let (was, now) = (&last.receipt.usage, &r.usage);
            if now.completion_tokens < was.completion_tokens
                || now.prompt_tokens < was.prompt_tokens
            {
                return Err(ProgressRefused::Shrank);
            }
        }
        self.latest = Some((signed.clone(), delivered));
        Ok(())
    }

    /// The answer ended with `Done`: its final receipt bills it.
    pub fn ended(&mut self) {
        self.ended = true;
    }
}

impl Drop for Unfinished {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        let Some((signed, delivered)) = self.latest.take() else {
            return;
        };
        let request = u128::from_be_bytes(self.header.request_id);
        let coefficient = self.coefficient;
        let bill = self.bill.clone();
        let then: receipts::Outcome = Box::new(move |checked| match checked {
            Ok(usage) => {
                if let (Some(books), Some(client), Some(worker)) = bill {
                    books.record(&client, &worker, &usage, coefficient);
                }
                tracing::debug!(request = %format_args!("{request:032x}"), completion_tokens = usage.completion_tokens, "unfinished answer billed at its running total");
            }
            Err(e) => {
                tracing::warn!(request = %format_args!("{request:032x}"), error = %e, "running total rejected; unfinished answer not billed");
            }
        });
        let usage = signed.receipt.usage;
        self.receipts.record_detached(
            Answered {
                header: &self.header,
                worker: &self.worker,
                usage: &usage,
                price_coefficient: coefficient,
                delivered,
            },
            signed,
            then,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cocoon_protocol::tls::Identity;
    use cocoon_protocol::{FinishReason, Receipt, Usage};

    fn header() -> SealHeader {
        SealHeader {
            request_id: [9; 16],
            model: "m".into(),
            max_tokens: Some(64),
            sent_at_ms: 1,
        }
    }

    fn total(worker: &Identity, completion: u64, partial: bool, price: u32) -> SignedReceipt {
        SignedReceipt::sign(
            Receipt {
                request_id: [9; 16],
                model: "m".into(),
                model_sha256: None,
                usage: Usage {
                    prompt_tokens: 5,
                    completion_tokens: completion,
                    ..Usage::default()
                },
                finish_reason: FinishReason::Stop,
                chunks: 1,
                worker: worker.fingerprint(),
                price_coefficient: price,
                issued_at_ms: 1,
                partial,
            },
            worker,
        )
    }

    const DELIVERED: Delivered = Delivered {
        max_tokens: Some(64),
        streamed_bytes: 64,
        request_bytes: 512,
    };

    fn unfinished(worker: &Identity, log: &Arc<ReceiptLog>) -> Unfinished {
        let key = WorkerKey {
            identity: worker.spki().to_vec(),
            sealing_key: [0; 32],
            evidence: None,
            configuration: None,
            anchor: None,
            gpus: Vec::new(),
        };
        Unfinished::new(
            log.clone(),
            header(),
            Arc::new(key),
            1000,
            (None, None, None),
        )
    }

    /// The attack: a worker (or the proxy's own bug) hands the proxy
    /// running totals it must not bill: above what was delivered, at
    /// another price, a final receipt posing as one, lower than the last,
    /// or forged. None of them is billed; the last good one is.
    #[test]
    fn only_good_running_totals_are_kept_and_billed() {
        let worker = Identity::generate().unwrap();
        let log = Arc::new(ReceiptLog::default());
        let mut answer = unfinished(&worker, &log);
        answer
            .progress(&total(&worker, 10, true, 1000), DELIVERED)
            .unwrap();
        for (case, bad) in [
            ("overclaim", total(&worker, 500, true, 1000)),
            ("price", total(&worker, 12, true, 2000)),
            ("final", total(&worker, 12, false, 1000)),
            ("shrank", total(&worker, 9, true, 1000)),
        ] {
            assert!(answer.progress(&bad, DELIVERED).is_err(), "{case}");
        }
        drop(answer);
        // Billed once, the good total.
        assert_eq!(log.total(&worker.fingerprint()).completion_tokens, 10);

        // A forged signature is caught when billed.
        let mut answer = unfinished(&worker, &log);
        let mut forged = total(&worker, 20, true, 1000);
        forged.signature[3] ^= 1;
        answer.progress(&forged, DELIVERED).unwrap();
        drop(answer);
        assert_eq!(log.total(&worker.fingerprint()).completion_tokens, 10);
        assert_eq!(log.rejected(), 1);

        // An answer that ended with `Done` is billed by its final receipt.
        let mut answer = unfinished(&worker, &log);
        answer
            .progress(&total(&worker, 30, true, 1000), DELIVERED)
            .unwrap();
        answer.ended();
        drop(answer);
        assert_eq!(log.total(&worker.fingerprint()).completion_tokens, 10);
    }
}
