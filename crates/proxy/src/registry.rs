//! Live workers by model, with their attested keys. Each worker's offer for a
//! model is a slot with a capacity; a request takes the least-loaded slot with
//! room among the workers it is sealed to, and holds it until its answer stream
//! is dropped.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, RwLock};

use cocoon_chain::StdAddr;
use cocoon_protocol::tls::Fingerprint;
use cocoon_protocol::{Announce, Connection, ErrorKind, ModelInfo, WireError, WorkerKey};

/// One worker's capacity for one model.
#[derive(Debug)]
struct Slot {
    in_flight: AtomicU32,
    capacity: u32,
}

/// Holds a place in a worker's capacity; released on drop.
pub struct SlotGuard(Arc<Slot>);

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[derive(Clone)]
struct Offer {
    worker: u64,
    conn: Connection,
    slot: Arc<Slot>,
    key: Arc<WorkerKey>,
    fingerprint: Fingerprint,
    payee: Option<StdAddr>,
}

/// The worker a request was routed to.
pub struct Picked {
    pub conn: Connection,
    pub slot: SlotGuard,
    pub key: Arc<WorkerKey>,
    /// The worker contract its earnings are owed to (billing proxies).
    pub payee: Option<StdAddr>,
}

/// The proxy's view of which workers serve what.
#[derive(Default)]
pub struct Registry {
    by_model: RwLock<HashMap<String, Vec<Offer>>>,
    known: RwLock<HashSet<String>>,
}

impl Registry {
    pub fn new(models: impl IntoIterator<Item = String>) -> Self {
        Self {
            by_model: RwLock::default(),
            known: RwLock::new(models.into_iter().collect()),
        }
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
        let mut by_model = self.by_model.write().unwrap();
        let mut known = self.known.write().unwrap();
        for offer in &announce.models {
            if offer.max_concurrent == 0 || offer.name.is_empty() {
                continue;
            }
            known.insert(offer.name.clone());
            by_model.entry(offer.name.clone()).or_default().push(Offer {
                worker,
                conn: conn.clone(),
                slot: Arc::new(Slot {
                    in_flight: AtomicU32::new(0),
                    capacity: offer.max_concurrent,
                }),
                key: key.clone(),
                fingerprint,
                payee: payee.clone(),
            });
        }
    }

    /// Forget a worker (its connection closed).
    pub fn remove(&self, worker: u64) {
        let mut by_model = self.by_model.write().unwrap();
        for offers in by_model.values_mut() {
            offers.retain(|o| o.worker != worker);
        }
        by_model.retain(|_, offers| !offers.is_empty());
    }

    /// The keys of the live workers serving `model`.
    pub fn keys(&self, model: &str) -> Result<Vec<WorkerKey>, WireError> {
        let by_model = self.by_model.read().unwrap();
        let live: Vec<WorkerKey> = by_model
            .get(model)
            .map(|offers| {
                offers
                    .iter()
                    .filter(|o| !o.conn.is_closed())
                    .map(|o| (*o.key).clone())
                    .collect()
            })
            .unwrap_or_default();
        if live.is_empty() {
            return Err(self.none_live(model));
        }
        Ok(live)
    }

    fn none_live(&self, model: &str) -> WireError {
        if self.known.read().unwrap().contains(model) {
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

    /// Choose the least-loaded live worker for `model` among `candidates` (the
    /// workers the request is sealed to) with room, and take a slot.
    pub fn pick(&self, model: &str, candidates: &[Fingerprint]) -> Result<Picked, WireError> {
        let by_model = self.by_model.read().unwrap();
        let live: Vec<&Offer> = by_model
            .get(model)
            .map(|offers| offers.iter().filter(|o| !o.conn.is_closed()).collect())
            .unwrap_or_default();
        if live.is_empty() {
            return Err(self.none_live(model));
        }
        let mut order: Vec<&Offer> = live
            .into_iter()
            .filter(|o| candidates.contains(&o.fingerprint))
            .collect();
        if order.is_empty() {
            return Err(WireError::new(
                ErrorKind::KeysChanged,
                format!("none of the workers this request is sealed to serves '{model}' now"),
            ));
        }
        // Least loaded first (by fraction of capacity in use); take the first with room.
        order.sort_by_key(|o| {
            let used = o.slot.in_flight.load(Ordering::Acquire) as u64;
            used * 1_000_000 / o.slot.capacity as u64
        });
        for offer in order {
            let taken =
                offer
                    .slot
                    .in_flight
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                        (n < offer.slot.capacity).then_some(n + 1)
                    });
            if taken.is_ok() {
                return Ok(Picked {
                    conn: offer.conn.clone(),
                    slot: SlotGuard(offer.slot.clone()),
                    key: offer.key.clone(),
                    payee: offer.payee.clone(),
                });
            }
        }
        Err(WireError::new(
            ErrorKind::Overloaded,
            format!("every worker serving '{model}' is at capacity; retry shortly"),
        ))
    }

    /// Models with their live worker counts (known models with none included).
    pub fn models(&self) -> Vec<ModelInfo> {
        let by_model = self.by_model.read().unwrap();
        let mut out: BTreeMap<String, u32> = self
            .known
            .read()
            .unwrap()
            .iter()
            .map(|m| (m.clone(), 0))
            .collect();
        for (model, offers) in by_model.iter() {
            let workers: HashSet<u64> = offers
                .iter()
                .filter(|o| !o.conn.is_closed())
                .map(|o| o.worker)
                .collect();
            out.insert(model.clone(), workers.len() as u32);
        }
        out.into_iter()
            .map(|(id, workers)| ModelInfo { id, workers })
            .collect()
    }

    /// Live worker connections.
    pub fn worker_count(&self) -> usize {
        let by_model = self.by_model.read().unwrap();
        let ids: HashSet<u64> = by_model.values().flatten().map(|o| o.worker).collect();
        ids.len()
    }
}
