//! Serving one proxy's requests: open the sealed request inside the enclave
//! (refusing replays and requests sealed to another worker), check the model is
//! one we offer and under its `max_concurrent`, run it, seal every chunk back to
//! the client node and sign a usage receipt. Every request is counted. A request
//! whose stream is dropped (the proxy sent `Cancel`) stops the engine.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use cocoon_inference::Engine;
use cocoon_protocol::tls::Identity;
use cocoon_protocol::{
    Connection, ErrorKind, Event, Features, Handler, Receipt, RequestBody, SealedRequest,
    SignedReceipt, WireError,
};
use futures::stream::{self, BoxStream};
use futures::StreamExt;
use tokio::sync::Semaphore;

/// Live counters of a worker, shared by all its proxy connections.
#[derive(Debug, Default)]
pub struct WorkerStats {
    pub started: AtomicU64,
    pub completed: AtomicU64,
    pub cancelled: AtomicU64,
    pub failed: AtomicU64,
    pub active: AtomicU64,
    pub tokens_generated: AtomicU64,
    /// Sealed requests refused: not for us, tampered with, replayed or stale.
    pub refused_sealed: AtomicU64,
    /// The engine's own load (running, waiting), polled; `None` when it cannot tell.
    pub engine_load: std::sync::Mutex<Option<cocoon_inference::EngineLoad>>,
}

pub(crate) struct RequestHandler {
    pub engine: Arc<dyn Engine>,
    /// Per model: its concurrency limit and weights hash.
    /// Each model's request slots, weights hash and announced features.
    pub models: HashMap<String, (Arc<Semaphore>, Option<String>, Features)>,
    pub stats: Arc<WorkerStats>,
    pub metrics: Arc<cocoon_metrics::Metrics>,
    pub identity: Arc<Identity>,
    pub sealing: Arc<crate::SealingKeys>,
    pub replay: crate::replay::ReplayGuard,
    /// Tokens generated within this are sealed as one chunk.
    pub coalesce: std::time::Duration,
    /// Whether the operator drains this worker, and the prices it asks
    /// (a request is served only at one of them; its receipts state it).
    pub controls: Arc<crate::WorkerControls>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn refuse(kind: ErrorKind, message: String) -> BoxStream<'static, Event> {
    stream::iter([Event::Error(WireError::new(kind, message))]).boxed()
}

/// Counts a request as active until dropped; if it ends without a terminal event
/// the request was cancelled.
struct Tracker {
    stats: Arc<WorkerStats>,
    ended: bool,
}

