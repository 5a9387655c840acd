//! Money through a whole devnet: requests served over the API are priced
//! from the workers' verified receipts into the proxy's books, and settling
//! puts them on the embedded TON chain: the client's contract is charged
//! exactly what the priced usage adds up to, the proxy's contract receives it,
//! and the worker's claim pays its share to the worker's wallet.

mod common;

use cocoon_chain::pricing::TokenCounts;
use cocoon_chain::{ClientState, ProxyState, WorkerState};
use common::*;
use serde_json::json;

#[tokio::test]
async fn served_tokens_are_charged_on_chain_exactly_once() {
    let net = devnet_with(|o| o.settle_every = None).await;
    let prices = cocoon_chain::devnet::default_prices();
    let url = format!("{}/chat/completions", net.api_url);
    let mut expected = 0u128;
    let mut worker_share = 0u128;
    for text in ["one two three", "four five", "six seven eight nine ten"] {
        let (status, body) = post(&url, &chat_body(text, json!({"max_tokens": 8}))).await;
        assert_eq!(status, 200, "{body}");
        let usage = &body["usage"];
        let charge = prices.charge(TokenCounts {
            prompt: usage["prompt_tokens"].as_u64().unwrap(),
            cached_prompt: usage["prompt_tokens_details"]["cached_tokens"]
                .as_u64()
                .unwrap_or(0),
            completion: usage["completion_tokens"].as_u64().unwrap(),
            reasoning: usage["completion_tokens_details"]["reasoning_tokens"]
                .as_u64()
                .unwrap_or(0),
        });
        expected += charge.total;
        worker_share += charge.worker;
    }
    assert!(expected > 0);

    let settled = net.settle_now().unwrap();
    assert_eq!(settled.charged, expected, "charged = the priced receipts");
    assert_eq!(settled.claimed, worker_share);
    // Settling again with nothing new moves nothing.
    assert_eq!(net.settle_now().unwrap(), settled);

    {
        let ton = &net.ton;
        let chain = ton.chain.lock().unwrap();
        let client = ClientState::from_stack(
            &chain
                .get(&ton.client_contract, "get_client_data", vec![])
                .unwrap(),
        )
        .unwrap();
        assert_eq!(client.charged, expected);
        assert_eq!(
            client.balance,
            cocoon_chain::devnet::CLIENT_DEPOSIT - expected
        );
        let proxy = ProxyState::from_stack(
            &chain
                .get(&ton.proxy_contract, "get_proxy_data", vec![])
                .unwrap(),
        )
        .unwrap();
        assert_eq!(proxy.received, expected);
        assert_eq!(proxy.workers_paid, worker_share);
        // The books' hash was committed with the first sequence number.
        assert_eq!(proxy.books_seqno, 1);
        assert_eq!(proxy.books_hash, net.proxy.books.as_ref().unwrap().hash());
        assert_eq!(settled.books_seqno, 1);
        let worker = WorkerState::from_stack(
            &chain
                .get(&ton.worker_contract, "get_worker_data", vec![])
                .unwrap(),
        )
        .unwrap();
        assert_eq!(worker.paid, worker_share);
    }
    net.shutdown().await;
}

#[tokio::test]
async fn the_client_node_shows_its_balance_and_refuses_what_it_cannot_pay_for() {
    // 10,000 nano-TON deposited: 8 completion tokens (640 nano-TON at 4x the
    // 20 nano-TON base price) fit, 1000 (80,000 nano-TON) do not.
    let net = devnet_with(|o| {
        o.settle_every = None;
        o.client_deposit = 10_000;
    })
    .await;
    let balance = get_json(&format!("{}/cocoon/balance", net.api_url)).await;
    assert_eq!(balance["balance_nano"], "10000", "{balance}");
    assert_eq!(balance["charged_nano"], "0");
    assert_eq!(balance["contract"], net.ton.client_contract.to_string());

    let url = format!("{}/chat/completions", net.api_url);
    let (status, body) = post(&url, &chat_body("hi there", json!({"max_tokens": 1000}))).await;
    assert_eq!(status, 402, "{body}");
    assert_error(&body, "Top up at least");
    assert_eq!(body["error"]["code"], "insufficient_balance");

    let (status, body) = post(&url, &chat_body("hi there", json!({"max_tokens": 8}))).await;
    assert_eq!(status, 200, "{body}");
    // What was served counts against the balance before the proxy charges it.
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let balance = get_json(&format!("{}/cocoon/balance", net.api_url)).await;
    let unsettled: u128 = balance["unsettled_nano"].as_str().unwrap().parse().unwrap();
    assert!(unsettled > 0, "{balance}");
    let settled = net.settle_now().unwrap();
    assert_eq!(settled.charged, unsettled);
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let balance = get_json(&format!("{}/cocoon/balance", net.api_url)).await;
    assert_eq!(balance["unsettled_nano"], "0", "{balance}");
    assert_eq!(balance["charged_nano"], unsettled.to_string());
    net.shutdown().await;
}
