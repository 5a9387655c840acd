//! A worker's run-time controls, for its GPU owner (`cocoon worker
//! drain|resume|status`, over the admin endpoint on `status_listen`):
//! draining stops new work without dropping any (the worker announces no
//! models, so its proxies route it nothing new; a request already on its way
//! is refused before any token, which the client node seals again to
//! another worker) while running requests finish; resuming announces its
//! models again.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde_json::{json, Value};

use crate::WorkerStats;

pub struct WorkerControls {
    draining: tokio::sync::watch::Sender<bool>,
    stats: Arc<WorkerStats>,
}

impl WorkerControls {
    pub(crate) fn new(stats: Arc<WorkerStats>) -> Self {
        Self {
            draining: tokio::sync::watch::Sender::new(false),
            stats,
        }
    }

    /// Whether new requests are refused.
    pub fn draining(&self) -> bool {
        *self.draining.borrow()
    }

    /// Drain (`true`) or resume; what changed is announced to [`WorkerControls::changes`].
    pub fn set_draining(&self, on: bool) {
        let changed = self.draining.send_if_modified(|draining| {
            let changed = *draining != on;
            *draining = on;
            changed
        });
        if changed {
            tracing::info!(
                draining = on,
                "{}",
                if on {
                    "draining: no new requests; running ones finish"
                } else {
                    "resumed: taking requests again"
                }
            );
        }
    }

    pub(crate) fn changes(&self) -> tokio::sync::watch::Receiver<bool> {
        self.draining.subscribe()
    }
}

impl cocoon_metrics::admin::Controls for WorkerControls {
    fn status(&self) -> Value {
        json!({
            "draining": self.draining(),
            "active": self.stats.active.load(Ordering::SeqCst),
            "completed": self.stats.completed.load(Ordering::SeqCst),
        })
    }

    fn act(&self, action: &str, _args: &Value) -> Result<Value, (u16, String)> {
        match action {
            "drain" => self.set_draining(true),
            "resume" => self.set_draining(false),
            other => {
                return Err((
                    404,
                    format!("unknown action {other:?}: a worker can drain or resume"),
                ))
            }
        }
        Ok(self.status())
    }
}
