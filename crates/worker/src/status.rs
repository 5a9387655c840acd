//! What a worker shows its operator (see `cocoon-metrics`): ready when it
//! is connected to at least one proxy; `/stats` with its counters, engine
//! load and proxies; and Prometheus gauges of its engine and connections.

use cocoon_protocol::sync::LockRecover;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use cocoon_metrics::{encode_gauges, Collector, DescriptorEncoder, NodeStatus};
use cocoon_protocol::tls::Fingerprint;
use cocoon_protocol::Connection;
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::WorkerStats;

/// A running worker's state, as its status endpoints read it.
#[derive(Clone)]
pub struct WorkerStatus {
    pub(crate) stats: Arc<WorkerStats>,
    pub(crate) connections: Vec<(String, watch::Receiver<Option<Connection>>)>,
    pub(crate) fingerprint: Fingerprint,
    pub(crate) engine: String,
    /// This node's TEE and the image hash its evidence claims (JSON).
    pub(crate) attestation: Value,
    /// (model, capacity, weights SHA-256) as announced.
    pub(crate) offers: Vec<(String, u32, Option<String>)>,
    pub(crate) earnings: Option<Arc<crate::Earnings>>,
    /// The admin endpoints (drain, resume), when a token is configured.
    pub(crate) admin: Option<cocoon_metrics::admin::Admin>,
    /// Drained by its owner, or withdrawn by the network: not ready.
    pub(crate) controls: Arc<crate::WorkerControls>,
    /// The sealing keys, for their rotation's state.
    pub(crate) sealing: Arc<crate::SealingKeys>,
}

/// What a worker's page says of its TEE: the kind, and the image hash its
/// own evidence claims (peers verify it; this only shows it).
pub(crate) fn attestation_of(identity: &cocoon_protocol::tls::Identity) -> Value {
    match identity.evidence(&[0u8; 64]) {
        None => json!({"tee": "none", "image_hash": null, "simulated": false}),
        Some(Err(e)) => {
            json!({"tee": "error", "error": e.to_string(), "image_hash": null, "simulated": false})
        }
        Some(Ok(evidence)) => {
            let kind = evidence.kind();
            // The configuration its evidence binds (see `Identity::bind_configuration`).
            let configuration = identity.configuration().map(|document| {
                json!({
                    "sha256": hex::encode(cocoon_attestation::configuration::digest(&document)),
                    "document": serde_json::from_slice::<Value>(&document).ok(),
                })
            });
            json!({
                "tee": kind,
                "image_hash": evidence.claimed_image_hash().ok(),
                "simulated": kind == cocoon_attestation::TeeKind::Simulated,
                "configuration": configuration,
            })
        }
    }
}

impl std::fmt::Debug for WorkerStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WorkerStatus({})", self.fingerprint)
    }
}

impl WorkerStatus {
    fn connected(&self) -> usize {
        self.connections
            .iter()
            .filter(|(_, c)| c.borrow().as_ref().is_some_and(|c| !c.is_closed()))
            .count()
    }
}

impl NodeStatus for WorkerStatus {
    fn page(&self) -> Option<&'static str> {
        Some(include_str!("page/index.html"))
    }

    fn admin(&self) -> Option<cocoon_metrics::admin::Admin> {
        self.admin.clone()
    }

    fn ready(&self) -> (bool, Value) {
        let connected = self.connected();
        // Taking no new requests: not ready (a load balancer or an
        // orchestrator sees why).
        let draining = self.controls.draining();
        (
            connected > 0 && !draining,
            json!({
                "proxies": self.connections.len(),
                "connected": connected,
                "draining": draining,
                "withdrawn": self.controls.withdrawn(),
            }),
        )
    }

    fn stats(&self) -> Value {
        let s = &self.stats;
        let load = *s.engine_load.locked();
        json!({
            "object": "cocoon.worker.stats",
            "worker": self.fingerprint.to_string(),
            "engine": self.engine,
            "requests": {
                "started": s.started.load(Ordering::Relaxed),
                "completed": s.completed.load(Ordering::Relaxed),
                "cancelled": s.cancelled.load(Ordering::Relaxed),
                "failed": s.failed.load(Ordering::Relaxed),
                "active": s.active.load(Ordering::Relaxed),
                "refused_sealed": s.refused_sealed.load(Ordering::Relaxed),
            },
            "tokens_generated": s.tokens_generated.load(Ordering::Relaxed),
            "engine_load": load.map(|l| json!({"running": l.running, "waiting": l.waiting})),
            "proxies": self.connections.iter().map(|(proxy, c)| json!({
                "proxy": proxy,
                "connected": c.borrow().as_ref().is_some_and(|c| !c.is_closed()),
            })).collect::<Vec<_>>(),
            "attestation": self.attestation,
            "sealing_key": self.sealing.status(),
            "models": self.offers.iter().map(|(name, capacity, sha)| json!({
                "name": name, "capacity": capacity, "weights_sha256": sha,
                "price_coefficient": self.controls.prices().current(name),
            })).collect::<Vec<_>>(),
            "earnings": self.earnings.as_ref().map(|e| {
                let book = e.book();
                let (mut owed, mut paid) = (0u128, 0u128);
                let proxies: Vec<Value> = book.iter().map(|(proxy, earned)| {
                    owed += earned.owed();
                    paid += earned.paid();
                    json!({"proxy": proxy, "owed_nano": earned.owed().to_string(),
                           "settled_nano": earned.paid().to_string(),
                           "pending_nano": earned.pending().to_string()})
                }).collect();
                json!({"payout": e.payout().to_string(),
                       "owed_nano": owed.to_string(), "settled_nano": paid.to_string(),
                       "pending_nano": owed.saturating_sub(paid).to_string(),
                       "proxies": proxies})
            }),
        })
    }
}

impl Collector for WorkerStatus {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        encode_gauges(
            &mut encoder,
            "proxies_connected",
            "Proxies this worker is connected to",
            &[(vec![], self.connected() as f64)],
        )?;
        let load = *self.stats.engine_load.locked();
        if let Some(load) = load {
            encode_gauges(
                &mut encoder,
                "engine_running",
                "Requests the engine is generating now",
                &[(vec![], load.running as f64)],
            )?;
            encode_gauges(
                &mut encoder,
                "engine_waiting",
                "Requests the engine has accepted but not started",
                &[(vec![], load.waiting as f64)],
            )?;
        }
        encode_gauges(
            &mut encoder,
            "sealed_requests_refused",
            "Sealed requests refused: not for this worker, tampered with, replayed or stale",
            &[(
                vec![],
                self.stats.refused_sealed.load(Ordering::Relaxed) as f64,
            )],
        )
    }
}
