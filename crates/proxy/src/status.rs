//! What a proxy shows its operator (see `cocoon-metrics`): ready when at
//! least one worker is connected; `/stats` with the routing table (each
//! worker's price, load and measured speed), queue depths, receipts and
//! settlement; and Prometheus gauges of the same, read at every scrape.

use std::sync::Arc;

use cocoon_metrics::{encode_gauges, Collector, DescriptorEncoder, NodeStatus, Row};
use serde_json::{json, Value};

use crate::{ProxyHandle, Registry};

/// One figure of a worker's offer.
type Reading = fn(&crate::OfferStats) -> f64;

/// The routing table as Prometheus gauges.
#[derive(Debug)]
pub(crate) struct RoutingMetrics(pub Arc<Registry>);

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Registry({} workers)", self.worker_count())
    }
}

impl Collector for RoutingMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let registry = &self.0;
        encode_gauges(
            &mut encoder,
            "workers_connected",
            "Workers with a live connection and at least one offer",
            &[(vec![], registry.worker_count() as f64)],
        )?;
        let queues: Vec<Row> = registry
            .queue_depths()
            .into_iter()
            .map(|(model, depth)| (vec![("model", model)], depth as f64))
            .collect();
        encode_gauges(
            &mut encoder,
            "queue_depth",
            "Requests waiting for a worker slot, per model",
            &queues,
        )?;
        let offers = registry.offer_stats();
        let per_offer = |value: Reading| -> Vec<Row> {
            offers
                .iter()
                .map(|o| {
                    (
                        vec![("model", o.model.clone()), ("worker", o.worker.clone())],
                        value(o),
                    )
                })
                .collect()
        };
        let families: [(&str, &str, Reading); 8] = [
            (
                "worker_in_flight",
                "Requests a worker is answering for this proxy",
                |o| o.in_flight as f64,
            ),
            (
                "worker_capacity",
                "Requests a worker takes at once (announced)",
                |o| o.capacity as f64,
            ),
            (
                "worker_price_coefficient",
                "A worker's price (1000 = the base price)",
                |o| o.price_coefficient as f64,
            ),
            (
                "worker_first_token_seconds",
                "Moving average of a worker's time to first token (0: not measured)",
                |o| o.ttft_us as f64 / 1e6,
            ),
            (
                "worker_tokens_per_second",
                "Moving average of a worker's tokens/s after the first (0: not measured)",
                |o| o.tokens_per_s_milli as f64 / 1e3,
            ),
            (
                "worker_error_ratio",
                "Moving average of a worker's failed answers (0..1)",
                |o| o.errors_permille as f64 / 1e3,
            ),
            (
                "worker_failures",
                "A worker's failed answers since it connected",
                |o| o.failures as f64,
            ),
            (
                "worker_healthy",
                "1, or 0 while a failing worker is listed last",
                |o| o.healthy as u8 as f64,
            ),
        ];
        for (name, help, value) in families {
            encode_gauges(&mut encoder, name, help, &per_offer(value))?;
        }
        Ok(())
    }
}

/// A running proxy's readiness and stats.
pub struct ProxyStatus(pub ProxyHandle);

impl NodeStatus for ProxyStatus {
    fn ready(&self) -> (bool, Value) {
        let workers = self.0.registry.worker_count();
        // A proxy closing its contract, or halted on old books, takes no
        // new requests.
        let closing = self.0.settlement.as_ref().and_then(|s| s.closing());
        let halted = self.0.settlement.as_ref().and_then(|s| s.behind());
        (
            workers > 0 && closing.is_none() && halted.is_none(),
            json!({ "workers": workers, "closing": closing.is_some(), "halted": halted }),
        )
    }

    fn admin(&self) -> Option<cocoon_metrics::admin::Admin> {
        let handle = &self.0;
        handle
            .admin_token
            .clone()
            .map(|token| cocoon_metrics::admin::Admin {
                token,
                controls: handle.controls.clone(),
            })
    }

    fn page(&self) -> Option<&'static str> {
        Some(include_str!("page/index.html"))
    }

    fn stats(&self) -> Value {
        let handle = &self.0;
        let settlement = handle.settlement.as_ref().map(|s| {
            let totals = s.totals();
            json!({
                "proxy_contract": s.proxy_contract().to_string(),
                "rounds": totals.rounds,
                "transfers": totals.transfers,
                "charges": totals.charges,
                "books_commits": totals.books_commits,
                "history": s.history(),
                "closing": s.closing().map(|c| json!({
                    "requested_at": c.requested_at,
                    "due": c.due(),
                    "closed": c.finished,
                })),
            })
        });
        json!({
            "object": "cocoon.proxy.stats",
            "proxy": handle.fingerprint.to_string(),
            "workers_connected": handle.registry.worker_count(),
            "models": handle.registry.models(),
            "queues": handle.registry.queue_depths().into_iter()
                .map(|(model, waiting)| json!({"model": model, "waiting": waiting}))
                .collect::<Vec<_>>(),
            "offers": handle.registry.offer_stats(),
            "receipts_rejected": handle.receipts.rejected(),
            "settlement": settlement,
            "clients": handle.settlement.as_ref().map(|s| s.clients()),
        })
    }
}
