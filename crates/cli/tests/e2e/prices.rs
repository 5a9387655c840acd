//! A GPU owner changes its worker's price while it serves (`cocoon worker
//! set-price MODEL COEFF`): the new price is announced live, later
//! receipts state it, and the client is charged on chain at the price each
//! request was sealed at. A client that seals at a price the worker never
//! asked (to pay less) is refused before a token and billed nothing.

use cocoon_chain::pricing::TokenCounts;
use cocoon_devnet::kit::*;
use cocoon_protocol::{ErrorKind, Event, RequestBody};
use futures::StreamExt;
use serde_json::{json, Value};

use crate::controls::cocoon_cli;
use crate::sealing::{listed_workers, raw_client, sealed_now};

/// `cocoon worker ARGS --config worker.toml` (the real binary), pointed at
/// the devnet's worker's status port and admin token.
async fn worker_cli(
    net: &cocoon_devnet::Devnet,
    dir: &std::path::Path,
    args: &[&str],
) -> (bool, String) {
    let token_file = dir.join("worker-admin.token");
    std::fs::write(&token_file, net.admin_token.as_bytes()).unwrap();
    let proxy = net.proxy_endpoint();
    let config = format!(
        "profile = \"development\"\nstatus_listen = \"{}\"\nadmin_token_file = {:?}\nidentity_key = {:?}\n[[proxies]]\naddress = \"{}\"\nfingerprint = \"{}\"\n[engine]\nkind = \"instant\"\nmodel = \"{MODEL}\"\n",
        net.worker_status_url().trim_start_matches("http://"),
        token_file,
        dir.join("worker.pem"),
        proxy.address,
        proxy.fingerprint,
    );
    cocoon_cli(dir, "worker", &config, args).await
}

/// The price the proxy lists for the model now.
async fn listed(net: &cocoon_devnet::Devnet) -> Value {
    let models = get_json(&format!("{}/models", net.api_url)).await;
    models["data"][0]["pricing"]["price_coefficient"].clone()
}

/// What `usage` costs at `coefficient`, nano-TON.
fn cost(usage: (u64, u64), coefficient: u32) -> u128 {
    let counts = TokenCounts {
        prompt: usage.0,
        completion: usage.1,
        ..TokenCounts::default()
    };
    cocoon_chain::pricing::default_prices()
        .charge_at(counts, coefficient)
        .total
}

/// A request sealed by hand at `price` to the worker (as a client node
/// that lists its own price would): its receipt's price and usage, or the
/// refusal.
async fn sealed_at(
    net: &cocoon_devnet::Devnet,
    price: u32,
) -> Result<(u32, (u64, u64)), cocoon_protocol::WireError> {
    let conn = raw_client(net).await;
    let keys = listed_workers(&conn).await;
    let sealed = sealed_now(&keys[0], price, "at my price");
    let mut answer = conn.request(RequestBody::Generate(sealed)).await.unwrap();
    while let Some(event) = answer.next().await {
        match event {
            Event::Error(e) => return Err(e),
            Event::Done(done) => {
                let receipt = done.receipt.expect("a receipt").receipt;
                let usage = (receipt.usage.prompt_tokens, receipt.usage.completion_tokens);
                return Ok((receipt.price_coefficient, usage));
            }
            _ => {}
        }
    }
    panic!("the answer ended without Done");
}

#[tokio::test]
async fn a_gpu_owner_changes_its_price_live_and_each_request_is_billed_at_the_price_it_was_sealed_at(
) {
    let net = devnet_with(|o| o.settle_every = None).await;
    let url = format!("{}/chat/completions", net.api_url);
    let dir = tempfile::tempdir().unwrap();
    let mut expected = 0u128;
    let ask = |i: usize| {
        let url = url.clone();
        async move {
            let (status, body) = post(
                &url,
                &chat_body(&format!("question {i}"), json!({"max_tokens": 4})),
            )
            .await;
            assert_eq!(status, 200, "{body}");
            let receipt = &body["cocoon"]["receipt"];
            let usage = (
                receipt["prompt_tokens"].as_u64().unwrap(),
                receipt["completion_tokens"].as_u64().unwrap(),
            );
            (receipt["price_coefficient"].as_u64().unwrap() as u32, usage)
        }
    };

    // At the configured price.
    let (price, usage) = ask(0).await;
    assert_eq!(price, 1000);
    expected += cost(usage, price);

    // Bad settings are named and change nothing.
    let (ok, out) = worker_cli(&net, dir.path(), &["set-price", "nope", "1500"]).await;
    assert!(!ok && out.contains("does not serve 'nope'"), "{out}");
    let (ok, out) = worker_cli(&net, dir.path(), &["set-price", MODEL, "0"]).await;
    assert!(!ok && out.contains("'price_coefficient'"), "{out}");
    let (ok, out) = worker_cli(&net, dir.path(), &["set-price", MODEL, "cheap"]).await;
    assert!(!ok && out.contains("<COEFF>"), "{out}");
    assert_eq!(listed(&net).await, 1000);

    // The owner asks 1500: announced at once, and the proxy lists it.
    let (ok, out) = worker_cli(&net, dir.path(), &["set-price", MODEL, "1500"]).await;
    assert!(ok, "{out}");
    let state: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(state["prices"][MODEL], 1500, "{state}");
    let started = std::time::Instant::now();
    while listed(&net).await != 1500 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "the new price was not announced"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    // The client node seals at the price it lists: the old one while its
    // key list is a few seconds old (the worker still serves it, in its
    // grace period), then the new one, which the receipt states.
    let mut i = 1;
    loop {
        let (price, usage) = ask(i).await;
        assert!(price == 1000 || price == 1500, "served at {price}");
        expected += cost(usage, price);
        if price == 1500 {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "no receipt at the new price"
        );
        i += 1;
    }

    // A client node that sealed at the old price just before the change
    // is served at it (the price it agreed to, and the worker asked)...
    let (price, usage) = sealed_at(&net, 1000)
        .await
        .expect("served at the old price");
    assert_eq!(price, 1000);
    expected += cost(usage, price);
    // ...but one that seals at a price the worker never asked, to pay
    // less, is refused before a token and billed nothing.
    for cheaper in [1, 999, 1499] {
        let refused = sealed_at(&net, cheaper)
            .await
            .expect_err("served at a price the worker never asked");
        assert_eq!(refused.kind, ErrorKind::KeysChanged, "{refused:?}");
        assert!(
            refused.message.contains("price coefficient 1500, not"),
            "{}",
            refused.message
        );
    }

    // Charged on chain at each request's sealed price, to the nano-TON.
    let settled = net.settle_now().await.unwrap();
    assert_eq!(settled.charged, expected);
    net.shutdown().await;
}
