//! The client node's half of end-to-end sealing: which workers' keys to seal a
//! request to, and opening the sealed answer.
//!
//! Keys come from the proxy (`WorkerKeys`: a short list of the workers that fit
//! the request's price limit, best first by its sort, with their prices and
//! load) and are cached per proxy, model and preferences for a few seconds.
//! A request is sealed to the best listed worker and one other at random;
//! the proxy takes the cheaper of the two with room (power of two choices). Each key's TEE evidence is verified once, against the
//! node's policy (allowed worker images, key binding), before anything is
//! sealed to it; a key that fails is never used and the reason is logged. The
//! answer's chunks are opened in order, plaintext chunks are refused, and the
//! worker's usage receipt must be signed by one of the workers the request was
//! sealed to, for this request and this usage.

use cocoon_protocol::sync::LockRecover;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::refusal::ReceiptRefused;
use cocoon_protocol::ra_tls::{AttestationCheck, RaTlsRefusal};
use cocoon_protocol::receipt::Delivered;
use cocoon_protocol::sealed::{Piece, ReplyOpener, SealHeader, SenderSessions};
use cocoon_protocol::tls::Fingerprint;
use cocoon_protocol::{
    Connection, ErrorKind, Event, ListedWorker, RequestBody, RoutingPrefs, Sort, WireError,
    WorkerKey, BASE_PRICE_COEFFICIENT,
};
use futures::StreamExt;
use rand::Rng;

/// How long a proxy's list of worker keys is reused.
const KEYS_TTL: Duration = Duration::from_secs(5);
/// How long a key's verdict stands before its evidence is checked again
/// (collateral expires, TCB statuses change).
const VERDICT_TTL: Duration = Duration::from_secs(3600);
/// Verdicts kept at most (each worker restart brings a new sealing key).
const MAX_VERDICTS: usize = 10_000;
/// Worker lists kept at most (per proxy, model and normalised preferences);
/// past it the least recently fetched goes.
const MAX_LISTS: usize = 256;
/// How many workers one request is sealed to; the proxy picks the less loaded
/// (two choices balance load well; each one more costs a few HMACs and 48 bytes).
pub const SEAL_CANDIDATES: usize = 2;
/// Sealed to after the workers of an earlier seal were full or gone: more
/// choices for the proxy when the network is busy.
pub const RESEAL_CANDIDATES: usize = 4;

/// When a proxy's list was fetched, and its accepted workers.
type Listed = (Instant, Arc<Vec<ListedWorker>>);
/// When a key was checked, and the outcome: the configuration its evidence
/// binds (none where the policy waives it), or the refusal; and until when
/// (Unix seconds) the evidence is fresh enough, where the policy asks.
type Verdict = (
    Instant,
    Result<Option<Arc<cocoon_attestation::Configuration>>, RaTlsRefusal>,
    Option<u64>,
);

/// Verified worker keys, per proxy and model, and the sealed sessions to
/// them.
pub struct KeyDirectory {
    /// One sealed session per worker key sealed to: a request to a worker
    /// sealed to before costs no asymmetric crypto.
    pub sessions: SenderSessions,
    check: Option<Arc<AttestationCheck>>,
    lists: Mutex<HashMap<(usize, String, RoutingPrefs), Listed>>,
    /// Verdicts per key (identity ‖ sealing key): when, and accepted or the refusal.
    verdicts: Mutex<HashMap<Vec<u8>, Verdict>>,
    /// The root contract's version the verdicts were made under: when its
    /// lists change, every worker is judged again.
    verdicts_under: Mutex<Option<u32>>,
    warned_unattested: AtomicBool,
}

impl KeyDirectory {
    pub fn new(check: Option<Arc<AttestationCheck>>) -> Self {
        Self {
            sessions: SenderSessions::new(),
            check,
            lists: Mutex::default(),
            verdicts: Mutex::default(),
            verdicts_under: Mutex::default(),
            warned_unattested: AtomicBool::new(false),
        }
    }

    /// The verified keys of `model`'s workers behind proxy number `proxy`
    /// (cached; `fresh` fetches again).
    pub async fn keys(
        &self,
        proxy: usize,
        conn: &Connection,
        model: &str,
        prefs: RoutingPrefs,
        fresh: bool,
    ) -> Result<Arc<Vec<ListedWorker>>, WireError> {
        // Lists are fetched and kept per price bucket (the limit rounded up
        // to a power of two), not per exact limit: a caller cycling through
        // limits cannot grow the cache, and each request still gets only
        // workers within its own limit.
        let bucket = RoutingPrefs {
            max_coefficient: prefs
                .max_coefficient
                .map(|c| c.checked_next_power_of_two().unwrap_or(u32::MAX)),
            ..prefs
        };
        let limit = prefs.max_coefficient.unwrap_or(u32::MAX);
        let within = |keys: &Arc<Vec<ListedWorker>>| -> Arc<Vec<ListedWorker>> {
            if keys.iter().all(|l| l.price_coefficient <= limit) {
                keys.clone()
            } else {
                Arc::new(
                    keys.iter()
                        .filter(|l| l.price_coefficient <= limit)
                        .cloned()
                        .collect(),
                )
            }
        };
        let slot = (proxy, model.to_string(), bucket);
        if !fresh {
            let lists = self.lists.locked();
            if let Some((at, keys)) = lists.get(&slot) {
                let keys = within(keys);
                if at.elapsed() < KEYS_TTL && !keys.is_empty() {
                    return Ok(keys);
                }
            }
        }
        let listed = match fetch(conn, model, bucket).await {
            Ok(listed) => listed,
            Err(e) if bucket == prefs => return Err(e),
            // Nothing in the whole bucket: the proxy's refusal for the
            // exact limit says what the cheapest asks.
            Err(_) => return self.exact(conn, model, prefs).await,
        };
        let bucket_limit = bucket.max_coefficient.unwrap_or(u32::MAX);
        self.look_up_anchors(&listed).await;
        let accepted = self.verified(listed, bucket_limit, model)?;
        let accepted = Arc::new(accepted);
        {
            let mut lists = self.lists.locked();
            if lists.len() >= MAX_LISTS && !lists.contains_key(&slot) {
                lists.retain(|_, (at, _)| at.elapsed() < KEYS_TTL);
                if lists.len() >= MAX_LISTS {
                    let oldest = lists
                        .iter()
                        .min_by_key(|(_, (at, _))| *at)
                        .map(|(k, _)| k.clone());
                    if let Some(oldest) = oldest {
                        lists.remove(&oldest);
                    }
                }
            }
            lists.insert(slot, (Instant::now(), accepted.clone()));
        }
        let mine = within(&accepted);
        if mine.is_empty() {
            // None of the bucket's short list is within this limit.
            return self.exact(conn, model, prefs).await;
        }
        Ok(mine)
    }

