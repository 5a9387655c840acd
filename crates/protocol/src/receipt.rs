//! Signed usage receipts: the worker counts tokens inside its enclave and signs
//! what it served with its identity key. The client node checks the receipt
//! against the worker's attested key before showing usage; the proxy keeps it
//! as the basis of what it charges and pays.

use serde::{Deserialize, Serialize};

use crate::frame::{FinishReason, Usage};
use crate::tls::{Fingerprint, Identity};

/// Domain separation for receipt signatures.
const CONTEXT: &[u8] = b"cocoon/receipt/v1";

/// What one request cost, as the worker that served it states.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// The sealed request's id (see `SealHeader`).
    pub request_id: [u8; 16],
    pub model: String,
    /// SHA-256 (hex) of the weights that served it, when the worker knows it.
    pub model_sha256: Option<String>,
    pub usage: Usage,
    pub finish_reason: FinishReason,
    /// Sealed answer chunks the worker sent: a receiver that opened fewer was
    /// handed a truncated answer.
    pub chunks: u64,
    /// The worker's identity.
    pub worker: Fingerprint,
    /// The price coefficient the worker served at (1000 = the network's
    /// base price), as it announced it.
    pub price_coefficient: u32,
    /// Unix milliseconds when signed.
    pub issued_at_ms: u64,
    /// A running total signed while the answer streams (`usage` so far,
    /// `chunks` sent so far; `finish_reason` means nothing yet): what is
    /// billed if the answer never ends with a final receipt.
    pub partial: bool,
}

/// A [`Receipt`] and the worker's Ed25519 signature over it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedReceipt {
    pub receipt: Receipt,
    pub signature: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    #[error("the receipt's key does not match its worker fingerprint")]
    KeyMismatch,
    #[error("the receipt's signature is invalid")]
    BadSignature,
    #[error("the receipt is for another request")]
    WrongRequest,
    #[error("the receipt's usage differs from the usage reported with the answer")]
    UsageMismatch,
    #[error("the receipt claims more than was delivered: {0}")]
    Overclaim(String),
}

/// Completion tokens an engine may count without streaming them: the end
/// of sequence, a stop sequence held back and dropped.
pub const UNSTREAMED_TOKENS: u64 = 32;

/// The longest stop sequence, bytes. A matched stop sequence is dropped
/// from the answer although its tokens were generated (at most one per
/// byte): capped so, they stay within [`UNSTREAMED_TOKENS`] and an honest
/// worker's receipt is never refused, nor a client served unbilled, for
/// the stop sequences it asked for.
pub const MAX_STOP_BYTES: usize = UNSTREAMED_TOKENS as usize;
/// Prompt tokens allowed beyond two per byte of the sealed request: the
/// chat template's own tokens. (A token of a byte-level BPE or
/// SentencePiece vocabulary covers at least one byte of text.)
pub const TEMPLATE_TOKENS: u64 = 1024;

/// The most prompt tokens a receipt may claim for a sealed request of
/// `request_bytes` (two per byte, plus the chat template's): what a proxy
/// holds against a client's credit for the prompt, and what it believes.
pub fn prompt_token_bound(request_bytes: u64) -> u64 {
    request_bytes
        .saturating_mul(2)
        .saturating_add(TEMPLATE_TOKENS)
}

/// What both the client node and the proxy saw of one answer, which a
/// receipt may not exceed. Both count the same bytes (the sealed sizes), so
/// they accept and refuse the same receipts: the proxy never bills what
/// the client node refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    /// The request's `max_tokens` (its sealed header's).
    pub max_tokens: Option<u32>,
    /// Padded plaintext bytes of the answer's sealed chunks (ciphertext
    /// less its tag): at least the text's bytes.
    pub streamed_bytes: u64,
    /// Bytes of the sealed request's ciphertext (its messages, parameters).
    pub request_bytes: u64,
}

