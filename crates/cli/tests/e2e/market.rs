//! The market through a whole devnet: workers announce prices, the client
//! node's requests go to the cheapest worker with room (and spread when it is
//! full), a request's `max_coefficient` is honoured, `/v1/models` shows the
//! price, and the client is charged on chain at the price of the worker that
//! served it, as that worker's signed receipt states.

use cocoon_chain::pricing::TokenCounts;
use cocoon_devnet::kit::*;
use serde_json::{json, Value};

/// A devnet with a cheap worker (800) and an expensive one (1500), each
/// taking `capacity` requests at once, `delay_ms` per token.
async fn market(delay_ms: u64, capacity: u32) -> cocoon_devnet::Devnet {
    devnet_with(|o| {
        o.settle_every = None;
        o.engine = slow_engine(delay_ms, capacity);
        o.price_coefficient = 800;
        o.more_workers = vec![(slow_engine(delay_ms, capacity), 1500)];
    })
    .await
}

fn served_by(body: &Value) -> (String, u32) {
    let receipt = &body["cocoon"]["receipt"];
    (
        receipt["worker"].as_str().unwrap().to_string(),
        receipt["price_coefficient"].as_u64().unwrap() as u32,
    )
}

#[tokio::test]
async fn the_cheaper_worker_gets_the_traffic_and_the_client_pays_its_price() {
    let net = market(0, 4).await;
    let cheap = net.worker().fingerprint().to_string();
    let url = format!("{}/chat/completions", net.api_url);
    let mut expected = 0u128;
    let prices = cocoon_chain::pricing::default_prices();
    for i in 0..6 {
        let (status, body) = post(
            &url,
            &chat_body(&format!("question {i}"), json!({"max_tokens": 4})),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(served_by(&body), (cheap.clone(), 800), "{body}");
        let usage = &body["usage"];
        expected += prices
            .charge_at(
                TokenCounts {
                    prompt: usage["prompt_tokens"].as_u64().unwrap(),
                    completion: usage["completion_tokens"].as_u64().unwrap(),
                    ..TokenCounts::default()
                },
                800,
            )
            .total;
    }
    // Charged on chain at the cheap worker's price, to the nano-TON.
    let settled = net.settle_now().await.unwrap();
    assert_eq!(settled.charged, expected);

    // The model list shows the best price: 0.8 x 20 nano-TON per prompt token.
    let models = get_json(&format!("{}/models", net.api_url)).await;
    let pricing = &models["data"][0]["pricing"];
    assert_eq!(pricing["price_coefficient"], 800, "{models}");
    assert_eq!(pricing["prompt_per_million_nano"], "16000000", "{models}");
    assert_eq!(
        pricing["completion_per_million_nano"], "64000000",
        "{models}"
    );
    assert_eq!(models["data"][0]["workers"], 2);
    net.shutdown().await;
}

#[tokio::test]
async fn a_price_limit_is_honoured_and_bad_preferences_are_named() {
    let net = market(0, 4).await;
    let url = format!("{}/chat/completions", net.api_url);
    // Below every worker's price: refused, saying what the cheapest asks.
    let (status, body) = post(
        &url,
        &chat_body("too cheap", json!({"cocoon": {"max_coefficient": 700}})),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert_error(&body, "the cheapest asks 800");
    // Sorted by throughput with room everywhere, still within the limit.
    let (status, body) = post(
        &url,
        &chat_body(
            "within",
            json!({"cocoon": {"max_coefficient": 1000, "sort": "throughput"}}),
        ),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(served_by(&body).1, 800);
    for (extension, param) in [
        (json!({"sort": "fastest"}), "cocoon.sort"),
        (json!({"max_coefficient": 0}), "cocoon.max_coefficient"),
        (json!({"max_coefficent": 900}), "max_coefficent"),
    ] {
        let (status, body) = post(&url, &chat_body("x", json!({ "cocoon": extension }))).await;
        assert_eq!(status, 400, "{body}");
        assert!(
            body["error"]["param"]
                .as_str()
                .unwrap_or_default()
                .contains(param)
                || body["error"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .contains(param),
            "{param}: {body}"
        );
    }
    net.shutdown().await;
}

#[tokio::test]
async fn load_spreads_to_the_dearer_worker_when_the_cheap_one_is_full() {
    // One request at a time each, 30 ms per token: three at once cannot all
    // run on the cheap worker.
    let net = market(30, 1).await;
    let url = format!("{}/chat/completions", net.api_url);
    let answers = futures::future::join_all((0..2).map(|i| {
        let url = url.clone();
        async move {
            post(
                &url,
                &chat_body(&format!("one two three {i}"), json!({"max_tokens": 8})),
            )
            .await
        }
    }))
    .await;
    let mut prices: Vec<u32> = answers
        .iter()
        .filter(|(status, _)| *status == 200)
        .map(|(_, body)| served_by(body).1)
        .collect();
    prices.sort();
    assert_eq!(prices, vec![800, 1500], "{answers:?}");
    net.shutdown().await;
}

#[tokio::test]
async fn a_worker_lost_before_the_first_token_is_retried_on_another() {
    // The cheap worker takes 2 s to its first token; it is stopped meanwhile.
    let net = devnet_with(|o| {
        o.settle_every = None;
        o.engine = slow_engine(2_000, 4);
        o.price_coefficient = 800;
        o.more_workers = vec![(slow_engine(0, 4), 1500)];
    })
    .await;
    let url = format!("{}/chat/completions", net.api_url);
    let request = tokio::spawn(async move {
        post(&url, &chat_body("are you there", json!({"max_tokens": 4}))).await
    });
    eventually("the cheap worker has it", || {
        net.worker()
            .stats()
            .active
            .load(std::sync::atomic::Ordering::SeqCst)
            == 1
    })
    .await;
    net.worker().stop();
    let (status, body) = request.await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(served_by(&body).1, 1500, "answered by the other worker");
    net.shutdown().await;
}

#[tokio::test]
async fn sorted_by_latency_the_measured_faster_worker_gets_the_requests() {
    // Same price; the first worker waits 40 ms per token, the other none.
    let net = devnet_with(|o| {
        o.settle_every = None;
        o.engine = slow_engine(40, 4);
        o.more_workers = vec![(slow_engine(0, 4), 1000)];
    })
    .await;
    let fast = net.workers[1].fingerprint().to_string();
    let url = format!("{}/chat/completions", net.api_url);
    let mut served = Vec::new();
    for i in 0..6 {
        let (status, body) = post(
            &url,
            &chat_body(
                &format!("how fast {i}"),
                json!({"max_tokens": 3, "cocoon": {"sort": "latency"}}),
            ),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        served.push(served_by(&body).0);
    }
    // Once both are measured (at most two requests in), the fast one wins.
    assert!(served[3..].iter().all(|w| *w == fast), "{served:?}");
    net.shutdown().await;
}

#[tokio::test]
async fn a_conversation_returns_to_the_worker_that_holds_its_prompt() {
    // Two workers at the same price: idle, either would do; a conversation's
    // next turns go back to the one that answered its first.
    let net = devnet_with(|o| {
        o.settle_every = None;
        o.engine = slow_engine(100, 4);
        o.more_workers = vec![(slow_engine(100, 4), 1000)];
    })
    .await;
    let url = format!("{}/chat/completions", net.api_url);
    let first_turn =
        |i: usize| vec![json!({"role": "user", "content": format!("conversation {i}")})];
    // First turns at once: the load spreads them over both workers.
    let answers = futures::future::join_all((0..4).map(|i| {
        let url = url.clone();
        async move {
            let body = json!({"model": MODEL, "messages": first_turn(i), "max_tokens": 5});
            post(&url, &body).await
        }
    }))
    .await;
    let mut conversations = Vec::new();
    for (i, (status, body)) in answers.into_iter().enumerate() {
        assert_eq!(status, 200, "{body}");
        let reply = body["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .to_string();
        let mut messages = first_turn(i);
        messages.push(json!({"role": "assistant", "content": reply}));
        conversations.push((served_by(&body).0, messages));
    }
    let workers: std::collections::HashSet<&String> =
        conversations.iter().map(|(w, _)| w).collect();
    assert_eq!(
        workers.len(),
        2,
        "the first turns did not spread: {conversations:?}"
    );

    // Next turns one at a time (both workers idle): each returns to its own.
    for turn in 2..4 {
        for (worker, messages) in conversations.iter_mut() {
            messages.push(json!({"role": "user", "content": format!("turn {turn}")}));
            let body = json!({"model": MODEL, "messages": messages, "max_tokens": 2});
            let (status, answer) = post(&url, &body).await;
            assert_eq!(status, 200, "{answer}");
            assert_eq!(&served_by(&answer).0, worker, "turn {turn} went elsewhere");
            let reply = answer["choices"][0]["message"]["content"].clone();
            messages.push(json!({"role": "assistant", "content": reply}));
        }
    }
    let stats = get_json(&format!("{}/stats", net.api_url.trim_end_matches("/v1"))).await;
    assert_eq!(stats["backend"]["conversations_remembered"], 12, "{stats}");
    net.shutdown().await;
}

/// A client app (or a page it lets through) cycling its price limit through
/// every value: the node's cache of worker lists is kept per price bucket
/// and bounded, where it held one entry (with every worker's quote) per
/// value before.
#[tokio::test]
async fn cycling_price_limits_does_not_grow_the_key_cache() {
    let net = market(0, 4).await;
    let url = format!("{}/chat/completions", net.api_url);
    for limit in (800..1_000_000).step_by(4_999) {
        let (status, body) = post(
            &url,
            &chat_body("hi", json!({"cocoon": {"max_coefficient": limit}})),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    let held = net.pool().worker_lists_held();
    assert!(held <= 12, "{held} lists held after 200 limits");
    net.shutdown().await;
}