    /// The proxy's short list for `prefs` exactly (or its refusal, naming
    /// what the cheapest asks), verified and not kept.
    async fn exact(
        &self,
        conn: &Connection,
        model: &str,
        prefs: RoutingPrefs,
    ) -> Result<Arc<Vec<ListedWorker>>, WireError> {
        let listed = fetch(conn, model, prefs).await?;
        let limit = prefs.max_coefficient.unwrap_or(u32::MAX);
        self.look_up_anchors(&listed).await;
        self.verified(listed, limit, model).map(Arc::new)
    }

    /// Look up on the chain the blocks `listed` workers' evidence binds,
    /// and fetch the RIMs their GPUs' evidence needs, so checking it does
    /// not find them pending.
    async fn look_up_anchors(&self, listed: &[ListedWorker]) {
        let Some(check) = &self.check else {
            return;
        };
        for worker in listed {
            check.look_up_anchor(worker.key.anchor.as_deref()).await;
            check.fetch_gpu_references(&worker.key.gpus).await;
        }
    }

    /// The listed workers within `limit` (a proxy that lists one above it
    /// is not believed) whose evidence this node accepts; none is an error.
    fn verified(
        &self,
        listed: Vec<ListedWorker>,
        limit: u32,
        model: &str,
    ) -> Result<Vec<ListedWorker>, WireError> {
        let total = listed.len();
        let accepted: Vec<ListedWorker> = listed
            .into_iter()
            .filter(|l| l.price_coefficient <= limit && self.accept(&l.key, model))
            .collect();
        if accepted.is_empty() {
            return Err(WireError::new(
                ErrorKind::NoWorker,
                format!(
                    "none of the {total} workers serving '{model}' presented an attested key this node accepts (see its log for the reasons)"
                ),
            ));
        }
        Ok(accepted)
    }

    /// The weights `key`'s attested configuration names for `model`, from
    /// the verdict kept when its evidence was checked (nothing is parsed
    /// on a request's path); `None` for a key binding no configuration. A
    /// key whose verdict has gone from the cache meanwhile is read from its
    /// document (its evidence was checked when it was listed).
    pub fn attested_weights(&self, key: &WorkerKey, model: &str) -> Option<String> {
        let id = verdict_id(key);
        if let Some((_, Ok(configuration), _)) = self.verdicts.locked().get(&id) {
            return configuration.as_deref().and_then(|c| weights_for(c, model));
        }
        let document = key.configuration.as_deref()?;
        weights_for(
            &cocoon_attestation::Configuration::from_bytes(document).ok()?,
            model,
        )
    }

    /// Worker lists held now.
    pub fn lists_held(&self) -> usize {
        self.lists.locked().len()
    }

    /// Whether `key` may be sealed a request for `model` to: its evidence
    /// verified (the first time), and the configuration it binds offering
    /// `model` with weights the policy allows. The proxy checked the
    /// worker's announced offer too, but a proxy is not trusted: it could
    /// list a worker serving other weights under the model's name.
    fn accept(&self, key: &WorkerKey, model: &str) -> bool {
        let Some(check) = &self.check else {
            return self.accept_key(key).is_some();
        };
        match self.accept_key(key) {
            None => false,
            Some(None) => true,
            Some(Some(configuration)) => {
                let offered = configuration.models.iter().find(|m| m.name == model);
                let verdict = match offered {
                    None => Err(format!(
                        "its attested configuration does not offer {model:?}"
                    )),
                    Some(m) => check
                        .check_model(model, m.weights_sha256.as_deref())
                        .map_err(|e| e.to_string()),
                };
                if let Err(reason) = &verdict {
                    tracing::warn!(worker = %key.worker(), %reason, "worker refused for this model; nothing will be sealed to it");
                }
                verdict.is_ok()
            }
        }
    }