impl Receipt {
    /// Refuse a receipt claiming more than was asked for or delivered: more
    /// completion tokens than `max_tokens`; more visible completion tokens
    /// (completion less reasoning) than one per streamed byte plus
    /// [`UNSTREAMED_TOKENS`] (every token of text is at least a byte); a
    /// prompt longer than the request could hold; cached or reasoning
    /// tokens beyond their totals. The client node and the proxy both apply
    /// it to the same numbers, so an overclaim is neither shown nor billed.
    /// These are bounds, not a count: within them the worker's word stands.
    pub fn within(&self, delivered: &Delivered) -> Result<(), ReceiptError> {
        let u = &self.usage;
        let over = |what: String| Err(ReceiptError::Overclaim(what));
        if u.cached_prompt_tokens > u.prompt_tokens || u.reasoning_tokens > u.completion_tokens {
            return over("cached or reasoning tokens beyond their totals".into());
        }
        if let Some(max) = delivered.max_tokens {
            if u.completion_tokens > u64::from(max) {
                return over(format!(
                    "{} completion tokens for max_tokens {max}",
                    u.completion_tokens
                ));
            }
        }
        let visible = u.completion_tokens - u.reasoning_tokens;
        if visible > delivered.streamed_bytes.saturating_add(UNSTREAMED_TOKENS) {
            return over(format!(
                "{visible} completion tokens for {} bytes streamed",
                delivered.streamed_bytes
            ));
        }
        let prompt_bound = prompt_token_bound(delivered.request_bytes);
        if u.prompt_tokens > prompt_bound {
            return over(format!(
                "{} prompt tokens for a {}-byte request",
                u.prompt_tokens, delivered.request_bytes
            ));
        }
        Ok(())
    }
}

impl SignedReceipt {
    /// Sign `receipt` with the worker's identity key.
    pub fn sign(receipt: Receipt, identity: &Identity) -> Self {
        let signature = identity.sign(&signed_bytes(&receipt));
        Self { receipt, signature }
    }

    /// Check the signature with the worker's identity key (its DER
    /// SubjectPublicKeyInfo, whose SHA-256 is the fingerprint in the receipt).
    pub fn verify(&self, worker_spki: &[u8]) -> Result<(), ReceiptError> {
        // ed25519-dalek (its AVX2 backend where the CPU has one): cheaper
        // than ring's portable verification, and the proxy checks every
        // receipt's signature (client nodes check its stamp, and the
        // signature only when there is none). Strict: small-order keys and
        // non-canonical signatures are refused.
        let (key, signature) = self.parts(worker_spki)?;
        key.verify_strict(&signed_bytes(&self.receipt), &signature)
            .map_err(|_| ReceiptError::BadSignature)
    }

    /// [`Self::verify`] for many receipts at once, each with its worker's
    /// identity: one Ed25519 batch equation for all (about half the cost per
    /// receipt at 16 and more), and only when the batch fails each one
    /// alone, so one bad signature costs its sender nothing it did not
    /// forge and never fails a good receipt. A batch uses the cofactored
    /// equation, which a signer could satisfy where the strict single check
    /// refuses (a crafted small-order component): that gains it nothing,
    /// as it signs its own receipts either way, and the keys it could craft
    /// them with (weak ones) are refused before any batch.
    pub fn verify_many(batch: &[(&SignedReceipt, &[u8])]) -> Vec<Result<(), ReceiptError>> {
        let mut results: Vec<Result<(), ReceiptError>> = Vec::with_capacity(batch.len());
        let mut keys = Vec::with_capacity(batch.len());
        let mut signatures = Vec::with_capacity(batch.len());
        let mut messages = Vec::with_capacity(batch.len());
        let mut checked = Vec::with_capacity(batch.len());
        for (i, (receipt, spki)) in batch.iter().enumerate() {
            match receipt.parts(spki) {
                Ok((key, signature)) if !key.is_weak() => {
                    keys.push(key);
                    signatures.push(signature);
                    messages.push(signed_bytes(&receipt.receipt));
                    checked.push(i);
                    results.push(Ok(()));
                }
                Ok(_) => results.push(Err(ReceiptError::KeyMismatch)),
                Err(e) => results.push(Err(e)),
            }
        }
        let slices: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
        let together =
            checked.len() > 1 && ed25519_dalek::verify_batch(&slices, &signatures, &keys).is_ok();
        if !together {
            for (n, &i) in checked.iter().enumerate() {
                results[i] = keys[n]
                    .verify_strict(slices[n], &signatures[n])
                    .map_err(|_| ReceiptError::BadSignature);
            }
        }
        results
    }

    /// The worker's verifying key (from its identity, which must be the one
    /// the receipt names) and the signature, decoded.
    fn parts(
        &self,
        worker_spki: &[u8],
    ) -> Result<(ed25519_dalek::VerifyingKey, ed25519_dalek::Signature), ReceiptError> {
        if Fingerprint::of_spki(worker_spki) != self.receipt.worker {
            return Err(ReceiptError::KeyMismatch);
        }
        let raw: &[u8; 32] = crate::tls::ed25519_raw_key(worker_spki)
            .and_then(|raw| raw.try_into().ok())
            .ok_or(ReceiptError::KeyMismatch)?;
        let key = verifying_key(raw)?;
        let signature = ed25519_dalek::Signature::from_slice(&self.signature)
            .map_err(|_| ReceiptError::BadSignature)?;
        Ok((key, signature))
    }
}

