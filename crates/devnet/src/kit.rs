//! The test kit: what end-to-end tests, benchmarks and soak runs share to
//! start a network and speak to it over the wire (HTTP helpers, polling,
//! OpenAI-shaped error checks). The helpers panic on what a test must not
//! see: they are for tests and benchmarks, not for nodes.

use std::time::Duration;

use crate::{Devnet, DevnetOptions};
use cocoon_worker::EngineConfig;
use futures::StreamExt;
use serde_json::{json, Value};

pub const MODEL: &str = "test-echo";

/// How long a test's client node reuses what it read of the chain, set as
/// [`DevnetOptions::chain_fresh`] by tests that then wait it out with
/// [`past_fresh`] (instead of sleeping out the 2 s default).
pub const FRESH_IN_TESTS: Duration = Duration::from_millis(200);

/// Wait until what the client node read of the chain before now is stale
/// (its devnet set `chain_fresh = FRESH_IN_TESTS`).
pub async fn past_fresh() {
    tokio::time::sleep(FRESH_IN_TESTS + Duration::from_millis(100)).await;
}

pub async fn devnet_with(configure: impl FnOnce(&mut DevnetOptions)) -> Devnet {
    let mut options = DevnetOptions::instant(MODEL);
    configure(&mut options);
    Devnet::start(options).await.expect("devnet starts")
}