    /// The configuration `key`'s evidence binds (`Some(None)`: accepted
    /// without one, where there is no policy or it waives configurations),
    /// verifying the evidence the first time; `None`: refused.
    fn accept_key(
        &self,
        key: &WorkerKey,
    ) -> Option<Option<Arc<cocoon_attestation::Configuration>>> {
        let Some(check) = &self.check else {
            if !self.warned_unattested.swap(true, Ordering::Relaxed) {
                tracing::warn!("no attestation policy: sealing to workers' keys WITHOUT checking their TEE evidence; a malicious proxy could substitute its own keys");
            }
            return Some(None);
        };
        let id = verdict_id(key);
        let version = check
            .published
            .as_ref()
            .and_then(|p| p.current())
            .map(|l| l.version);
        {
            let mut under = self.verdicts_under.locked();
            if version.is_some() && *under != version {
                self.verdicts.locked().clear();
                *under = version;
            }
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        {
            let verdicts = self.verdicts.locked();
            if let Some((at, verdict, fresh_until)) = verdicts.get(&id) {
                if at.elapsed() < VERDICT_TTL && fresh_until.is_none_or(|t| now <= t) {
                    return verdict.as_ref().ok().cloned();
                }
            }
        }
        // Verified without holding the lock (a TDX quote takes ~0.6 ms).
        let verified = key.verify(check, now);
        let fresh_until = verified
            .as_ref()
            .ok()
            .and_then(|v| v.made_after)
            .map(|t| t + check.policy.max_evidence_age_secs);
        let verdict = verified.map(|v| v.configuration.map(Arc::new));
        if let Err(reason) = &verdict {
            tracing::warn!(worker = %key.worker(), %reason, "worker key refused; nothing will be sealed to it");
            // A block not looked up yet (the chain was out of reach) is no
            // verdict on the worker: asked again next time.
            if anchor_pending(check, key) {
                return None;
            }
        }
        let accepted = verdict.as_ref().ok().cloned();
        let mut verdicts = self.verdicts.locked();
        if verdicts.len() >= MAX_VERDICTS {
            verdicts.retain(|_, (at, _, _)| at.elapsed() < VERDICT_TTL);
            if verdicts.len() >= MAX_VERDICTS {
                verdicts.clear();
            }
        }
        verdicts.insert(id, (Instant::now(), verdict, fresh_until));
        accepted
    }
}

async fn fetch(
    conn: &Connection,
    model: &str,
    prefs: RoutingPrefs,
) -> Result<Vec<ListedWorker>, WireError> {
    let mut answer = conn
        .request(RequestBody::WorkerKeys {
            model: model.to_string(),
            prefs,
        })
        .await
        .map_err(|e| WireError::new(ErrorKind::Upstream, e.to_string()))?;
    match answer.next().await {
        Some(Event::WorkerKeys(keys)) => Ok(keys),
        Some(Event::Error(e)) => Err(e),
        _ => Err(WireError::new(
            ErrorKind::Upstream,
            "the proxy did not answer the worker-key request",
        )),
    }
}

/// A worker a request is sealed to.
pub struct Candidate {
    pub worker: Fingerprint,
    pub sealing_key: [u8; 32],
    pub identity: Vec<u8>,
    /// The price it was listed at; its receipt must state the same.
    pub price_coefficient: u32,
    /// The weights its attested configuration names for the request's
    /// model; its receipts must name the same (`None`: the key binds no
    /// configuration, where the policy waives it or there is none).
    pub weights_sha256: Option<String>,
}

/// Where a key's verdict is kept: identity ‖ sealing key.
/// Whether the block `key`'s evidence binds is still unknown to `check`.
fn anchor_pending(check: &AttestationCheck, key: &WorkerKey) -> bool {
    let (Some(anchors), Some(anchor)) = (&check.anchors, key.anchor.as_deref()) else {
        return false;
    };
    cocoon_attestation::Anchor::from_bytes(anchor)
        .is_ok_and(|a| anchors.lookup(&a) == cocoon_attestation::freshness::Lookup::Pending)
}

fn verdict_id(key: &WorkerKey) -> Vec<u8> {
    [key.identity.as_slice(), key.sealing_key.as_slice()].concat()
}

/// The weights `configuration` names for `model`.
fn weights_for(configuration: &cocoon_attestation::Configuration, model: &str) -> Option<String> {
    configuration
        .models
        .iter()
        .find(|m| m.name == model)?
        .weights_sha256
        .clone()
}

/// Up to `n` of `listed`, drawn by this node at random, weighted by its own
/// preference (`sort`): not the proxy's order, so a proxy cannot decide
/// which workers a client's requests are sealed to. With `keep_first` (the
/// worker holding the conversation's prompt cache) the first stays first.
pub fn candidates(
    listed: &[ListedWorker],
    weights: impl Fn(&WorkerKey) -> Option<String>,
    n: usize,
    sort: Sort,
    keep_first: bool,
) -> Vec<Candidate> {
    let mut rng = rand::thread_rng();
    let (mut chosen, mut pool): (Vec<&ListedWorker>, Vec<&ListedWorker>) = if keep_first {
        (
            listed.iter().take(1).collect(),
            listed.iter().skip(1).collect(),
        )
    } else {
        (Vec::new(), listed.iter().collect())
    };
    while chosen.len() < n && !pool.is_empty() {
        let weights: Vec<f64> = pool.iter().map(|l| weight(l, sort)).collect();
        let total: f64 = weights.iter().sum();
        let mut point = rng.gen::<f64>() * total;
        let mut pick = pool.len() - 1;
        for (i, w) in weights.iter().enumerate() {
            if point < *w {
                pick = i;
                break;
            }
            point -= w;
        }
        chosen.push(pool.swap_remove(pick));
    }
    chosen
        .into_iter()
        .map(|l| Candidate {
            worker: l.key.worker(),
            sealing_key: l.key.sealing_key,
            identity: l.key.identity.clone(),
            price_coefficient: l.price_coefficient,
            weights_sha256: weights(&l.key),
        })
        .collect()
}

/// How much this node prefers a listed worker: cheaper is better (squared
/// when sorting by price), and less loaded is better, but the load the
/// proxy reports moves a weight by at most 2x (4x when sorting by speed),
/// so a proxy lying about load cannot steer much.
fn weight(l: &ListedWorker, sort: Sort) -> f64 {
    let cheap = f64::from(BASE_PRICE_COEFFICIENT) / f64::from(l.price_coefficient.max(1));
    let room = 1.0 - f64::from(l.load_permille.min(1000)) / 2000.0;
    match sort {
        Sort::Price => cheap * cheap * room,
        Sort::Throughput | Sort::Latency => room * room * cheap,
    }
}

/// Opens one sealed answer, checking every event on the way.
pub struct Unsealer {
    pub opener: ReplyOpener,
    pub header: SealHeader,
    /// The workers it was sealed to.
    pub recipients: Vec<Candidate>,
    /// Bytes of the sealed request's ciphertext.
    pub request_bytes: u64,
    /// Padded plaintext bytes of the chunks opened so far (what the proxy
    /// counts too, so both judge a receipt alike).
    pub streamed_bytes: u64,
    /// The usage of the latest running total accepted.
    pub progress: Option<cocoon_protocol::Usage>,
}

impl Unsealer {
    /// The event as the API sees it: text opened, receipts verified.
    pub fn open(&mut self, event: Event) -> Event {
        match event {
            Event::Sealed { ciphertext } => {
                let event = match self.opener.open(&ciphertext) {
                    Ok(Piece::Text { text, tokens }) => Event::Delta { text, tokens },
                    Ok(Piece::ToolCall(piece)) => Event::ToolCall(piece),
                    Ok(Piece::Logprobs(logprobs)) => Event::Logprobs(logprobs),
                    Ok(Piece::Reasoning { text, tokens }) => Event::Reasoning { text, tokens },
                    Ok(Piece::Choice(index)) => Event::Choice(index),
                    Ok(Piece::Error { .. }) => {
                        return tampered("an error arrived as an answer chunk".into())
                    }
                    Err(e) => return tampered(format!("{e}")),
                };
                // Padded plaintext bytes, as the proxy counts them.
                self.streamed_bytes += ciphertext.len().saturating_sub(16) as u64;
                event
            }
            // The engine's error, its message sealed: opened here.
            Event::SealedError { ciphertext, .. } => match self.opener.open(&ciphertext) {
                // The kind inside the seal, not the one beside it.
                Ok(Piece::Error { kind, message }) => Event::Error(WireError::new(kind, message)),
                Ok(
                    Piece::Text { .. }
                    | Piece::ToolCall(_)
                    | Piece::Logprobs(_)
                    | Piece::Reasoning { .. }
                    | Piece::Choice(_),
                ) => tampered("an answer chunk arrived as the answer's error".into()),
                Err(e) => tampered(format!("{e}")),
            },
            Event::Delta { .. }
            | Event::ToolCall(_)
            | Event::Logprobs(_)
            | Event::Reasoning { .. }
            | Event::Choice(_) => tampered("an unsealed chunk arrived for a sealed request".into()),
            // A running total: what this node pays if the answer ends
            // without its final receipt.
            Event::Progress(signed) => match self.check_progress(&signed) {
                Ok(()) => {
                    self.progress = Some(signed.receipt.usage);
                    Event::Progress(signed)
                }
                Err(e) => tampered(format!("running total refused: {e}")),
            },
            Event::Usage(_) => tampered("an engine's count arrived unsealed".into()),
            Event::Done(done) => match self.check_receipt(&done) {
                Ok(()) => Event::Done(done),
                Err(e) => tampered(format!("usage receipt refused: {e}")),
            },
            other => other,
        }
    }

