//! The TON HTTP API subset over a real emulator on loopback, spoken to with a
//! real HTTP client: a v4r2 wallet funded at genesis deploys itself and the
//! root contract through `sendBoc`, then account state, get-methods and
//! transactions are read back; bad input gets toncenter-shaped errors.

use std::sync::{Arc, Mutex};

use cocoon_chain::wallet::{internal_message, SEND_PAY_FEES_SEPARATELY};
use cocoon_chain::Chain;
use cocoon_chain::{Contract, Wallet};
use cocoon_ton_devnet::Emulator;
use serde_json::{json, Value};
use tycho_types::boc::Boc;
use tycho_types::cell::{Cell, CellBuilder, CellFamily};
use tycho_types::models::{StateInit, StdAddr};

const TON: u128 = 1_000_000_000;
const NOW: u32 = 1_800_000_000;

fn now() -> u32 {
    NOW
}

async fn serve(chain: Emulator) -> (String, Arc<Mutex<Emulator>>) {
    let chain = Arc::new(Mutex::new(chain));
    let app = cocoon_ton_devnet::api::router(chain.clone(), now);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/api/v2", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, chain)
}

/// A devnet chain (genesis wallets and contracts) served on loopback.
/// A chain of its own with the same genesis as `ton` (the same wallets,
/// so the same contract addresses): what a lying endpoint serves.
fn twin(ton: &cocoon_ton_devnet::TonDevnet) -> cocoon_ton_devnet::TonDevnet {
    let wallets = cocoon_ton_devnet::Wallets::from_hex(&ton.wallets.to_hex()).unwrap();
    let twin = cocoon_ton_devnet::TonDevnet::genesis(
        &cocoon_chain::pricing::default_prices(),
        cocoon_ton_devnet::CLIENT_DEPOSIT,
        [7; 32],
        [8; 32],
        &cocoon_ton_devnet::Genesis {
            wallets: Some(wallets),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(twin.root, ton.root);
    twin
}

/// `ton`'s chain behind a TON HTTP API on loopback, as a client of it.
async fn serve_chain(ton: &cocoon_ton_devnet::TonDevnet) -> Arc<dyn Chain> {
    let app = cocoon_ton_devnet::api::router(ton.chain.clone(), cocoon_ton_devnet::unix_now);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/api/v2", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Arc::new(cocoon_chain::TonHttp::new(&url, None).unwrap())
}

async fn serve_devnet() -> (String, cocoon_ton_devnet::TonDevnet) {
    let ton = cocoon_ton_devnet::TonDevnet::start(
        &cocoon_chain::pricing::default_prices(),
        cocoon_ton_devnet::CLIENT_DEPOSIT,
        [7; 32],
        [8; 32],
    )
    .unwrap();
    let app = cocoon_ton_devnet::api::router(ton.chain.clone(), cocoon_ton_devnet::unix_now);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/api/v2", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, ton)
}

async fn rpc(url: &str, method: &str, params: Value) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(format!("{url}/jsonRPC"))
        .json(&json!({"id": 1, "jsonrpc": "2.0", "method": method, "params": params}))
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

#[tokio::test]
async fn a_wallet_deploys_the_root_contract_through_the_http_api() {
    let mut chain = Emulator::new(NOW).unwrap();
    let wallet = Wallet::from_seed(&[7; 32]).unwrap();
    chain.fund(&wallet.address, 10 * TON).unwrap();
    let (url, _chain) = serve(chain).await;

    let (code, info) = rpc(
        &url,
        "getAddressInformation",
        json!({"address": wallet.address.to_string()}),
    )
    .await;
    assert_eq!(code, 200, "{info}");
    assert_eq!(info["result"]["state"], "uninitialized");
    assert_eq!(info["result"]["balance"], (10 * TON).to_string());

    // The wallet's first transfer deploys it and the root contract.
    let root_code = Contract::Root.code();
    let root_data = cocoon_chain::pricing::default_prices()
        .root_data(&wallet.address)
        .unwrap();
    let root_init = CellBuilder::build_from(StateInit {
        split_depth: None,
        special: None,
        code: Some(root_code.clone()),
        data: Some(root_data.clone()),
        libraries: Default::default(),
    })
    .unwrap();
    let root = StdAddr::new(0, *root_init.repr_hash());
    let deploy = internal_message(
        &root,
        TON,
        false,
        Cell::empty_cell(),
        Some((root_code, root_data)),
    )
    .unwrap();
    let transfer = wallet
        .transfer(0, NOW + 60, &[(SEND_PAY_FEES_SEPARATELY, deploy)])
        .unwrap();
    let (code, sent) = rpc(
        &url,
        "sendBoc",
        json!({"boc": Boc::encode_base64(&transfer)}),
    )
    .await;
    assert_eq!(code, 200, "{sent}");

    let (_, info) = rpc(
        &url,
        "getAddressInformation",
        json!({"address": wallet.address.to_string()}),
    )
    .await;
    assert_eq!(info["result"]["state"], "active");
    let (_, root_info) = rpc(
        &url,
        "getAddressInformation",
        json!({"address": root.to_string()}),
    )
    .await;
    assert_eq!(root_info["result"]["state"], "active");
    assert!(
        root_info["result"]["balance"]
            .as_str()
            .unwrap()
            .parse::<u128>()
            .unwrap()
            > TON / 2
    );

    // Get-methods, over JSON-RPC and over the REST route.
    let (_, version) = rpc(
        &url,
        "runGetMethod",
        json!({"address": root.to_string(), "method": "get_version", "stack": []}),
    )
    .await;
    assert_eq!(version["result"]["exit_code"], 0);
    assert_eq!(version["result"]["stack"], json!([["num", "0x0"]]));
    let allowed: Value = reqwest::Client::new()
        .post(format!("{url}/runGetMethod"))
        .json(&json!({"address": root.to_string(), "method": "is_worker_image_allowed", "stack": [["num", "0x1234"]]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        allowed["result"]["stack"],
        json!([["num", "0x0"]]),
        "{allowed}"
    );
    let (_, wallet_seqno) = rpc(
        &url,
        "runGetMethod",
        json!({"address": wallet.address.to_string(), "method": "seqno", "stack": []}),
    )
    .await;
    assert_eq!(wallet_seqno["result"]["stack"], json!([["num", "0x1"]]));

    // Transactions, newest first.
    let txs: Value = reqwest::get(format!(
        "{url}/getTransactions?address={}&limit=5",
        wallet.address
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let list = txs["result"].as_array().unwrap();
    assert_eq!(list.len(), 2, "genesis funding and the transfer: {txs}");
    assert_eq!(list[0]["out_msgs"].as_array().unwrap().len(), 1);

    // The same transfer again: the wallet refuses the old seqno.
    let (code, again) = rpc(
        &url,
        "sendBoc",
        json!({"boc": Boc::encode_base64(&transfer)}),
    )
    .await;
    assert_eq!(code, 500, "{again}");
    assert_eq!(again["ok"], false);
    assert!(
        again["error"].as_str().unwrap().contains("not accepted"),
        "{again}"
    );
}

#[tokio::test]
async fn bad_calls_get_toncenter_shaped_errors() {
    let (url, _chain) = serve(Emulator::new(NOW).unwrap()).await;
    let (code, body) = rpc(&url, "sendBoc", json!({"boc": "not base64!"})).await;
    assert_eq!(code, 400);
    assert_eq!(body["ok"], false);
    assert!(body["error"].as_str().unwrap().contains("boc"), "{body}");
    let (code, body) = rpc(&url, "sendBoc", json!({})).await;
    assert_eq!(code, 400);
    assert!(body["error"].as_str().unwrap().contains("`boc`"), "{body}");
    let (code, body) = rpc(&url, "getAddressInformation", json!({"address": "nowhere"})).await;
    assert_eq!(code, 400);
    assert!(
        body["error"].as_str().unwrap().contains("address"),
        "{body}"
    );
    let (code, body) = rpc(&url, "estimateFee", json!({})).await;
    assert_eq!(code, 404);
    assert!(
        body["error"].as_str().unwrap().contains("estimateFee"),
        "{body}"
    );
    let (code, body) = rpc(&url, "runGetMethod", json!({"address": "0:0000000000000000000000000000000000000000000000000000000000000001", "method": "get_version"})).await;
    assert_eq!(code, 500);
    assert!(
        body["error"].as_str().unwrap().contains("no account"),
        "{body}"
    );
}

#[tokio::test]
async fn the_rust_ton_client_reads_the_devnet_over_http() {
    let (url, ton) = serve_devnet().await;
    let client = cocoon_chain::TonHttp::new(&url, None).unwrap();

    let root = client.account(&ton.root).await.unwrap();
    assert_eq!(root.state, "active");
    let prices =
        cocoon_chain::Prices::from_stack(&client.get(&ton.root, "get_prices", &[]).await.unwrap())
            .unwrap();
    assert_eq!(prices, cocoon_chain::pricing::default_prices());
    let state = cocoon_chain::ClientState::from_stack(
        &client
            .get(&ton.client_contract, "get_client_data", &[])
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(state.balance, cocoon_ton_devnet::CLIENT_DEPOSIT);
    assert_eq!(state.charged, 0);
    let allowed = client
        .get(&ton.root, "is_worker_image_allowed", &[0x1234])
        .await
        .unwrap();
    assert_eq!(cocoon_chain::stack_int(&allowed).unwrap(), 0);

    // Errors name the method and the server's reason.
    let nowhere = StdAddr::new(0, tycho_types::cell::HashBytes([9; 32]));
    let err = client
        .get(&nowhere, "get_version", &[])
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("runGetMethod") && err.contains("no account"),
        "{err}"
    );
    let down = cocoon_chain::TonHttp::new("http://127.0.0.1:9/api/v2", None).unwrap();
    assert!(down.account(&ton.root).await.is_err());
}

/// TON's own SDK (`@ton/ton`'s `TonClient`, from `contracts/node_modules`:
/// `./scripts/test` installs it with `npm ci`) reads the devnet's API.
#[tokio::test]
async fn tons_own_sdk_talks_to_the_devnet_api() {
    let contracts = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../contracts");
    assert!(
        contracts.join("node_modules/@ton/ton").exists(),
        "run `npm ci` in contracts/ first (./scripts/test does)"
    );
    let (url, ton) = serve_devnet().await;

    let root = ton.root.to_string();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("node")
            .arg("scripts/tonclient-check.mjs")
            .arg(&url)
            .arg(root)
            .current_dir(&contracts)
            .output()
    })
    .await
    .unwrap()
    .expect("node runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(seen["state"], "active", "{seen}");
    assert_eq!(seen["version"], 0);
    assert_eq!(seen["pricePerToken"], "20");
    // getTransactions parses into @ton/core Transactions: the deployment.
    assert_eq!(seen["transactions"], 1, "{seen}");
    assert!(seen["deployedBy"].is_string(), "{seen}");
    assert!(seen["balance"].as_str().unwrap().parse::<u128>().unwrap() > TON);
}

/// What the root contract publishes as trusted (images, models) reads back
/// through the HTTP API as published; read from two endpoints, it is
/// believed only when both say the same: an endpoint that lies about the
/// root contract's state (here, a chain where another image is published
/// at the same address and version) is not believed.
#[tokio::test]
async fn the_root_contracts_trust_lists_are_believed_only_when_endpoints_agree() {
    use cocoon_chain::published::{read_agreeing, read_lists};
    use cocoon_chain::root::ImageRole;
    let (url, ton) = serve_devnet().await;
    let (image, weights) = ("ab".repeat(32), "cd".repeat(32));
    ton.publish_image(ImageRole::Worker, &image, true).unwrap();
    ton.publish_model(&weights, Some("smol")).unwrap();
    let api: Arc<dyn Chain> = Arc::new(cocoon_chain::TonHttp::new(&url, None).unwrap());
    let lists = read_lists(api.as_ref(), &ton.root).await.unwrap();
    assert_eq!(lists.version, 2);
    assert_eq!(lists.worker_images, [image.clone()].into());
    assert!(lists.proxy_images.is_empty());
    assert_eq!(lists.models, [(weights.clone(), "smol".to_string())].into());

    // Two endpoints of the same chain agree.
    let same: Arc<dyn Chain> = Arc::new(cocoon_chain::TonHttp::new(&url, None).unwrap());
    assert_eq!(
        read_agreeing(&[api.clone(), same], &ton.root)
            .await
            .unwrap(),
        lists
    );

    // A lying endpoint: the same contracts (same wallets), another image.
    let liar = twin(&ton);
    liar.publish_image(ImageRole::Worker, &"ee".repeat(32), true)
        .unwrap();
    liar.publish_model(&weights, Some("smol")).unwrap();
    let lying = serve_chain(&liar).await;
    let refused = read_agreeing(&[api.clone(), lying.clone()], &ton.root)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("disagree") && refused.contains("other contents"),
        "{refused}"
    );
    // Whichever endpoint is asked first.
    assert!(read_agreeing(&[lying, api], &ton.root).await.is_err());

    // A node's lists follow through `read_through`: read, then withdrawn.
    let published = cocoon_attestation::Published::new(ton.root.to_string());
    cocoon_chain::published::read_through(
        &published,
        &url,
        None,
        &[],
        std::time::Duration::from_secs(60),
    )
    .unwrap();
    assert!(published.refresh().await.unwrap());
    published.check_model("smol", Some(&weights)).unwrap();
    ton.publish_model(&weights, None).unwrap();
    assert!(published.refresh().await.unwrap());
    let refused = published.check_model("smol", Some(&weights)).unwrap_err();
    assert!(refused.to_string().contains("version 3"), "{refused}");
}

/// A client node following the registry through several endpoints
/// believes it only when all of them read the same proxies: an endpoint
/// serving a chain where the same root, at the same version, publishes
/// another key and address for the proxy cannot point it elsewhere.
#[tokio::test]
async fn the_proxy_registry_is_believed_only_when_endpoints_agree() {
    use cocoon_chain::{registered_proxies_agreeing, HashBytes};
    let (url, ton) = serve_devnet().await;
    ton.register_proxy(
        &ton.proxy_contract,
        &HashBytes([9; 32]),
        15,
        Some("10.0.0.1:9100"),
    )
    .unwrap();
    let api: Arc<dyn Chain> = Arc::new(cocoon_chain::TonHttp::new(&url, None).unwrap());
    let same: Arc<dyn Chain> = Arc::new(cocoon_chain::TonHttp::new(&url, None).unwrap());
    let listed = registered_proxies_agreeing(&[api.clone(), same], &ton.root)
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].endpoint, "10.0.0.1:9100");
    assert_eq!(listed[0].key, HashBytes([9; 32]));

    let liar = twin(&ton);
    liar.register_proxy(
        &liar.proxy_contract,
        &HashBytes([6; 32]),
        15,
        Some("6.6.6.6:9100"),
    )
    .unwrap();
    let lying = serve_chain(&liar).await;
    // Alone, the lying endpoint would be believed.
    let lie = registered_proxies_agreeing(std::slice::from_ref(&lying), &ton.root)
        .await
        .unwrap();
    assert_eq!(lie[0].endpoint, "6.6.6.6:9100");
    for endpoints in [[api.clone(), lying.clone()], [lying, api]] {
        let refused = registered_proxies_agreeing(&endpoints, &ton.root)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains("disagree") && refused.contains("other proxies"),
            "{refused}"
        );
    }
}

/// The network's prices as `chain` reads them from the root contract.
async fn prices_read(chain: &dyn Chain, root: &StdAddr) -> Result<cocoon_chain::Prices, String> {
    let stack = chain
        .get(root, "get_prices", &[])
        .await
        .map_err(|e| e.to_string())?;
    cocoon_chain::Prices::from_stack(&stack).map_err(|e| e.to_string())
}

/// The attack: the TON endpoint a node reads through lies (the prices in
/// the root contract, ten times what the operator set: a client node would
/// accept charges at them, a proxy would bill them). Alone it is believed;
/// with a second endpoint in `ton_api_agree` ([`AgreeingChain`]) every read
/// (get-methods, accounts, blocks) must agree, and the lie is refused
/// wherever the liar stands. Endpoints that differ only for a moment (one
/// catching up) are read again and believed once they agree.
#[tokio::test]
async fn every_chain_read_is_believed_only_when_endpoints_agree() {
    use cocoon_chain::{AgreeingChain, ChainError};
    use std::time::Duration;
    let (url, ton) = serve_devnet().await;
    let ton = Arc::new(ton);
    let api: Arc<dyn Chain> = Arc::new(cocoon_chain::TonHttp::new(&url, None).unwrap());
    let same: Arc<dyn Chain> = Arc::new(cocoon_chain::TonHttp::new(&url, None).unwrap());
    let honest = cocoon_chain::pricing::default_prices();
    let liar = twin(&ton);
    let mut inflated = honest.clone();
    inflated.price_per_token *= 10;
    liar.set_prices(&inflated).unwrap();
    let lying = serve_chain(&liar).await;
    let quick = |endpoints: Vec<Arc<dyn Chain>>| {
        AgreeingChain::new(endpoints).with_pause(Duration::from_millis(100))
    };

    // Alone, the lying endpoint is believed.
    assert_eq!(
        prices_read(lying.as_ref(), &ton.root)
            .await
            .unwrap()
            .price_per_token,
        honest.price_per_token * 10
    );
    // Honest endpoints agree: the same answers as one alone.
    let agreeing = quick(vec![api.clone(), same.clone()]);
    assert_eq!(prices_read(&agreeing, &ton.root).await.unwrap(), honest);
    assert_eq!(
        agreeing.account(&ton.root).await.unwrap(),
        api.account(&ton.root).await.unwrap()
    );
    let head = agreeing.masterchain_head().await.unwrap();
    assert_eq!(
        agreeing.masterchain_block(head.seqno).await.unwrap(),
        Some(head)
    );
    // With the liar beside an honest endpoint, in either place: refused,
    // naming the disagreement.
    for endpoints in [
        vec![api.clone(), lying.clone()],
        vec![lying.clone(), api.clone()],
    ] {
        let chain = quick(endpoints);
        let refused = prices_read(&chain, &ton.root).await.unwrap_err();
        assert!(
            refused.contains("disagree on get_prices")
                && refused.contains("ton_api and ton_api_agree[0]"),
            "{refused}"
        );
        let refused = chain.get(&ton.root, "get_prices", &[]).await.unwrap_err();
        assert!(matches!(refused, ChainError::Disagree(_)), "{refused:?}");
    }
    // An agreeing endpoint that cannot be read fails the read: it cannot
    // be checked.
    let down: Arc<dyn Chain> =
        Arc::new(cocoon_chain::TonHttp::new("http://127.0.0.1:9/api/v2", None).unwrap());
    let refused = prices_read(&quick(vec![api.clone(), down]), &ton.root)
        .await
        .unwrap_err();
    assert!(
        refused.contains("ton_api_agree[0] cannot be read"),
        "{refused}"
    );

    // A moment's difference: the honest chain sets the same prices a
    // moment later (an endpoint catching up), and the read is believed.
    let chain =
        AgreeingChain::new(vec![lying.clone(), api.clone()]).with_pause(Duration::from_millis(300));
    let catch_up = {
        let (ton, inflated) = (ton.clone(), inflated.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            ton.set_prices(&inflated).unwrap();
        })
    };
    assert_eq!(prices_read(&chain, &ton.root).await.unwrap(), inflated);
    catch_up.await.unwrap();
}
