//! Live workers by model, with their attested keys and prices. Each worker's
//! offer for a model is a slot with a capacity. A client node is offered a
//! short list of the eligible workers (under its price limit, best first by
//! its sort) and seals to two of them; the request then takes, among those,
//! the cheapest with room (ties: the least loaded), and holds the slot until
//! its answer stream is dropped: power of two choices on price and load.
//! When both are full and no other worker has room, the request waits in a
//! bounded per-model queue until a slot frees or its deadline passes.
//! A worker failing most of its recent answers is listed last for
//! [`PROBATION`], then tried again (re-admitted if it answers well).

use cocoon_protocol::sync::RwLockRecover;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use cocoon_chain::StdAddr;
use cocoon_protocol::tls::Fingerprint;
use cocoon_protocol::{
    Announce, Connection, ErrorKind, Features, ListedWorker, ModelInfo, RoutingPrefs, Sort,
    WireError, WorkerKey,
};

fn listed(o: &Offer) -> ListedWorker {
    ListedWorker {
        key: (*o.key).clone(),
        price_coefficient: o.price_coefficient,
        load_permille: o.load_permille(),
    }
}

/// Order among workers (lower first), those with room and healthy ahead:
/// `price`: the cheapest, then the least loaded; `latency`: the shortest
/// measured time to first token, then the cheapest; `throughput`: the most
/// measured tokens/s, then the least loaded. A worker not measured yet ranks
/// as the best on speed (so that it is tried and measured).
fn rank(offer: &Offer, sort: Sort) -> u64 {
    let behind = ((!offer.has_room()) as u64) << 63 | (offer.unhealthy() as u64) << 62;
    let price = offer.price_coefficient as u64 & 0xFFFFF;
    let load = offer.load_permille() as u64 & 0xFFFFF;
    let speed = &offer.slot.speed;
    match sort {
        Sort::Price => behind | price << 20 | load,
        Sort::Latency => {
            // In 16 µs steps, up to about a minute.
            let ttft = (speed.ttft_us.load(Ordering::Relaxed) / 16).min(0x3FFFFF);
            behind | ttft << 20 | price
        }
        Sort::Throughput => {
            let tps = (speed.tokens_per_s_milli.load(Ordering::Relaxed) / 1000).min(0x3FFFFF);
            let slowness = if tps == 0 { 0 } else { 0x3FFFFF - tps };
            behind | slowness << 20 | load
        }
    }
}

/// `offers` best first by `sort`. Each rank is read once: loads change
/// while others route, and a sort whose keys move under it is no order at
/// all (Rust's sort may panic on one).
fn ranked(mut offers: Vec<&Offer>, sort: Sort) -> Vec<&Offer> {
    offers.sort_by_cached_key(|o| rank(o, sort));
    offers
}

/// One worker's capacity for one model.
#[derive(Debug)]
struct Slot {
    in_flight: AtomicU32,
    capacity: u32,
    speed: Speed,
    /// The model's queue, told when this slot frees.
    queue: Arc<Waiting>,
    /// How long it ranks last after failing (see [`PROBATION`]).
    probation_ms: u64,
}

/// Requests waiting for a slot on one model.
#[derive(Debug, Default)]
struct Waiting {
    count: AtomicUsize,
    freed: tokio::sync::Notify,
}

impl Waiting {
    fn wake(&self) {
        if self.count.load(Ordering::Acquire) > 0 {
            self.freed.notify_waiters();
        }
    }
}

/// A place in a model's queue, given back on drop.
struct Ticket(Arc<Waiting>);

impl Ticket {
    fn take(queue: &Arc<Waiting>, max: usize) -> Option<Self> {
        queue
            .count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Ticket(queue.clone()))
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::AcqRel);
    }
}

/// How requests wait when every eligible worker is at capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueSettings {
    /// Requests waiting per model at most; more are refused at once.
    pub max_waiting: usize,
    /// The longest a request waits for a slot before it is refused.
    pub max_wait: Duration,
}

impl Default for QueueSettings {
    fn default() -> Self {
        Self {
            max_waiting: 256,
            max_wait: Duration::from_secs(5),
        }
    }
}

/// How long a failing worker is listed last before it is tried again.
pub const PROBATION: Duration = Duration::from_secs(10);

