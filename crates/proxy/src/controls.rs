//! A proxy's run-time controls, for its operator (`cocoon proxy
//! disable-worker|enable-worker|status`, over the admin endpoint on
//! `status_listen`): a disabled worker is disconnected at once (its
//! running requests end with an error the client node sees) and refused
//! when it redials, until it is enabled again; `status` lists the
//! connected workers with their offers, and the disabled keys. The
//! disabled list lasts until the proxy restarts (a lasting filter is
//! `allowed_workers`).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};

use cocoon_protocol::sync::{LockRecover, RwLockRecover};
use cocoon_protocol::tls::Fingerprint;
use cocoon_protocol::Connection;
use serde_json::{json, Value};

use crate::Registry;

/// At most this many keys are disabled at once (the operator's list, not
/// an attacker's: still, memory stays bounded).
const MAX_DISABLED: usize = 100_000;

pub struct ProxyControls {
    registry: Arc<Registry>,
    disabled: RwLock<HashSet<Fingerprint>>,
    /// Connected workers by connection id.
    workers: Mutex<HashMap<u64, (Fingerprint, Connection)>>,
}

impl ProxyControls {
    pub(crate) fn new(registry: Arc<Registry>) -> Self {
        Self {
            registry,
            disabled: RwLock::default(),
            workers: Mutex::default(),
        }
    }

    /// Whether the operator disabled the worker with `key`.
    pub fn is_disabled(&self, key: &Fingerprint) -> bool {
        self.disabled.reading().contains(key)
    }

    /// Keep `conn` (worker `key`, connection `id`) to close it when the
    /// worker is disabled; false (and `conn` closed) when it was disabled
    /// meanwhile.
    pub(crate) fn connected(&self, id: u64, key: Fingerprint, conn: &Connection) -> bool {
        self.workers.locked().insert(id, (key, conn.clone()));
        if self.is_disabled(&key) {
            self.left(id);
            conn.close("disabled by the proxy's operator");
            return false;
        }
        true
    }

    /// The worker connection `id` closed.
    pub(crate) fn left(&self, id: u64) {
        self.workers.locked().remove(&id);
    }

    /// Disable `key`: refused from now on, and its connections closed.
    /// How many connections were closed.
    pub fn disable(&self, key: Fingerprint) -> Result<usize, String> {
        {
            let mut disabled = self.disabled.writing();
            if disabled.len() >= MAX_DISABLED && !disabled.contains(&key) {
                return Err(format!("already {MAX_DISABLED} workers disabled"));
            }
            disabled.insert(key);
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
            conn.close("disabled by the proxy's operator");
        }
        tracing::warn!(worker = %key, connections = closing.len(), "worker disabled by the operator");
        Ok(closing.len())
    }

    /// Admit `key` again; whether it was disabled.
    pub fn enable(&self, key: &Fingerprint) -> bool {
        let was = self.disabled.writing().remove(key);
        if was {
            tracing::info!(worker = %key, "worker enabled again by the operator");
        }
        was
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
            "disabled": self.disabled.reading().iter().map(|k| k.to_string()).collect::<BTreeSet<_>>(),
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
