//! The chain out of reach: with the TON API down for every node, the
//! network keeps serving within what is locked, nothing is charged, and
//! settlement then charges exactly what the books owe.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use cocoon_devnet::kit::*;
use serde_json::json;

/// What the chain shows charged to the devnet client's contract (read from
/// the chain itself, not through its HTTP API).
async fn charged(net: &cocoon_devnet::Devnet) -> u128 {
    use cocoon_chain::{Chain, ClientState};
    let chain = net.ton.embedded();
    let stack = chain
        .get(&net.ton.client_contract, "get_client_data", &[])
        .await
        .unwrap();
    ClientState::from_stack(&stack).unwrap().charged
}

#[tokio::test]
async fn an_unreachable_chain_pauses_settlement_not_serving() {
    let net = devnet_with(|o| {
        o.settle_every = Some(Duration::from_millis(500));
        o.chain_fresh = FRESH_IN_TESTS;
    })
    .await;
    let url = format!("{}/chat/completions", net.api_url);
    let ask = |i: usize| {
        let url = url.clone();
        async move {
            let (status, body) = post(
                &url,
                &chat_body(&format!("before {i}"), json!({"max_tokens": 8})),
            )
            .await;
            assert_eq!(status, 200, "{body}");
        }
    };
    for i in 0..3 {
        ask(i).await;
    }
    let books = net.proxy().books.clone().unwrap();
    let owed = || books.client(&net.ton.client_contract).total;
    let started = Instant::now();
    while charged(&net).await < owed() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no settlement before the outage"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The chain's API goes down for every node.
    net.ton_outage.store(true, Ordering::SeqCst);
    let during = charged(&net).await;
    // Past every cache of what was read from the chain.
    past_fresh().await;
    for i in 0..5 {
        ask(10 + i).await;
    }
    // Served, owed, not charged: settlement waits for the chain.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        owed() > during,
        "the requests during the outage were not booked"
    );
    assert_eq!(
        charged(&net).await,
        during,
        "charged while the chain was out of reach"
    );

    // Back: settlement resumes and charges exactly what is owed.
    net.ton_outage.store(false, Ordering::SeqCst);
    let started = Instant::now();
    while charged(&net).await != owed() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "settlement did not resume: charged {} of {}",
            charged(&net).await,
            owed()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    ask(99).await;
    net.shutdown().await;
}
