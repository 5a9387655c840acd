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
