//! End-to-end: a whole network on loopback (client node, proxy, worker over real
//! TLS), spoken to with a real HTTP client, as an app would.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use cocoon_client::ApiSettings;
use cocoon_devnet::engine_server::EngineBackend;
use cocoon_devnet::kit::*;
use cocoon_worker::EngineConfig;
use futures::StreamExt;
use serde_json::{json, Value};

#[tokio::test]
async fn lists_models_with_live_workers() {
    let net = devnet().await;
    let body: Value = get_json(&format!("{}/models", net.api_url)).await;
    assert_eq!(body["object"], "list");
    assert_eq!(body["data"][0]["id"], MODEL);
    assert_eq!(body["data"][0]["object"], "model");
    assert_eq!(body["data"][0]["workers"], 1);
    net.shutdown().await;
}

#[tokio::test]
async fn chat_completion_answers_with_usage_that_adds_up() {
    let net = devnet().await;
    let body = json!({"model": MODEL, "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "What is the capital of Japan?"}]});
    let (status, answer) = post(&format!("{}/chat/completions", net.api_url), &body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["object"], "chat.completion");
    assert!(answer["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(answer["choices"][0]["message"]["role"], "assistant");
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "What is the capital of Japan?"
    );
    assert_eq!(answer["choices"][0]["finish_reason"], "stop");
    let usage = &answer["usage"];
    // Instant engine: words of every message plus one per message.
    assert_eq!(usage["prompt_tokens"], 3 + 1 + 6 + 1);
    assert_eq!(usage["completion_tokens"], 6);
    assert_eq!(usage["total_tokens"], 11 + 6);
    assert_eq!(net.worker().stats().completed.load(Ordering::SeqCst), 1);
    net.shutdown().await;
}

#[tokio::test]
async fn streaming_chat_sends_chunks_usage_and_done() {
    let net = devnet().await;
    let body = chat_body(
        "one two three",
        json!({"stream": true, "max_tokens": 5, "stream_options": {"include_usage": true}}),
    );
    let events = post_stream(&format!("{}/chat/completions", net.api_url), &body).await;
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "one two three one two");
    let finish = &chunks[chunks.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "length");
    let usage = &chunks[chunks.len() - 1];
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], 5);
    assert_eq!(usage["usage"]["prompt_tokens"], 4);
    assert_eq!(usage["usage"]["total_tokens"], 9);
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk" && c["id"] == chunks[0]["id"]));

    // Without include_usage there is no usage chunk.
    let events = post_stream(
        &format!("{}/chat/completions", net.api_url),
        &chat_body("a", json!({"stream": true})),
    )
    .await;
    assert!(events.iter().all(|e| !e.contains("\"usage\"")));
    net.shutdown().await;
}

#[tokio::test]
async fn legacy_completions_and_stop_sequences() {
    let net = devnet().await;
    let url = format!("{}/completions", net.api_url);
    let (status, answer) = post(
        &url,
        &json!({"model": MODEL, "prompt": "alpha beta gamma delta", "stop": [" gamma"]}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["object"], "text_completion");
    assert_eq!(answer["choices"][0]["text"], "alpha beta");
    assert_eq!(answer["choices"][0]["finish_reason"], "stop");
    let events = post_stream(
        &url,
        &json!({"model": MODEL, "prompt": "x y", "stream": true, "max_tokens": 3}),
    )
    .await;
    let text: String = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str::<Value>(e).unwrap())
        .filter_map(|c| c["choices"][0]["text"].as_str().map(str::to_string))
        .collect();
    assert_eq!(text, "x y x");
    net.shutdown().await;
}

