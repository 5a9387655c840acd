//! End-to-end sealing between a client node and the worker's enclave, so the
//! proxy in between routes ciphertext.
//!
//! HPKE (RFC 9180) with DHKEM(X25519, HKDF-SHA256), HKDF-SHA256 and
//! ChaCha20-Poly1305, once per (client node, worker) pair: a sealed session
//! ([`session`]) whose epoch keys ratchet forward each minute, so a
//! steady-state request does no asymmetric crypto. A request is encrypted
//! once under a fresh content key; the content key is wrapped for each
//! candidate worker the client node picked from the proxy's list of attested
//! keys, under that worker's request key (from its session, the epoch and
//! the request id), so the proxy can still choose among them to balance load
//! and fail over. The [`SealHeader`] (request id, model, `max_tokens`, send
//! time) is readable by the proxy and is the AAD of everything, so it cannot
//! be altered or moved to another body. The messages, the sampling
//! parameters and every generated chunk are not readable outside the client
//! node and the enclave.
//!
//! Answers come back chunk by chunk under an answer key of the worker's own,
//! derived from its request key (so every recipient of every seal has an
//! independent key, and a proxy that forwards one request to several
//! recipients gets answers under unrelated keys: no XOR of two answers, no
//! reusable MAC key). The chunk's position is the nonce, and the AAD carries
//! the request id and the position: a dropped, reordered, replayed or
//! injected chunk fails to open. The client node's opener locks onto the one
//! recipient whose key opens the first chunk; no chunk under another
//! recipient's key opens after that.
//!
//! What crosses the proxy leaks as little as possible: a chunk's plaintext
//! ([`Piece`]: text and its token count, or the engine's error message) and
//! the request body are padded to size buckets ([`pad`]), and the worker
//! coalesces tokens over a few milliseconds, so the proxy sees neither
//! token boundaries, token counts nor exact lengths; usage crosses in clear
//! only in the signed receipt billing needs.

pub mod session;

use hpke::Serializable;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};
use ring::hkdf;
use serde::{Deserialize, Serialize};
pub use session::SenderSessions;
use session::{expand, ReceiverSessions};
use zeroize::Zeroizing;

use crate::frame::{GenerateRequest, Input, SamplingParams};
use crate::tls::Fingerprint;
use crate::SignedReceipt;

type Kem = hpke::kem::X25519HkdfSha256;
type Kdf = hpke::kdf::HkdfSha256;
type HpkeAead = hpke::aead::ChaCha20Poly1305;

/// HPKE `info` and the prefix of every AAD: the version of this scheme.
const SCHEME: &[u8] = b"cocoon/seal/v3";
/// Label of a recipient's answer key (followed by the recipient's
/// fingerprint, so the key is bound to the worker it is for).
const ANSWER_LABEL: &[u8] = b"cocoon/seal/v3/answer";
/// Label of the key the request's body is sealed under (from the content key).
const CONTENT_LABEL: &[u8] = b"cocoon/seal/v3/request";
/// Label of a receipt's stamp (in its AAD).
const STAMP_LABEL: &[u8] = b"cocoon/seal/v3/receipt-stamp";
/// Label of the key wrapping the content key for one recipient.
const WRAP_LABEL: &[u8] = b"cocoon/seal/v3/wrap";

/// What the proxy may read of a sealed request; authenticated, not secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealHeader {
    /// Chosen at random by the client node; the worker refuses a repeat.
    pub request_id: [u8; 16],
    pub model: String,
    /// The completion budget of all answers together (`max_tokens` × `n`),
    /// so the proxy can check the client can pay for it.
    pub max_tokens: Option<u32>,
    /// Unix milliseconds when sealed; the worker refuses old requests.
    pub sent_at_ms: u64,
}