/// Workers' verifying keys, decoded once: decoding a key is a square root
/// in the field, about a fifth of a verification, and a node sees few
/// workers and many receipts from each. Bounded: cleared when full.
fn verifying_key(raw: &[u8; 32]) -> Result<ed25519_dalek::VerifyingKey, ReceiptError> {
    use crate::sync::LockRecover;
    use std::collections::HashMap;
    use std::sync::{LazyLock, Mutex};
    const MAX_KEYS: usize = 4_096;
    static KEYS: LazyLock<Mutex<HashMap<[u8; 32], ed25519_dalek::VerifyingKey>>> =
        LazyLock::new(Mutex::default);
    if let Some(key) = KEYS.locked().get(raw) {
        return Ok(*key);
    }
    let key =
        ed25519_dalek::VerifyingKey::from_bytes(raw).map_err(|_| ReceiptError::KeyMismatch)?;
    let mut keys = KEYS.locked();
    if keys.len() >= MAX_KEYS {
        keys.clear();
    }
    keys.insert(*raw, key);
    Ok(key)
}

impl SignedReceipt {
    /// Everything a receiver checks: signed by the worker whose identity is
    /// `worker_spki`, for the request `request_id` of `model`, stating exactly
    /// `usage` (what came with the answer).
    pub fn check(
        &self,
        worker_spki: &[u8],
        request_id: &[u8; 16],
        model: &str,
        usage: &Usage,
    ) -> Result<(), ReceiptError> {
        self.verify(worker_spki)?;
        self.check_fields(request_id, model, usage)
    }

    /// [`Self::check`] but the signature: for the request `request_id` of
    /// `model`, stating exactly `usage`. For a receiver that authenticated
    /// the receipt otherwise (a client node, by the answer's stamp).
    pub fn check_fields(
        &self,
        request_id: &[u8; 16],
        model: &str,
        usage: &Usage,
    ) -> Result<(), ReceiptError> {
        if &self.receipt.request_id != request_id || self.receipt.model != model {
            return Err(ReceiptError::WrongRequest);
        }
        if &self.receipt.usage != usage {
            return Err(ReceiptError::UsageMismatch);
        }
        Ok(())
    }
}

