//! Two proxies run by two operators, each with its own proxy contract, both
//! published in the root contract's registry on the embedded TON devnet. The
//! client node is configured with the first only and finds the second in
//! the registry; it pays each from its own client contract (the genesis one
//! for the first, one it deploys for the second), so a proxy its contract
//! there cannot cover is passed over for one it can, and each proxy charges
//! exactly what was served through it.

use std::sync::Arc;
use std::time::Duration;

use cocoon_chain::{Chain, ClientState, StdAddr};
use cocoon_devnet::kit::*;
use cocoon_devnet::Devnet;
use serde_json::{json, Value};

/// The embedded chain's TON HTTP API served on loopback: its base URL.
async fn serve_api(ton: &cocoon_ton_devnet::TonDevnet) -> String {
    let app = cocoon_ton_devnet::api::router(ton.chain.clone(), cocoon_ton_devnet::unix_now);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = format!("http://{}/api/v2", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    api
}

/// The terms a proxy with `contract` and `key` answers a client node with.
fn account_terms(
    ton: &cocoon_ton_devnet::TonDevnet,
    contract: &StdAddr,
    key: [u8; 32],
) -> cocoon_protocol::AccountTerms {
    cocoon_protocol::AccountTerms {
        proxy_contract: contract.to_string(),
        proxy_key: key,
        root: ton.root.to_string(),
        contract: None,
        owed_nano: 0,
        charged_nano: 0,
    }
}

/// The network's operator publishes proxy `contract` with `key` in the root
/// contract's registry.
fn publish(ton: &cocoon_ton_devnet::TonDevnet, contract: &StdAddr, key: [u8; 32]) {
    ton.register_proxy(
        contract,
        &cocoon_chain::HashBytes(key),
        cocoon_protocol::PROTOCOL_VERSION as u32,
        Some("127.0.0.1:9"),
    )
    .unwrap();
}

fn served_by(handle: &cocoon_proxy::ProxyHandle) -> u64 {
    handle
        .registry
        .offer_stats()
        .iter()
        .map(|o| o.answers)
        .sum()
}

async fn balance(net: &Devnet) -> Value {
    get_json(&format!("{}/cocoon/balance", net.api_url)).await
}

/// The balance endpoint's account with `proxy_contract`.
fn account<'a>(balance: &'a Value, proxy_contract: &StdAddr) -> &'a Value {
    balance["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["proxy_contract"] == proxy_contract.to_string())
        .unwrap_or_else(|| panic!("no account with {proxy_contract}: {balance}"))
}

fn nano(v: &Value) -> u128 {
    v.as_str().unwrap().parse().unwrap()
}

async fn charged_on_chain(net: &Devnet, contract: &StdAddr) -> u128 {
    let chain = net.ton.embedded();
    ClientState::from_stack(&chain.get(contract, "get_client_data", &[]).await.unwrap())
        .unwrap()
        .charged
}

