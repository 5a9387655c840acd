//! Several proxies: a client node and a worker each connected to two proxies
//! (real TLS on loopback, no billing). A proxy that is killed is failed over
//! by the client node; one restarted on its address is dialled again by both
//! by themselves; a proxy that refuses (no worker behind it) is passed over
//! for one that can serve; `/v1/models` merges what the proxies know.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cocoon_client::ClientNode;
use cocoon_devnet::kit::*;
use cocoon_devnet::unpaid;
use cocoon_protocol::tls::Identity;
use cocoon_protocol::MuxOptions;
use cocoon_proxy::ProxyNode;
use cocoon_worker::WorkerNode;
use serde_json::json;

struct Proxy {
    identity: Arc<Identity>,
    address: SocketAddr,
    node: ProxyNode,
}

fn mux() -> MuxOptions {
    MuxOptions {
        keepalive_interval: Duration::from_millis(200),
        idle_timeout: Duration::from_secs(2),
        ..MuxOptions::default()
    }
}

/// A proxy on `address` (port 0: a free one) admitting `client` and `worker`.
async fn proxy(
    identity: Arc<Identity>,
    address: SocketAddr,
    client: &Identity,
    worker: &Identity,
) -> Proxy {
    let node = unpaid::proxy(
        identity.clone(),
        address,
        &[client.fingerprint()],
        &[worker.fingerprint()],
        &[MODEL],
        mux(),
    )
    .await
    .unwrap();
    Proxy {
        identity,
        address: node.address(),
        node,
    }
}

struct Net {
    proxies: Vec<Proxy>,
    worker: WorkerNode,
    client: ClientNode,
    api_url: String,
    client_id: Arc<Identity>,
    worker_id: Arc<Identity>,
}

/// Two proxies; the worker dials those listed in `worker_on`, the client both.
async fn start(worker_on: &[usize]) -> Net {
    let client_id = Arc::new(Identity::generate().unwrap());
    let worker_id = Arc::new(Identity::generate().unwrap());
    let mut proxies = Vec::new();
    for _ in 0..2 {
        let id = Arc::new(Identity::generate().unwrap());
        proxies.push(proxy(id, "127.0.0.1:0".parse().unwrap(), &client_id, &worker_id).await);
    }
    let endpoint = |p: &Proxy| unpaid::endpoint(&p.node, &p.identity);
    let worker = unpaid::worker(
        worker_id.clone(),
        worker_on.iter().map(|&i| endpoint(&proxies[i])).collect(),
        unpaid::instant_engine(MODEL, 16).unwrap(),
        mux(),
    )
    .await
    .unwrap();
    let client = unpaid::client(
        client_id.clone(),
        proxies.iter().map(endpoint).collect(),
        mux(),
    )
    .await
    .unwrap();
    let net = Net {
        api_url: client.api_url(),
        proxies,
        worker,
        client,
        client_id,
        worker_id,
    };
    wait("everyone connected", || {
        net.client.pool.connected() == 2
            && worker_on
                .iter()
                .all(|&i| net.proxies[i].node.handle.registry.worker_count() == 1)
    })
    .await;
    net
}

/// `n` chats, each answered 200 with the echo of its text.
async fn all_answered(net: &Net, n: usize) {
    for i in 0..n {
        let text = format!("request {i}");
        let (status, body) = post(
            &format!("{}/chat/completions", net.api_url),
            &chat_body(&text, json!({})),
        )
        .await;
        assert_eq!(status, 200, "request {i}: {body}");
        assert_eq!(body["choices"][0]["message"]["content"], text);
    }
}

fn served_by(p: &Proxy) -> u64 {
    p.node
        .handle
        .registry
        .offer_stats()
        .iter()
        .map(|o| o.answers)
        .sum()
}

#[tokio::test]
async fn a_killed_proxy_is_failed_over_and_a_restarted_one_is_dialled_again() {
    let mut net = start(&[0, 1]).await;
    all_answered(&net, 6).await;
    assert!(served_by(&net.proxies[0]) > 0 && served_by(&net.proxies[1]) > 0);

    // Proxy 0 dies: every request still gets an answer, through proxy 1.
    net.proxies[0].node.handle.shutdown();
    wait("client and worker see proxy 0 gone", || {
        net.client.pool.connected() == 1 && net.worker.connected_proxies() == 1
    })
    .await;
    let before = served_by(&net.proxies[1]);
    all_answered(&net, 6).await;
    assert_eq!(served_by(&net.proxies[1]), before + 6);

    // It comes back on its address with its key: both redial by themselves.
    let (id, address) = (net.proxies[0].identity.clone(), net.proxies[0].address);
    net.proxies[0] = proxy(id, address, &net.client_id, &net.worker_id).await;
    wait("client and worker back on proxy 0", || {
        net.client.pool.connected() == 2 && net.proxies[0].node.handle.registry.worker_count() == 1
    })
    .await;
    // Now proxy 1 dies: proxy 0 serves everything.
    net.proxies[1].node.handle.shutdown();
    wait("proxy 1 gone", || net.client.pool.connected() == 1).await;
    all_answered(&net, 6).await;
    assert_eq!(served_by(&net.proxies[0]), 6);
    net.client.stop().await;
    net.worker.stop().await;
}

#[tokio::test]
async fn a_proxy_without_workers_is_passed_over_for_one_that_has_them() {
    // The worker is behind proxy 1 only: proxy 0 answers "no worker".
    let net = start(&[1]).await;
    all_answered(&net, 6).await;
    assert_eq!(served_by(&net.proxies[1]), 6);
    let models = get_json(&format!("{}/models", net.api_url)).await;
    let listed = &models["data"][0];
    assert_eq!(listed["id"], MODEL);
    assert_eq!(listed["workers"], 1, "{models}");

    // With no worker anywhere the answer is still the right error.
    net.worker.worker.stop();
    wait("worker gone", || {
        net.proxies[1].node.handle.registry.worker_count() == 0
    })
    .await;
    let (status, body) = post(
        &format!("{}/chat/completions", net.api_url),
        &chat_body("x", json!({})),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "no_worker");
    net.client.stop().await;
}