    /// A running total: signed by the worker that answers, at its listed
    /// price, for this request, no more than what has arrived (its chunks
    /// and bytes), no less than the last.
    fn check_progress(
        &self,
        signed: &cocoon_protocol::SignedReceipt,
    ) -> Result<(), ReceiptRefused> {
        let r = &signed.receipt;
        if !r.partial {
            return Err(ReceiptRefused::Kind);
        }
        let spki = self.signer(r)?;
        signed.check(spki, &self.header.request_id, &self.header.model, &r.usage)?;
        r.within(&self.delivered())?;
        if r.chunks > self.opener.chunks() {
            return Err(ReceiptRefused::Ahead {
                counted: r.chunks,
                arrived: self.opener.chunks(),
            });
        }
        if self
            .progress
            .is_some_and(|last| r.usage.completion_tokens < last.completion_tokens)
        {
            return Err(ReceiptRefused::Shrank);
        }
        Ok(())
    }

    fn delivered(&self) -> Delivered {
        Delivered {
            max_tokens: self.header.max_tokens,
            streamed_bytes: self.streamed_bytes,
            request_bytes: self.request_bytes,
        }
    }

    /// The identity of the recipient that signed `r`, if it may: one the
    /// request was sealed to, the one whose key the answer opened under,
    /// at the price it was listed at.
    fn signer(&self, r: &cocoon_protocol::Receipt) -> Result<&[u8], ReceiptRefused> {
        let recipient = self
            .recipients
            .iter()
            .find(|c| c.worker == r.worker)
            .ok_or(ReceiptRefused::NotARecipient)?;
        // The answer opened under one recipient's key: only that recipient
        // may receipt it (a proxy cannot pass one worker's answer off under
        // another's receipt).
        if let Some(answered) = self.opener.worker() {
            if *answered != r.worker {
                return Err(ReceiptRefused::OtherWorker {
                    signed: r.worker,
                    sealed: *answered,
                });
            }
        }
        if r.price_coefficient != recipient.price_coefficient {
            return Err(ReceiptRefused::Price {
                stated: r.price_coefficient,
                listed: recipient.price_coefficient,
            });
        }
        // The weights that served it are the ones its evidence vouches for.
        if recipient.weights_sha256.is_some() && r.model_sha256 != recipient.weights_sha256 {
            return Err(ReceiptRefused::Weights {
                stated: r.model_sha256.clone().unwrap_or_else(|| "none".into()),
                attested: recipient.weights_sha256.clone().unwrap_or_default(),
            });
        }
        Ok(&recipient.identity)
    }

