//! Overload and stalled workers, over the wire: when every worker is at
//! capacity a request waits in the proxy's bounded per-model queue and is
//! served when a slot frees; a full queue or a passed deadline answers 429
//! with `Retry-After` at once; a worker silent past the proxy's first-token
//! deadline ends the request with 504.

use std::time::{Duration, Instant};

use cocoon_devnet::kit::*;
use serde_json::json;

fn chat_url(net: &cocoon_devnet::Devnet) -> String {
    format!("{}/chat/completions", net.api_url)
}

async fn wait_queued(net: &cocoon_devnet::Devnet, n: usize) {
    let started = Instant::now();
    while net
        .proxy()
        .registry
        .queue_depths()
        .iter()
        .map(|(_, d)| *d)
        .sum::<usize>()
        != n
    {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{n} never queued"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_request_waits_for_a_busy_worker_and_is_served_when_it_frees() {
    let net = devnet_with(|o| o.engine = slow_engine(20, 1)).await;
    let busy = open_stream(&net, "x").await;
    let url = chat_url(&net);
    let waiting =
        tokio::spawn(async move { post(&url, &chat_body("y", json!({"max_tokens": 3}))).await });
    wait_queued(&net, 1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiting.is_finished(), "answered while the worker was busy");
    drop(busy);
    let (status, body) = waiting.await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["usage"]["completion_tokens"], 3);
    net.shutdown().await;
}

#[tokio::test]
async fn a_full_queue_is_refused_at_once_with_retry_after() {
    let net = devnet_with(|o| {
        o.engine = slow_engine(20, 1);
        o.proxy_queue.max_waiting = 1;
    })
    .await;
    let busy = open_stream(&net, "x").await;
    let url = chat_url(&net);
    let waiting =
        tokio::spawn(async move { post(&url, &chat_body("y", json!({"max_tokens": 2}))).await });
    wait_queued(&net, 1).await;

    let started = Instant::now();
    let resp = http()
        .post(chat_url(&net))
        .json(&chat_body("z", json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "1");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "refused at once"
    );
    let body = resp.json().await.unwrap();
    assert_error(&body, "already waiting");
    assert_eq!(body["error"]["code"], "overloaded");

    drop(busy);
    let (status, body) = waiting.await.unwrap();
    assert_eq!(status, 200, "the queued request is still served: {body}");
    net.shutdown().await;
}

#[tokio::test]
async fn past_the_queue_deadline_the_answer_is_429() {
    let net = devnet_with(|o| {
        o.engine = slow_engine(20, 1);
        o.proxy_queue.max_wait = Duration::from_millis(300);
    })
    .await;
    let busy = open_stream(&net, "x").await;
    let started = Instant::now();
    let (status, body) = post(&chat_url(&net), &chat_body("y", json!({}))).await;
    let waited = started.elapsed();
    assert_eq!(status, 429, "{body}");
    assert_error(&body, "stayed at capacity for 300 ms");
    assert!(waited >= Duration::from_millis(300), "waited {waited:?}");
    assert!(waited < Duration::from_secs(3), "waited {waited:?}");
    drop(busy);
    net.shutdown().await;
}

#[tokio::test]
async fn a_worker_silent_past_the_proxys_first_token_deadline_gives_504() {
    let net = devnet_with(|o| {
        o.engine = slow_engine(3000, 8);
        o.proxy_timeouts.first_token = Duration::from_millis(300);
    })
    .await;
    let started = Instant::now();
    let (status, body) = post(&chat_url(&net), &chat_body("x", json!({}))).await;
    assert_eq!(status, 504, "{body}");
    assert_error(&body, "did not send its first token");
    assert!(started.elapsed() < Duration::from_secs(3));
    // The proxy counts it against the worker.
    let stats = net.proxy().registry.offer_stats();
    assert_eq!(stats[0].failures, 1, "{stats:?}");
    net.shutdown().await;
}

/// Slowloris against the client node's API: many connections that send half
/// a request and stop, and one that sends its body a little at a time. The
/// node keeps answering others, cuts the slow ones at its header and body
/// timeouts (the body one with an OpenAI-shaped 408), and closes
/// connections past its cap.
#[tokio::test]
async fn slow_connections_do_not_stop_the_api_serving_others() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let net = devnet_with(|o| {
        o.api.http = cocoon_metrics::http::HttpLimits {
            max_connections: 64,
            header_timeout: Duration::from_secs(1),
            body_timeout: Duration::from_secs(1),
        }
    })
    .await;
    let address = net.api_url["http://".len()..]
        .trim_end_matches("/v1")
        .to_string();
    let mut slow = Vec::new();
    for _ in 0..40 {
        let mut tcp = tokio::net::TcpStream::connect(&address).await.unwrap();
        tcp.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-")
            .await
            .unwrap();
        slow.push(tcp);
    }
    let mut trickle = tokio::net::TcpStream::connect(&address).await.unwrap();
    trickle
        .write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: 500\r\n\r\n{\"model\":")
        .await
        .unwrap();
    // Others are served meanwhile.
    let (status, body) = post(&chat_url(&net), &chat_body("still here", json!({}))).await;
    assert_eq!(status, 200, "{body}");
    // The trickling body is refused at its timeout.
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(10), trickle.read_to_string(&mut answer))
        .await
        .expect("the slow body was not cut")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");
    // The half-sent headers are cut at theirs.
    for tcp in &mut slow {
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut rest))
            .await
            .expect("a connection with half its headers was still open");
    }
    let (status, _) = post(&chat_url(&net), &chat_body("and still", json!({}))).await;
    assert_eq!(status, 200);
    net.shutdown().await;
}
