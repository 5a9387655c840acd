//! A worker's run-time controls, for its GPU owner (`cocoon worker
//! drain|resume|set-price|status`, over the admin endpoint on
//! `status_listen`). Setting a price announces it at once (see `prices`).
//!
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

use crate::{Prices, WorkerStats};

/// Why the worker takes no new requests: its owner drains it, or the
/// network withdrew its image or a model it serves (the root contract).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Pause {
    draining: bool,
    withdrawn: Option<String>,
}

pub struct WorkerControls {
    pause: tokio::sync::watch::Sender<Pause>,
    prices: Arc<Prices>,
    stats: Arc<WorkerStats>,
}

impl WorkerControls {
    pub(crate) fn new(stats: Arc<WorkerStats>, prices: Arc<Prices>) -> Self {
        Self {
            pause: tokio::sync::watch::Sender::new(Pause::default()),
            prices,
            stats,
        }
    }

    /// Each model's price, as announced now.
    pub fn prices(&self) -> &Arc<Prices> {
        &self.prices
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
            "prices": self.prices.all(),
        })
    }

    fn act(&self, action: &str, args: &Value) -> Result<Value, (u16, String)> {
        match action {
            "drain" => self.set_draining(true),
            "resume" => self.set_draining(false),
            "set-price" => {
                let model = args["model"]
                    .as_str()
                    .ok_or((400, "'model' must be a model's name".to_string()))?;
                let price = args["price_coefficient"]
                    .as_u64()
                    .and_then(|p| u32::try_from(p).ok())
                    .ok_or((
                        400,
                        "'price_coefficient' must be a whole number (1000 = the base price)"
                            .to_string(),
                    ))?;
                self.prices.set(model, price).map_err(|e| match e {
                    crate::PriceError::UnknownModel(_) => (404, e.to_string()),
                    _ => (400, format!("'price_coefficient': {e}")),
                })?;
            }
            other => {
                return Err((
                    404,
                    format!("unknown action {other:?}: a worker can drain, resume or set-price"),
                ))
            }
        }
        Ok(self.status())
    }
}
