//! A proxy's run-time controls, for its operator (`cocoon proxy
//! disable-worker|enable-worker|status`, over the admin endpoint on
//! `status_listen`), and the evictions the proxy makes on its own: a
//! disabled worker is disconnected at once (its running requests end with
//! an error the client node sees) and refused when it redials, until it is
//! enabled again; a worker whose usage receipts are refused
//! [`EVICT_AFTER_REFUSED`] times in a row (over-claimed, forged, or for
//! another request) is evicted the same way for [`FIRST_EVICTION`],
//! doubled at each repeat up to [`LONGEST_EVICTION`]. `status` lists the
//! connected workers with their offers, the disabled keys and the
//! evictions. With `disabled_workers_file` the operator's list is kept
//! there (JSON, written whole at each change) and read back at start;
//! evictions last until the proxy restarts.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use cocoon_protocol::sync::{LockRecover, RwLockRecover};
use cocoon_protocol::tls::Fingerprint;
use cocoon_protocol::Connection;
use serde_json::{json, Value};

use crate::Registry;

/// At most this many keys are disabled or evicted at once (memory stays
/// bounded whatever keys attackers bring).
const MAX_BANNED: usize = 100_000;

/// Refused receipts in a row that evict a worker.
pub const EVICT_AFTER_REFUSED: u32 = 3;

/// How long a first eviction lasts...
pub const FIRST_EVICTION: Duration = Duration::from_secs(600);

/// ...doubled at each repeat, up to this.
pub const LONGEST_EVICTION: Duration = Duration::from_secs(24 * 3600);

/// Why a key is refused: the operator's say (until enabled), or an
/// eviction (until it runs out).
#[derive(Debug, Clone)]
struct Ban {
    until: Option<Instant>,
    reason: String,
}

impl Ban {
    fn holds(&self, now: Instant) -> bool {
        self.until.is_none_or(|until| until > now)
    }
}

/// A worker's receipt record: refusals in a row, and evictions so far.
#[derive(Debug, Default, Clone, Copy)]
struct Record {
    refused_in_a_row: u32,
    evictions: u32,
}

pub struct ProxyControls {
    registry: Arc<Registry>,
    /// Where the operator's disabled keys are kept, if anywhere.
    store: Option<std::path::PathBuf>,
    banned: RwLock<HashMap<Fingerprint, Ban>>,
    records: Mutex<HashMap<Fingerprint, Record>>,
    /// Connected workers by connection id.
    workers: Mutex<HashMap<u64, (Fingerprint, Connection)>>,
}

impl ProxyControls {
    pub(crate) fn new(registry: Arc<Registry>) -> Self {
        Self {
            registry,
            store: None,
            banned: RwLock::default(),
            records: Mutex::default(),
            workers: Mutex::default(),
        }
    }

