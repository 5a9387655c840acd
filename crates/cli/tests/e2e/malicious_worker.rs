//! Attack tests in which the GPU owner is the attacker: its inference
//! server (`cocoon_devnet::adversary::LyingEngine`, behind a worker's
//! `openai-http` engine) reports more tokens than it delivered, and the
//! worker signs what it reports. The client node refuses such a receipt and
//! the proxy bills nothing for it; after a few such receipts in a row the
//! proxy evicts the worker and refuses it when it redials.

use cocoon_devnet::adversary::LyingEngine;
use cocoon_devnet::kit::*;
use cocoon_protocol::Usage;
use serde_json::json;

fn usage(prompt_tokens: u64, completion_tokens: u64) -> Usage {
    Usage {
        prompt_tokens,
        completion_tokens,
        ..Usage::default()
    }
}

/// An answer of three words under `claimed` usage, asked with `extra`: the
/// HTTP status and body the app gets, and the receipts the proxy billed and
/// refused.
async fn ask(claimed: Usage, extra: serde_json::Value) -> (u16, serde_json::Value, usize, u64) {
    let lying = LyingEngine::start(3, claimed).await.unwrap();
    let net = devnet_with(|o| o.engine = openai_http_engine(&lying.base_url, None, 2, 10)).await;
    let url = format!("{}/chat/completions", net.api_url);
    let (status, body) = post(&url, &chat_body("hello", extra)).await;
    let billed = net.proxy().receipts.recent().len();
    let refused = net.proxy().receipts.rejected();
    net.shutdown().await;
    (status, body, billed, refused)
}

#[tokio::test]
async fn a_worker_claiming_more_tokens_than_it_delivered_is_neither_believed_nor_paid() {
    // Honest counts pass and are billed (the check does not refuse real answers).
    let (status, body, billed, refused) = ask(usage(9, 3), json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["usage"]["completion_tokens"], 3);
    assert_eq!((billed, refused), (1, 0));

    for (claimed, extra, needle) in [
        // A million completion tokens for three words streamed.
        (usage(9, 1_000_000), json!({}), "bytes streamed"),
        // More than the request allowed.
        (usage(9, 50), json!({"max_tokens": 10}), "max_tokens 10"),
        // A prompt the request could not hold.
        (usage(1_000_000, 3), json!({}), "prompt tokens"),
    ] {
        let (status, body, billed, refused) = ask(claimed, extra).await;
        assert_eq!(status, 502, "{body}");
        assert_error(&body, "claims more than was delivered");
        assert_error(&body, needle);
        assert_eq!((billed, refused), (0, 1), "{claimed:?}");
    }
}

#[tokio::test]
async fn a_worker_whose_receipts_keep_being_refused_is_evicted_and_refused_when_it_redials() {
    use cocoon_metrics::admin::Controls;
    use cocoon_proxy::controls::EVICT_AFTER_REFUSED;
    let lying = LyingEngine::start(3, usage(9, 1_000_000)).await.unwrap();
    let net = devnet_with(|o| {
        o.engine = openai_http_engine(&lying.base_url, None, 2, 10);
        // An honest worker, dearer: the liar is picked while it is listed.
        o.more_workers = vec![(
            cocoon_worker::EngineConfig::Instant {
                model: MODEL.into(),
                max_concurrent: 8,
                token_delay_ms: 0,
            },
            2 * o.price_coefficient,
        )];
    })
    .await;
    wait("both workers announced", || {
        net.proxy().registry.worker_count() == 2
    })
    .await;
    let liar = net.workers[0].worker.fingerprint().to_string();
    let url = format!("{}/chat/completions", net.api_url);
    for i in 0..EVICT_AFTER_REFUSED {
        let (status, body) = post(&url, &chat_body(&format!("q{i}"), json!({}))).await;
        assert_eq!(status, 502, "{body}");
        assert_error(&body, "claims more than was delivered");
    }
    assert_eq!(
        net.proxy().receipts.rejected(),
        u64::from(EVICT_AFTER_REFUSED)
    );
    wait("the liar is evicted", || {
        net.proxy().registry.worker_count() == 1
    })
    .await;
    let status = net.proxy().controls.status();
    assert_eq!(status["evicted"][0]["worker"], liar, "{status}");
    let reason = status["evicted"][0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("usage receipts in a row refused"),
        "{status}"
    );
    assert!(status["evicted"][0]["seconds_left"].as_u64().unwrap() > 500);

    // It redials (backoff from 100 ms) and is refused each time; the
    // honest worker answers everything meanwhile.
    let started = std::time::Instant::now();
    let mut answered = 0;
    while started.elapsed() < std::time::Duration::from_secs(3) || answered < 5 {
        let (status, body) = post(&url, &chat_body(&format!("after {answered}"), json!({}))).await;
        assert_eq!(status, 200, "{body}");
        answered += 1;
        assert_eq!(
            net.proxy().registry.worker_count(),
            1,
            "an evicted worker was admitted again"
        );
    }
    // The operator can lift it (here: it comes back, and lies again).
    assert!(net
        .proxy()
        .controls
        .enable(&net.workers[0].worker.fingerprint()));
    wait("the liar is back", || {
        net.proxy().registry.worker_count() == 2
    })
    .await;
    net.shutdown().await;
}
