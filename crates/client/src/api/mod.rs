//! The OpenAI-compatible HTTP surface of a client node.
//!
//! * `error`    - [`ApiError`]: every failure as OpenAI's error JSON with its status.
//! * `validate` - request bodies checked field by field into a `GenerateRequest`.
//! * `respond`  - running a request on the backend: JSON answers and SSE streams.
//! * `browser`  - what web pages on the same machine may not do (CSRF, DNS
//!   rebinding), and constant-time API key checks.

mod browser;
mod error;
mod respond;
mod validate;

pub use browser::BrowserPolicy;
pub use validate::parse_sort;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, Method, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use cocoon_protocol::openai::{Model, ModelList};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::Backend;
pub use error::ApiError;

/// Limits and keys of the HTTP API.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// Bearer keys apps must present; empty means none is required.
    pub api_keys: Vec<String>,
    pub max_body_bytes: usize,
    pub max_concurrent_requests: usize,
    pub first_token_timeout: Duration,
    pub idle_timeout: Duration,
    /// Pay from a client contract on TON: balance endpoint and 402 checks.
    pub billing: Option<Arc<crate::Billing>>,
    /// Routing preferences for requests that state none (`[routing]`).
    pub routing: cocoon_protocol::RoutingPrefs,
    /// Request metrics, served on `/metrics`.
    pub metrics: Arc<cocoon_metrics::Metrics>,
    /// Hosts and origins browsers may reach the API from.
    pub browser: BrowserPolicy,
    /// Connections at most, and how long headers and bodies may take.
    pub http: cocoon_metrics::http::HttpLimits,
}

impl Default for ApiSettings {
    fn default() -> Self {
        Self {
            api_keys: Vec::new(),
            max_body_bytes: 4 * 1024 * 1024,
            max_concurrent_requests: 256,
            first_token_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(60),
            billing: None,
            routing: cocoon_protocol::RoutingPrefs::default(),
            metrics: Arc::new(cocoon_metrics::Metrics::new("client")),
            browser: BrowserPolicy::default(),
            http: cocoon_metrics::http::HttpLimits::default(),
        }
    }
}

pub(crate) struct App {
    pub backend: Arc<dyn Backend>,
    pub settings: ApiSettings,
    pub keys: Vec<String>,
    pub slots: Arc<Semaphore>,
}

/// Validate a request body as `POST /v1/chat/completions` (`chat`) or
/// `POST /v1/completions` does: `Err` with the API's error when refused
/// (for fuzzing and tools).
pub fn check_request(chat: bool, body: &[u8]) -> Result<(), ApiError> {
    let checked = if chat {
        validate::chat(body)
    } else {
        validate::completion(body)
    };
    checked.map(|_| ())
}

/// The API's routes over `backend`.
pub fn router(backend: Arc<dyn Backend>, settings: ApiSettings) -> Router {
    let app = Arc::new(App {
        backend,
        keys: settings.api_keys.clone(),
        slots: Arc::new(Semaphore::new(settings.max_concurrent_requests)),
        settings: settings.clone(),
    });
    let api = Router::new()
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
        .route("/v1/cocoon/balance", get(balance))
        // Outermost last: the key is checked before a body is read.
        .layer(axum::middleware::from_fn_with_state(app.clone(), read_body))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            require_key,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(
            settings.max_body_bytes,
        ));
    Router::new()
        .route("/", get(playground))
        .route("/cocoon.js", get(cocoon_metrics::page_script))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/stats", get(stats))
        .route("/metrics", get(metrics))
        .merge(api)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            refuse_other_sites,
        ))
        .with_state(app)
}

/// The whole body, within the size and time allowed, before any route
/// runs: a client trickling its body cannot hold a request slot.
async fn read_body(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let limits = &app.settings;
    match cocoon_metrics::http::read_body(request, limits.http.body_timeout, limits.max_body_bytes)
        .await
    {
        Ok(request) => next.run(request).await,
        Err(e) => ApiError::from_body_error(e).into_response(),
    }
}

/// 403 for a request a web page on another site made (see `browser`).
async fn refuse_other_sites(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    match app.settings.browser.refusal(request.headers()) {
        None => next.run(request).await,
        Some(reason) => {
            tracing::warn!(%reason, "browser request refused");
            ApiError::forbidden(reason).into_response()
        }
    }
}

/// Serve the API on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    backend: Arc<dyn Backend>,
    settings: ApiSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = settings.http;
    cocoon_metrics::http::serve(listener, router(backend, settings), limits, shutdown).await
}

