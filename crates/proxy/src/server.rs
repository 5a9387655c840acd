//! The proxy's accept loop and its two connection handlers: client nodes send
//! sealed requests that are forwarded to one of their recipients; workers
//! announce offers with attested keys (checked here) and answer.

use cocoon_protocol::sync::LockRecover;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cocoon_protocol::ra_tls::AttestationCheck;
use cocoon_protocol::tls::{self, Fingerprint, PinnedKeys};
use cocoon_protocol::{
    handshake, Announce, Connection, ErrorKind, Event, Handler, Hello, RequestBody, Role,
    SealedRequest, WireError, WorkerKey,
};
use futures::future::{self, FutureExt};
use futures::stream::{self, BoxStream};
use futures::StreamExt;
use tokio::net::TcpListener;

use crate::receipts;
use crate::refusal::{AdmitError, AnnounceRefused};
use crate::unfinished::Unfinished;
use crate::{Books, Inspector, ProxySettings, ReceiptLog, Registry, RequestIds, Settlement};
use cocoon_protocol::receipt::Delivered;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Models one worker may offer (an open proxy takes announcements from
/// anyone attested: the registry must not grow with one worker's list).
pub(crate) const MAX_OFFERS: usize = 32;
/// The longest model name accepted, bytes.
pub(crate) const MAX_MODEL_NAME: usize = 128;

/// A running proxy, for the devnet and tests.
#[derive(Clone)]
pub struct ProxyHandle {
    pub registry: Arc<Registry>,
    pub receipts: Arc<ReceiptLog>,
    /// What clients owe and workers are owed (when the proxy bills).
    pub books: Option<Arc<Books>>,
    /// Settlement on chain (when the proxy bills).
    pub settlement: Option<Arc<Settlement>>,
    pub fingerprint: Fingerprint,
    /// Request metrics and the routing table's gauges (`/metrics`).
    pub metrics: Arc<cocoon_metrics::Metrics>,
    /// The door before the handshake (its unfinished handshakes).
    pub gate: Arc<crate::Gate>,
    /// The operator's run-time controls (disable and enable workers).
    pub controls: Arc<crate::ProxyControls>,
    /// The admin endpoints' token (none: no admin endpoints).
    pub(crate) admin_token: Option<cocoon_metrics::admin::AdminToken>,
    stop: tokio_util::sync::CancellationToken,
}

impl ProxyHandle {
    /// Stop: accept no more connections and close every open one (their
    /// requests end with an error; workers and client nodes redial).
    pub fn shutdown(&self) {
        self.stop.cancel();
    }
}

/// Serve on `listener` until `shutdown` resolves.
pub async fn run(
    listener: TcpListener,
    settings: ProxySettings,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let (_handle, serve) = start(listener, settings)?;
    tokio::select! {
        _ = serve => {}
        _ = shutdown => {}
    }
    Ok(())
}

/// Start serving; returns a handle and the accept loop future (drop it to stop).
/// What this proxy's evidence says it was told to do: the policy it
/// enforces on workers and clients, the models it routes, its contracts,
/// its version.
fn configuration_of(settings: &ProxySettings) -> cocoon_attestation::Configuration {
    cocoon_attestation::Configuration {
        models: settings
            .models
            .iter()
            .map(|name| cocoon_attestation::ModelIdentity {
                name: name.clone(),
                weights_sha256: None,
            })
            .collect(),
        policy_sha256: settings.attestation.as_ref().map(|a| a.policy.sha256()),
        trust_root: settings.attestation.as_ref().and_then(|a| a.trust_root()),
        contracts: settings
            .settlement
            .as_ref()
            .map(|s| vec![s.proxy_contract().to_string(), s.root().to_string()])
            .unwrap_or_default(),
        ..cocoon_attestation::Configuration::new(
            cocoon_attestation::PeerRole::Proxy,
            env!("CARGO_PKG_VERSION"),
        )
    }
}

pub fn start(
    listener: TcpListener,
    settings: ProxySettings,
) -> std::io::Result<(ProxyHandle, impl Future<Output = ()> + Send)> {
    settings
        .identity
        .bind_configuration(&configuration_of(&settings));
    // A role open to any key (admitted by evidence or by contract) opens
    // the handshake to any key; the role check after hello decides.
    let pins = if settings.allowed_clients.is_any() || settings.allowed_workers.is_any() {
        PinnedKeys::any()
    } else {
        PinnedKeys::new(
            settings
                .allowed_clients
                .keys()
                .chain(settings.allowed_workers.keys())
                .copied(),
        )
    };
    let server = tls::server_config_attested(
        settings.identity.clone(),
        Arc::new(pins),
        settings.attestation.clone(),
        Arc::new(settings.allowed_workers.clone()),
    )
    .map_err(std::io::Error::other)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(server);
    let registry = Arc::new(Registry::new(settings.models.clone()).with_queue(settings.queue));
    let receipts = Arc::new(ReceiptLog::default());
    let settlement = settings.settlement.clone();
    let metrics = Arc::new(
        cocoon_metrics::Metrics::new("proxy")
            .with_collector(crate::status::RoutingMetrics(registry.clone())),
    );
    let stop = tokio_util::sync::CancellationToken::new();
    let gate = crate::Gate::new(settings.gate);
    let controls = crate::ProxyControls::new(registry.clone());
    let controls = Arc::new(match &settings.disabled_workers_file {
        Some(path) => controls.kept_in(path.clone()).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("disabled_workers_file {}: {e}", path.display()),
            )
        })?,
        None => controls,
    });
    let handle = ProxyHandle {
        gate: gate.clone(),
        controls: controls.clone(),
        admin_token: settings.admin_token.clone(),
        stop: stop.clone(),
        metrics: metrics.clone(),
        registry: registry.clone(),
        receipts: receipts.clone(),
        books: settlement.as_ref().map(|s| s.books().clone()),
        settlement: settlement.clone(),
        fingerprint: settings.identity.fingerprint(),
    };
    let shared = Arc::new(Shared {
        settings,
        registry,
        receipts,
        forwarded: Arc::default(),
        settlement,
        metrics,
        next_worker: AtomicU64::new(1),
        stop: stop.clone(),
        controls,
    });
    let serve = async move {
        loop {
            let accepted = tokio::select! {
                _ = stop.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            let (tcp, peer) = match accepted {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let pass = match gate.enter(peer.ip()) {
                Ok(pass) => pass,
                Err(turned) => {
                    tracing::debug!(%peer, reason = %turned, "connection closed before its handshake");
                    drop(tcp);
                    continue;
                }
            };
            let challenge = gate.challenge();
            let shared = shared.clone();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Err(e) = shared.admit(tcp, &acceptor, pass, challenge).await {
                    tracing::info!(%peer, error = %e, "connection refused");
                }
            });
        }
    };
    Ok((handle, serve))
}