/// A worker's measured speed for one model, as moving averages over its
/// answers (each new one weighs 1/4); 0 = not measured yet.
#[derive(Debug, Default)]
struct Speed {
    /// Time to the first token, µs.
    ttft_us: AtomicU64,
    /// Tokens per second after the first, x1000.
    tokens_per_s_milli: AtomicU64,
    /// Failed answers per 1000 (moving average).
    errors_permille: AtomicU64,
    answers: AtomicU64,
    failures: AtomicU64,
    /// When the last answer failed, ms since the registry's epoch.
    last_failure_ms: AtomicU64,
}

fn average_in(cell: &AtomicU64, sample: u64) {
    let _ = cell.fetch_update(Ordering::AcqRel, Ordering::Acquire, |old| {
        Some(if old == 0 {
            sample.max(1)
        } else {
            (old * 3 + sample) / 4
        })
    });
}

/// Holds a place in a worker's capacity; released on drop. It also takes
/// the answer's timings, which the registry ranks workers by.
pub struct SlotGuard(Arc<Slot>);

impl SlotGuard {
    /// The first token arrived `after` the request was sent.
    pub fn first_token(&self, after: Duration) {
        average_in(&self.0.speed.ttft_us, after.as_micros() as u64);
    }

    /// The answer failed.
    pub fn failed(&self) {
        self.ranking().failed()
    }

    /// Where this answer's outcome is recorded once known, which may be
    /// after the slot is released.
    pub fn ranking(&self) -> Ranking {
        Ranking(self.0.clone())
    }
}

/// A worker's answers' outcomes, which the registry ranks it by.
pub struct Ranking(Arc<Slot>);

impl Ranking {
    /// The answer ended well: `tokens` in `since_first` after the first one.
    pub fn done(&self, tokens: u64, since_first: Duration) {
        let speed = &self.0.speed;
        speed.answers.fetch_add(1, Ordering::Relaxed);
        average_in(&speed.errors_permille, 0);
        if tokens > 1 && !since_first.is_zero() {
            let rate = (tokens - 1) as u128 * 1_000_000 / since_first.as_micros().max(1);
            average_in(&speed.tokens_per_s_milli, rate as u64);
        }
    }

    /// The answer failed.
    pub fn failed(&self) {
        let speed = &self.0.speed;
        speed.answers.fetch_add(1, Ordering::Relaxed);
        speed.failures.fetch_add(1, Ordering::Relaxed);
        speed.last_failure_ms.store(epoch_ms(), Ordering::Relaxed);
        average_in(&speed.errors_permille, 1000);
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.0.queue.wake();
    }
}

