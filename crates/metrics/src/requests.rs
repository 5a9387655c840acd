//! Request metrics shared by the three roles: each request is counted by
//! model and outcome, its tokens by kind, its time to first token and its
//! duration observed in histograms, and the requests in flight gauged.

use cocoon_protocol::sync::LockRecover;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use cocoon_protocol::{ErrorKind, Event};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Distinct model labels at most; requests for further models (on a client
/// node any string can be asked for) are labelled `other`.
pub const MAX_MODEL_LABELS: usize = 64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabel {
    model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    model: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    model: String,
    kind: String,
}

type Histograms = Family<ModelLabel, Histogram, fn() -> Histogram>;

/// One node's metrics registry and its request metrics.
pub struct Metrics {
    registry: Mutex<Registry>,
    requests: Family<OutcomeLabels, Counter>,
    tokens: Family<TokenLabels, Counter>,
    first_token: Histograms,
    duration: Histograms,
    in_flight: Gauge,
    models: Mutex<HashSet<String>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

/// 1 ms to ~65 s in powers of two.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

impl Metrics {
    /// Metrics named `cocoon_*`, each labelled `role="<role>"`.
    pub fn new(role: &'static str) -> Self {
        let mut registry = Registry::with_prefix_and_labels(
            "cocoon",
            [(
                std::borrow::Cow::Borrowed("role"),
                std::borrow::Cow::Borrowed(role),
            )]
            .into_iter(),
        );
        let requests = Family::<OutcomeLabels, Counter>::default();
        let tokens = Family::<TokenLabels, Counter>::default();
        let first_token: Histograms = Family::new_with_constructor(latency_histogram);
        let duration: Histograms = Family::new_with_constructor(latency_histogram);
        let in_flight = Gauge::default();
        registry.register(
            "requests",
            "Generation requests by model and outcome (ok, cancelled, or the error)",
            requests.clone(),
        );
        registry.register(
            "tokens",
            "Tokens of answered requests by model and kind (prompt, completion)",
            tokens.clone(),
        );
        registry.register(
            "first_token_seconds",
            "Time from receiving a request to its first answer token",
            first_token.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from receiving a request to the end of its answer",
            duration.clone(),
        );
        registry.register(
            "requests_in_flight",
            "Generation requests being answered now",
            in_flight.clone(),
        );
        Self {
            registry: Mutex::new(registry),
            requests,
            tokens,
            first_token,
            duration,
            in_flight,
            models: Mutex::new(HashSet::new()),
        }
    }

    /// Add a role's own metrics, read at every scrape.
    pub fn with_collector(self, collector: impl crate::Collector) -> Self {
        self.add_collector(collector);
        self
    }

    /// Add a role's own metrics, read at every scrape.
    pub fn add_collector(&self, collector: impl crate::Collector) {
        self.registry
            .locked()
            .register_collector(Box::new(collector));
    }

    /// The OpenMetrics text of everything registered.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.locked();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        out
    }

    fn model_label(&self, model: &str) -> String {
        let mut models = self.models.locked();
        if models.contains(model) {
            return model.to_string();
        }
        if models.len() < MAX_MODEL_LABELS {
            models.insert(model.to_string());
            return model.to_string();
        }
        "other".to_string()
    }

    /// Start measuring a request for `model`; it ends when the timer is
    /// finished or dropped (dropped unfinished: counted as cancelled).
    pub fn request(self: &Arc<Self>, model: &str) -> RequestTimer {
        self.in_flight.inc();
        RequestTimer {
            metrics: self.clone(),
            model: self.model_label(model),
            started: Instant::now(),
            first_token: false,
            finished: false,
        }
    }
}

/// One request's measurements.
pub struct RequestTimer {
    metrics: Arc<Metrics>,
    model: String,
    started: Instant,
    first_token: bool,
    finished: bool,
}

impl RequestTimer {
    /// An answer token arrived (only the first one is timed).
    pub fn token(&mut self) {
        if !self.first_token {
            self.first_token = true;
            self.metrics
                .first_token
                .get_or_create(&ModelLabel {
                    model: self.model.clone(),
                })
                .observe(self.started.elapsed().as_secs_f64());
        }
    }

    /// The request was answered with this usage.
    pub fn ok(&mut self, prompt_tokens: u64, completion_tokens: u64) {
        for (kind, n) in [("prompt", prompt_tokens), ("completion", completion_tokens)] {
            self.metrics
                .tokens
                .get_or_create(&TokenLabels {
                    model: self.model.clone(),
                    kind: kind.to_string(),
                })
                .inc_by(n);
        }
        self.finish("ok");
    }

    /// The request failed with `kind`.
    pub fn failed(&mut self, kind: ErrorKind) {
        self.finish(outcome(kind));
    }

    fn finish(&mut self, outcome: &str) {
        if self.finished {
            return;
        }
        self.finished = true;
        self.metrics
            .requests
            .get_or_create(&OutcomeLabels {
                model: self.model.clone(),
                outcome: outcome.to_string(),
            })
            .inc();
        self.metrics
            .duration
            .get_or_create(&ModelLabel {
                model: self.model.clone(),
            })
            .observe(self.started.elapsed().as_secs_f64());
    }
}

impl Drop for RequestTimer {
    fn drop(&mut self) {
        self.finish("cancelled");
        self.metrics.in_flight.dec();
    }
}

/// `events` (one request's answer), measured by `timer`: tokens, the end
/// and its outcome; dropped before its end, the request counts as cancelled.
pub fn metered(
    mut timer: RequestTimer,
    events: impl futures::Stream<Item = Event> + Send + 'static,
) -> futures::stream::BoxStream<'static, Event> {
    use futures::StreamExt;
    events
        .map(move |event| {
            match &event {
                Event::Delta { .. }
                | Event::ToolCall(_)
                | Event::Reasoning { .. }
                | Event::Sealed { .. } => timer.token(),
                Event::Done(done) => {
                    timer.ok(done.usage.prompt_tokens, done.usage.completion_tokens)
                }
                Event::Error(e) => timer.failed(e.kind),
                _ => {}
            }
            event
        })
        .boxed()
}