/// The content key sealed to one worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    /// The worker's identity (its TLS key's fingerprint).
    pub worker: Fingerprint,
    /// The HPKE encapsulated key of the session (the same for every request
    /// of the session: a worker that lost the session rebuilds it from this).
    pub enc: Vec<u8>,
    /// The session's first epoch (see [`session::epoch_of`]).
    pub since: u64,
    /// The content key, wrapped under this worker's request key.
    pub sealed_key: Vec<u8>,
    /// The price coefficient the client node saw this worker list, and
    /// agrees to pay (1000 = the network's base price). Readable by the
    /// proxy, which bills at it; authenticated with the wrapped key, so a
    /// proxy that alters it makes the request unopenable. The worker
    /// serves only at a price it announced, and signs it into the receipt.
    pub price_coefficient: u32,
}

/// One worker to seal a request to: its identity, its sealing key, and the
/// price it listed (see [`Recipient::price_coefficient`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SealTo {
    pub worker: Fingerprint,
    pub sealing_key: [u8; 32],
    pub price_coefficient: u32,
}

impl SealTo {
    /// `worker` with `sealing_key`, at the network's base price.
    pub fn at_base_price(worker: Fingerprint, sealing_key: [u8; 32]) -> Self {
        Self {
            worker,
            sealing_key,
            price_coefficient: crate::BASE_PRICE_COEFFICIENT,
        }
    }
}

/// A generation request as it crosses the proxy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedRequest {
    pub header: SealHeader,
    pub recipients: Vec<Recipient>,
    /// The messages and sampling parameters.
    pub ciphertext: Vec<u8>,
    /// How the client node wants the proxy to choose among the recipients
    /// (a hint outside the seal: routing is the proxy's job either way).
    #[serde(default)]
    pub sort: crate::Sort,
    /// The first recipient answered this conversation's previous turn and
    /// holds its prompt in cache: take it while it has room (a hint
    /// outside the seal, like `sort`).
    #[serde(default)]
    pub affinity: bool,
}

impl SealedRequest {
    /// The workers this request can be opened by.
    pub fn workers(&self) -> impl Iterator<Item = &Fingerprint> {
        self.recipients.iter().map(|r| &r.worker)
    }

    /// The price coefficient the client node listed for `worker`, if the
    /// request is sealed to it.
    pub fn listed_price(&self, worker: &Fingerprint) -> Option<u32> {
        self.recipients
            .iter()
            .find(|r| &r.worker == worker)
            .map(|r| r.price_coefficient)
    }
}

/// The sealed part of a request.
#[derive(Serialize, Deserialize)]
struct SealedBody {
    input: Input,
    params: SamplingParams,
}

/// Why sealing or opening failed. Messages never contain plaintext.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("no worker key to seal to")]
    NoRecipients,
    #[error("this request is not sealed to this worker")]
    NotForUs,
    #[error("the sealed request does not open (wrong key, or tampered with)")]
    Tampered,
    #[error("the sealed request's completion budget (max_tokens × n) differs from its header")]
    HeaderMismatch,
    #[error("a sealed answer chunk does not open (tampered, reordered or injected)")]
    BadChunk,
    #[error("malformed sealed data: {0}")]
    Malformed(String),
}

/// A worker's X25519 key pair for sealed requests, and the sessions client
/// nodes opened to it. Made inside the enclave at start and never written
/// anywhere; the secret half is zeroized on drop (by x25519-dalek), session
/// keys likewise.
pub struct SealingKey {
    secret: <Kem as hpke::Kem>::PrivateKey,
    public: [u8; 32],
    sessions: ReceiverSessions,
}

impl std::fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SealingKey({})", hex::encode(self.public))
    }
}

impl SealingKey {
    /// A fresh random key pair.
    pub fn generate() -> Self {
        let mut ikm = Zeroizing::new([0u8; 32]);
        fill_random(ikm.as_mut_slice());
        let (secret, public) = <Kem as hpke::Kem>::derive_keypair(ikm.as_slice());
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(&public.to_bytes());
        Self {
            secret,
            public: bytes,
            sessions: ReceiverSessions::default(),
        }
    }

