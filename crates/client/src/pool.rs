//! The client node's connections to its proxies. Each is kept up in the background
//! (redial with backoff); a request is sealed to workers behind the next live
//! proxy in turn, and goes to the following proxy if sending fails. A node
//! that pays registers its client contract with each proxy on every connect.

use cocoon_protocol::sync::{LockRecover, RwLockRecover};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cocoon_protocol::tls::{self, Identity, PinnedKeys};
use cocoon_protocol::{
    keep_connected, AccountTerms, Connection, DialSettings, ErrorKind, Event, GenerateRequest,
    Handler, Hello, ListedWorker, ModelInfo, MuxOptions, ProtocolError, ProxyEndpoint, RequestBody,
    ResponseStream, Role, Voucher, WireError, DEFAULT_MAX_FRAME_BYTES,
};
use futures::future::BoxFuture;
use futures::stream::{self, BoxStream};
use futures::StreamExt;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::affinity::{Affinity, TurnKeys};
use crate::sealing::{self, KeyDirectory, Unsealer};
use crate::Backend;

pub struct ProxyPool {
    /// Every proxy this node has dialled, in order (an index names one for
    /// good; a proxy withdrawn from the registry stays, stopped).
    proxies: std::sync::RwLock<Vec<Arc<ProxySlot>>>,
    /// How to dial a proxy (each connection pins its own proxy's key).
    dial: DialSettings,
    identity: Arc<Identity>,
    attestation: Option<Arc<cocoon_protocol::ra_tls::AttestationCheck>>,
    /// This node pays: a proxy serves it only once its contract is
    /// registered, and only what that contract can cover.
    billing: Option<Arc<crate::Billing>>,
    next: AtomicUsize,
    stop: CancellationToken,
    keys: Arc<KeyDirectory>,
    affinity: Arc<Affinity>,
}

/// One proxy: its connection, kept up in the background, and its answer to
/// the registration of this node's contract.
struct ProxySlot {
    endpoint: ProxyEndpoint,
    connection: watch::Receiver<Option<Connection>>,
    account: Arc<std::sync::Mutex<Option<AccountTerms>>>,
    /// Found in the root contract's registry (withdrawn when it leaves it).
    from_registry: bool,
    stop: CancellationToken,
    /// How often its requests fail before their first token.
    suspicion: std::sync::Mutex<Suspicion>,
}

/// Requests failed or resealed before their first token, out of the last
/// [`Suspicion::WINDOW`] through one proxy. A proxy can make a client node
/// reseal (answering that the workers went away) to steer it to workers of
/// its choosing; one that does so for a quarter of its recent requests
/// (honest ones see that only when workers are lost) is passed over, while
/// another proxy is connected, for [`Suspicion::PASS_OVER`], and logged.
#[derive(Default)]
struct Suspicion {
    recent: std::collections::VecDeque<bool>,
    passed_over_until: Option<std::time::Instant>,
}

impl Suspicion {
    const WINDOW: usize = 20;
    const SUSPECT_AT: usize = 5;
    const PASS_OVER: Duration = Duration::from_secs(300);

    /// Count one request; true when this makes the proxy suspect.
    fn note(&mut self, failed_early: bool) -> bool {
        if self.recent.len() == Self::WINDOW {
            self.recent.pop_front();
        }
        self.recent.push_back(failed_early);
        let failed = self.recent.iter().filter(|f| **f).count();
        if failed >= Self::SUSPECT_AT && !self.passed_over() {
            self.passed_over_until = Some(std::time::Instant::now() + Self::PASS_OVER);
            self.recent.clear();
            return true;
        }
        false
    }

    fn passed_over(&self) -> bool {
        self.passed_over_until
            .is_some_and(|until| std::time::Instant::now() < until)
    }
}

impl ProxySlot {
    fn live(&self) -> Option<Connection> {
        if self.stop.is_cancelled() {
            return None;
        }
        self.connection.borrow().clone().filter(|c| !c.is_closed())
    }

