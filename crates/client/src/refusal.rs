//! Why the client node refuses an answer's usage receipt: each reason is
//! an attack it stops (a proxy passing one worker's answer off under
//! another's receipt, a swapped stamp, a truncated answer...).

use cocoon_protocol::receipt::ReceiptError;
use cocoon_protocol::tls::Fingerprint;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptRefused {
    #[error("the worker sent no receipt")]
    Missing,
    #[error("signed by a worker the request was not sealed to")]
    NotARecipient,
    #[error("signed by {signed}, but the answer was sealed by {sealed}")]
    OtherWorker {
        signed: Fingerprint,
        sealed: Fingerprint,
    },
    #[error("the receipt states price coefficient {stated}, the worker was listed at {listed}")]
    Price { stated: u32, listed: u32 },
    #[error("the receipt names weights {stated}, the worker's attested configuration {attested}")]
    Weights { stated: String, attested: String },
    #[error("its stamp does not match this answer's key (altered, re-signed or truncated)")]
    Stamp,
    #[error(transparent)]
    Receipt(#[from] ReceiptError),
    #[error("the receipt's finish reason differs from the answer's")]
    FinishReason,
    #[error("the worker sent {sent} chunks, {arrived} arrived (truncated answer)")]
    Truncated { sent: u64, arrived: u64 },
    #[error("a running total where the final receipt belongs, or the other way round")]
    Kind,
    #[error("a running total counting {counted} chunks when {arrived} had arrived")]
    Ahead { counted: u64, arrived: u64 },
    #[error("a running total lower than the one before")]
    Shrank,
}