    /// Sessions held now.
    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }

    #[cfg(test)]
    fn forget_sessions(&self) {
        self.sessions.forget()
    }

    /// The public half, as announced (bound into the worker's TEE evidence).
    pub fn public(&self) -> [u8; 32] {
        self.public
    }

    /// Open `request` addressed to worker `me`: the engine's request, and the
    /// sealer for its answer.
    pub fn open(
        &self,
        me: &Fingerprint,
        request: &SealedRequest,
    ) -> Result<(GenerateRequest, ReplySealer), SealError> {
        let recipient = request
            .recipients
            .iter()
            .find(|r| &r.worker == me)
            .ok_or(SealError::NotForUs)?;
        let aad = aad(&request.header);
        let mut content_key = Zeroizing::new([0u8; 32]);
        let request_key =
            self.sessions
                .key(&self.secret, recipient, &request.header, |request_key| {
                    let wrapped_aad = wrap_aad(&aad, recipient.price_coefficient);
                    unwrap(
                        request_key,
                        &wrapped_aad,
                        &recipient.sealed_key,
                        &mut content_key,
                    )
                })?;
        let content_key = &*content_key;
        let mut plain = request.ciphertext.clone();
        let opened = derive(content_key, CONTENT_LABEL)
            .open_in_place(
                Nonce::assume_unique_for_key([0; 12]),
                Aad::from(&aad),
                &mut plain,
            )
            .map_err(|_| SealError::Tampered)?;
        // Padded: the body is followed by zeros up to its size bucket.
        let (body, _padding): (SealedBody, _) =
            postcard::take_from_bytes(opened).map_err(|e| SealError::Malformed(e.to_string()))?;
        plain.iter_mut().for_each(|b| *b = 0);
        // The header's budget is every answer's: a client cannot show the
        // proxy one answer's worth and ask the worker for several.
        if body.params.completion_budget() != request.header.max_tokens {
            return Err(SealError::HeaderMismatch);
        }
        let generate = GenerateRequest {
            model: request.header.model.clone(),
            input: body.input,
            params: body.params,
        };
        let sealer = ReplySealer(ChunkKey::new(
            answer_key(&request_key, me),
            request.header.request_id,
        ));
        Ok((generate, sealer))
    }
}

/// Seal `request` to each of `recipients` (worker identity, sealing key) in
/// a session of its own (one HPKE encapsulation per recipient); a client
/// node keeps its sessions in [`SenderSessions`] and calls
/// [`SenderSessions::seal`] instead. Returns the sealed request and the
/// opener for its answer.
pub fn seal(
    request: &GenerateRequest,
    recipients: &[SealTo],
    sent_at_ms: u64,
) -> Result<(SealedRequest, ReplyOpener), SealError> {
    SenderSessions::new().seal(request, recipients, sent_at_ms)
}

impl SenderSessions {
    /// Seal `request` to each of `recipients` (worker identity, sealing
    /// key, listed price) under this node's session with each (started on
    /// first use). Returns the sealed request and the opener for its answer.
    pub fn seal(
        &self,
        request: &GenerateRequest,
        recipients: &[SealTo],
        sent_at_ms: u64,
    ) -> Result<(SealedRequest, ReplyOpener), SealError> {
        let budget = request.params.completion_budget();
        self.seal_showing(request, budget, recipients, sent_at_ms)
    }