    fn check_receipt(&self, done: &cocoon_protocol::Done) -> Result<(), ReceiptRefused> {
        let receipt = done.receipt.as_ref().ok_or(ReceiptRefused::Missing)?;
        let r = &receipt.receipt;
        if r.partial {
            return Err(ReceiptRefused::Kind);
        }
        let spki = self.signer(r)?;
        match &done.stamp {
            // Stamped under the answer's key by the enclave that sealed the
            // answer: the receipt and its signature are the worker's (a MAC
            // instead of a signature check; the proxy checks the signature).
            Some(stamp) => {
                self.opener
                    .check_stamp(receipt, stamp)
                    .map_err(|_| ReceiptRefused::Stamp)?;
                receipt.check_fields(&self.header.request_id, &self.header.model, &done.usage)?
            }
            None => receipt.check(
                spki,
                &self.header.request_id,
                &self.header.model,
                &done.usage,
            )?,
        }
        r.within(&self.delivered())?;
        if r.finish_reason != done.finish_reason {
            return Err(ReceiptRefused::FinishReason);
        }
        if r.chunks != self.opener.chunks() {
            return Err(ReceiptRefused::Truncated {
                sent: r.chunks,
                arrived: self.opener.chunks(),
            });
        }
        Ok(())
    }
}

fn tampered(message: String) -> Event {
    tracing::warn!(reason = %message, "sealed answer refused");
    Event::Error(WireError::new(
        ErrorKind::Upstream,
        format!("the answer failed its integrity check and was dropped: {message}"),
    ))
}

#[cfg(test)]
mod tests {
    use cocoon_protocol::tls::Identity;
    use cocoon_protocol::{
        Done, FinishReason, GenerateRequest, Input, Receipt, SamplingParams, SealTo, SealingKey,
        SignedReceipt, Usage,
    };

    use super::*;

    struct Setup {
        worker: Identity,
        unsealer: Unsealer,
        sealer: cocoon_protocol::sealed::ReplySealer,
    }

    fn setup() -> Setup {
        let worker = Identity::generate().unwrap();
        let key = SealingKey::generate();
        let request = GenerateRequest {
            model: "m".into(),
            input: Input::Prompt("p".into()),
            params: SamplingParams::default(),
        };
        let (sealed, opener) = cocoon_protocol::sealed::seal(
            &request,
            &[SealTo::at_base_price(worker.fingerprint(), key.public())],
            0,
        )
        .unwrap();
        let (_, sealer) = key.open(&worker.fingerprint(), &sealed).unwrap();
        let unsealer = Unsealer {
            opener,
            header: sealed.header,
            recipients: vec![recipient(&worker)],
            request_bytes: sealed.ciphertext.len() as u64,
            streamed_bytes: 0,
            progress: None,
        };
        Setup {
            worker,
            unsealer,
            sealer,
        }
    }

    fn done(s: &Setup, signer: &Identity, usage: Usage, request_id: [u8; 16]) -> Event {
        done_at(s, signer, usage, request_id, 1000)
    }

    /// `worker` as a recipient listed at the base price, its key binding no
    /// configuration.
    fn recipient(worker: &Identity) -> Candidate {
        Candidate {
            worker: worker.fingerprint(),
            sealing_key: [0; 32],
            identity: worker.spki().to_vec(),
            price_coefficient: 1000,
            weights_sha256: None,
        }
    }

    fn done_at(
        s: &Setup,
        signer: &Identity,
        usage: Usage,
        request_id: [u8; 16],
        price_coefficient: u32,
    ) -> Event {
        let receipt = Receipt {
            price_coefficient,
            request_id,
            model: "m".into(),
            model_sha256: None,
            usage,
            finish_reason: FinishReason::Stop,
            chunks: s.unsealer.opener.chunks(),
            worker: s.worker.fingerprint(),
            issued_at_ms: 0,
            partial: false,
        };
        Event::Done(Done {
            finish_reason: FinishReason::Stop,
            usage: Usage {
                completion_tokens: 2,
                ..Usage::default()
            },
            receipt: Some(SignedReceipt::sign(receipt, signer)),
            stamp: None,
            finishes: Vec::new(),
        })
    }

