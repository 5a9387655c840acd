//! A GPU owner's run-time controls over its worker's admin endpoint (on
//! `status_listen`, behind the admin token): draining under load loses no
//! request (running ones finish, new ones go to the other worker), resuming
//! brings the worker back, and nobody without the token, nor a web page
//! holding it, can drive the worker.

use std::time::Duration;

use cocoon_devnet::kit::{chat_body, http, post, wait, MODEL};
use cocoon_devnet::{Devnet, DevnetOptions};
use cocoon_worker::EngineConfig;
use serde_json::{json, Value};

async fn admin(net: &Devnet, action: &str, token: Option<&str>, origin: bool) -> (u16, Value) {
    let url = format!("{}/admin/{action}", net.workers[0].status_url().unwrap());
    let mut request = if action == "status" {
        http().get(url)
    } else {
        http().post(url)
    };
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if origin {
        request = request.header("Origin", "http://evil.example");
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn completed(net: &Devnet, i: usize) -> u64 {
    net.workers[i]
        .worker
        .stats()
        .completed
        .load(std::sync::atomic::Ordering::SeqCst)
}

#[tokio::test]
async fn draining_a_worker_under_load_loses_no_request_and_only_its_owner_can() {
    let engine = EngineConfig::Instant {
        model: MODEL.into(),
        max_concurrent: 64,
        token_delay_ms: 20,
    };
    let mut options = DevnetOptions::instant(MODEL);
    options.engine = engine.clone();
    options.more_workers = vec![(engine, options.price_coefficient)];
    let net = Devnet::start(options).await.expect("devnet starts");
    wait("both workers announced", || {
        net.proxy().registry.worker_count() == 2
    })
    .await;
    let token = net.admin_token.as_str();

    // Nobody else: no token, a wrong one, or a browser holding the right one.
    assert_eq!(admin(&net, "drain", None, false).await.0, 401);
    assert_eq!(
        admin(&net, "drain", Some(&"0".repeat(64)), false).await.0,
        401
    );
    assert_eq!(admin(&net, "status", None, false).await.0, 401);
    let (status, body) = admin(&net, "drain", Some(token), true).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        admin(&net, "status", Some(token), false).await.1["draining"],
        false
    );
    let (status, body) = admin(&net, "reboot", Some(token), false).await;
    assert_eq!(status, 404, "{body}");

    // Load on both workers (each answer ~40 tokens at 20 ms), and the
    // first drained while it runs: every request is answered in full.
    let url = format!("{}/chat/completions", net.api_url);
    let load: Vec<_> = (0..24)
        .map(|i| {
            let url = url.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(40 * i)).await;
                let text = format!("request {i} {}", "word ".repeat(38));
                post(&url, &chat_body(&text, json!({"max_tokens": 64}))).await
            })
        })
        .collect();
    let active = |i: usize| {
        net.workers[i]
            .worker
            .stats()
            .active
            .load(std::sync::atomic::Ordering::SeqCst)
    };
    wait("requests running on the worker to drain", || active(0) >= 2).await;
    let (status, body) = admin(&net, "drain", Some(token), false).await;
    assert!(body["active"].as_u64().unwrap() >= 1, "{body}");
    assert_eq!((status, &body["draining"]), (200, &json!(true)), "{body}");
    for request in load {
        let (status, body) = request.await.unwrap();
        assert_eq!(status, 200, "{body}");
        // The whole answer (the echo engine runs to max_tokens).
        assert_eq!(body["usage"]["completion_tokens"], 64, "{body}");
    }
    wait("the drained worker's running requests finished", || {
        active(0) == 0
    })
    .await;

    // Drained: new requests all go to the other worker.
    let before = completed(&net, 0);
    for i in 0..6 {
        let (status, body) = post(&url, &chat_body(&format!("after {i}"), json!({}))).await;
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(
        completed(&net, 0),
        before,
        "a drained worker was given new work"
    );

    // Resumed: it serves again.
    let (status, body) = admin(&net, "resume", Some(token), false).await;
    assert_eq!((status, &body["draining"]), (200, &json!(false)), "{body}");
    let mut served = false;
    for i in 0..40 {
        let (status, body) = post(&url, &chat_body(&format!("again {i}"), json!({}))).await;
        assert_eq!(status, 200, "{body}");
        if completed(&net, 0) > before {
            served = true;
            break;
        }
    }
    assert!(served, "the resumed worker got no request");
    net.shutdown().await;
}