struct Shared {
    settings: ProxySettings,
    registry: Arc<Registry>,
    receipts: Arc<ReceiptLog>,
    /// Every client connection's sealed requests, by id: each goes once.
    forwarded: Arc<RequestIds>,
    settlement: Option<Arc<Settlement>>,
    metrics: Arc<cocoon_metrics::Metrics>,
    next_worker: AtomicU64,
    stop: tokio_util::sync::CancellationToken,
    controls: Arc<crate::ProxyControls>,
}

impl Shared {
    /// An unpinned worker's certificate: its RA-TLS evidence must pass the
    /// policy as a worker's (image, configuration, freshness).
    fn evidence_of_worker(
        &self,
        key: Fingerprint,
        certificate: Option<&[u8]>,
    ) -> Result<(), AdmitError> {
        let (Some(check), Some(der)) = (&self.settings.attestation, certificate) else {
            return Err(AdmitError::NoEvidence { key });
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        check
            .check_der(der, cocoon_attestation::PeerRole::Worker, now)
            .map(|_| ())
            .map_err(|refusal| AdmitError::Evidence { key, refusal })
    }

    /// TLS, hello, role check against the pins, then hand the connection to its handler.
    async fn admit(
        self: &Arc<Self>,
        tcp: tokio::net::TcpStream,
        acceptor: &tokio_rustls::TlsAcceptor,
        pass: crate::gate::Pass,
        challenge: Option<cocoon_protocol::pow::Challenge>,
    ) -> Result<(), AdmitError> {
        let (tls, key) = tls::accept_after(tcp, acceptor, HANDSHAKE_TIMEOUT, challenge).await?;
        let certificate = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec());
        let ours = Hello {
            role: Role::Proxy,
            software: format!("cocoon-proxy/{}", env!("CARGO_PKG_VERSION")),
        };
        let (framed, peer) =
            handshake(tls, &ours, self.settings.max_frame_bytes, HANDSHAKE_TIMEOUT).await?;
        // Handshake done: its slot goes back to the gate.
        drop(pass);
        // A worker its operator disabled, or the proxy evicted, is refused.
        if peer.role == Role::Worker {
            if let Some(reason) = self.controls.refusal(&key) {
                return Err(AdmitError::Disabled { key, reason });
            }
        }
        let mut worker_id = None;
        let mut worker_side = None;
        let handler: Arc<dyn Handler> = match peer.role {
            Role::Client if self.settings.allowed_clients.contains(&key) => Arc::new(ClientSide {
                registry: self.registry.clone(),
                receipts: self.receipts.clone(),
                forwarded: self.forwarded.clone(),
                settlement: self.settlement.clone(),
                client: key,
                inspect: self.settings.inspect.clone(),
                timeouts: self.settings.timeouts,
                metrics: self.metrics.clone(),
                controls: self.controls.clone(),
            }),
            Role::Worker if self.settings.allowed_workers.contains(&key) => {
                // Open admission: a worker nobody pinned is admitted on its
                // evidence, checked now against the policy as a worker's.
                if self.settings.allowed_workers.is_any() {
                    self.evidence_of_worker(key, certificate.as_deref())?;
                }
                let id = self.next_worker.fetch_add(1, Ordering::Relaxed);
                worker_id = Some(id);
                let side = Arc::new(WorkerSide {
                    registry: self.registry.clone(),
                    id,
                    attestation: self.settings.attestation.clone(),
                    settlement: self.settlement.clone(),
                    payee: std::sync::Mutex::new(None),
                    offers: Default::default(),
                });
                worker_side = Some(side.clone());
                side
            }
            role => return Err(AdmitError::NotAllowed { key, role }),
        };
        let conn = Connection::spawn(
            framed,
            peer.clone(),
            Some(key),
            handler,
            self.settings.mux.clone(),
        );
        tracing::info!(role = ?peer.role, %key, software = %peer.software, "peer connected");
        if let Some(id) = worker_id {
            self.controls.connected(id, key, &conn);
        }
        // A worker's evidence passed in the handshake; it is kept up while
        // connected (it ages out; collateral or policy may change).
        if let (Some(_), Some(check), Some(certificate)) =
            (worker_id, &self.settings.attestation, certificate)
        {
            cocoon_protocol::ra_tls::watch_peer(
                check.clone(),
                cocoon_attestation::PeerRole::Worker,
                certificate,
                conn.clone(),
            );
        }
        if let (Some(side), Some(check)) = (worker_side, &self.settings.attestation) {
            side.drop_withdrawn_models(check.clone(), conn.clone());
        }
        tokio::select! {
            _ = conn.closed() => {}
            _ = self.stop.cancelled() => conn.close("proxy shutting down"),
        }
        if let Some(id) = worker_id {
            self.registry.remove(id);
            self.controls.left(id);
        }
        tracing::info!(role = ?peer.role, %key, reason = ?conn.close_reason(), "peer disconnected");
        Ok(())
    }
}