    /// A running total by `signer` for `completion` tokens and `chunks`.
    fn progress(s: &Setup, signer: &Identity, completion: u64, chunks: u64) -> Event {
        let receipt = Receipt {
            price_coefficient: 1000,
            request_id: s.unsealer.header.request_id,
            model: "m".into(),
            model_sha256: None,
            usage: Usage {
                prompt_tokens: 1,
                completion_tokens: completion,
                ..Usage::default()
            },
            finish_reason: FinishReason::Stop,
            chunks,
            worker: s.worker.fingerprint(),
            issued_at_ms: 0,
            partial: true,
        };
        Event::Progress(SignedReceipt::sign(receipt, signer))
    }

    /// The attack: a worker (or a proxy forging one) signs running totals
    /// for more than reached the client node, hoping it is billed if the
    /// answer is cut. Each is refused, and only accepted totals count.
    #[test]
    fn running_totals_claim_no_more_than_arrived() {
        let mut s = setup();
        let chunk = s.sealer.seal("Hello there", 2);
        assert!(matches!(
            s.unsealer.open(Event::Sealed { ciphertext: chunk }),
            Event::Delta { .. }
        ));
        // One chunk arrived, of 64 padded bytes: 2 tokens are fine.
        assert!(matches!(
            s.unsealer.open(progress(&s, &s.worker, 2, 1)),
            Event::Progress(_)
        ));
        assert_eq!(s.unsealer.progress.map(|u| u.completion_tokens), Some(2));
        // More chunks than arrived; more tokens than bytes streamed; less
        // than before; a final receipt posing as a total; another's key.
        for (case, event) in [
            ("ahead", progress(&s, &s.worker, 2, 2)),
            ("overclaim", progress(&s, &s.worker, 500, 1)),
            ("shrank", progress(&s, &s.worker, 1, 1)),
            (
                "stranger",
                progress(&s, &Identity::generate().unwrap(), 3, 1),
            ),
        ] {
            assert!(is_refused(&s.unsealer.open(event)), "{case}");
        }
        let Event::Progress(mut final_as_total) = progress(&s, &s.worker, 3, 1) else {
            unreachable!()
        };
        final_as_total.receipt.partial = false;
        let resigned = SignedReceipt::sign(final_as_total.receipt, &s.worker);
        assert!(is_refused(&s.unsealer.open(Event::Progress(resigned))));
        assert_eq!(s.unsealer.progress.map(|u| u.completion_tokens), Some(2));
    }

    fn is_refused(event: &Event) -> bool {
        matches!(event, Event::Error(e) if e.message.contains("integrity check"))
    }

    #[test]
    fn sealed_chunks_open_and_a_good_receipt_passes() {
        let mut s = setup();
        let chunk = s.sealer.seal("Hello", 1);
        match s.unsealer.open(Event::Sealed { ciphertext: chunk }) {
            Event::Delta { text, tokens } => assert_eq!((text.as_str(), tokens), ("Hello", 1)),
            other => panic!("{other:?}"),
        }
        let usage = Usage {
            completion_tokens: 2,
            ..Usage::default()
        };
        let id = s.unsealer.header.request_id;
        let event = done(&s, &s.worker, usage, id);
        assert!(matches!(s.unsealer.open(event), Event::Done(_)));
    }

    /// The attack: a proxy swaps a receipt's signature for bytes that do
    /// not verify, so that the receipt the client node pays for and keeps
    /// as evidence against the proxy proves nothing; or strips the stamp
    /// so the client node falls back to the signature. Without the stamp
    /// covering the signature the first passes (the stamped path checks no
    /// signature).
    #[test]
    fn a_proxy_can_neither_swap_a_stamped_receipts_signature_nor_strip_its_stamp() {
        let mut s = setup();
        let chunk = s.sealer.seal("Hello", 1);
        assert!(matches!(
            s.unsealer.open(Event::Sealed { ciphertext: chunk }),
            Event::Delta { .. }
        ));
        let usage = Usage {
            completion_tokens: 2,
            ..Usage::default()
        };
        let id = s.unsealer.header.request_id;
        let Event::Done(mut honest) = done(&s, &s.worker, usage, id) else {
            unreachable!()
        };
        honest.stamp = Some(s.sealer.stamp(honest.receipt.as_ref().unwrap()));
        let mut garbled = honest.clone();
        garbled.receipt.as_mut().unwrap().signature = vec![7; 64];
        match s.unsealer.open(Event::Done(garbled.clone())) {
            Event::Error(e) => assert!(e.message.contains("stamp"), "{}", e.message),
            other => panic!("a swapped signature passed: {other:?}"),
        }
        garbled.stamp = None;
        assert!(is_refused(&s.unsealer.open(Event::Done(garbled))));
        // The honest, stamped receipt passes.
        assert!(matches!(
            s.unsealer.open(Event::Done(honest)),
            Event::Done(_)
        ));
    }

