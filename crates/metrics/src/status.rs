//! The operator's HTTP endpoints of a node: `/healthz`, `/readyz`,
//! `/metrics` and `/stats`. Bind them to loopback or a private network.

use std::future::Future;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use tokio::net::TcpListener;

use crate::Metrics;

/// What a node says about itself.
pub trait NodeStatus: Send + Sync + 'static {
    /// Whether it can do its job now, and why (JSON).
    fn ready(&self) -> (bool, serde_json::Value);
    /// Its state as JSON (never a prompt or an answer).
    fn stats(&self) -> serde_json::Value;
    /// Its page for a browser at `/` (HTML that reads `/stats`), if it has one.
    fn page(&self) -> Option<&'static str> {
        None
    }
    /// Its admin endpoints (`/admin/...`), when its operator configured a token.
    fn admin(&self) -> Option<crate::admin::Admin> {
        None
    }
}

struct Node {
    metrics: Arc<Metrics>,
    status: Arc<dyn NodeStatus>,
}

/// The four endpoints over `status` and `metrics`.
pub fn router(metrics: Arc<Metrics>, status: Arc<dyn NodeStatus>) -> Router {
    let admin = Router::new()
        .route("/admin/status", get(crate::admin::status))
        .route("/admin/{action}", axum::routing::post(crate::admin::act))
        .with_state(status.admin());
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/stats", get(stats))
        .route("/", get(page))
        .route("/cocoon.js", get(page_script))
        .with_state(Arc::new(Node { metrics, status }))
        .merge(admin)
}

/// Serve the endpoints on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    status: Arc<dyn NodeStatus>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    crate::http::serve(
        listener,
        router(metrics, status),
        crate::http::HttpLimits::default(),
        shutdown,
    )
    .await
}

/// Serve the endpoints on `listener` in a task of their own until
/// `shutdown` resolves (an error is logged: the node goes on without them).
pub fn spawn(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    status: Arc<dyn NodeStatus>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if let Err(e) = serve(listener, metrics, status, shutdown).await {
            tracing::error!(error = %e, "status endpoints stopped");
        }
    })
}

/// The script every node's page loads (`/cocoon.js`): helpers they share.
pub const PAGE_SCRIPT: &str = include_str!("page/cocoon.js");

/// `GET /cocoon.js`: [`PAGE_SCRIPT`].
pub async fn page_script() -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/javascript; charset=utf-8",
        )],
        PAGE_SCRIPT,
    )
        .into_response()
}

async fn page(State(node): State<Arc<Node>>) -> Response {
    match node.status.page() {
        Some(html) => axum::response::Html(html).into_response(),
        None => (StatusCode::NOT_FOUND, "this node has no page").into_response(),
    }
}

async fn readyz(State(node): State<Arc<Node>>) -> Response {
    let (ready, detail) = node.status.ready();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(serde_json::json!({"ready": ready, "detail": detail})),
    )
        .into_response()
}

async fn metrics_text(State(node): State<Arc<Node>>) -> Response {
    openmetrics(&node.metrics)
}

/// A `/metrics` answer: `metrics` as OpenMetrics text.
pub fn openmetrics(metrics: &Metrics) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.render(),
    )
        .into_response()
}

async fn stats(State(node): State<Arc<Node>>) -> Json<serde_json::Value> {
    Json(node.status.stats())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    struct Flag(AtomicBool);

    impl NodeStatus for Flag {
        fn ready(&self) -> (bool, serde_json::Value) {
            (
                self.0.load(Ordering::Relaxed),
                serde_json::json!({"why": "test"}),
            )
        }
        fn stats(&self) -> serde_json::Value {
            serde_json::json!({"object": "test.stats"})
        }
    }

    #[tokio::test]
    async fn the_four_endpoints_answer_over_http() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let metrics = Arc::new(Metrics::new("worker"));
        metrics.request("m").ok(1, 2);
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        tokio::spawn(serve(
            listener,
            metrics,
            flag.clone(),
            std::future::pending(),
        ));
        let http = reqwest::Client::new();
        let get = |path: &str| http.get(format!("{base}{path}")).send();

        assert_eq!(get("/healthz").await.unwrap().text().await.unwrap(), "ok");
        let not_ready = get("/readyz").await.unwrap();
        assert_eq!(not_ready.status(), 503);
        flag.0.store(true, Ordering::Relaxed);
        let ready = get("/readyz").await.unwrap();
        assert_eq!(ready.status(), 200);
        let body: serde_json::Value = ready.json().await.unwrap();
        assert_eq!(body["detail"]["why"], "test");

        let scraped = get("/metrics").await.unwrap();
        assert!(scraped.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text"));
        let text = scraped.text().await.unwrap();
        assert!(
            text.contains(r#"cocoon_tokens_total{role="worker",model="m",kind="completion"} 2"#),
            "{text}"
        );
        let stats: serde_json::Value = get("/stats").await.unwrap().json().await.unwrap();
        assert_eq!(stats["object"], "test.stats");
    }
}