    /// Keep the operator's disabled keys in `path`, starting from those
    /// it holds (none when it does not exist yet).
    pub(crate) fn kept_in(mut self, path: std::path::PathBuf) -> std::io::Result<Self> {
        match std::fs::read(&path) {
            Ok(bytes) => {
                let keys: Vec<String> = serde_json::from_slice(&bytes).map_err(|e| {
                    std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())
                })?;
                let mut banned = self.banned.writing();
                for key in keys {
                    let key: Fingerprint = key.parse().map_err(|e| {
                        std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            format!("{key:?} is not a key: {e}"),
                        )
                    })?;
                    banned.insert(
                        key,
                        Ban {
                            until: None,
                            reason: "disabled by the proxy's operator".into(),
                        },
                    );
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        self.store = Some(path);
        Ok(self)
    }

    /// Write the operator's disabled keys to the store (whole, then
    /// renamed into place).
    fn save(&self) -> Result<(), String> {
        let Some(path) = &self.store else {
            return Ok(());
        };
        let keys: BTreeSet<String> = self
            .banned
            .reading()
            .iter()
            .filter(|(_, b)| b.until.is_none())
            .map(|(k, _)| k.to_string())
            .collect();
        let text = serde_json::to_vec_pretty(&keys).map_err(|e| e.to_string())?;
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Why the worker with `key` is refused now, if it is.
    pub fn refusal(&self, key: &Fingerprint) -> Option<String> {
        let banned = self.banned.reading();
        let ban = banned.get(key)?;
        ban.holds(Instant::now()).then(|| ban.reason.clone())
    }

    /// Whether the worker with `key` is refused now (disabled or evicted).
    pub fn is_disabled(&self, key: &Fingerprint) -> bool {
        self.refusal(key).is_some()
    }

    /// Keep `conn` (worker `key`, connection `id`) to close it when the
    /// worker is disabled; false (and `conn` closed) when it was disabled
    /// meanwhile.
    pub(crate) fn connected(&self, id: u64, key: Fingerprint, conn: &Connection) -> bool {
        self.workers.locked().insert(id, (key, conn.clone()));
        if let Some(reason) = self.refusal(&key) {
            self.left(id);
            conn.close(&reason);
            return false;
        }
        true
    }

    /// The worker connection `id` closed.
    pub(crate) fn left(&self, id: u64) {
        self.workers.locked().remove(&id);
    }

    /// Refuse `key` under `ban` and close its connections; how many.
    fn ban(&self, key: Fingerprint, ban: Ban) -> Result<usize, String> {
        {
            let now = Instant::now();
            let mut banned = self.banned.writing();
            if banned.len() >= MAX_BANNED {
                banned.retain(|_, b| b.holds(now));
            }
            if banned.len() >= MAX_BANNED && !banned.contains_key(&key) {
                return Err(format!("already {MAX_BANNED} workers disabled or evicted"));
            }
            banned.insert(key, ban.clone());
        }
        let closing: Vec<(u64, Connection)> = self
            .workers
            .locked()
            .iter()
            .filter(|(_, (k, _))| *k == key)
            .map(|(id, (_, conn))| (*id, conn.clone()))
            .collect();
        for (id, conn) in &closing {
            self.registry.remove(*id);
            conn.close(&ban.reason);
        }
        Ok(closing.len())
    }

    /// Disable `key`: refused from now on, and its connections closed.
    /// How many connections were closed.
    pub fn disable(&self, key: Fingerprint) -> Result<usize, String> {
        let closed = self.ban(
            key,
            Ban {
                until: None,
                reason: "disabled by the proxy's operator".into(),
            },
        )?;
        tracing::warn!(worker = %key, connections = closed, "worker disabled by the operator");
        self.save()?;
        Ok(closed)
    }

    /// Admit `key` again (disabled or evicted, its record cleared);
    /// whether it was refused.
    pub fn enable(&self, key: &Fingerprint) -> bool {
        self.records.locked().remove(key);
        let was = self.banned.writing().remove(key).is_some();
        if was {
            tracing::info!(worker = %key, "worker enabled again by the operator");
            if let Err(e) = self.save() {
                tracing::error!(error = %e, "could not keep the disabled workers");
            }
        }
        was
    }

    /// A receipt of worker `key` was verified: its refusals in a row end.
    pub(crate) fn receipt_verified(&self, key: &Fingerprint) {
        let mut records = self.records.locked();
        if let Some(record) = records.get_mut(key) {
            record.refused_in_a_row = 0;
            if record.evictions == 0 {
                records.remove(key);
            }
        }
    }

    /// A receipt of worker `key` was refused for `why`: at
    /// [`EVICT_AFTER_REFUSED`] in a row the worker is evicted.
    pub(crate) fn receipt_refused(&self, key: Fingerprint, why: &str) {
        // Receipts of answers that ran while the worker was evicted do
        // not evict it again (a burst would jump to a long eviction).
        if self.is_disabled(&key) {
            return;
        }
        let evictions = {
            let mut records = self.records.locked();
            if records.len() >= MAX_BANNED && !records.contains_key(&key) {
                let banned = self.banned.reading();
                let now = Instant::now();
                // Keep the records of workers evicted now; forget the rest.
                records.retain(|k, _| banned.get(k).is_some_and(|b| b.holds(now)));
                if records.len() >= MAX_BANNED {
                    tracing::warn!(worker = %key, "too many workers on record: this refusal is not counted");
                    return;
                }
            }
            let record = records.entry(key).or_default();
            record.refused_in_a_row += 1;
            if record.refused_in_a_row < EVICT_AFTER_REFUSED {
                return;
            }
            record.refused_in_a_row = 0;
            record.evictions += 1;
            record.evictions
        };
        let lasts = FIRST_EVICTION
            .saturating_mul(1 << (evictions - 1).min(16))
            .min(LONGEST_EVICTION);
        let reason = format!(
            "evicted for {} s: {EVICT_AFTER_REFUSED} usage receipts in a row refused (the last: {why})",
            lasts.as_secs()
        );
        tracing::warn!(worker = %key, evictions, seconds = lasts.as_secs(), "worker evicted: its usage receipts are refused");
        if let Err(e) = self.ban(
            key,
            Ban {
                until: Some(Instant::now() + lasts),
                reason,
            },
        ) {
            tracing::error!(worker = %key, error = %e, "could not evict the worker");
        }
    }
}

/// The `worker` argument: a key as `sha256:<hex>`.
fn worker_of(args: &Value) -> Result<Fingerprint, (u16, String)> {
    let text = args["worker"].as_str().ok_or((
        400,
        "worker: give the worker's key, {\"worker\": \"sha256:...\"}".to_string(),
    ))?;
    text.parse().map_err(|e| {
        (
            400,
            format!("worker: {text:?} is not a key (sha256:<64 hex>): {e}"),
        )
    })
}

impl cocoon_metrics::admin::Controls for ProxyControls {
    fn status(&self) -> Value {
        let connected: BTreeSet<String> = self
            .workers
            .locked()
            .values()
            .map(|(key, _)| key.to_string())
            .collect();
        let offers = self.registry.offer_stats();
        let now = Instant::now();
        let banned = self.banned.reading();
        json!({
            "workers": connected.iter().map(|key| json!({
                "worker": key,
                "offers": offers.iter().filter(|o| &o.worker == key).map(|o| json!({
                    "model": o.model,
                    "price_coefficient": o.price_coefficient,
                    "in_flight": o.in_flight,
                    "capacity": o.capacity,
                    "failures": o.failures,
                    "healthy": o.healthy,
                })).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "disabled": banned.iter().filter(|(_, b)| b.until.is_none()).map(|(k, _)| k.to_string()).collect::<BTreeSet<_>>(),
            "evicted": banned.iter().filter_map(|(k, b)| {
                let left = b.until?.checked_duration_since(now)?;
                Some(json!({"worker": k.to_string(), "reason": b.reason, "seconds_left": left.as_secs()}))
            }).collect::<Vec<_>>(),
        })
    }

    fn act(&self, action: &str, args: &Value) -> Result<Value, (u16, String)> {
        let mut state = match action {
            "disable-worker" => {
                let closed = self.disable(worker_of(args)?).map_err(|e| (409, e))?;
                json!({ "disconnected": closed })
            }
            "enable-worker" => {
                let key = worker_of(args)?;
                json!({ "was_disabled": self.enable(&key) })
            }
            other => {
                return Err((
                    404,
                    format!(
                        "unknown action {other:?}: a proxy can disable-worker or enable-worker"
                    ),
                ))
            }
        };
        if let (Some(state), Value::Object(status)) = (state.as_object_mut(), self.status()) {
            state.extend(status);
        }
        Ok(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> Fingerprint {
        Fingerprint::of_ed25519(&[byte; 32])
    }

    fn seconds_left(controls: &ProxyControls, key: &Fingerprint) -> u64 {
        let banned = controls.banned.reading();
        let until = banned[key].until.unwrap();
        until.duration_since(Instant::now()).as_secs()
    }

    #[test]
    fn refusals_in_a_row_evict_and_each_repeat_doubles_the_eviction() {
        let controls = ProxyControls::new(Arc::new(Registry::new(Vec::new())));
        let (liar, honest) = (key(1), key(2));
        // A verified receipt between refusals starts the count again.
        controls.receipt_refused(liar, "over-claimed");
        controls.receipt_refused(liar, "over-claimed");
        controls.receipt_verified(&liar);
        controls.receipt_refused(liar, "over-claimed");
        controls.receipt_refused(liar, "over-claimed");
        assert!(!controls.is_disabled(&liar));
        controls.receipt_refused(liar, "over-claimed");
        assert!(controls.is_disabled(&liar));
        assert!(!controls.is_disabled(&honest));
        assert!(controls.refusal(&liar).unwrap().contains("over-claimed"));
        let first = seconds_left(&controls, &liar);
        assert!(first + 2 >= FIRST_EVICTION.as_secs() && first <= FIRST_EVICTION.as_secs());
        // Receipts of answers that ran meanwhile do not evict it again.
        for _ in 0..3 * EVICT_AFTER_REFUSED {
            controls.receipt_refused(liar, "in the same burst");
        }
        assert!(seconds_left(&controls, &liar) <= FIRST_EVICTION.as_secs());
        // Once the eviction ran out, the next one lasts twice as long.
        let expire = |controls: &ProxyControls| {
            let mut banned = controls.banned.writing();
            banned.get_mut(&liar).unwrap().until = Some(Instant::now());
        };
        expire(&controls);
        assert!(!controls.is_disabled(&liar));
        for _ in 0..EVICT_AFTER_REFUSED {
            controls.receipt_refused(liar, "again");
        }
        let second = seconds_left(&controls, &liar);
        assert!(second + 2 >= 2 * FIRST_EVICTION.as_secs(), "{second}");
        // Many repeats stop at the longest eviction.
        for _ in 0..20 {
            expire(&controls);
            for _ in 0..EVICT_AFTER_REFUSED {
                controls.receipt_refused(liar, "again");
            }
        }
        let longest = seconds_left(&controls, &liar);
        assert!(longest + 2 >= LONGEST_EVICTION.as_secs() && longest <= LONGEST_EVICTION.as_secs());
        // The operator lifts it, and its record starts afresh.
        assert!(controls.enable(&liar));
        assert!(!controls.is_disabled(&liar));
        controls.receipt_refused(liar, "once");
        assert!(!controls.is_disabled(&liar));
        // Honest workers leave no record behind.
        controls.receipt_verified(&honest);
        assert!(!controls.records.locked().contains_key(&honest));
    }

    #[test]
    fn the_operators_disabled_keys_outlive_a_restart_and_evictions_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disabled.json");
        let registry = || Arc::new(Registry::new(Vec::new()));
        let controls = ProxyControls::new(registry())
            .kept_in(path.clone())
            .unwrap();
        let (disabled, evicted) = (key(3), key(4));
        controls.disable(disabled).unwrap();
        for _ in 0..EVICT_AFTER_REFUSED {
            controls.receipt_refused(evicted, "over-claimed");
        }
        assert!(controls.is_disabled(&evicted));
        let again = ProxyControls::new(registry())
            .kept_in(path.clone())
            .unwrap();
        assert!(again.is_disabled(&disabled));
        assert!(!again.is_disabled(&evicted));
        assert!(again.enable(&disabled));
        let third = ProxyControls::new(registry())
            .kept_in(path.clone())
            .unwrap();
        assert!(!third.is_disabled(&disabled));
        std::fs::write(&path, "[\"nonsense\"]").unwrap();
        let refused = ProxyControls::new(registry()).kept_in(path).err().unwrap();
        assert!(refused.to_string().contains("not a key"), "{refused}");
    }
}