#[tokio::test]
async fn each_proxy_is_paid_from_its_own_contract_and_found_in_the_registry() {
    // 100,000 nano-TON in each client contract: a short request with 8
    // completion tokens fits (41,600 nano-TON for the most prompt its sealed
    // size allows, 640 for the tokens), with 1000 (80,000 more) it does not.
    let net = devnet_with(|o| {
        o.more_proxies = 1;
        o.settle_every = None;
        o.client_deposit = 100_000;
        o.prices.min_client_stake = 100_000;
        o.chain_fresh = FRESH_IN_TESTS;
        o.registry_every = Duration::from_millis(200);
    })
    .await;
    let second = &net.proxies[1];
    assert_eq!(
        net.pool().proxies(),
        2,
        "the second proxy comes from the registry"
    );

    // Two contracts: the configured genesis one pays the first proxy, the
    // node deployed another for the second.
    let shown = balance(&net).await;
    assert_eq!(shown["accounts"].as_array().unwrap().len(), 2, "{shown}");
    assert_eq!(shown["contract"], Value::Null, "{shown}");
    assert_eq!(
        account(&shown, &net.ton.proxy_contract)["contract"],
        net.ton.client_contract.to_string()
    );
    let second_contract: StdAddr = account(&shown, &second.contract)["contract"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_ne!(second_contract, net.ton.client_contract);
    assert_eq!(shown["balance_nano"], "200000", "{shown}");

    // Top up the second contract by 1 TON from the owner's wallet, staked
    // (the credit a proxy extends is the stake).
    let wallet = cocoon_chain::WalletSender::new(
        Arc::new(cocoon_chain::TonHttp::new(&net.ton_api_url, None).unwrap()),
        net.ton.wallets.client(),
    );
    wallet
        .send(
            &cocoon_chain::client::deposit(&second_contract, 1_000_000_000, 1_000_000_000, None)
                .unwrap(),
        )
        .await
        .unwrap();
    // The top-up lands in a later block; the node sees it once its read of
    // the contract is stale.
    let started = std::time::Instant::now();
    while nano(&account(&balance(&net).await, &second.contract)["balance_nano"]) < 1_000_000_000 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the top-up never showed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The proxy rereads a contract that looks short at most once a second.
    tokio::time::sleep(Duration::from_millis(1100)).await;

    // 1000 tokens: only the second contract covers them, so every request
    // goes through the second proxy, although the node takes proxies in turn.
    let url = format!("{}/chat/completions", net.api_url);
    for i in 0..4 {
        let text = format!("big {i}");
        let (status, body) = post(&url, &chat_body(&text, json!({"max_tokens": 1000}))).await;
        assert_eq!(status, 200, "{body}");
        let answer = body["choices"][0]["message"]["content"].as_str().unwrap();
        assert!(answer.starts_with(&text), "{body}");
    }
    assert_eq!(served_by(net.proxy()), 0);
    assert_eq!(served_by(second.handle()), 4);
    // Small ones go through both.
    for i in 0..6 {
        let (status, body) = post(
            &url,
            &chat_body(&format!("small {i}"), json!({"max_tokens": 8})),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    assert!(served_by(net.proxy()) > 0, "the first proxy served nothing");
    let through_second = served_by(second.handle());
    assert!(
        through_second > 4,
        "the second proxy served no small request"
    );

    // Each account counts what went through its proxy; settling the second
    // proxy charges its contract exactly that, and nothing of the first's.
    past_fresh().await;
    let shown = balance(&net).await;
    let spent_second = nano(&account(&shown, &second.contract)["unsettled_nano"]);
    let spent_first = nano(&account(&shown, &net.ton.proxy_contract)["unsettled_nano"]);
    assert!(spent_second > 0 && spent_first > 0, "{shown}");
    second.settlement.settle_once().await.unwrap();
    assert_eq!(charged_on_chain(&net, &second_contract).await, spent_second);
    assert_eq!(charged_on_chain(&net, &net.ton.client_contract).await, 0);
    net.settlement().settle_once().await.unwrap();
    assert_eq!(
        charged_on_chain(&net, &net.ton.client_contract).await,
        spent_first
    );

    // The second proxy dies: what only it could take is refused (402, naming
    // the first proxy's contract), the rest goes through the first.
    second.handle().shutdown();
    wait("the second proxy gone", || net.pool().connected() == 1).await;
    let (status, body) = post(&url, &chat_body("big", json!({"max_tokens": 1000}))).await;
    assert_eq!(status, 402, "{body}");
    assert_error(&body, &net.ton.client_contract.to_string());
    let (status, body) = post(&url, &chat_body("small", json!({"max_tokens": 8}))).await;
    assert_eq!(status, 200, "{body}");

    // The operator withdraws it from the registry: the node stops dialling it.
    net.ton
        .register_proxy(
            &second.contract,
            &cocoon_chain::HashBytes::default(),
            cocoon_protocol::PROTOCOL_VERSION as u32,
            None,
        )
        .unwrap();
    wait("the withdrawn proxy no longer dialled", || {
        net.pool().proxies() == 1
    })
    .await;
    net.shutdown().await;
}

/// Registering with a proxy that a configured contract pays never waits
/// behind the deployment of this node's contract with another proxy (a
/// deployment waits for its block; the first proxy must be payable
/// meanwhile, or requests get 402 "not registered yet").
#[tokio::test]
async fn a_configured_contract_is_ready_while_another_is_being_deployed() {
    use cocoon_ton_devnet::{default_prices, unix_now, TonDevnet, CLIENT_DEPOSIT};
    let key = || {
        let id = Arc::new(cocoon_protocol::tls::Identity::generate().unwrap());
        cocoon_proxy::signer_of(&id).public_key().0
    };
    let (first_key, second_key) = (key(), key());
    let node_key = cocoon_protocol::tls::Fingerprint([5; 32]);
    let ton = Arc::new(
        TonDevnet::start(&default_prices(), CLIENT_DEPOSIT, first_key, node_key.0).unwrap(),
    );
    let (second, _) = ton.add_proxy(second_key).unwrap();
    // The client node funds a contract only for a registered proxy.
    publish(&ton, &second, second_key);
    // From now on messages wait for a block, and none is made yet.
    ton.chain.lock().unwrap().in_blocks = true;
    let api = serve_api(&ton).await;

    let http = cocoon_chain::TonHttp::new(&api, None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut billing = cocoon_client::Billing::new(
        Arc::new(http.clone()),
        vec![ton.client_contract.clone()],
        ton.root.clone(),
        node_key,
    );
    billing.deploy = Some(cocoon_client::billing::Deploy {
        wallet: Arc::new(cocoon_chain::WalletSender::new(
            Arc::new(http),
            ton.wallets.client(),
        )),
        deposit: 1_000_000_000,
        file: dir.path().join("client-contracts.json"),
    });
    let billing = Arc::new(billing);
    let terms = |contract: &StdAddr, key: [u8; 32]| account_terms(&ton, contract, key);
    let deploying = tokio::spawn({
        let (billing, terms) = (billing.clone(), terms(&second, second_key));
        async move { billing.ensure_contract(&terms).await }
    });
    // The deployment is sent and waits for a block.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(!deploying.is_finished());
    let first = tokio::time::timeout(
        Duration::from_secs(5),
        billing.ensure_contract(&terms(&ton.proxy_contract, first_key)),
    )
    .await
    .expect("the configured contract waited behind another proxy's deployment")
    .unwrap();
    assert_eq!(first, ton.client_contract);
    assert!(!deploying.is_finished());

    // Blocks again: the deployment completes, to a contract of its own.
    let started = std::time::Instant::now();
    while !deploying.is_finished() {
        {
            let mut chain = ton.chain.lock().unwrap();
            chain.now = chain.now.max(unix_now());
            chain.produce_block();
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "never deployed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deployed = deploying.await.unwrap().unwrap();
    assert_ne!(deployed, ton.client_contract);
    let chain = ton.embedded();
    let state =
        ClientState::from_stack(&chain.get(&deployed, "get_client_data", &[]).await.unwrap())
            .unwrap();
    assert_eq!(state.balance, 1_000_000_000);
}

/// A proxy (or whoever answers on its connection) names a proxy contract
/// for this node to fund. The client node deploys and deposits only for a
/// proxy contract the root contract's registry publishes with that proxy's
/// key: a contract the network does not know, or one registered with
/// another key, gets no money from the node's wallet.
#[tokio::test]
async fn a_client_node_funds_only_proxy_contracts_the_root_publishes() {
    use cocoon_ton_devnet::{default_prices, TonDevnet, CLIENT_DEPOSIT};
    let key = || {
        let id = Arc::new(cocoon_protocol::tls::Identity::generate().unwrap());
        cocoon_proxy::signer_of(&id).public_key().0
    };
    let (first_key, rogue_key) = (key(), key());
    let node_key = cocoon_protocol::tls::Fingerprint([5; 32]);
    let ton = Arc::new(
        TonDevnet::start(&default_prices(), CLIENT_DEPOSIT, first_key, node_key.0).unwrap(),
    );
    let (rogue, _) = ton.add_proxy(rogue_key).unwrap();
    let api = serve_api(&ton).await;
    let http = cocoon_chain::TonHttp::new(&api, None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let wallet = ton.wallets.client().address;
    let mut billing = cocoon_client::Billing::new(
        Arc::new(http.clone()),
        Vec::new(),
        ton.root.clone(),
        node_key,
    );
    billing.deploy = Some(cocoon_client::billing::Deploy {
        wallet: Arc::new(cocoon_chain::WalletSender::new(
            Arc::new(http.clone()),
            ton.wallets.client(),
        )),
        deposit: 1_000_000_000,
        file: dir.path().join("client-contracts.json"),
    });
    let terms = |contract: &StdAddr, key: [u8; 32]| account_terms(&ton, contract, key);
    let balance = || async { http.account(&wallet).await.unwrap().balance };
    let before = balance().await;
    let err = billing
        .ensure_contract(&terms(&rogue, rogue_key))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("not in the root contract"), "{err}");
    // Registered, but the proxy on the connection signs with another key.
    publish(&ton, &rogue, first_key);
    let err = billing
        .ensure_contract(&terms(&rogue, rogue_key))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("with another key"), "{err}");
    assert_eq!(balance().await, before, "no money left the wallet");
    assert!(!dir.path().join("client-contracts.json").exists());
    // Once the operator publishes it as it is, the node pays it.
    publish(&ton, &rogue, rogue_key);
    let deployed = billing
        .ensure_contract(&terms(&rogue, rogue_key))
        .await
        .unwrap();
    let channel = cocoon_chain::ClientChannel::from_stack(
        &ton.embedded()
            .get(&deployed, "get_client_data", &[])
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(channel.proxy, rogue);
    assert_eq!(channel.client_key.0, node_key.0, "it names this node");
}

/// A client node whose contract with a proxy was closed deploys a new one,
/// at a new address, on its next use of that proxy (after a restart too):
/// never the old address again, where the proxy's old charge signatures
/// (public on chain) would charge the new deposit once more and the proxy's
/// books would charge the old total again. Before, the remembered nonce
/// put the new contract at the old address.
#[tokio::test]
async fn a_closed_client_contract_is_never_deployed_again_at_its_address() {
    use cocoon_chain::{client, signed, TON};
    use cocoon_ton_devnet::{default_prices, TonDevnet, CLIENT_DEPOSIT};
    let id = Arc::new(cocoon_protocol::tls::Identity::generate().unwrap());
    let signer = cocoon_proxy::signer_of(&id);
    let proxy_key = signer.public_key().0;
    let node_key = cocoon_protocol::tls::Fingerprint([5; 32]);
    let ton =
        Arc::new(TonDevnet::start(&default_prices(), CLIENT_DEPOSIT, [9; 32], node_key.0).unwrap());
    let (proxy, _) = ton.add_proxy(proxy_key).unwrap();
    publish(&ton, &proxy, proxy_key);
    let api = serve_api(&ton).await;
    let http = cocoon_chain::TonHttp::new(&api, None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // The node's billing, as it starts (again) with the same contracts file.
    let billing = || {
        let mut billing = cocoon_client::Billing::new(
            Arc::new(http.clone()),
            Vec::new(),
            ton.root.clone(),
            node_key,
        );
        billing.deploy = Some(cocoon_client::billing::Deploy {
            wallet: Arc::new(cocoon_chain::WalletSender::new(
                Arc::new(http.clone()),
                ton.wallets.client(),
            )),
            deposit: TON,
            file: dir.path().join("client-contracts.json"),
        });
        billing
    };
    let terms = account_terms(&ton, &proxy, proxy_key);
    let first = billing().ensure_contract(&terms).await.unwrap();
    let owner = ton.wallets.client().address;
    let anyone = ton.wallets.worker().address;
    let send = |to: &StdAddr, from: &StdAddr, body| {
        ton.chain
            .lock()
            .unwrap()
            .send(from, to, TON / 20, body, None)
            .unwrap()
    };
    // The proxy charges 0.1 TON: its signature is public on chain from now on.
    let charge = signer
        .sign_amount(signed::CHARGE, &first, TON / 10)
        .unwrap();
    let r = send(&first, &anyone, client::charge(TON / 10, &charge).unwrap());
    assert!(r[0].success, "{r:?}");
    // A cooperative close destroys the contract.
    let close = signer.sign_amount(signed::CLOSE, &first, TON / 10).unwrap();
    let r = send(
        &first,
        &owner,
        client::cooperative_close(TON / 10, &close).unwrap(),
    );
    assert!(r[0].success, "{r:?}");
    assert!(!http.account(&first).await.unwrap().is_active());

    // The node starts again and uses the proxy: a new contract elsewhere.
    let second = billing().ensure_contract(&terms).await.unwrap();
    assert_ne!(
        second, first,
        "deployed again at the closed contract's address"
    );
    // The old charge, replayed by anyone, is worthless there.
    let r = send(&second, &anyone, client::charge(TON / 10, &charge).unwrap());
    assert!(!r[0].success, "{r:?}");
    let state =
        ClientState::from_stack(&http.get(&second, "get_client_data", &[]).await.unwrap()).unwrap();
    assert_eq!((state.charged, state.balance, state.stake), (0, TON, TON));
}

/// A proxy tells its workers which proxy contract pays them. With the
/// network's root configured, a worker keeps vouchers only from a proxy
/// contract the root's registry lists with the key that signs them: a proxy
/// cannot point its workers at a contract its clients do not pay.
#[tokio::test]
async fn a_worker_keeps_vouchers_only_from_proxy_contracts_the_root_publishes() {
    use cocoon_ton_devnet::{default_prices, TonDevnet, CLIENT_DEPOSIT};
    let ton = TonDevnet::start(&default_prices(), CLIENT_DEPOSIT, [9; 32], [5; 32]).unwrap();
    let (rogue, _) = ton.add_proxy([10; 32]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut earnings = cocoon_worker::Earnings::new(
        Arc::new(ton.embedded()),
        ton.wallets.worker(),
        1,
        dir.path().join("earnings.json"),
    )
    .unwrap();
    earnings.root = Some(ton.root.clone());
    let terms = |contract: &StdAddr, key: [u8; 32]| account_terms(&ton, contract, key);
    let err = earnings
        .check_registered(&terms(&rogue, [10; 32]))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("not in the root contract"), "{err}");
    // Registered under another key than the one signing the vouchers.
    publish(&ton, &rogue, [11; 32]);
    let err = earnings
        .check_registered(&terms(&rogue, [10; 32]))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("another key"), "{err}");
    publish(&ton, &rogue, [10; 32]);
    earnings
        .check_registered(&terms(&rogue, [10; 32]))
        .await
        .unwrap();
}