/// Requests from a client node: list models or workers' keys, or forward a
/// sealed generation to one of its recipients.
struct ClientSide {
    registry: Arc<Registry>,
    receipts: Arc<ReceiptLog>,
    forwarded: Arc<RequestIds>,
    settlement: Option<Arc<Settlement>>,
    /// The client node's identity (who pays).
    client: Fingerprint,
    inspect: Option<Inspector>,
    timeouts: crate::HopTimeouts,
    metrics: Arc<cocoon_metrics::Metrics>,
    /// Evicts workers whose receipts keep being refused.
    controls: Arc<crate::ProxyControls>,
}

impl Handler for ClientSide {
    fn serve(&self, _conn: &Connection, body: RequestBody) -> BoxStream<'static, Event> {
        match body {
            RequestBody::ListModels => {
                stream::iter([Event::Models(self.registry.models())]).boxed()
            }
            RequestBody::WorkerKeys { model, prefs } => {
                let answer = match self.registry.keys(&model, &prefs) {
                    Ok(keys) => Event::WorkerKeys(keys),
                    Err(e) => Event::Error(e),
                };
                stream::iter([answer]).boxed()
            }
            RequestBody::Generate(request) => {
                if !self.forwarded.first_time(request.header.request_id) {
                    return stream::iter([Event::Error(WireError::new(
                        ErrorKind::InvalidRequest,
                        "this sealed request was forwarded already; a request id is answered and billed once",
                    ))])
                    .boxed();
                }
                let timer = self.metrics.request(&request.header.model);
                cocoon_metrics::metered(timer, self.forward(request))
            }
            RequestBody::OpenAccount { contract } => {
                let settlement = self.settlement.clone();
                let client = self.client;
                stream::once(async move {
                    match settlement {
                        None => Event::Error(no_billing()),
                        Some(s) => match s.open_account(client, contract).await {
                            Ok(terms) => Event::Account(terms),
                            Err(e) => Event::Error(e),
                        },
                    }
                })
                .boxed()
            }
            RequestBody::CloseAccount => {
                let settlement = self.settlement.clone();
                let client = self.client;
                stream::once(async move {
                    match settlement {
                        None => Event::Error(no_billing()),
                        Some(s) => match s.close_account(&client).await {
                            Ok(voucher) => Event::Voucher(voucher),
                            Err(e) => Event::Error(e),
                        },
                    }
                })
                .boxed()
            }
            RequestBody::Voucher => stream::iter([Event::Error(WireError::new(
                ErrorKind::InvalidRequest,
                "vouchers are for workers",
            ))])
            .boxed(),
        }
    }
}