    fn account(&self) -> Option<AccountTerms> {
        self.account.locked().clone()
    }
}

/// Proxies never send requests to client nodes.
struct RefuseRequests;

impl Handler for RefuseRequests {
    fn serve(&self, _conn: &Connection, _body: RequestBody) -> BoxStream<'static, Event> {
        let error = WireError::new(
            ErrorKind::InvalidRequest,
            "client nodes do not serve requests",
        );
        stream::iter([Event::Error(error)]).boxed()
    }
}

impl ProxyPool {
    /// Worker lists its key directory holds now (bounded).
    pub fn worker_lists_held(&self) -> usize {
        self.keys.lists_held()
    }

    /// Start dialling every proxy in the background; on each connect, when
    /// the node pays (`billing`), register its client contract (deployed
    /// first if it has none yet).
    pub fn start(
        identity: Arc<Identity>,
        proxies: &[ProxyEndpoint],
        mux: MuxOptions,
        attestation: Option<Arc<cocoon_protocol::ra_tls::AttestationCheck>>,
        billing: Option<Arc<crate::Billing>>,
    ) -> Result<Self, ProtocolError> {
        let keys = Arc::new(KeyDirectory::new(attestation.clone()));
        let connect_timeout = mux.connect_timeout;
        let dial = DialSettings {
            tls: tls::client_config_attested(
                identity.clone(),
                Arc::new(PinnedKeys::new([])),
                attestation.clone(),
            )?,
            hello: Hello {
                role: Role::Client,
                software: format!("cocoon-client/{}", env!("CARGO_PKG_VERSION")),
            },
            handler: Arc::new(RefuseRequests),
            mux,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            handshake_timeout: connect_timeout,
            max_backoff: Duration::from_secs(5),
            watch: attestation.clone(),
        };
        let pool = Self {
            proxies: Default::default(),
            dial,
            identity,
            attestation,
            billing,
            next: AtomicUsize::new(0),
            stop: CancellationToken::new(),
            keys,
            affinity: Arc::new(Affinity::default()),
        };
        for p in proxies {
            pool.add(p.clone(), false)?;
        }
        Ok(pool)
    }

    /// Dial `endpoint` too (kept up in the background); its index. A proxy
    /// already dialled (same key and address) keeps its index.
    fn add(&self, endpoint: ProxyEndpoint, from_registry: bool) -> Result<usize, ProtocolError> {
        let mut proxies = self.proxies.writing();
        if let Some(i) = proxies
            .iter()
            .position(|p| p.endpoint == endpoint && !p.stop.is_cancelled())
        {
            return Ok(i);
        }
        let index = proxies.len();
        let mut dial = self.dial.clone();
        dial.tls = tls::client_config_attested(
            self.identity.clone(),
            Arc::new(PinnedKeys::new([endpoint.fingerprint])),
            self.attestation.clone(),
        )?;
        let account: Arc<std::sync::Mutex<Option<AccountTerms>>> = Default::default();
        let stop = self.stop.child_token();
        let billing = self.billing.clone();
        let registration = account.clone();
        let connection = keep_connected(endpoint.clone(), dial, stop.clone(), move |conn| {
            let Some(billing) = billing.clone() else {
                return;
            };
            let (account, conn) = (registration.clone(), conn.clone());
            // A new connection: registered anew.
            *account.locked() = None;
            tokio::spawn(register(billing, conn, account, index));
        });
        proxies.push(Arc::new(ProxySlot {
            endpoint,
            connection,
            account,
            from_registry,
            stop,
            suspicion: Default::default(),
        }));
        Ok(index)
    }