    /// [`Self::seal`], the header showing the proxy `budget` completion
    /// tokens (an honest client shows the request's own; tests play one
    /// that does not).
    fn seal_showing(
        &self,
        request: &GenerateRequest,
        budget: Option<u32>,
        recipients: &[SealTo],
        sent_at_ms: u64,
    ) -> Result<(SealedRequest, ReplyOpener), SealError> {
        if recipients.is_empty() {
            return Err(SealError::NoRecipients);
        }
        let mut request_id = [0u8; 16];
        fill_random(&mut request_id);
        let header = SealHeader {
            request_id,
            model: request.model.clone(),
            max_tokens: budget,
            sent_at_ms,
        };
        let aad = aad(&header);
        let mut content_key = Zeroizing::new([0u8; 32]);
        fill_random(content_key.as_mut_slice());
        let mut answer_keys = Vec::with_capacity(recipients.len());
        let sealed_to = recipients
            .iter()
            .map(|to| {
                let (worker, price_coefficient) = (&to.worker, to.price_coefficient);
                let session = self.key(worker, &to.sealing_key, &request_id, sent_at_ms)?;
                let mut sealed_key = content_key.to_vec();
                derive_wrap(&session.request_key)
                    .seal_in_place_append_tag(
                        Nonce::assume_unique_for_key([0; 12]),
                        Aad::from(wrap_aad(&aad, price_coefficient)),
                        &mut sealed_key,
                    )
                    .map_err(|_| SealError::Malformed("wrapping failed".into()))?;
                answer_keys.push((
                    *worker,
                    ChunkKey::new(answer_key(&session.request_key, worker), request_id),
                ));
                Ok(Recipient {
                    worker: *worker,
                    enc: session.enc,
                    since: session.since,
                    sealed_key,
                    price_coefficient,
                })
            })
            .collect::<Result<Vec<_>, SealError>>()?;
        let body = SealedBody {
            input: request.input.clone(),
            params: request.params.clone(),
        };
        let mut ciphertext = Zeroizing::new(pad(
            postcard::to_allocvec(&body).map_err(|e| SealError::Malformed(e.to_string()))?,
            REQUEST_BUCKET,
        ));
        derive(&content_key, CONTENT_LABEL)
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key([0; 12]),
                Aad::from(&aad),
                &mut *ciphertext,
            )
            .map_err(|_| SealError::Malformed("sealing failed".into()))?;
        let sealed = SealedRequest {
            header,
            recipients: sealed_to,
            ciphertext: std::mem::take(&mut *ciphertext),
            sort: crate::Sort::default(),
            affinity: false,
        };
        let opener = ReplyOpener {
            candidates: answer_keys,
            chosen: None,
            request_id,
        };
        Ok((sealed, opener))
    }
}

/// The worker's side of an answer: seals each chunk in order.
pub struct ReplySealer(ChunkKey);

impl std::fmt::Debug for ReplySealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReplySealer")
    }
}

impl ReplySealer {
    /// Seal the next chunk: `text`, worth `tokens` tokens (the count
    /// travels inside the seal, and the plaintext is padded to its size
    /// bucket: the proxy sees neither the count nor the exact length).
    pub fn seal(&mut self, text: &str, tokens: u32) -> Vec<u8> {
        self.seal_piece(&PieceRef::Text { text, tokens })
    }

    /// Seal the next chunk: a piece of a function call.
    pub fn seal_tool_call(&mut self, chunk: &crate::ToolCallChunk) -> Vec<u8> {
        self.seal_piece(&PieceRef::ToolCall(chunk))
    }

    /// Seal the next chunk: reasoning text and how many tokens it is.
    pub fn seal_reasoning(&mut self, text: &str, tokens: u32) -> Vec<u8> {
        self.seal_piece(&PieceRef::Reasoning { text, tokens })
    }

    /// Seal the next chunk: what follows belongs to answer `index`.
    pub fn seal_choice(&mut self, index: u32) -> Vec<u8> {
        self.seal_piece(&PieceRef::Choice(index))
    }

    /// Seal the next chunk: log probabilities of the tokens to come.
    pub fn seal_logprobs(&mut self, logprobs: &[crate::TokenLogprob]) -> Vec<u8> {
        self.seal_piece(&PieceRef::Logprobs(logprobs))
    }

    /// Seal an error's message as the answer's last chunk: an engine's
    /// error text may echo the prompt, so only its kind crosses in clear.
    pub fn seal_error(&mut self, kind: crate::ErrorKind, message: &str) -> Vec<u8> {
        self.seal_piece(&PieceRef::Error { kind, message })
    }