fn no_billing() -> WireError {
    WireError::new(
        ErrorKind::InvalidRequest,
        "this proxy does not bill: it settles nothing on chain",
    )
}

impl ClientSide {
    fn forward(&self, request: SealedRequest) -> BoxStream<'static, Event> {
        let candidates: Vec<Fingerprint> = request.workers().copied().collect();
        let settlement = self.settlement.clone();
        let client = self.client;
        let registry = self.registry.clone();
        let receipts = self.receipts.clone();
        let books = self.settlement.as_ref().map(|s| s.books().clone());
        let inspect = self.inspect.clone();
        let timeouts = self.timeouts;
        let controls = self.controls.clone();
        stream::once(async move {
            // A billing proxy serves a client only from a contract that can pay.
            let payer = match &settlement {
                None => None,
                Some(s) => match s.paying(&client).await {
                    Ok(p) => Some(p),
                    Err(e) => return stream::iter([Event::Error(e)]).boxed(),
                },
            };
            // Waits in the model's queue while every worker is full.
            let picked = registry
                .pick_or_wait(
                    &request.header.model,
                    &candidates,
                    request.sort,
                    request.affinity,
                )
                .await;
            let picked = match picked {
                Ok(x) => x,
                Err(e) => return stream::iter([Event::Error(e)]).boxed(),
            };
            // Billed at the price the client node listed for this worker,
            // sealed with its key (altered, the worker cannot open it); the
            // worker serves only at a price it announced (its current one,
            // or the one before within a grace period after a change) and
            // signs that price into its receipt, which must state it.
            let coefficient = request
                .listed_price(&picked.key.worker())
                .unwrap_or(picked.price_coefficient);
            // The answer's worst cost at that price is held against the
            // client's credit while it runs.
            let reservation = match &settlement {
                None => None,
                Some(s) => match s
                    .reserve(
                        &client,
                        &request.header,
                        request.ciphertext.len() as u64,
                        coefficient,
                    )
                    .await
                {
                    Ok(r) => Some(r),
                    Err(e) => return stream::iter([Event::Error(e)]).boxed(),
                },
            };
            let header = request.header.clone();
            let request_bytes = request.ciphertext.len() as u64;
            // Logs name a request by its random id (never its content).
            let request_id = u128::from_be_bytes(header.request_id);
            tracing::debug!(request = %format_args!("{request_id:032x}"), model = %header.model, worker = %picked.key.worker(), "forwarding");
            let body = RequestBody::Generate(request);
            if let Some(inspect) = &inspect {
                inspect.see(&body);
            }
            match picked.conn.request(body).await {
                // The slot is held until the answer stream is dropped; dropping
                // it early (client hung up) cancels the request at the worker.
                Ok(answer) => {
                    let slot = picked.slot;
                    let key = picked.key;
                    let payee = picked.payee;
                    // Timings for the registry's speed ranking.
                    let sent = std::time::Instant::now();
                    let mut first: Option<std::time::Instant> = None;
                    // Padded plaintext bytes: an upper bound of the text's.
                    let mut streamed_bytes = 0u64;
                    // What the answer had delivered once `streamed_bytes` came.
                    let max_tokens = header.max_tokens;
                    let delivered = move |streamed_bytes| Delivered {
                        max_tokens,
                        streamed_bytes,
                        request_bytes,
                    };
                    // Billed at the worker's last running total if the
                    // answer never ends with `Done`.
                    let mut unfinished = Unfinished::new(
                        receipts.clone(),
                        header.clone(),
                        key.clone(),
                        coefficient,
                        (books.clone(), payer.clone(), payee.clone()),
                    );
                    timeouts
                        .apply(answer)
                        .then(move |event| {
                            if let Some(inspect) = &inspect {
                                inspect.see(&event);
                            }
                            // Held until the answer's stream ends.
                            let _held = &reservation;
                            match &event {
                                Event::Sealed { ciphertext } => {
                                    if first.is_none() {
                                        slot.first_token(sent.elapsed());
                                        first = Some(std::time::Instant::now());
                                    }
                                    streamed_bytes +=
                                        ciphertext.len().saturating_sub(16) as u64;
                                }
                                Event::Error(_) | Event::SealedError { .. } => slot.failed(),
                                Event::Progress(signed) => {
                                    if let Err(e) =
                                        unfinished.progress(signed, delivered(streamed_bytes))
                                    {
                                        tracing::warn!(request = %format_args!("{request_id:032x}"), error = %e, "running total refused");
                                    }
                                }
                                _ => {}
                            }
                            let done = match event {
                                // Only sealed text passes: a worker must never
                                // send plaintext through the proxy.
                                Event::Delta { .. }
                                | Event::ToolCall(_)
                                | Event::Reasoning { .. }
                                | Event::Choice(_)
                                | Event::Usage(_)
                                | Event::Logprobs(_) => {
                                    return future::ready(Event::Error(WireError::new(
                                        ErrorKind::Upstream,
                                        "the worker sent an unsealed answer; refused",
                                    )))
                                    .boxed()
                                }
                                Event::Done(done) => done,
                                other => return future::ready(other).boxed(),
                            };
                            // Its own receipt bills it (or, refused, nothing).
                            unfinished.ended();
                            let delivered = delivered(streamed_bytes);
                            // Only verified receipts are billed, at their
                            // signed usage; billing happens in the checker, so
                            // a client that hangs up now pays all the same.
                            let bill = (books.clone(), payer.clone(), payee.clone());
                            let then: receipts::Outcome = Box::new(move |checked| match checked {
                                Ok(usage) => {
                                    if let (Some(books), Some(client), Some(worker)) = bill {
                                        books.record(&client, &worker, &usage, coefficient);
                                    }
                                }
                                Err(e) => {
                                    tracing::warn!(request = %format_args!("{request_id:032x}"), error = %e, "usage receipt rejected; request not billed");
                                }
                            });
                            let since_first = first.map(|f| f.elapsed()).unwrap_or_default();
                            let (receipts, header, key, ranking, controls) = (
                                receipts.clone(),
                                header.clone(),
                                key.clone(),
                                slot.ranking(),
                                controls.clone(),
                            );
                            async move {
                                let checked = receipts
                                    .record(
                                        receipts::Answered {
                                            header: &header,
                                            worker: &key,
                                            usage: &done.usage,
                                            price_coefficient: coefficient,
                                            delivered,
                                        },
                                        done.receipt.clone(),
                                        then,
                                    )
                                    .await;
                                // Verified usage alone ranks the worker's speed;
                                // refused receipts, in a row, evict it.
                                match checked {
                                    Ok(usage) => {
                                        ranking.done(usage.completion_tokens, since_first);
                                        controls.receipt_verified(&key.worker());
                                    }
                                    Err(receipts::Refused::CheckerStopped) => ranking.failed(),
                                    Err(refused) => {
                                        ranking.failed();
                                        controls.receipt_refused(key.worker(), &refused.to_string());
                                    }
                                }
                                Event::Done(done)
                            }
                            .boxed()
                        })
                        .boxed()
                }
                Err(e) => {
                    let error = WireError::new(
                        ErrorKind::Upstream,
                        format!("worker for '{}' went away: {e}", header.model),
                    );
                    stream::iter([Event::Error(error)]).boxed()
                }
            }
        })
        .flatten()
        .boxed()
    }
}

