//! A worker's run-time controls, for its GPU owner (`cocoon worker
//! drain|resume|status`, over the admin endpoint on `status_listen`):
//! draining stops new work without dropping any (the worker announces no
//! models, so its proxies route it nothing new; a request already on its way
//! is refused before any token, which the client node seals again to
//! another worker) while running requests finish; resuming announces its
//! models again. The same pause holds, on its own, while the network's
//! root contract no longer publishes the worker's image or one of its
//! models (the worker re-checks itself at every change of the lists).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde_json::{json, Value};

use crate::WorkerStats;

/// Why the worker takes no new requests: its owner drains it, or the
/// network withdrew its image or a model it serves (the root contract).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Pause {
    draining: bool,
    withdrawn: Option<String>,
}

pub struct WorkerControls {
    pause: tokio::sync::watch::Sender<Pause>,
    stats: Arc<WorkerStats>,
}

impl WorkerControls {
    pub(crate) fn new(stats: Arc<WorkerStats>) -> Self {
        Self {
            pause: tokio::sync::watch::Sender::new(Pause::default()),
            stats,
        }
    }

    /// Whether new requests are refused (drained by its owner, or
    /// withdrawn by the network).
    pub fn draining(&self) -> bool {
        let pause = self.pause.borrow();
        pause.draining || pause.withdrawn.is_some()
    }

    /// Why the network withdrew this worker, while it does.
    pub fn withdrawn(&self) -> Option<String> {
        self.pause.borrow().withdrawn.clone()
    }

    /// Drain (`true`) or resume; what changed is announced to [`WorkerControls::changes`].
    pub fn set_draining(&self, on: bool) {
        let changed = self.pause.send_if_modified(|pause| {
            let changed = pause.draining != on;
            pause.draining = on;
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

    /// The network withdrew this worker (`Some(why)`: its image or a
    /// model is no longer published) or publishes it again (`None`).
    pub(crate) fn set_withdrawn(&self, why: Option<String>) {
        let changed = self.pause.send_if_modified(|pause| {
            let changed = pause.withdrawn != why;
            pause.withdrawn = why.clone();
            changed
        });
        if changed {
            match why {
                Some(why) => {
                    tracing::error!(reason = %why, "the network no longer trusts this worker: it takes no new requests")
                }
                None => tracing::info!("the network trusts this worker again: taking requests"),
            }
        }
    }

    pub(crate) fn changes(&self) -> tokio::sync::watch::Receiver<Pause> {
        self.pause.subscribe()
    }
}

impl cocoon_metrics::admin::Controls for WorkerControls {
    fn status(&self) -> Value {
        json!({
            "draining": self.pause.borrow().draining,
            "withdrawn": self.withdrawn(),
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