/// Milliseconds since the first call (a monotonic clock; never 0).
fn epoch_ms() -> u64 {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

#[derive(Clone)]
struct Offer {
    worker: u64,
    conn: Connection,
    slot: Arc<Slot>,
    key: Arc<WorkerKey>,
    fingerprint: Fingerprint,
    payee: Option<StdAddr>,
    price_coefficient: u32,
    context_length: Option<u32>,
    quantization: Option<Arc<str>>,
    features: Features,
}

impl Offer {
    /// Requests in flight per 1000 of capacity.
    fn load_permille(&self) -> u32 {
        let used = self.slot.in_flight.load(Ordering::Acquire) as u64;
        (used * 1000 / self.slot.capacity.max(1) as u64) as u32
    }

    fn has_room(&self) -> bool {
        self.slot.in_flight.load(Ordering::Acquire) < self.slot.capacity
    }

    /// Failing most of its recent answers (after at least 5), the last
    /// failure within [`PROBATION`]: listed last. After that it is tried
    /// again; answering well brings its error average down.
    fn unhealthy(&self) -> bool {
        let speed = &self.slot.speed;
        speed.answers.load(Ordering::Relaxed) >= 5
            && speed.errors_permille.load(Ordering::Relaxed) > 500
            && epoch_ms().saturating_sub(speed.last_failure_ms.load(Ordering::Relaxed))
                < self.slot.probation_ms
    }
}

/// Workers listed to a client node per `WorkerKeys` request.
pub const SHORT_LIST: usize = 8;

/// One model's offers: by worker identity (for `pick`) and ordered by price
/// (for the cheapest-first short list).
#[derive(Default)]
struct ModelOffers {
    by_worker: HashMap<Fingerprint, Offer>,
    by_price: BTreeSet<(u32, [u8; 32])>,
}

impl ModelOffers {
    fn insert(&mut self, offer: Offer) {
        let (key, price) = (offer.fingerprint, offer.price_coefficient);
        if let Some(old) = self.by_worker.insert(key, offer) {
            self.by_price.remove(&(old.price_coefficient, key.0));
        }
        self.by_price.insert((price, key.0));
    }

    fn remove_worker(&mut self, worker: u64) {
        let by_price = &mut self.by_price;
        self.by_worker.retain(|fp, o| {
            let keep = o.worker != worker;
            if !keep {
                by_price.remove(&(o.price_coefficient, fp.0));
            }
            keep
        });
    }

    fn is_empty(&self) -> bool {
        self.by_worker.is_empty()
    }

    fn values(&self) -> impl Iterator<Item = &Offer> + Clone {
        self.by_worker.values()
    }

    fn get(&self, worker: &Fingerprint) -> Option<&Offer> {
        self.by_worker.get(worker)
    }

    /// Up to `n` live workers with room at or under `limit`, cheapest first:
    /// O(log n + what it skips) through the price index.
    fn cheapest_with_room(&self, limit: u32, needs: &Features, n: usize) -> Vec<&Offer> {
        self.by_price
            .iter()
            .take_while(|(price, _)| *price <= limit)
            .filter_map(|(_, fp)| self.by_worker.get(&Fingerprint(*fp)))
            .filter(|o| {
                !o.conn.is_closed() && o.has_room() && !o.unhealthy() && o.features.covers(needs)
            })
            .take(n)
            .collect()
    }
}

/// A slot of `offer`, if it has room.
fn take_slot(offer: &Offer) -> Option<Picked> {
    let slot = &offer.slot;
    slot.in_flight
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < slot.capacity).then_some(n + 1)
        })
        .ok()?;
    Some(Picked {
        conn: offer.conn.clone(),
        slot: SlotGuard(slot.clone()),
        key: offer.key.clone(),
        payee: offer.payee.clone(),
        price_coefficient: offer.price_coefficient,
    })
}

/// One worker's offer for one model as the proxy measures it (for `/stats`
/// and `/metrics`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct OfferStats {
    pub model: String,
    /// The worker's identity, `sha256:<hex>`.
    pub worker: String,
    pub price_coefficient: u32,
    pub in_flight: u32,
    pub capacity: u32,
    pub context_length: Option<u32>,
    pub quantization: Option<String>,
    /// Moving average of the time to first token (0: not measured yet).
    pub ttft_us: u64,
    /// Moving average of tokens/s after the first, x1000.
    pub tokens_per_s_milli: u64,
    /// Moving average of failed answers per 1000.
    pub errors_permille: u64,
    pub answers: u64,
    pub failures: u64,
    /// False while listed last after failing (see [`PROBATION`]).
    pub healthy: bool,
}

/// The worker a request was routed to.
pub struct Picked {
    pub conn: Connection,
    pub slot: SlotGuard,
    pub key: Arc<WorkerKey>,
    /// The worker contract its earnings are owed to (billing proxies).
    pub payee: Option<StdAddr>,
    /// The price it announced (1000 = base), which its receipts must state.
    pub price_coefficient: u32,
}

/// The proxy's view of which workers serve what.
#[derive(Default)]
pub struct Registry {
    /// Per model, each worker's offer by its identity: a request's candidates
    /// are found directly (O(1) per pick, whatever the number of workers).
    by_model: RwLock<HashMap<String, ModelOffers>>,
    known: RwLock<HashSet<String>>,
    /// Per model, the requests waiting for a slot.
    queues: RwLock<HashMap<String, Arc<Waiting>>>,
    queue: QueueSettings,
    probation: Duration,
}

impl Registry {
    pub fn new(models: impl IntoIterator<Item = String>) -> Self {
        Self {
            by_model: RwLock::default(),
            known: RwLock::new(models.into_iter().collect()),
            queues: RwLock::default(),
            queue: QueueSettings::default(),
            probation: PROBATION,
        }
    }

    /// List a failing worker last for `probation` (default [`PROBATION`]).
    pub fn with_probation(mut self, probation: Duration) -> Self {
        self.probation = probation;
        self
    }