    fn seal_piece(&mut self, piece: &PieceRef<'_>) -> Vec<u8> {
        // One buffer, sized once for the padded plaintext and the tag.
        let capacity = padded_len(piece.max_encoded_len(), CHUNK_BUCKET) + ring::aead::MAX_TAG_LEN;
        let mut buf = pad(
            postcard::to_extend(piece, Vec::with_capacity(capacity)).expect("a chunk serializes"),
            CHUNK_BUCKET,
        );
        let (nonce, aad) = self.0.next();
        self.0
            .key
            .seal_in_place_append_tag(nonce, Aad::from(aad), &mut buf)
            .expect("ChaCha20-Poly1305 sealing of an in-memory buffer cannot fail");
        buf
    }

    /// Stamp the answer's signed receipt: a ChaCha20-Poly1305 tag under
    /// this answer's key, at the position after the last chunk, over the
    /// receipt and its signature. The client node checks it instead of the
    /// signature (a MAC, not a curve operation); it also shows that no chunk
    /// was dropped from the end, and that nobody swapped the signature for
    /// one that would not verify (the client node's journal keeps it as
    /// evidence). Call once, after the last chunk.
    pub fn stamp(&mut self, receipt: &SignedReceipt) -> [u8; 16] {
        let (nonce, aad) = self.0.next();
        let tag = self
            .0
            .key
            .seal_in_place_separate_tag(nonce, Aad::from(stamp_aad(&aad, receipt)), &mut [])
            .expect("ChaCha20-Poly1305 sealing of an in-memory buffer cannot fail");
        tag.as_ref()
            .try_into()
            .expect("a ChaCha20-Poly1305 tag is 16 bytes")
    }

    /// The request id this answer belongs to.
    pub fn request_id(&self) -> [u8; 16] {
        self.0.request_id
    }

    /// Chunks sealed so far.
    pub fn chunks(&self) -> u64 {
        self.0.next
    }
}

/// The client node's side of an answer: opens each chunk, in order, under
/// the answer key of the one recipient that answers.
pub struct ReplyOpener {
    /// Each recipient and its answer key.
    candidates: Vec<(Fingerprint, ChunkKey)>,
    /// The recipient whose key opened the first chunk.
    chosen: Option<usize>,
    request_id: [u8; 16],
}

impl std::fmt::Debug for ReplyOpener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReplyOpener")
    }
}

impl ReplyOpener {
    /// Open the next chunk: text and its token count, or the answer's
    /// error. The first chunk decides which recipient is answering; every
    /// later one must be under that recipient's key.
    pub fn open(&mut self, sealed: &[u8]) -> Result<Piece, SealError> {
        let indices: Vec<usize> = match self.chosen {
            Some(i) => vec![i],
            None => (0..self.candidates.len()).collect(),
        };
        for i in indices {
            let key = &mut self.candidates[i].1;
            let mut buf = sealed.to_vec();
            let (nonce, aad) = key.peek();
            if let Ok(plain) = key.key.open_in_place(nonce, Aad::from(aad), &mut buf) {
                key.next += 1;
                self.chosen = Some(i);
                let (piece, _padding): (Piece, _) = postcard::take_from_bytes(plain)
                    .map_err(|e| SealError::Malformed(e.to_string()))?;
                return Ok(piece);
            }
        }
        Err(SealError::BadChunk)
    }

    /// Whether `stamp` is the stamp of `receipt` by the recipient that
    /// answered (or, for an answer without chunks, by the recipient that
    /// signed it), after the last chunk opened.
    pub fn check_stamp(&self, receipt: &SignedReceipt, stamp: &[u8; 16]) -> Result<(), SealError> {
        let signer = &receipt.receipt.worker;
        let i = match self.chosen {
            Some(i) if &self.candidates[i].0 == signer => i,
            Some(_) => return Err(SealError::Tampered),
            None => self
                .candidates
                .iter()
                .position(|(worker, _)| worker == signer)
                .ok_or(SealError::Tampered)?,
        };
        let key = &self.candidates[i].1;
        let (nonce, aad) = key.peek();
        let mut tag = *stamp;
        key.key
            .open_in_place(nonce, Aad::from(stamp_aad(&aad, receipt)), &mut tag)
            .map(|_| ())
            .map_err(|_| SealError::Tampered)
    }