#[tokio::test]
async fn many_concurrent_requests_share_one_connection() {
    let net = devnet().await;
    let url = format!("{}/chat/completions", net.api_url);
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let url = url.clone();
            tokio::spawn(async move {
                let (status, answer) =
                    post(&url, &chat_body(&format!("request {i}"), json!({}))).await;
                assert_eq!(status, 200);
                assert_eq!(
                    answer["choices"][0]["message"]["content"],
                    format!("request {i}")
                );
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    net.shutdown().await;
}

/// The worker's engine is `openai-http`, pointed at a real OpenAI-compatible HTTP
/// server started here (an engine served over HTTP by `cocoon engine serve`'s code).
#[tokio::test]
async fn openai_http_engine_forwards_to_a_real_server() {
    let upstream_engine = EngineConfig::Instant {
        model: "upstream-echo".into(),
        max_concurrent: 16,
        token_delay_ms: 0,
    }
    .build()
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(cocoon_client::serve(
        listener,
        Arc::new(EngineBackend(upstream_engine)),
        ApiSettings::default(),
        std::future::pending(),
    ));
    let net =
        devnet_with(|o| o.engine = openai_http_engine(&upstream, Some("upstream-echo"), 2, 10))
            .await;
    let url = format!("{}/chat/completions", net.api_url);
    let (status, answer) = post(
        &url,
        &chat_body("through two servers", json!({"max_tokens": 4})),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "through two servers through"
    );
    assert_eq!(answer["choices"][0]["finish_reason"], "length");
    assert_eq!(answer["usage"]["completion_tokens"], 4);
    assert_eq!(answer["usage"]["prompt_tokens"], 4);

    let events = post_stream(
        &url,
        &chat_body(
            "a b c",
            json!({"stream": true, "stream_options": {"include_usage": true}}),
        ),
    )
    .await;
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "a b c");
    assert_eq!(chunks.last().unwrap()["usage"]["completion_tokens"], 3);

    let (status, answer) = post(
        &format!("{}/completions", net.api_url),
        &json!({"model": MODEL, "prompt": "p q"}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["choices"][0]["text"], "p q");
    net.shutdown().await;
}

#[tokio::test]
async fn openai_http_engine_with_upstream_down_is_a_clean_502() {
    let net =
        devnet_with(|o| o.engine = openai_http_engine("http://127.0.0.1:9/v1", None, 1, 5)).await;
    let (status, body) = post(
        &format!("{}/chat/completions", net.api_url),
        &chat_body("x", json!({})),
    )
    .await;
    assert_eq!(status, 502, "{body}");
    assert_error(&body, "unreachable");
    net.shutdown().await;
}

#[tokio::test]
async fn cancelling_a_stream_stops_the_worker() {
    let net = devnet_with(|o| o.engine = slow_engine(5, 4)).await;
    let resp = open_stream(&net, "tick tock").await;
    let mut bytes = resp.bytes_stream();
    let mut received = 0;
    while received < 2000 {
        received += bytes.next().await.unwrap().unwrap().len();
    }
    let stats = net.worker().stats().clone();
    assert_eq!(stats.active.load(Ordering::SeqCst), 1);
    drop(bytes); // the app hangs up
    eventually("worker stops generating", || {
        stats.active.load(Ordering::SeqCst) == 0
    })
    .await;
    assert_eq!(stats.cancelled.load(Ordering::SeqCst), 1);
    let generated = stats.tokens_generated.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        stats.tokens_generated.load(Ordering::SeqCst),
        generated,
        "tokens still being generated"
    );
    assert!(generated < 100000);
    // The slot is free again: a new request is served.
    let (status, _) = post(
        &format!("{}/chat/completions", net.api_url),
        &chat_body("again", json!({})),
    )
    .await;
    assert_eq!(status, 200);
    net.shutdown().await;
}

#[tokio::test]
async fn stopped_worker_gives_503_not_a_hang() {
    let net = devnet().await;
    let url = format!("{}/chat/completions", net.api_url);
    assert_eq!(post(&url, &chat_body("hi", json!({}))).await.0, 200);
    net.worker().stop();
    eventually("proxy notices the worker left", || {
        net.proxy().registry.worker_count() == 0
    })
    .await;
    let started = std::time::Instant::now();
    let (status, body) = post(&url, &chat_body("hi", json!({}))).await;
    assert_eq!(status, 503, "{body}");
    assert_error(&body, "no worker");
    assert_eq!(body["error"]["code"], "no_worker");
    assert!(started.elapsed() < Duration::from_secs(5));
    let models: Value = get_json(&format!("{}/models", net.api_url)).await;
    assert_eq!(models["data"][0]["workers"], 0);
    net.shutdown().await;
}

#[tokio::test]
async fn worker_dying_mid_stream_ends_the_stream_with_an_error() {
    // The stream goes to the cheaper worker; a dearer one stands by.
    let net = devnet_with(|o| {
        o.engine = slow_engine(5, 4);
        o.more_workers = vec![(slow_engine(0, 4), 2000)];
    })
    .await;
    let resp = open_stream(&net, "x").await;
    let mut events = eventsource_stream::Eventsource::eventsource(resp.bytes_stream());
    events.next().await.unwrap().unwrap();
    net.worker().stop();
    let mut last = String::new();
    while let Ok(Some(event)) = tokio::time::timeout(Duration::from_secs(10), events.next()).await {
        last = event.unwrap().data;
    }
    let error: Value = serde_json::from_str(&last).unwrap();
    assert!(error["error"]["message"].is_string(), "{last}");
    // What was delivered before the worker died is owed, at the worker's
    // last running total (see `settlement::a_client_that_hangs_up_...`)...
    let books = net.proxy().books.clone().unwrap();
    let mut owed = 0;
    for _ in 0..100 {
        owed = books.client(&net.ton.client_contract).total;
        if owed > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(owed > 0, "the delivered part is billed");
    let billed = net.proxy().receipts.recent().pop().unwrap();
    assert!(billed.receipt.partial, "{billed:?}");
    // ...and the next request is answered by the other worker.
    let (status, body) = post(
        &format!("{}/chat/completions", net.api_url),
        &chat_body("after", json!({"max_tokens": 3})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(books.client(&net.ton.client_contract).total > 0);
    net.shutdown().await;
}

#[tokio::test]
async fn the_devnet_serves_an_embedded_ton_chain_with_the_root_contract() {
    let net = devnet().await;
    let info = get_json(&format!(
        "{}/getAddressInformation?address={}",
        net.ton_api_url, net.ton_root
    ))
    .await;
    assert_eq!(info["ok"], true, "{info}");
    assert_eq!(info["result"]["state"], "active");
    let version: serde_json::Value = http()
        .post(format!("{}/jsonRPC", net.ton_api_url))
        .json(&json!({"id": 1, "jsonrpc": "2.0", "method": "runGetMethod",
                       "params": {"address": net.ton_root, "method": "get_prices", "stack": []}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(version["result"]["exit_code"], 0, "{version}");
    // pricePerToken of the devnet's default prices: 20 nano-TON.
    assert_eq!(version["result"]["stack"][0], json!(["num", "0x14"]));
    net.shutdown().await;
}

#[tokio::test]
async fn readyz_and_stats_say_whether_the_node_can_serve() {
    let net = devnet().await;
    let base = net.api_url.trim_end_matches("/v1").to_string();
    let response = http().get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let ready: Value = response.json().await.unwrap();
    assert_eq!(ready["detail"]["connected"], 1, "{ready}");
    assert_eq!(ready["detail"]["contract_registered"], 1, "{ready}");
    let stats = get_json(&format!("{base}/stats")).await;
    assert_eq!(stats["requests"]["in_flight"], 0, "{stats}");
    assert_eq!(
        stats["billing"],
        json!([{
            "proxy_contract": net.ton.proxy_contract.to_string(),
            "contract": net.ton.client_contract.to_string(),
        }]),
        "{stats}"
    );
    net.shutdown().await;

    // A client node whose only proxy is unreachable is alive but not ready.
    let identity = Arc::new(cocoon_protocol::tls::Identity::generate().unwrap());
    let unreachable = cocoon_protocol::ProxyEndpoint {
        address: "127.0.0.1:9".into(),
        fingerprint: cocoon_protocol::tls::Fingerprint([0; 32]),
    };
    let client = cocoon_devnet::unpaid::client(
        identity,
        vec![unreachable],
        cocoon_protocol::MuxOptions::default(),
    )
    .await
    .unwrap();
    let addr = client.address();
    let response = http()
        .get(format!("http://{addr}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    let health = http()
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    client.stop().await;
}