/// A worker's connection: it announces offers; it never sends requests.
struct WorkerSide {
    registry: Arc<Registry>,
    id: u64,
    attestation: Option<Arc<AttestationCheck>>,
    settlement: Option<Arc<Settlement>>,
    /// The worker contract this connection's worker is paid through.
    payee: std::sync::Mutex<Option<cocoon_chain::StdAddr>>,
    /// The models of its accepted announcement (name, weights SHA-256).
    offers: std::sync::Mutex<Vec<(String, Option<String>)>>,
}

impl WorkerSide {
    /// When the proxy follows the root contract: each time its lists
    /// change, check the models this worker serves again, and disconnect
    /// it (it is routed no more requests) when one was withdrawn. A
    /// withdrawn image is `watch_peer`'s to find.
    fn drop_withdrawn_models(self: Arc<Self>, check: Arc<AttestationCheck>, conn: Connection) {
        let Some(mut changes) = check.published.as_ref().map(|p| p.changes()) else {
            return;
        };
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = conn.closed() => return,
                    changed = changes.changed() => if changed.is_err() { return },
                }
                let offers = self.offers.locked().clone();
                let refused = offers
                    .iter()
                    .find_map(|(name, sha256)| check.check_model(name, sha256.as_deref()).err());
                if let Some(refusal) = refused {
                    tracing::warn!(worker = self.id, reason = %refusal, "a model this worker serves is no longer trusted; disconnecting it");
                    self.registry.remove(self.id);
                    conn.close(&format!("no longer trusted: {refusal}"));
                    return;
                }
            }
        });
    }

    /// The announced key must be this connection's identity and, when the
    /// proxy checks attestation, carry evidence for an allowed worker image;
    /// every model must be allowed by the network.
    fn check(
        &self,
        conn: &Connection,
        announce: &Announce,
    ) -> Result<(WorkerKey, Option<cocoon_chain::StdAddr>), AnnounceRefused> {
        if announce.models.len() > MAX_OFFERS {
            return Err(AnnounceRefused::TooManyModels(announce.models.len()));
        }
        if let Some(bad) = announce
            .models
            .iter()
            .map(|m| m.name.len())
            .find(|n| *n == 0 || *n > MAX_MODEL_NAME)
        {
            return Err(AnnounceRefused::ModelName(bad));
        }
        // Out of range, a price would also wrap around in the ranking.
        if let Some(bad) = announce
            .models
            .iter()
            .map(|m| m.price_coefficient)
            .find(|p| !(1..=cocoon_protocol::MAX_PRICE_COEFFICIENT).contains(p))
        {
            return Err(AnnounceRefused::Price(bad));
        }
        let key = announce.key.clone().ok_or(AnnounceRefused::NoSealingKey)?;
        if Some(&key.worker()) != conn.peer_key() {
            return Err(AnnounceRefused::NotThisIdentity);
        }
        if let Some(check) = &self.attestation {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            key.verify(check, now)?;
            for offer in &announce.models {
                check.check_model(&offer.name, offer.weights_sha256.as_deref())?;
            }
        }
        // A billing proxy owes each worker through its worker contract.
        let payee = match &self.settlement {
            None => None,
            Some(settlement) => {
                let owner = announce
                    .payout
                    .as_deref()
                    .ok_or(AnnounceRefused::NoPayout)?;
                let contract = settlement.worker_contract(owner)?;
                // A voucher this worker kept that the books do not reach:
                // this proxy runs on old books and stops serving.
                if let Some(vouched) = &announce.vouched {
                    settlement.check_vouched(&contract, vouched);
                }
                Some(contract)
            }
        };
        Ok((key, payee))
    }
}