    /// The worker whose key opened the answer (none before its first chunk).
    pub fn worker(&self) -> Option<&Fingerprint> {
        self.chosen.map(|i| &self.candidates[i].0)
    }

    /// The request id this answer belongs to.
    pub fn request_id(&self) -> [u8; 16] {
        self.request_id
    }

    /// Chunks opened so far.
    pub fn chunks(&self) -> u64 {
        self.chosen.map_or(0, |i| self.candidates[i].1.next)
    }
}

/// The answer key and the position of the next chunk.
struct ChunkKey {
    key: LessSafeKey,
    request_id: [u8; 16],
    next: u64,
}

impl ChunkKey {
    fn new(key: Zeroizing<[u8; 32]>, request_id: [u8; 16]) -> Self {
        Self {
            key: LessSafeKey::new(
                UnboundKey::new(&CHACHA20_POLY1305, key.as_slice())
                    .expect("32 bytes is a ChaCha20-Poly1305 key"),
            ),
            request_id,
            next: 0,
        }
    }

    /// Nonce and AAD of the next chunk.
    fn peek(&self) -> (Nonce, [u8; 24]) {
        let mut nonce = [0u8; 12];
        nonce[4..].copy_from_slice(&self.next.to_be_bytes());
        let mut aad = [0u8; 24];
        aad[..16].copy_from_slice(&self.request_id);
        aad[16..].copy_from_slice(&self.next.to_be_bytes());
        (Nonce::assume_unique_for_key(nonce), aad)
    }

    fn next(&mut self) -> (Nonce, [u8; 24]) {
        let out = self.peek();
        self.next += 1;
        out
    }
}

/// The AAD of a receipt's stamp: the position's AAD, then the receipt's
/// signature and signed bytes.
fn stamp_aad(position: &[u8; 24], receipt: &SignedReceipt) -> Vec<u8> {
    [
        position.as_slice(),
        STAMP_LABEL,
        &receipt.signature,
        &crate::receipt::signed_bytes(&receipt.receipt),
    ]
    .concat()
}

/// What one sealed answer chunk holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Piece {
    /// Generated text and how many tokens it is.
    Text { text: String, tokens: u32 },
    /// A piece of a function call (its token count inside).
    ToolCall(crate::ToolCallChunk),
    /// Log probabilities of the tokens whose text follows.
    Logprobs(Vec<crate::TokenLogprob>),
    /// The answer failed: its kind (authenticated here; the copy beside
    /// the chunk is for the proxy) and why, in the engine's words. Ends the
    /// answer.
    Error {
        kind: crate::ErrorKind,
        message: String,
    },
    /// Generated reasoning and how many tokens it is.
    Reasoning { text: String, tokens: u32 },
    /// What follows belongs to this answer of several (`n` > 1).
    Choice(u32),
}

/// [`Piece`] borrowing its text, for sealing without a copy: serializes
/// to the same bytes.
#[derive(Serialize)]
enum PieceRef<'a> {
    Text {
        text: &'a str,
        tokens: u32,
    },
    ToolCall(&'a crate::ToolCallChunk),
    Logprobs(&'a [crate::TokenLogprob]),
    Error {
        kind: crate::ErrorKind,
        message: &'a str,
    },
    Reasoning {
        text: &'a str,
        tokens: u32,
    },
    Choice(u32),
}

impl PieceRef<'_> {
    /// An upper bound of the encoded length: the variant, the text's length
    /// and the count or kind as varints, and the text.
    fn max_encoded_len(&self) -> usize {
        match self {
            PieceRef::Text { text, .. } | PieceRef::Reasoning { text, .. } => text.len() + 16,
            // Per token: bytes, a float, and per alternative bytes and a float.
            PieceRef::Logprobs(l) => {
                l.iter()
                    .map(|t| {
                        t.bytes.len() + 16 + t.top.iter().map(|a| a.bytes.len() + 12).sum::<usize>()
                    })
                    .sum::<usize>()
                    + 16
            }
            PieceRef::ToolCall(c) => {
                c.arguments.len()
                    + c.id.as_ref().map_or(0, String::len)
                    + c.name.as_ref().map_or(0, String::len)
                    + 32
            }
            PieceRef::Error { message, .. } => message.len() + 16,
            PieceRef::Choice(_) => 16,
        }
    }
}