    /// Follow the root contract's proxy registry: read it now and every
    /// `every` through every one of `chains` (believed only when they all
    /// agree), dial each proxy it publishes (pinned to its key), and stop
    /// dialling those it withdraws. Proxies from the configuration stay.
    pub fn follow_registry(
        self: &Arc<Self>,
        chains: Vec<Arc<dyn cocoon_chain::Chain>>,
        root: cocoon_chain::StdAddr,
        every: Duration,
    ) {
        let pool = Arc::downgrade(self);
        let stop = self.stop.clone();
        tokio::spawn(async move {
            loop {
                let Some(this) = pool.upgrade() else { return };
                match cocoon_chain::registered_proxies_agreeing(&chains, &root).await {
                    Ok(listed) => this.apply_registry(&listed),
                    Err(e) => {
                        tracing::warn!(%root, error = %e, "cannot read the root contract's proxy registry; keeping the proxies known")
                    }
                }
                drop(this);
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(every) => {}
                }
            }
        });
    }

    /// Dial what `listed` publishes; stop the registry's proxies it no longer does.
    fn apply_registry(&self, listed: &[cocoon_chain::RegisteredProxy]) {
        let endpoints: Vec<ProxyEndpoint> = listed
            .iter()
            .map(|p| ProxyEndpoint {
                address: p.endpoint.clone(),
                fingerprint: tls::Fingerprint::of_ed25519(&p.key.0),
            })
            .collect();
        for slot in self.proxies.reading().iter() {
            if slot.from_registry
                && !slot.stop.is_cancelled()
                && !endpoints.contains(&slot.endpoint)
            {
                tracing::info!(proxy = %slot.endpoint.address, "proxy withdrawn from the root contract's registry; no longer dialled");
                slot.stop.cancel();
            }
        }
        for (endpoint, p) in endpoints.into_iter().zip(listed) {
            if self.index_of(&endpoint).is_some() {
                continue;
            }
            let address = endpoint.address.clone();
            match self.add(endpoint, true) {
                Ok(index) => {
                    tracing::info!(proxy = %address, index, version = p.version, contract = %p.contract, "proxy found in the root contract's registry")
                }
                Err(e) => {
                    tracing::warn!(proxy = %address, error = %e, "cannot dial a registered proxy")
                }
            }
        }
    }

    fn slots(&self) -> Vec<Arc<ProxySlot>> {
        self.proxies.reading().clone()
    }

    /// Live connections with their proxy's index, starting with the next one
    /// in turn; when this node pays, those that accepted its contract first.
    fn live(&self) -> Vec<(usize, Connection, Option<AccountTerms>)> {
        let slots = self.slots();
        let n = slots.len().max(1);
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        // Each registration is read once: one may land while sorting.
        let mut live: Vec<(usize, Connection, Option<AccountTerms>)> = (0..slots.len())
            .map(|i| (start + i) % n)
            .filter_map(|i| slots[i].live().map(|c| (i, c, slots[i].account())))
            .collect();
        if self.billing.is_some() {
            live.sort_by_key(|(_, _, account)| account.is_none());
        }
        // Suspects go last: used only when no other proxy serves.
        live.sort_by_cached_key(|(i, _, _)| slots[*i].suspicion.locked().passed_over());
        live
    }

    /// Proxies dialled now (configured, and found in the registry).
    pub fn proxies(&self) -> usize {
        self.slots()
            .iter()
            .filter(|s| !s.stop.is_cancelled())
            .count()
    }

    /// Proxies connected right now (does not advance the turn).
    pub fn connected(&self) -> usize {
        self.slots().iter().filter(|s| s.live().is_some()).count()
    }

    /// Wait until at least `n` proxies are connected.
    pub async fn wait_connected(&self, n: usize) {
        while self.connected() < n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Proxies that accepted this node's client contract on their current connection.
    pub fn registered(&self) -> usize {
        self.slots()
            .iter()
            .filter(|s| !s.stop.is_cancelled() && s.account().is_some())
            .count()
    }

    /// Wait until at least `n` proxies accepted this node's client contract.
    pub async fn wait_registered(&self, n: usize) {
        while self.registered() < n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The terms proxy `index` answered the registration with.
    pub fn account(&self, index: usize) -> Option<AccountTerms> {
        self.slots().get(index)?.account()
    }

    /// The index of the proxy dialled at `endpoint`, if it is.
    pub fn index_of(&self, endpoint: &ProxyEndpoint) -> Option<usize> {
        self.slots()
            .iter()
            .position(|s| &s.endpoint == endpoint && !s.stop.is_cancelled())
    }

    /// Close this node's account with proxy `index`: the proxy's signature
    /// over the final charge, for the contract's cooperative close (sent
    /// from the owner's wallet).
    pub async fn close_account(&self, index: usize) -> Result<Voucher, WireError> {
        let conn = self
            .slots()
            .get(index)
            .and_then(|s| s.live())
            .ok_or_else(no_proxy)?;
        match ask(&conn, RequestBody::CloseAccount).await? {
            Event::Voucher(voucher) => Ok(voucher),
            other => Err(WireError::new(
                ErrorKind::Upstream,
                format!("unexpected answer to CloseAccount: {other:?}"),
            )),
        }
    }
}

/// Register this node's contract (configured, remembered or deployed now)
/// with the proxy on `conn`; its terms land in `account`.
async fn register(
    billing: Arc<crate::Billing>,
    conn: Connection,
    account: Arc<std::sync::Mutex<Option<AccountTerms>>>,
    index: usize,
) {
    let contract = match our_contract(&billing, &conn).await {
        Ok(c) => c.to_string(),
        Err(e) => {
            tracing::warn!(proxy = index, error = %e, "no client contract to pay this proxy from; requests through it will be refused");
            return;
        }
    };
    let body = RequestBody::OpenAccount {
        contract: Some(contract.clone()),
    };
    match ask(&conn, body).await {
        Ok(Event::Account(terms)) => {
            tracing::info!(proxy = index, %contract, proxy_contract = %terms.proxy_contract, "client contract registered with the proxy");
            *account.locked() = Some(terms);
        }
        Ok(other) => {
            tracing::warn!(answer = ?other, "unexpected answer to the contract registration")
        }
        Err(e) => {
            tracing::warn!(proxy = index, %contract, error = %e, "the proxy refused this node's client contract; requests through it will be refused")
        }
    }
}

/// The contract this node pays the proxy on `conn` from: configured,
/// remembered, or deployed now with the proxy's terms.
async fn our_contract(
    billing: &crate::Billing,
    conn: &Connection,
) -> Result<cocoon_chain::StdAddr, crate::billing::ContractError> {
    use crate::billing::ContractError;
    let terms = match ask(conn, RequestBody::OpenAccount { contract: None }).await {
        Ok(Event::Account(terms)) => terms,
        Ok(other) => return Err(ContractError::Terms(format!("unexpected answer {other:?}"))),
        Err(e) => return Err(ContractError::Terms(e.to_string())),
    };
    billing.ensure_contract(&terms).await
}

/// How long a proxy has to answer a one-event request.
const ASK_TIMEOUT: Duration = Duration::from_secs(30);

async fn ask(conn: &Connection, body: RequestBody) -> Result<Event, WireError> {
    conn.ask(body, ASK_TIMEOUT).await
}

fn no_proxy() -> WireError {
    WireError::new(
        ErrorKind::NoWorker,
        "no proxy is connected; the node keeps retrying",
    )
}

impl Backend for ProxyPool {
    /// Every live proxy's models, merged: a model's live workers are the
    /// most any one proxy has (a worker usually serves several proxies),
    /// its price the cheapest any offers.
    fn list_models(&self) -> BoxFuture<'_, Result<Vec<ModelInfo>, WireError>> {
        Box::pin(async move {
            let mut last = no_proxy();
            let mut merged: std::collections::BTreeMap<String, ModelInfo> = Default::default();
            let mut answered = false;
            for (_, conn, _) in self.live() {
                match conn.ask(RequestBody::ListModels, ASK_TIMEOUT).await {
                    Ok(Event::Models(models)) => {
                        answered = true;
                        for m in models {
                            let entry = merged.entry(m.id.clone()).or_insert_with(|| m.clone());
                            entry.workers = entry.workers.max(m.workers);
                            entry.context_length = entry.context_length.max(m.context_length);
                            entry.min_price_coefficient =
                                match (entry.min_price_coefficient, m.min_price_coefficient) {
                                    (Some(a), Some(b)) => Some(a.min(b)),
                                    (a, b) => a.or(b),
                                };
                        }
                    }
                    Ok(other) => {
                        tracing::debug!(answer = ?other, "unexpected answer to ListModels")
                    }
                    Err(e) => last = e,
                }
            }
            if answered {
                Ok(merged.into_values().collect())
            } else {
                Err(last)
            }
        })
    }

    fn readiness(&self) -> (bool, serde_json::Value) {
        let (connected, registered) = (self.connected(), self.registered());
        let pays = self.billing.is_some();
        let ready = connected > 0 && (!pays || registered > 0);
        (
            ready,
            serde_json::json!({
                "proxies": self.proxies(),
                "connected": connected,
                "contract_registered": if self.billing.is_some() { serde_json::json!(registered) } else { serde_json::Value::Null },
                "conversations_remembered": self.affinity.len(),
            }),
        )
    }

    fn generate(
        &self,
        request: GenerateRequest,
        prefs: cocoon_protocol::RoutingPrefs,
    ) -> BoxStream<'static, Event> {
        let live = self.live();
        let slots = self.slots();
        let keys = self.keys.clone();
        let affinity = self.affinity.clone();
        let billing = self.billing.clone();
        stream::once(async move {
            let mut refusal: Option<WireError> = None;
            let refused = |proxy: usize, e: WireError, refusal: &mut Option<WireError>| {
                tracing::info!(proxy, reason = %e.message, "proxy refused the request; trying the next one");
                if refusal.as_ref().is_none_or(|r| r.kind == ErrorKind::ModelNotFound) {
                    *refusal = Some(e);
                }
            };
            for (proxy, conn, account) in live {
                let payer = match &billing {
                    None => None,
                    Some(billing) => match payable(billing, account, &request, prefs).await {
                        Ok(proxy_contract) => Some((billing.clone(), proxy_contract)),
                        Err(e) => {
                            refused(proxy, e, &mut refusal);
                            continue;
                        }
                    },
                };
                let mut failed_early = false;
                let answer = sealed_request(
                    &keys,
                    &affinity,
                    payer,
                    (proxy, &conn),
                    &request,
                    prefs,
                    &mut failed_early,
                )
                .await;
                if let Some(slot) = slots.get(proxy) {
                    if slot.suspicion.locked().note(failed_early) {
                        tracing::warn!(proxy = %slot.endpoint.address, "a quarter of this proxy's recent requests failed before their first token (a proxy steering requests to workers of its choosing would look like this); passing it over while others serve");
                    }
                }
                match answer {
                    Ok(answer) => return answer,
                    // Refused before any token: the next proxy may serve it.
                    Err(Some(e)) if elsewhere(&e) => refused(proxy, e, &mut refusal),
                    Err(Some(e)) => return stream::iter([Event::Error(e)]).boxed(),
                    Err(None) => {}
                }
            }
            stream::iter([Event::Error(refusal.unwrap_or_else(no_proxy))]).boxed()
        })
        .flatten()
        .boxed()
    }
}

