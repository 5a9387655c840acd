//! The open market (issue 22, item 1): proxies that pin nobody. Workers
//! join on their RA-TLS evidence alone, client nodes on a staked client
//! contract of their own; a newcomer client node is served and its own
//! contract charged for what it was served. A proxy that pins its client
//! nodes lets no newcomer in.

use cocoon_devnet::kit::*;
use serde_json::json;

#[tokio::test]
async fn an_unpinned_worker_and_a_newcomer_client_node_are_served_and_paid() {
    let net = devnet_with(|o| {
        o.open = true;
        o.settle_every = None;
    })
    .await;
    // The devnet's own worker and client node are pinned nowhere.
    let (status, body) = post(
        &format!("{}/chat/completions", net.api_url),
        &chat_body("hello open market", json!({})),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    let newcomer = net
        .newcomer_client(10 * cocoon_chain::TON)
        .await
        .expect("an open proxy lets a newcomer in");
    let (status, body) = post(
        &format!("{}/chat/completions", newcomer.api_url()),
        &chat_body("a newcomer's first question", json!({})),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    // Both contracts are registered, and each is charged what it was served.
    let settlement = &net.proxies[0].settlement;
    settlement.settle_once().await.unwrap();
    let clients = settlement.clients();
    assert_eq!(clients.len(), 2, "{clients:?}");
    for client in &clients {
        let charged: u128 = client.charged_nano.parse().unwrap();
        assert!(charged > 0, "{client:?}");
    }
    newcomer.stop().await;
    net.shutdown().await;
}

/// A private deployment: the proxy pins the devnet's client node, so a
/// newcomer (a funded wallet and a key nobody listed) is not let in.
#[tokio::test]
async fn a_proxy_pinning_its_client_nodes_lets_no_newcomer_in() {
    let net = devnet().await;
    let refused = net.newcomer_client(10 * cocoon_chain::TON).await;
    assert!(refused.is_err());
    net.shutdown().await;
}