/// Smallest padded size of an answer chunk's plaintext.
pub const CHUNK_BUCKET: usize = 64;
/// Smallest padded size of a request's body.
pub const REQUEST_BUCKET: usize = 512;

/// `bytes` followed by zeros up to its size bucket: the next power of two
/// at least `min`, or, past 64 KiB, the next multiple of 64 KiB (so a
/// length reveals its bucket only, at most double the bytes, far less for
/// large bodies).
pub fn pad(mut bytes: Vec<u8>, min: usize) -> Vec<u8> {
    bytes.resize(padded_len(bytes.len(), min), 0);
    bytes
}

/// The bucket `len` bytes are padded to (see [`pad`]).
/// The size of the sealed request whose body holds at least `body_bytes`:
/// what the proxy sees, and bounds the prompt's tokens by.
pub fn sealed_request_len(body_bytes: usize) -> usize {
    padded_len(body_bytes, REQUEST_BUCKET) + ring::aead::MAX_TAG_LEN
}

pub fn padded_len(len: usize, min: usize) -> usize {
    const LARGE: usize = 64 * 1024;
    if len <= LARGE {
        len.max(min).next_power_of_two()
    } else {
        len.div_ceil(LARGE) * LARGE
    }
}

/// A recipient's answer key, derived from its request key and bound to its
/// fingerprint.
fn answer_key(request_key: &[u8; 32], worker: &Fingerprint) -> Zeroizing<[u8; 32]> {
    expand(request_key, &[ANSWER_LABEL, worker.0.as_slice()])
}

/// The key wrapping the content key for the recipient of `request_key`.
fn derive_wrap(request_key: &[u8; 32]) -> LessSafeKey {
    LessSafeKey::new(
        UnboundKey::new(
            &CHACHA20_POLY1305,
            expand(request_key, &[WRAP_LABEL]).as_slice(),
        )
        .expect("32 bytes is a ChaCha20-Poly1305 key"),
    )
}

/// Unwrap `sealed_key` (the content key) under `request_key` into `out`;
/// whether it opened.
fn unwrap(request_key: &[u8; 32], aad: &[u8], sealed_key: &[u8], out: &mut [u8; 32]) -> bool {
    let mut buf = Zeroizing::new(sealed_key.to_vec());
    match derive_wrap(request_key).open_in_place(
        Nonce::assume_unique_for_key([0; 12]),
        Aad::from(aad),
        &mut buf,
    ) {
        Ok(key) if key.len() == 32 => {
            out.copy_from_slice(key);
            true
        }
        _ => false,
    }
}

fn aad(header: &SealHeader) -> Vec<u8> {
    let mut aad = SCHEME.to_vec();
    aad.extend(postcard::to_allocvec(header).expect("header serializes"));
    aad
}

/// The AAD of one recipient's wrapped content key: the request's, and the
/// price the client node listed for that recipient.
fn wrap_aad(aad: &[u8], price_coefficient: u32) -> Vec<u8> {
    let mut wrapped = aad.to_vec();
    wrapped.extend(b"/price");
    wrapped.extend(price_coefficient.to_be_bytes());
    wrapped
}

/// A ChaCha20-Poly1305 key derived from the content key for one `label`.
fn derive(content_key: &[u8; 32], label: &[u8]) -> LessSafeKey {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, SCHEME).extract(content_key);
    let info = [label];
    let okm = prk
        .expand(&info, &CHACHA20_POLY1305)
        .expect("32 bytes is a valid HKDF-SHA256 length");
    LessSafeKey::new(UnboundKey::from(okm))
}

fn fill_random(buf: &mut [u8]) {
    use ring::rand::SecureRandom;
    ring::rand::SystemRandom::new()
        .fill(buf)
        .expect("the operating system's random source failed");
}

#[cfg(test)]
mod tests;