    /// Wait for slots as `queue` says (the default: 256 per model, 5 s).
    pub fn with_queue(mut self, queue: QueueSettings) -> Self {
        self.queue = queue;
        self
    }

    fn queue_of(&self, model: &str) -> Arc<Waiting> {
        if let Some(q) = self.queues.reading().get(model) {
            return q.clone();
        }
        self.queues
            .writing()
            .entry(model.to_string())
            .or_default()
            .clone()
    }

    /// Requests waiting for a slot, per model (those with any).
    pub fn queue_depths(&self) -> Vec<(String, usize)> {
        let mut out: Vec<(String, usize)> = self
            .queues
            .reading()
            .iter()
            .map(|(m, q)| (m.clone(), q.count.load(Ordering::Acquire)))
            .collect();
        out.sort();
        out
    }

    /// Replace worker `worker`'s offers with `announce`, whose keys the caller
    /// has checked; `payee` is the worker contract it is paid through.
    pub fn announce(
        &self,
        worker: u64,
        conn: &Connection,
        announce: &Announce,
        key: WorkerKey,
        payee: Option<StdAddr>,
    ) {
        self.remove(worker);
        let key = Arc::new(key);
        let fingerprint = key.worker();
        let mut by_model = self.by_model.writing();
        let mut known = self.known.writing();
        for offer in &announce.models {
            if offer.max_concurrent == 0 || offer.name.is_empty() {
                continue;
            }
            known.insert(offer.name.clone());
            let queue = self.queue_of(&offer.name);
            by_model
                .entry(offer.name.clone())
                .or_default()
                .insert(Offer {
                    worker,
                    conn: conn.clone(),
                    slot: Arc::new(Slot {
                        in_flight: AtomicU32::new(0),
                        capacity: offer.max_concurrent,
                        speed: Speed::default(),
                        queue: queue.clone(),
                        probation_ms: self.probation.as_millis() as u64,
                    }),
                    key: key.clone(),
                    fingerprint,
                    payee: payee.clone(),
                    price_coefficient: offer.price_coefficient,
                    context_length: offer.context_length,
                    quantization: offer.quantization.as_deref().map(Arc::from),
                    features: offer.features,
                });
            // Waiting requests may find room with this worker (resealed to it).
            queue.freed.notify_waiters();
        }
    }

    /// Forget a worker (its connection closed).
    pub fn remove(&self, worker: u64) {
        let mut by_model = self.by_model.writing();
        for offers in by_model.values_mut() {
            offers.remove_worker(worker);
        }
        by_model.retain(|_, offers| !offers.is_empty());
    }

    /// A short list of the live workers serving `model` within `prefs`'
    /// price limit, best first by `prefs.sort`, with their keys, prices and
    /// load. By price: through the price index (logarithmic while the
    /// cheapest have room); by load, or when every eligible worker is full:
    /// linear in the model's workers (a partial selection, no full sort).
    pub fn keys(&self, model: &str, prefs: &RoutingPrefs) -> Result<Vec<ListedWorker>, WireError> {
        let by_model = self.by_model.reading();
        let limit = prefs.max_coefficient.unwrap_or(u32::MAX);
        if prefs.sort == Sort::Price {
            if let Some(offers) = by_model.get(model) {
                // Three times as many as listed, then the least loaded of
                // them, ties drawn at random: workers at equal prices and
                // loads share the traffic, and client nodes that cache their
                // lists do not all get the same few.
                let cheapest = offers.cheapest_with_room(limit, &prefs.needs, 3 * SHORT_LIST);
                if !cheapest.is_empty() {
                    let mut ranked: Vec<(u64, u32, &Offer)> = cheapest
                        .into_iter()
                        .map(|o| (rank(o, Sort::Price), rand::random::<u32>(), o))
                        .collect();
                    ranked.sort_unstable_by_key(|(rank, tie, _)| (*rank, *tie));
                    ranked.truncate(SHORT_LIST);
                    return Ok(ranked.into_iter().map(|(_, _, o)| listed(o)).collect());
                }
            }
        }
        let mut live: Vec<&Offer> = by_model
            .get(model)
            .map(|offers| offers.values().filter(|o| !o.conn.is_closed()).collect())
            .unwrap_or_default();
        if live.is_empty() {
            return Err(self.none_live(model));
        }
        let lacking = live[0].features;
        live.retain(|o| o.features.covers(&prefs.needs));
        if live.is_empty() {
            let field = prefs.needs.first_missing(&lacking).unwrap_or("a feature");
            return Err(WireError::new(
                ErrorKind::FeatureNotServed,
                format!("'{field}' is not served by any worker serving '{model}' now; leave it out or choose another model."),
            ));
        }
        let mut eligible: Vec<(u64, &Offer)> = live
            .into_iter()
            .filter(|o| o.price_coefficient <= limit)
            .map(|o| (rank(o, prefs.sort), o))
            .collect();
        if eligible.is_empty() {
            let cheapest = by_model
                .get(model)
                .and_then(|offers| offers.values().map(|o| o.price_coefficient).min())
                .unwrap_or(0);
            return Err(WireError::new(
                ErrorKind::NoWorker,
                format!("no worker serves '{model}' within max_coefficient {limit}: the cheapest asks {cheapest}"),
            ));
        }
        if eligible.len() > SHORT_LIST {
            eligible.select_nth_unstable_by_key(SHORT_LIST - 1, |(r, _)| *r);
            eligible.truncate(SHORT_LIST);
        }
        eligible.sort_by_key(|(r, _)| *r);
        Ok(eligible.into_iter().map(|(_, o)| listed(o)).collect())
    }