impl Drop for Tracker {
    fn drop(&mut self) {
        self.stats.active.fetch_sub(1, Ordering::SeqCst);
        if !self.ended {
            self.stats.cancelled.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl Handler for RequestHandler {
    fn serve(&self, _conn: &Connection, body: RequestBody) -> BoxStream<'static, Event> {
        match body {
            RequestBody::ListModels => {
                stream::iter([Event::Models(self.engine.listed_models())]).boxed()
            }
            RequestBody::WorkerKeys { .. } => refuse(
                ErrorKind::InvalidRequest,
                "workers do not list keys; ask a proxy".into(),
            ),
            RequestBody::OpenAccount { .. } | RequestBody::CloseAccount | RequestBody::Voucher => {
                refuse(
                    ErrorKind::InvalidRequest,
                    "workers keep no accounts; ask a proxy".into(),
                )
            }
            RequestBody::Generate(sealed) => {
                // Labelled by the model in the clear header (as the proxy sees it).
                let timer = self.metrics.request(&sealed.header.model);
                cocoon_metrics::metered(timer, self.generate(sealed))
            }
        }
    }
}

impl RequestHandler {
    fn generate(&self, sealed: SealedRequest) -> BoxStream<'static, Event> {
        // Draining: this worker announced no models; a request already on
        // its way is refused before any token, as an upstream failure,
        // which the client node seals again to another worker (nothing
        // was billed).
        if self.controls.draining() {
            let why = match self.controls.withdrawn() {
                Some(why) => format!("the network withdrew this worker: {why}"),
                None => "this worker is draining: it takes no new requests".into(),
            };
            return refuse(ErrorKind::Upstream, why);
        }
        let me = self.identity.fingerprint();
        let (request, sealer) = match self.sealing.open(&me, &sealed) {
            Ok(opened) => opened,
            // Sealed to a key this worker has rotated away and dropped (or
            // tampered with: the two look alike): an honest client node
            // seals it again to the key announced now.
            Err(e) if e.rotated => {
                self.stats.refused_sealed.fetch_add(1, Ordering::Relaxed);
                return refuse(
                    ErrorKind::KeysChanged,
                    "the sealed request opens under none of this worker's sealing keys now (they rotate on schedule): seal it again to the key it announces".into(),
                );
            }
            Err(crate::sealing_keys::Unopened { error: e, .. }) => {
                self.stats.refused_sealed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "sealed request refused");
                return refuse(
                    ErrorKind::InvalidRequest,
                    format!("sealed request refused: {e}"),
                );
            }
        };
        let listed = sealed.listed_price(&me).unwrap_or_default();
        let header = sealed.header;
        if let Err(e) = self
            .replay
            .admit(header.request_id, header.sent_at_ms, now_ms())
        {
            self.stats.refused_sealed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, "sealed request refused");
            return refuse(
                ErrorKind::InvalidRequest,
                format!("sealed request refused: {e}"),
            );
        }
        let Some((limit, model_sha256, features)) = self.models.get(&request.model) else {
            return refuse(
                ErrorKind::ModelNotFound,
                format!("this worker does not serve '{}'", request.model),
            );
        };
        // Served only at a price this worker asked (the client node's
        // listing, authenticated by the seal just opened); another is
        // refused before a token, and an honest client node seals again
        // at the price listed now.
        if let Err(e) = self.controls.prices().accepts(&request.model, listed) {
            return refuse(ErrorKind::KeysChanged, e.to_string());
        }
        // Misrouted (by a faulty or dishonest proxy): refused, never
        // answered as if the feature had not been asked for.
        let by = format!("this worker for '{}'", request.model);
        if let Err(e) = request.check_served(features, &by) {
            return refuse(e.kind, e.message);
        }
        let limit = limit.clone();
        let model_sha256 = model_sha256.clone();
        let answer = Answer {
            engine: self.engine.clone(),
            stats: self.stats.clone(),
            identity: self.identity.clone(),
            price_coefficient: listed,
            coalesce: self.coalesce,
        };
        stream::once(async move {
            let permit = match limit.clone().try_acquire_owned() {
                Ok(permit) => Some(permit),
                // A proxy counts a slot free as soon as it cancels a request;
                // the engine lets go of it a moment later.
                Err(_) => tokio::time::timeout(CAPACITY_GRACE, limit.acquire_owned())
                    .await
                    .ok()
                    .and_then(Result::ok),
            };
            match permit {
                Some(permit) => answer.run(request, sealer, model_sha256, permit),
                None => refuse(
                    ErrorKind::Overloaded,
                    format!("worker is at capacity for '{}'", request.model),
                ),
            }
        })
        .flatten()
        .boxed()
    }
}

/// How long a request waits for a slot the engine has not let go of yet.
const CAPACITY_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// What running one opened request needs.
struct Answer {
    engine: Arc<dyn Engine>,
    stats: Arc<WorkerStats>,
    identity: Arc<Identity>,
    price_coefficient: u32,
    coalesce: std::time::Duration,
}

/// Tokens between two signed running totals of a streaming answer (the
/// first goes out with the first chunk, so the prompt is billed as soon as
/// an answer starts): what a client that hangs up can get unbilled.
pub const PROGRESS_TOKENS: u64 = 16;

/// What the worker signs receipts for, for one answer.
struct Signer {
    identity: Arc<Identity>,
    request_id: [u8; 16],
    model: String,
    model_sha256: Option<String>,
    price_coefficient: u32,
}

impl Signer {
    fn sign(
        &self,
        usage: cocoon_protocol::Usage,
        finish_reason: cocoon_protocol::FinishReason,
        chunks: u64,
        partial: bool,
    ) -> SignedReceipt {
        let receipt = Receipt {
            request_id: self.request_id,
            model: self.model.clone(),
            model_sha256: self.model_sha256.clone(),
            usage,
            finish_reason,
            chunks,
            worker: self.identity.fingerprint(),
            price_coefficient: self.price_coefficient,
            issued_at_ms: now_ms(),
            partial,
        };
        SignedReceipt::sign(receipt, &self.identity)
    }

    /// `running`'s usage so far, signed as a running total after `chunks`
    /// chunks (its finish reason means nothing yet).
    fn running_total(&self, running: &Running, chunks: u64) -> Event {
        Event::Progress(self.sign(
            running.usage,
            cocoon_protocol::FinishReason::Stop,
            chunks,
            true,
        ))
    }
}