/// The `outcome` label of an error.
fn outcome(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::InvalidRequest => "invalid_request",
        ErrorKind::ModelNotFound => "model_not_found",
        ErrorKind::NoWorker => "no_worker",
        ErrorKind::Overloaded => "overloaded",
        ErrorKind::PaymentRequired => "payment_required",
        ErrorKind::Timeout => "timeout",
        ErrorKind::Upstream => "upstream",
        ErrorKind::KeysChanged => "keys_changed",
        ErrorKind::Internal => "internal",
        ErrorKind::ChainUnavailable => "chain_unavailable",
        ErrorKind::FeatureNotServed => "feature_not_served",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_counted_once_with_its_tokens_and_times() {
        let metrics = Arc::new(Metrics::new("proxy"));
        let mut timer = metrics.request("m");
        timer.token();
        timer.token();
        timer.ok(5, 7);
        drop(timer);
        metrics.request("m").failed(ErrorKind::Overloaded);
        drop(metrics.request("m"));
        let text = metrics.render();
        for line in [
            r#"cocoon_requests_total{role="proxy",model="m",outcome="ok"} 1"#,
            r#"cocoon_requests_total{role="proxy",model="m",outcome="overloaded"} 1"#,
            r#"cocoon_requests_total{role="proxy",model="m",outcome="cancelled"} 1"#,
            r#"cocoon_tokens_total{role="proxy",model="m",kind="completion"} 7"#,
            r#"cocoon_first_token_seconds_count{role="proxy",model="m"} 1"#,
            r#"cocoon_request_duration_seconds_count{role="proxy",model="m"} 3"#,
            r#"cocoon_requests_in_flight{role="proxy"} 0"#,
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }

    #[tokio::test]
    async fn a_metered_answer_counts_its_end_or_its_cancellation() {
        use futures::StreamExt;
        let metrics = Arc::new(Metrics::new("client"));
        let done = Event::Done(cocoon_protocol::Done {
            finish_reason: cocoon_protocol::FinishReason::Stop,
            usage: cocoon_protocol::Usage {
                prompt_tokens: 3,
                completion_tokens: 2,
                ..Default::default()
            },
            receipt: None,
            stamp: None,
            finishes: Vec::new(),
        });
        let text = || Event::Delta {
            text: "x".into(),
            tokens: 1,
        };
        let all: Vec<Event> = metered(
            metrics.request("m"),
            futures::stream::iter([text(), text(), done]),
        )
        .collect()
        .await;
        assert_eq!(all.len(), 3);
        // Hung up after the first token.
        let mut cut = metered(
            metrics.request("m"),
            futures::stream::iter([text(), text()]),
        );
        cut.next().await;
        drop(cut);
        let text = metrics.render();
        assert!(text.contains(r#"model="m",outcome="ok"} 1"#), "{text}");
        assert!(
            text.contains(r#"model="m",outcome="cancelled"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"model="m",kind="prompt"} 3"#), "{text}");
        assert!(
            text.contains(r#"cocoon_requests_in_flight{role="client"} 0"#),
            "{text}"
        );
    }

    #[test]
    fn model_labels_are_bounded() {
        let metrics = Arc::new(Metrics::new("client"));
        for i in 0..MAX_MODEL_LABELS + 10 {
            metrics.request(&format!("model-{i}")).ok(1, 1);
        }
        let text = metrics.render();
        assert!(text.contains(r#"model="other",outcome="ok"} 10"#), "{text}");
        assert!(!text.contains(&format!("model-{}", MAX_MODEL_LABELS)));
    }
}