impl Handler for WorkerSide {
    fn serve(&self, _conn: &Connection, body: RequestBody) -> BoxStream<'static, Event> {
        let answer = match (body, &self.settlement) {
            (RequestBody::Voucher, Some(settlement)) => {
                let payee = self.payee.locked().clone();
                match payee {
                    Some(contract) => match settlement.voucher(&contract) {
                        Ok(voucher) => Event::Voucher(voucher),
                        Err(e) => Event::Error(e),
                    },
                    None => Event::Error(WireError::new(
                        ErrorKind::InvalidRequest,
                        "announce first: no payout wallet is known for this worker",
                    )),
                }
            }
            (RequestBody::Voucher, None) => Event::Error(no_billing()),
            // A worker reads the proxy's terms to check its vouchers.
            (RequestBody::OpenAccount { contract: None }, Some(settlement)) => {
                Event::Account(settlement.proxy_terms())
            }
            _ => Event::Error(WireError::new(
                ErrorKind::InvalidRequest,
                "workers cannot send that request to a proxy",
            )),
        };
        stream::iter([answer]).boxed()
    }

    fn on_announce(&self, conn: &Connection, announce: Announce) {
        let models: Vec<&String> = announce.models.iter().map(|m| &m.name).collect();
        match self.check(conn, &announce) {
            Ok((key, payee)) => {
                tracing::info!(worker = self.id, ?models, "worker announced");
                *self.payee.locked() = payee.clone();
                *self.offers.locked() = announce
                    .models
                    .iter()
                    .map(|m| (m.name.clone(), m.weights_sha256.clone()))
                    .collect();
                self.registry.announce(self.id, conn, &announce, key, payee);
            }
            Err(reason) => {
                tracing::warn!(worker = self.id, ?models, %reason, "worker announcement refused");
                self.registry.remove(self.id);
                conn.close(&format!("announcement refused: {reason}"));
            }
        }
    }
}