async fn require_key(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    if app.keys.is_empty() {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(key) if browser::key_matches(&app.keys, key.trim()) => next.run(request).await,
        Some(_) => ApiError::unauthorized("Incorrect API key provided.").into_response(),
        None => ApiError::unauthorized(
            "You didn't provide an API key. Send it as 'Authorization: Bearer KEY'.",
        )
        .into_response(),
    }
}

/// This node's balance on TON, when it pays from a client contract.
async fn balance(State(app): State<Arc<App>>) -> Result<Json<serde_json::Value>, ApiError> {
    match &app.settings.billing {
        Some(billing) => Ok(Json(billing.balance().await?)),
        None => Err(ApiError::not_found(
            "This client node has no TON contract configured (no billing).",
        )),
    }
}

async fn models(State(app): State<Arc<App>>) -> Result<Json<ModelList>, ApiError> {
    let models = app.backend.list_models().await?;
    // Prices per million tokens need the network's prices (the root
    // contract's, read by billing); without billing only the coefficient.
    let prices = match &app.settings.billing {
        Some(billing) => billing.prices().await.ok(),
        None => None,
    };
    Ok(Json(ModelList {
        object: "list".into(),
        data: models
            .into_iter()
            .map(|m| Model {
                id: m.id,
                object: "model".into(),
                created: 0,
                owned_by: "cocoon".into(),
                workers: Some(m.workers),
                context_length: m.context_length,
                supported_parameters: m
                    .features
                    .parameters()
                    .into_iter()
                    .map(String::from)
                    .collect(),
                pricing: m.min_price_coefficient.map(|c| {
                    let per_million = prices.as_ref().map(|p| p.per_million(c));
                    cocoon_protocol::openai::ModelPricing {
                        price_coefficient: c,
                        prompt_per_million_nano: per_million.map(|p| p.0.to_string()),
                        completion_per_million_nano: per_million.map(|p| p.1.to_string()),
                    }
                }),
            })
            .collect(),
    }))
}

type Body = Result<Bytes, axum::extract::rejection::BytesRejection>;

async fn chat_completions(State(app): State<Arc<App>>, body: Body) -> Result<Response, ApiError> {
    generate(app, body, validate::chat, respond::Endpoint::Chat).await
}

async fn completions(State(app): State<Arc<App>>, body: Body) -> Result<Response, ApiError> {
    generate(
        app,
        body,
        validate::completion,
        respond::Endpoint::Completion,
    )
    .await
}

/// Read the body, validate it for `endpoint`, and answer.
async fn generate(
    app: Arc<App>,
    body: Body,
    validate: fn(&[u8]) -> Result<validate::Validated, ApiError>,
    endpoint: respond::Endpoint,
) -> Result<Response, ApiError> {
    let body = body.map_err(ApiError::from_body_rejection)?;
    let validated = validate(&body)?;
    // What a request may cost is checked against the contract with the
    // proxy it goes through (the pool, per proxy).
    respond::run(app, validated, endpoint).await
}

/// `GET /readyz`: 200 when a request can be served now (a proxy connected
/// and, when this node pays, its contract registered with one), else 503.
async fn readyz(State(app): State<Arc<App>>) -> Response {
    let (ready, detail) = app.backend.readiness();
    let status = if ready {
        axum::http::StatusCode::OK
    } else {
        axum::http::StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(serde_json::json!({"ready": ready, "detail": detail})),
    )
        .into_response()
}

/// `GET /`: the playground, a chat page over this API (it asks for the
/// API key itself when the node wants one).
async fn playground() -> axum::response::Html<&'static str> {
    axum::response::Html(include_str!("page/playground.html"))
}

/// `GET /metrics`: Prometheus (OpenMetrics text).
async fn metrics(State(app): State<Arc<App>>) -> Response {
    cocoon_metrics::openmetrics(&app.settings.metrics)
}

/// `GET /stats`: this node's state as JSON (never a prompt or an answer).
async fn stats(State(app): State<Arc<App>>) -> Json<serde_json::Value> {
    let (ready, backend) = app.backend.readiness();
    let limit = app.settings.max_concurrent_requests;
    Json(serde_json::json!({
        "object": "cocoon.stats",
        "ready": ready,
        "backend": backend,
        "requests": {
            "in_flight": limit - app.slots.available_permits(),
            "max_concurrent": limit,
        },
        "billing": app.settings.billing.as_ref().map(|b| {
            b.contracts()
                .into_iter()
                .map(|(proxy, contract)| serde_json::json!({"proxy_contract": proxy, "contract": contract.to_string()}))
                .collect::<Vec<_>>()
        }),
    }))
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found(format!("Unknown request URL: {method} {}.", uri.path()))
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::method_not_allowed(format!("Method {method} is not allowed on {}.", uri.path()))
}