    fn none_live(&self, model: &str) -> WireError {
        if self.known.reading().contains(model) {
            WireError::new(
                ErrorKind::NoWorker,
                format!("no worker serving model '{model}' is connected"),
            )
        } else {
            WireError::new(
                ErrorKind::ModelNotFound,
                format!("The model '{model}' does not exist"),
            )
        }
    }

    /// [`Registry::pick`], but when every worker is at capacity, wait in the
    /// model's queue for a slot (bounded; up to the queue's deadline).
    pub async fn pick_or_wait(
        &self,
        model: &str,
        candidates: &[Fingerprint],
        sort: Sort,
        affinity: bool,
    ) -> Result<Picked, WireError> {
        let pick = || {
            if affinity {
                self.pick_affine(model, candidates, sort)
            } else {
                self.pick(model, candidates, sort)
            }
        };
        let first = pick();
        if !matches!(&first, Err(e) if e.kind == ErrorKind::Overloaded) {
            return first;
        }
        let queue = self.queue_of(model);
        if self.queue.max_wait.is_zero() {
            return first;
        }
        let Some(_ticket) = Ticket::take(&queue, self.queue.max_waiting) else {
            return Err(WireError::new(
                ErrorKind::Overloaded,
                format!(
                    "every worker serving '{model}' is at capacity and {} requests are already waiting; retry shortly",
                    self.queue.max_waiting
                ),
            ));
        };
        let deadline = tokio::time::Instant::now() + self.queue.max_wait;
        loop {
            let freed = queue.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            match pick() {
                Err(e) if e.kind == ErrorKind::Overloaded => {}
                other => return other,
            }
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                return Err(WireError::new(
                    ErrorKind::Overloaded,
                    format!(
                        "every worker serving '{model}' stayed at capacity for {} ms; retry shortly",
                        self.queue.max_wait.as_millis()
                    ),
                ));
            }
        }
    }

    /// [`Registry::pick`], but the first candidate (the worker holding the
    /// conversation's cache) first while it has room and is healthy.
    pub fn pick_affine(
        &self,
        model: &str,
        candidates: &[Fingerprint],
        sort: Sort,
    ) -> Result<Picked, WireError> {
        if let Some(first) = candidates.first() {
            let by_model = self.by_model.reading();
            let offer = by_model.get(model).and_then(|o| o.get(first));
            if let Some(offer) = offer.filter(|o| !o.conn.is_closed() && !o.unhealthy()) {
                if let Some(picked) = take_slot(offer) {
                    return Ok(picked);
                }
            }
        }
        self.pick(model, candidates, sort)
    }

    /// Choose the least-loaded live worker for `model` among `candidates` (the
    /// workers the request is sealed to) with room, and take a slot.
    pub fn pick(
        &self,
        model: &str,
        candidates: &[Fingerprint],
        sort: Sort,
    ) -> Result<Picked, WireError> {
        let by_model = self.by_model.reading();
        let offers = by_model.get(model);
        let order: Vec<&Offer> = candidates
            .iter()
            .filter_map(|fp| offers?.get(fp))
            .filter(|o| !o.conn.is_closed())
            .collect();
        if order.is_empty() {
            // (Only on this path does the registry look at all the workers.)
            let any_live = offers.is_some_and(|o| o.values().any(|o| !o.conn.is_closed()));
            if !any_live {
                return Err(self.none_live(model));
            }
            return Err(WireError::new(
                ErrorKind::KeysChanged,
                format!("none of the workers this request is sealed to serves '{model}' now"),
            ));
        }
        // By the client's sort, those with room first.
        for offer in ranked(order, sort) {
            if let Some(picked) = take_slot(offer) {
                return Ok(picked);
            }
        }
        // Both sealed-to workers are full: if another has room, the client
        // node seals again to a fresh list (which ranks full workers last).
        let room_elsewhere = offers.is_some_and(|o| {
            o.values().any(|o| {
                !o.conn.is_closed() && o.has_room() && !candidates.contains(&o.fingerprint)
            })
        });
        if room_elsewhere {
            return Err(WireError::new(
                ErrorKind::KeysChanged,
                format!("the workers this request is sealed to are full; others serving '{model}' have room"),
            ));
        }
        Err(WireError::new(
            ErrorKind::Overloaded,
            format!("every worker serving '{model}' is at capacity; retry shortly"),
        ))
    }

    /// Models with their live worker counts (known models with none included).
    pub fn models(&self) -> Vec<ModelInfo> {
        let by_model = self.by_model.reading();
        let mut out: BTreeMap<String, ModelInfo> = self
            .known
            .reading()
            .iter()
            .map(|m| {
                let info = ModelInfo {
                    id: m.clone(),
                    workers: 0,
                    min_price_coefficient: None,
                    context_length: None,
                    features: Features::default(),
                };
                (m.clone(), info)
            })
            .collect();
        for (model, offers) in by_model.iter() {
            let live = offers.values().filter(|o| !o.conn.is_closed());
            let workers: HashSet<u64> = live.clone().map(|o| o.worker).collect();
            let info = ModelInfo {
                id: model.clone(),
                workers: workers.len() as u32,
                min_price_coefficient: live.clone().map(|o| o.price_coefficient).min(),
                context_length: live.clone().filter_map(|o| o.context_length).max(),
                features: live.fold(Features::default(), |all, o| all.union(o.features)),
            };
            out.insert(model.clone(), info);
        }
        out.into_values().collect()
    }

    /// Every live offer's figures, by model then worker.
    pub fn offer_stats(&self) -> Vec<OfferStats> {
        let by_model = self.by_model.reading();
        let mut out: Vec<OfferStats> = by_model
            .iter()
            .flat_map(|(model, offers)| {
                offers
                    .values()
                    .filter(|o| !o.conn.is_closed())
                    .map(move |o| {
                        let speed = &o.slot.speed;
                        OfferStats {
                            model: model.clone(),
                            worker: o.fingerprint.to_string(),
                            price_coefficient: o.price_coefficient,
                            in_flight: o.slot.in_flight.load(Ordering::Acquire),
                            capacity: o.slot.capacity,
                            context_length: o.context_length,
                            quantization: o.quantization.as_deref().map(str::to_string),
                            ttft_us: speed.ttft_us.load(Ordering::Relaxed),
                            tokens_per_s_milli: speed.tokens_per_s_milli.load(Ordering::Relaxed),
                            errors_permille: speed.errors_permille.load(Ordering::Relaxed),
                            answers: speed.answers.load(Ordering::Relaxed),
                            failures: speed.failures.load(Ordering::Relaxed),
                            healthy: !o.unhealthy(),
                        }
                    })
            })
            .collect();
        out.sort_by(|a, b| (&a.model, &a.worker).cmp(&(&b.model, &b.worker)));
        out
    }

    /// Live worker connections.
    pub fn worker_count(&self) -> usize {
        let by_model = self.by_model.reading();
        let ids: HashSet<u64> = by_model
            .values()
            .flat_map(|offers| offers.values())
            .map(|o| o.worker)
            .collect();
        ids.len()
    }
}