pub(crate) fn signed_bytes(receipt: &Receipt) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(CONTEXT.len() + 128 + receipt.model.len());
    bytes.extend_from_slice(CONTEXT);
    postcard::to_extend(receipt, bytes).expect("receipt serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receipt(worker: Fingerprint) -> Receipt {
        Receipt {
            request_id: [7; 16],
            price_coefficient: 1000,
            model: "m".into(),
            model_sha256: Some("ab".repeat(32)),
            usage: Usage {
                prompt_tokens: 10,
                completion_tokens: 5,
                cached_prompt_tokens: 2,
                reasoning_tokens: 0,
            },
            finish_reason: FinishReason::Stop,
            chunks: 3,
            worker,
            issued_at_ms: 1,
            partial: false,
        }
    }

    #[test]
    fn signed_receipts_verify_and_any_change_breaks_them() {
        let worker = Identity::generate().unwrap();
        let other = Identity::generate().unwrap();
        let signed = SignedReceipt::sign(receipt(worker.fingerprint()), &worker);
        signed.verify(worker.spki()).unwrap();
        assert_eq!(
            signed.verify(other.spki()),
            Err(ReceiptError::KeyMismatch),
            "another worker's key"
        );

        let mut inflated = signed.clone();
        inflated.receipt.usage.completion_tokens += 1;
        assert_eq!(
            inflated.verify(worker.spki()),
            Err(ReceiptError::BadSignature)
        );

        let mut bad = signed.clone();
        bad.signature[0] ^= 1;
        assert_eq!(bad.verify(worker.spki()), Err(ReceiptError::BadSignature));

        // Signed by another key but claiming this worker: fails.
        let forged = SignedReceipt::sign(receipt(worker.fingerprint()), &other);
        assert_eq!(
            forged.verify(worker.spki()),
            Err(ReceiptError::BadSignature)
        );

        // The receiver's checks: this request, this model, this usage.
        let r = &signed.receipt;
        signed
            .check(worker.spki(), &r.request_id, &r.model, &r.usage)
            .unwrap();
        assert_eq!(
            signed.check(worker.spki(), &[0; 16], &r.model, &r.usage),
            Err(ReceiptError::WrongRequest)
        );
        assert_eq!(
            signed.check(worker.spki(), &r.request_id, "other", &r.usage),
            Err(ReceiptError::WrongRequest)
        );
        let more = Usage {
            completion_tokens: 6,
            ..r.usage
        };
        assert_eq!(
            signed.check(worker.spki(), &r.request_id, &r.model, &more),
            Err(ReceiptError::UsageMismatch)
        );
    }

    #[test]
    fn a_batch_refuses_exactly_its_forged_receipts() {
        let workers: Vec<Identity> = (0..3).map(|_| Identity::generate().unwrap()).collect();
        let mut signed: Vec<SignedReceipt> = (0..17)
            .map(|i| {
                let worker = &workers[i % 3];
                let mut r = receipt(worker.fingerprint());
                r.request_id = [i as u8; 16];
                SignedReceipt::sign(r, worker)
            })
            .collect();
        let spki = |i: usize| workers[i % 3].spki();
        let all_good = |signed: &[SignedReceipt]| {
            let batch: Vec<_> = signed
                .iter()
                .enumerate()
                .map(|(i, r)| (r, spki(i)))
                .collect();
            SignedReceipt::verify_many(&batch)
        };
        assert!(all_good(&signed).iter().all(Result::is_ok));
        // Inflated after signing, another worker's signature, a stranger's key.
        signed[4].receipt.usage.completion_tokens += 100;
        signed[10] = SignedReceipt::sign(signed[10].receipt.clone(), &workers[0]);
        let stranger = Identity::generate().unwrap();
        let mut batch: Vec<_> = signed
            .iter()
            .enumerate()
            .map(|(i, r)| (r, spki(i)))
            .collect();
        batch[13].1 = stranger.spki();
        let results = SignedReceipt::verify_many(&batch);
        for (i, result) in results.iter().enumerate() {
            let expected = match i {
                4 => Err(ReceiptError::BadSignature),
                10 => Err(ReceiptError::BadSignature),
                13 => Err(ReceiptError::KeyMismatch),
                _ => Ok(()),
            };
            assert_eq!(result, &expected, "receipt {i}");
        }
        // One receipt, or none, is the single check.
        assert_eq!(
            SignedReceipt::verify_many(&batch[4..5]),
            vec![Err(ReceiptError::BadSignature)]
        );
        assert!(SignedReceipt::verify_many(&[]).is_empty());
    }

    #[test]
    fn a_receipt_may_not_claim_more_than_was_delivered() {
        let worker = Identity::generate().unwrap().fingerprint();
        let with = |prompt: u64, completion: u64| {
            let mut r = receipt(worker);
            r.usage = Usage {
                prompt_tokens: prompt,
                completion_tokens: completion,
                ..Usage::default()
            };
            r
        };
        let seen = Delivered {
            max_tokens: Some(100),
            streamed_bytes: 40,
            request_bytes: 50,
        };
        // At each bound: accepted; one past it: refused.
        assert!(with(1124, 72).within(&seen).is_ok());
        assert!(with(1124, 73).within(&seen).is_err());
        assert!(with(1125, 72).within(&seen).is_err());
        let capped = Delivered {
            max_tokens: Some(20),
            ..seen
        };
        assert!(with(5, 20).within(&capped).is_ok());
        assert!(matches!(
            with(5, 21).within(&capped),
            Err(ReceiptError::Overclaim(m)) if m.contains("max_tokens 20")
        ));
        // Nothing streamed: only what an engine may count unstreamed, plus
        // what it says it spent reasoning (bounded by max_tokens only).
        let nothing = Delivered {
            max_tokens: None,
            streamed_bytes: 0,
            request_bytes: 0,
        };
        assert!(with(0, UNSTREAMED_TOKENS).within(&nothing).is_ok());
        assert!(with(0, UNSTREAMED_TOKENS + 1).within(&nothing).is_err());
        let mut reasoned = with(0, 500);
        reasoned.usage.reasoning_tokens = 480;
        assert!(reasoned.within(&nothing).is_ok());
        let mut cached = with(10, 5);
        cached.usage.cached_prompt_tokens = 11;
        assert!(cached.within(&seen).is_err());
    }
}