/// The proxy contract behind a proxy when this node's contract with it is
/// registered (`account`) and can cover `request` at its worst case; else
/// why not (402, or 503 when the chain cannot be read).
async fn payable(
    billing: &crate::Billing,
    account: Option<AccountTerms>,
    request: &GenerateRequest,
    prefs: cocoon_protocol::RoutingPrefs,
) -> Result<String, WireError> {
    let terms = account
        .ok_or_else(|| {
            WireError::new(
                ErrorKind::PaymentRequired,
                "this node's client contract is not registered with the proxy yet (it is on every connect)",
            )
        })?;
    billing
        .check(
            &terms.proxy_contract,
            crate::billing::prompt_bytes(&request.input),
            request.params.max_tokens,
            request.params.choices(),
            prefs.max_coefficient,
        )
        .await?;
    Ok(terms.proxy_contract)
}

/// Refusals another proxy may not give (its workers, its account with
/// this node, its load are its own). Bad requests and bugs are final.
fn elsewhere(e: &WireError) -> bool {
    !matches!(e.kind, ErrorKind::InvalidRequest | ErrorKind::Internal)
}

/// Seal `request` to workers behind `conn` and send it; the answer is opened
/// event by event (and, with a `payer`, its verified cost counted against
/// this node's contract with that proxy contract). `Err(None)`: this proxy could not take it, try another.
/// When the workers changed since the keys were fetched (or were full), or
/// the request failed before its first token (a worker went away), fetch
/// fresh keys and seal again, to other workers where there are any (up to
/// [`ATTEMPTS`] in all).
async fn sealed_request(
    keys: &KeyDirectory,
    affinity: &Arc<Affinity>,
    payer: Option<(Arc<crate::Billing>, String)>,
    (proxy, conn): (usize, &Connection),
    request: &GenerateRequest,
    prefs: cocoon_protocol::RoutingPrefs,
    failed_early: &mut bool,
) -> Result<BoxStream<'static, Event>, Option<WireError>> {
    let turn = Arc::new(TurnKeys::of(request));
    // The worker that answered this conversation's last turn, if it is
    // within the price limit.
    let mut sticky = affinity.previous(&turn).filter(|w| {
        prefs
            .max_coefficient
            .is_none_or(|limit| w.price_coefficient <= limit)
    });
    let mut avoid: Vec<cocoon_protocol::tls::Fingerprint> = Vec::new();
    for attempt in 0..ATTEMPTS {
        let fresh = attempt > 0;
        let listed = keys
            .keys(proxy, conn, &request.model, prefs, fresh)
            .await
            .map_err(|e| (e.kind != ErrorKind::Upstream).then_some(e))?;
        let mut others: Vec<ListedWorker> = listed
            .iter()
            .filter(|l| !avoid.contains(&l.key.worker()))
            .cloned()
            .collect();
        if others.is_empty() {
            others = listed.to_vec();
        }
        let sticky_now = sticky.take().filter(|s| !avoid.contains(&s.key.worker()));
        if let Some(s) = &sticky_now {
            // First, with its fresh listing when it is on the short list.
            let fp = s.key.worker();
            let fresh_entry = others.iter().position(|l| l.key.worker() == fp);
            let first = match fresh_entry {
                Some(i) => others.remove(i),
                None => s.clone(),
            };
            others.insert(0, first);
        }
        let choices = if fresh {
            sealing::RESEAL_CANDIDATES
        } else {
            sealing::SEAL_CANDIDATES
        };
        let chosen = sealing::candidates(
            &others,
            |key| keys.attested_weights(key, &request.model),
            choices,
            prefs.sort,
            sticky_now.is_some(),
        );
        avoid.extend(chosen.iter().map(|c| c.worker));
        let sealed_to: Vec<ListedWorker> = chosen
            .iter()
            .filter_map(|c| others.iter().find(|l| l.key.worker() == c.worker).cloned())
            .collect();
        // Each at the price it was listed at: what this node agrees to pay
        // it, bound into the seal (the proxy bills at it, the worker signs it).
        let to: Vec<_> = chosen
            .iter()
            .map(|c| cocoon_protocol::SealTo {
                worker: c.worker,
                sealing_key: c.sealing_key,
                price_coefficient: c.price_coefficient,
            })
            .collect();
        let (mut sealed, opener) = keys.sessions.seal(request, &to, now_ms()).map_err(|e| {
            Some(WireError::new(
                ErrorKind::Internal,
                format!("sealing failed: {e}"),
            ))
        })?;
        sealed.sort = prefs.sort;
        sealed.affinity = sticky_now.is_some();
        let mut unsealer = Unsealer {
            opener,
            header: sealed.header.clone(),
            request_bytes: sealed.ciphertext.len() as u64,
            streamed_bytes: 0,
            progress: None,
            recipients: chosen,
        };
        let Ok(mut answer) = conn.request(RequestBody::Generate(sealed)).await else {
            return Err(None);
        };
        // An engine's error arrives sealed: opened here to learn its kind
        // (the one beside it is the proxy's to read, not to trust).
        let first = match answer.next().await {
            Some(sealed @ Event::SealedError { .. }) => Some(unsealer.open(sealed)),
            other => other,
        };
        if let Some(Event::Error(e)) = first {
            // Nothing was streamed yet: safe to send again elsewhere (a new
            // seal, a new request id; nothing was billed).
            let retry = matches!(e.kind, ErrorKind::KeysChanged | ErrorKind::Upstream);
            *failed_early |= retry;
            if retry && attempt + 1 < ATTEMPTS {
                tracing::debug!(reason = %e.message, attempt, "sealing again to other workers before the first token");
                continue;
            }
            return Err(Some(e));
        }
        let affinity = affinity.clone();
        let turn = turn.clone();
        let payer = payer.clone();
        let mut unfinished = match &payer {
            Some((billing, proxy_contract)) => billing.unfinished(proxy_contract),
            None => crate::billing::Unfinished::default(),
        };
        return Ok(opened(first, answer, move |event| {
            let event = unsealer.open(event);
            // A verified running total: owed if the answer ends without
            // its final receipt (this node hangs up, the worker fails).
            if let Event::Progress(signed) = &event {
                let by = signed.receipt.worker;
                if let Some(worker) = sealed_to.iter().find(|l| l.key.worker() == by) {
                    unfinished.progress(signed.clone(), &worker.key.identity);
                }
            }
            // Count its cost and remember who answered this turn (its
            // receipt verified).
            if let Event::Done(done) = &event {
                unfinished.ended();
                if let Some(receipt) = &done.receipt {
                    let by = receipt.receipt.worker;
                    if let Some(worker) = sealed_to.iter().find(|l| l.key.worker() == by) {
                        if let Some((billing, proxy_contract)) = &payer {
                            billing.record(proxy_contract, receipt, &worker.key.identity);
                        }
                        affinity.remember(&turn, worker.clone());
                    }
                }
            }
            event
        }));
    }
    Err(Some(WireError::new(
        ErrorKind::KeysChanged,
        format!(
            "the workers serving '{}' changed while sealing; retry",
            request.model
        ),
    )))
}

/// Times a request is sealed before its first token: to the cached short
/// list, then once more to a fresh one (its workers were full or went
/// away). Once only: each reseal is a chance for a proxy that fails
/// requests on purpose to steer them to workers of its choosing.
const ATTEMPTS: usize = 2;

/// `first` then the rest of `answer`, each through `open`, ending after the
/// first terminal event.
fn opened(
    first: Option<Event>,
    answer: ResponseStream,
    open: impl FnMut(Event) -> Event + Send + 'static,
) -> BoxStream<'static, Event> {
    stream::iter(first)
        .chain(answer)
        .map(open)
        .scan(false, |ended, event| {
            if *ended {
                return futures::future::ready(None);
            }
            *ended = event.is_terminal();
            futures::future::ready(Some(event))
        })
        .boxed()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