/// The usage of an answer so far, as its events show it.
#[derive(Default)]
struct Running {
    usage: cocoon_protocol::Usage,
    /// Completion tokens at the last signed running total.
    signed_at: Option<u64>,
}

impl Running {
    fn add(&mut self, tokens: u32, reasoning: bool) {
        self.usage.completion_tokens += u64::from(tokens);
        if reasoning {
            self.usage.reasoning_tokens += u64::from(tokens);
        }
    }

    /// Whether a running total is due after the chunk just sealed.
    fn due(&mut self) -> bool {
        let now = self.usage.completion_tokens;
        let due = self.signed_at.is_none_or(|at| now >= at + PROGRESS_TOKENS);
        if due {
            self.signed_at = Some(now);
        }
        due
    }
}

impl Answer {
    /// Run `request` on the engine, sealing each chunk and signing the
    /// receipt, and a running total every [`PROGRESS_TOKENS`] tokens.
    fn run(
        self,
        request: cocoon_protocol::GenerateRequest,
        mut sealer: cocoon_protocol::sealed::ReplySealer,
        model_sha256: Option<String>,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) -> BoxStream<'static, Event> {
        let Answer {
            engine,
            stats,
            identity,
            price_coefficient,
            coalesce,
        } = self;
        stats.started.fetch_add(1, Ordering::SeqCst);
        stats.active.fetch_add(1, Ordering::SeqCst);
        let mut tracker = Tracker {
            stats,
            ended: false,
        };
        let signer = Signer {
            identity,
            request_id: sealer.request_id(),
            model: request.model.clone(),
            model_sha256,
            price_coefficient,
        };
        let mut running = Running::default();
        crate::coalesce::coalesce(engine.generate(request), coalesce)
            .flat_map(move |event| {
                let _permit = &permit;
                let stats = &tracker.stats;
                // Content: its tokens, whether a reasoning one, sealed.
                let (tokens, reasoning, ciphertext) = match event {
                    Event::Delta { text, tokens } => (tokens, false, sealer.seal(&text, tokens)),
                    Event::Reasoning { text, tokens } => {
                        (tokens, true, sealer.seal_reasoning(&text, tokens))
                    }
                    Event::ToolCall(piece) => {
                        (piece.tokens, false, sealer.seal_tool_call(&piece))
                    }
                    Event::Choice(index) => (0, false, sealer.seal_choice(index)),
                    Event::Logprobs(logprobs) => (0, false, sealer.seal_logprobs(&logprobs)),
                    Event::Usage(u) => {
                        running.usage.prompt_tokens = u.prompt_tokens;
                        running.usage.cached_prompt_tokens = u.cached_prompt_tokens;
                        return stream::iter(Vec::new());
                    }
                    Event::Done(mut done) => {
                        stats.completed.fetch_add(1, Ordering::SeqCst);
                        tracker.ended = true;
                        let signed =
                            signer.sign(done.usage, done.finish_reason, sealer.chunks(), false);
                        done.stamp = Some(sealer.stamp(&signed));
                        done.receipt = Some(signed);
                        return stream::iter(vec![Event::Done(done)]);
                    }
                    Event::Error(e) => {
                        stats.failed.fetch_add(1, Ordering::SeqCst);
                        tracker.ended = true;
                        // What was delivered before the failure is billed:
                        // its running total, then the error. The engine's
                        // words may echo the prompt: only the kind crosses
                        // the proxy in clear.
                        let mut out = Vec::with_capacity(2);
                        if running.usage.completion_tokens > 0 {
                            out.push(signer.running_total(&running, sealer.chunks()));
                        }
                        out.push(Event::SealedError {
                            kind: e.kind,
                            ciphertext: sealer.seal_error(e.kind, &e.message),
                        });
                        return stream::iter(out);
                    }
                    other => {
                        // Engines produce only text, Done and errors.
                        stats.failed.fetch_add(1, Ordering::SeqCst);
                        tracker.ended = true;
                        tracing::error!(event = ?std::mem::discriminant(&other), "engine produced an unexpected event");
                        return stream::iter(vec![Event::Error(WireError::new(
                            ErrorKind::Internal,
                            "engine produced an unexpected event",
                        ))]);
                    }
                };
                stats
                    .tokens_generated
                    .fetch_add(u64::from(tokens), Ordering::SeqCst);
                running.add(tokens, reasoning);
                let mut out = vec![Event::Sealed { ciphertext }];
                if tokens > 0 && running.due() {
                    out.push(signer.running_total(&running, sealer.chunks()));
                }
                stream::iter(out)
            })
            .boxed()
    }
}