/// An embedded chain's TON HTTP API on loopback (its URL, `.../api/v2`),
/// for nodes started from config files that date evidence by its blocks.
pub async fn embedded_chain_api() -> String {
    let chain = std::sync::Arc::new(std::sync::Mutex::new(
        cocoon_ton_devnet::Emulator::new(cocoon_ton_devnet::unix_now())
            .expect("an empty chain starts"),
    ));
    let app = cocoon_ton_devnet::api::router(chain, cocoon_ton_devnet::unix_now);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let url = format!("http://{}/api/v2", listener.local_addr().expect("bound"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

pub async fn devnet() -> Devnet {
    devnet_with(|_| {}).await
}

pub fn slow_engine(delay_ms: u64, max_concurrent: u32) -> EngineConfig {
    EngineConfig::Instant {
        model: MODEL.into(),
        max_concurrent,
        token_delay_ms: delay_ms,
    }
}

/// The `openai-http` engine serving [`MODEL`] from `base_url`.
pub fn openai_http_engine(
    base_url: &str,
    upstream_model: Option<&str>,
    connect_timeout_secs: u64,
    read_timeout_secs: u64,
) -> EngineConfig {
    EngineConfig::OpenaiHttp {
        base_url: base_url.into(),
        model: MODEL.into(),
        upstream_model: upstream_model.map(str::to_string),
        api_key_env: None,
        tokenizer_gguf: None,
        weights_dir: None,
        max_concurrent: 8,
        connect_timeout_secs,
        read_timeout_secs,
    }
}

/// Wait until `ok` holds (checked every 20 ms), failing after 20 s.
pub async fn wait(what: &str, mut ok: impl FnMut() -> bool) {
    let started = std::time::Instant::now();
    while !ok() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{what}: not within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

pub fn chat_body(text: &str, extra: Value) -> Value {
    let mut body = json!({"model": MODEL, "messages": [{"role": "user", "content": text}]});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

/// GET a JSON document.
pub async fn get_json(url: &str) -> Value {
    http().get(url).send().await.unwrap().json().await.unwrap()
}

/// POST JSON, return status and parsed body (which must be labelled JSON).
pub async fn post(url: &str, body: &Value) -> (u16, Value) {
    let resp = http().post(url).json(body).send().await.unwrap();
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string());
    assert_eq!(
        content_type.as_deref(),
        Some("application/json"),
        "status {status}"
    );
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// POST a streaming request and collect every SSE `data:` payload.
pub async fn post_stream(url: &str, body: &Value) -> Vec<String> {
    let resp = http().post(url).json(body).send().await.unwrap();
    assert_eq!(resp.status(), 200, "streaming request failed");
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let mut events = eventsource_stream::Eventsource::eventsource(resp.bytes_stream());
    let mut out = Vec::new();
    while let Some(event) = events.next().await {
        out.push(event.unwrap().data);
    }
    out
}

/// Start a streamed chat that goes on until dropped (on a slow engine), check that
/// it was accepted, and return it still open.
pub async fn open_stream(net: &Devnet, text: &str) -> reqwest::Response {
    let body = chat_body(text, json!({"stream": true, "max_tokens": 100000}));
    open_stream_with(net, &body).await
}

/// A streamed chat `body` accepted (200), its events not read yet.
pub async fn open_stream_with(net: &Devnet, body: &Value) -> reqwest::Response {
    let resp = http()
        .post(format!("{}/chat/completions", net.api_url))
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "stream not accepted");
    resp
}

/// Assert an OpenAI-shaped error body with a message containing `needle`.
pub fn assert_error(body: &Value, needle: &str) {
    let message = body["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("not an OpenAI error: {body}"));
    assert!(body["error"]["type"].is_string(), "{body}");
    assert!(
        message.contains(needle),
        "{message:?} does not contain {needle:?}"
    );
}

pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..500 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// POST `body` to `url`: the response when it is a success, else the error
/// code (the API's, or `connection`).
async fn post_streaming(
    http: &reqwest::Client,
    url: &str,
    body: &str,
) -> Result<reqwest::Response, String> {
    let response = http
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .map_err(|_| "connection".to_string())?;
    if !response.status().is_success() {
        let json: serde_json::Value = response.json().await.unwrap_or_default();
        return Err(error_code(&json));
    }
    Ok(response)
}

/// An OpenAI-style error body's `code`.
fn error_code(json: &serde_json::Value) -> String {
    json["error"]["code"]
        .as_str()
        .unwrap_or("unknown")
        .to_string()
}

/// One streamed chat completion at `url`: Ok(its `cocoon.cost_nano`) or
/// Err(the error code: the API's, `connection`, `truncated`, `no_cost`).
pub async fn streamed_request(
    http: &reqwest::Client,
    url: &str,
    body: &str,
) -> Result<u128, String> {
    let text = post_streaming(http, url, body)
        .await?
        .text()
        .await
        .map_err(|_| "connection".to_string())?;
    let mut cost = None;
    let mut done = false;
    for data in text.lines().filter_map(|l| l.strip_prefix("data: ")) {
        if data == "[DONE]" {
            done = true;
            continue;
        }
        let chunk: serde_json::Value = serde_json::from_str(data).unwrap_or_default();
        if chunk.get("error").is_some() {
            return Err(error_code(&chunk));
        }
        if let Some(c) = chunk["cocoon"]["cost_nano"].as_str() {
            cost = c.parse::<u128>().ok();
        }
    }
    match (done, cost) {
        (true, Some(cost)) => Ok(cost),
        (true, None) => Err("no_cost".into()),
        _ => Err("truncated".into()),
    }
}

/// Start a streamed request and hang up after `chunks` SSE events (an app
/// that stops reading mid-answer); `Ok(true)` when the answer was still
/// running when it hung up.
pub async fn cut_stream(
    http: &reqwest::Client,
    url: &str,
    body: &str,
    chunks: usize,
) -> Result<bool, String> {
    use futures::StreamExt;
    let mut bytes = post_streaming(http, url, body).await?.bytes_stream();
    let mut seen = 0;
    let mut text = String::new();
    while let Some(piece) = bytes.next().await {
        let piece = piece.map_err(|_| "connection".to_string())?;
        text.push_str(&String::from_utf8_lossy(&piece));
        seen = text.matches("data: ").count();
        if text.contains("data: [DONE]") {
            return Ok(false);
        }
        if seen >= chunks {
            break;
        }
    }
    // Dropping the response closes the connection.
    Ok(seen >= chunks)
}