    #[test]
    fn a_truncated_answer_is_refused() {
        let mut s = setup();
        let first = s.sealer.seal("Hello", 1);
        let _dropped = s.sealer.seal(" world", 1);
        assert!(matches!(
            s.unsealer.open(Event::Sealed { ciphertext: first }),
            Event::Delta { .. }
        ));
        // The proxy drops the last chunk and forwards the worker's receipt,
        // which counts two.
        let id = s.unsealer.header.request_id;
        let usage = Usage {
            completion_tokens: 2,
            ..Usage::default()
        };
        let mut event = done(&s, &s.worker, usage, id);
        if let Event::Done(d) = &mut event {
            let mut receipt = d.receipt.clone().unwrap().receipt;
            receipt.chunks = s.sealer.chunks();
            d.receipt = Some(SignedReceipt::sign(receipt, &s.worker));
        }
        match s.unsealer.open(event) {
            Event::Error(e) => assert!(e.message.contains("truncated"), "{}", e.message),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn tampered_plaintext_or_wrongly_receipted_answers_are_refused() {
        let mut s = setup();
        let mut chunk = s.sealer.seal("Hello", 1);
        chunk[0] ^= 1;
        assert!(is_refused(
            &s.unsealer.open(Event::Sealed { ciphertext: chunk })
        ));
        assert!(is_refused(&s.unsealer.open(Event::Delta {
            text: "injected".into(),
            tokens: 1
        })));
        // Nor may a proxy inject reasoning the worker never sealed.
        assert!(is_refused(&s.unsealer.open(Event::Reasoning {
            text: "injected".into(),
            tokens: 1
        })));

        let s = setup();
        let id = s.unsealer.header.request_id;
        let good = Usage {
            completion_tokens: 2,
            ..Usage::default()
        };
        let inflated = Usage {
            completion_tokens: 3,
            ..Usage::default()
        };
        let stranger = Identity::generate().unwrap();
        let mut s = s;
        // Inflated usage, signed by a non-recipient, for another request, none.
        for event in [
            done(&s, &s.worker, inflated, id),
            done(&s, &stranger, good, id),
            done(&s, &s.worker, good, [9; 16]),
            Event::Done(Done {
                finish_reason: FinishReason::Stop,
                usage: good,
                receipt: None,
                stamp: None,
                finishes: Vec::new(),
            }),
        ] {
            assert!(is_refused(&s.unsealer.open(event)));
        }
    }

    fn listed(price: u32, load: u32) -> ListedWorker {
        let id = Identity::generate().unwrap();
        ListedWorker {
            key: cocoon_protocol::WorkerKey {
                identity: id.spki().to_vec(),
                sealing_key: SealingKey::generate().public(),
                evidence: None,
                configuration: None,
                anchor: None,
                gpus: Vec::new(),
            },
            price_coefficient: price,
            load_permille: load,
        }
    }

    /// The node draws its recipients itself among all listed workers: the
    /// proxy's order (first = "best") decides nothing, cheaper workers are
    /// drawn more often under the price sort, and a proxy claiming a worker
    /// is idle and the others full moves the odds by 2x at most.
    #[test]
    fn recipients_are_drawn_by_the_node_not_taken_in_the_proxys_order() {
        let workers = vec![
            listed(1000, 0),
            listed(1000, 0),
            listed(1000, 0),
            listed(500, 0),
        ];
        let mut drawn = HashMap::new();
        for _ in 0..2000 {
            let chosen = candidates(&workers, |_| None, 2, Sort::Price, false);
            assert_eq!(chosen.len(), 2);
            assert_ne!(chosen[0].worker, chosen[1].worker);
            for c in chosen {
                *drawn.entry(c.worker).or_insert(0) += 1;
            }
        }
        let count = |i: usize| drawn[&workers[i].key.worker()];
        // The proxy's first is not favoured over its equals.
        assert!(
            count(0) < count(1) * 3 / 2 && count(0) > count(1) * 2 / 3,
            "{drawn:?}"
        );
        // The cheap one is drawn most.
        assert!(count(3) > count(0), "{drawn:?}");
        // Load as the proxy reports it: 2x at most.
        let (idle, full) = (listed(1000, 0), listed(1000, 1000));
        assert!(weight(&idle, Sort::Price) <= 2.0 * weight(&full, Sort::Price));
        // The worker holding the conversation's cache stays first.
        let kept = candidates(&workers, |_| None, 2, Sort::Price, true);
        assert_eq!(kept[0].worker, workers[0].key.worker());
    }

    /// A proxy that sent a request to both recipients cannot receipt one
    /// worker's answer with the other's signature.
    #[test]
    fn only_the_worker_whose_key_opened_the_answer_may_receipt_it() {
        let (a, b) = (Identity::generate().unwrap(), Identity::generate().unwrap());
        let (key_a, key_b) = (SealingKey::generate(), SealingKey::generate());
        let request = GenerateRequest {
            model: "m".into(),
            input: Input::Prompt("p".into()),
            params: SamplingParams::default(),
        };
        let (sealed, opener) = cocoon_protocol::sealed::seal(
            &request,
            &[
                SealTo::at_base_price(a.fingerprint(), key_a.public()),
                SealTo::at_base_price(b.fingerprint(), key_b.public()),
            ],
            0,
        )
        .unwrap();
        let (_, mut sealer_a) = key_a.open(&a.fingerprint(), &sealed).unwrap();
        let mut unsealer = Unsealer {
            opener,
            header: sealed.header.clone(),
            recipients: vec![recipient(&a), recipient(&b)],
            request_bytes: sealed.ciphertext.len() as u64,
            streamed_bytes: 0,
            progress: None,
        };
        let chunk = sealer_a.seal("Hi", 1);
        assert!(matches!(
            unsealer.open(Event::Sealed { ciphertext: chunk }),
            Event::Delta { .. }
        ));
        let usage = Usage {
            completion_tokens: 1,
            ..Usage::default()
        };
        let receipt = |worker: &Identity, chunks: u64| {
            Event::Done(Done {
                finish_reason: FinishReason::Stop,
                usage,
                receipt: Some(SignedReceipt::sign(
                    Receipt {
                        price_coefficient: 1000,
                        request_id: sealed.header.request_id,
                        model: "m".into(),
                        model_sha256: None,
                        usage,
                        finish_reason: FinishReason::Stop,
                        chunks,
                        worker: worker.fingerprint(),
                        issued_at_ms: 0,
                        partial: false,
                    },
                    worker,
                )),
                stamp: None,
                finishes: Vec::new(),
            })
        };
        match unsealer.open(receipt(&b, 1)) {
            Event::Error(e) => assert!(e.message.contains("sealed by"), "{}", e.message),
            other => panic!("B's receipt passed for A's answer: {other:?}"),
        }
        assert!(matches!(unsealer.open(receipt(&a, 1)), Event::Done(_)));
    }

    #[test]
    fn a_receipt_at_another_price_than_listed_is_refused() {
        let mut s = setup();
        let id = s.unsealer.header.request_id;
        let usage = Usage {
            completion_tokens: 2,
            ..Usage::default()
        };
        let event = done_at(&s, &s.worker, usage, id, 1500);
        match s.unsealer.open(event) {
            Event::Error(e) => assert!(e.message.contains("price coefficient 1500"), "{e}"),
            other => panic!("accepted a receipt at another price: {other:?}"),
        }
    }

    /// The worker's evidence vouches for the weights it serves the model
    /// with: a receipt naming other weights (or none) is refused, so what
    /// the app is told served its request is what the enclave was set up
    /// with.
    #[test]
    fn a_receipt_naming_other_weights_than_attested_is_refused() {
        let mut s = setup();
        s.unsealer.recipients[0].weights_sha256 = Some("aa".repeat(32));
        let id = s.unsealer.header.request_id;
        let usage = Usage {
            completion_tokens: 2,
            ..Usage::default()
        };
        let event = done_at(&s, &s.worker, usage, id, 1000);
        match s.unsealer.open(event) {
            Event::Error(e) => assert!(e.message.contains("names weights none"), "{e}"),
            other => panic!("accepted a receipt naming other weights: {other:?}"),
        }
    }

    /// A worker whose evidence binds `models` (name, weights), listed at the
    /// base price.
    fn attested_worker(models: &[(&str, &str)]) -> ListedWorker {
        use cocoon_attestation::{Attester, Configuration, ModelIdentity, PeerRole};
        let identity = Identity::generate().unwrap();
        let sealing = SealingKey::generate();
        let document = Configuration {
            models: models
                .iter()
                .map(|(name, weights)| ModelIdentity {
                    name: name.to_string(),
                    weights_sha256: Some(weights.to_string()),
                })
                .collect(),
            ..Configuration::new(PeerRole::Worker, "test")
        }
        .to_bytes();
        let binding = cocoon_attestation::configuration::bind(
            cocoon_protocol::worker_key::sealing_binding(&sealing.public(), identity.spki(), None),
            Some(&document),
        );
        let evidence = cocoon_attestation::simulated::SimulatedTee::new()
            .evidence(&binding)
            .unwrap();
        ListedWorker {
            key: WorkerKey {
                identity: identity.spki().to_vec(),
                sealing_key: sealing.public(),
                evidence: Some(evidence.to_bytes()),
                configuration: Some(document),
                anchor: None,
                gpus: Vec::new(),
            },
            price_coefficient: 1000,
            load_permille: 0,
        }
    }

    /// A proxy lists, under a model's name, a worker whose attested
    /// configuration serves another model, or the model with weights the
    /// network does not allow (a proxy is trusted with neither): the client
    /// node seals nothing to it. Before, the client node checked the image
    /// and the keys only, and took the proxy's word for the model.
    #[test]
    fn a_worker_listed_under_a_model_its_evidence_does_not_serve_is_not_sealed_to() {
        let allowed = "aa".repeat(32);
        let check = AttestationCheck {
            policy: cocoon_attestation::Policy {
                allow_simulated: true,
                worker_images: [
                    cocoon_attestation::simulated::SimulatedTee::measurements().image_hash()
                ]
                .into(),
                models: vec![cocoon_attestation::AllowedModel {
                    name: "m".into(),
                    sha256: allowed.clone(),
                }],
                require_fresh_evidence: false,
                ..cocoon_attestation::Policy::default()
            },
            collateral: None,
            verify_at: None,
            anchors: None,
            gpu: None,
            published: None,
        };
        let keys = KeyDirectory::new(Some(Arc::new(check)));
        let honest = attested_worker(&[("m", &allowed)]);
        let accepted = keys.verified(vec![honest.clone()], u32::MAX, "m").unwrap();
        assert_eq!(accepted.len(), 1);
        let chosen = candidates(
            &accepted,
            |k| keys.attested_weights(k, "m"),
            1,
            Sort::Price,
            false,
        );
        assert_eq!(chosen[0].weights_sha256.as_deref(), Some(allowed.as_str()));
        for (models, why) in [
            (vec![("small", allowed.as_str())], "another model"),
            (vec![("m", "bb".repeat(32).as_str())], "other weights"),
        ] {
            let listed = attested_worker(&models);
            let err = keys.verified(vec![listed], u32::MAX, "m").expect_err(why);
            assert_eq!(err.kind, ErrorKind::NoWorker, "{why}");
        }
    }
}
