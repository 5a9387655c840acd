//! Chain reads are checked: with `ton_api_agree`, a node believes what the
//! chain says only when its own TON endpoint and other parties' answer
//! alike. The attacker is the TON HTTP API a node reads through (a
//! compromised provider, or one run by the party the read is about): here
//! it passes everything on to the devnet's chain but reports the root
//! contract's price per token ten times higher.

use cocoon_devnet::adversary::LyingTonApi;
use cocoon_devnet::kit::*;
use cocoon_protocol::ErrorKind;

/// A client node's billing reading through `ton_api` and `agree`.
fn billing(
    net: &cocoon_devnet::Devnet,
    ton_api: &str,
    agree: &[&str],
) -> Result<cocoon_client::Billing, cocoon_protocol::ConfigError> {
    let mut config = cocoon_client::BillingConfig::new(ton_api.into(), net.ton_root.clone());
    config.ton_api_agree = agree.iter().map(|a| a.to_string()).collect();
    config.contract = Some(net.ton.client_contract.to_string());
    let key = cocoon_protocol::tls::Identity::generate()
        .unwrap()
        .fingerprint();
    config.build(key)
}

/// The devnet proxy's settlement, connected again through `ton_api` and
/// `agree` (its own contract and key; a fresh wallet and books).
async fn settlement(
    net: &cocoon_devnet::Devnet,
    dir: &std::path::Path,
    ton_api: &str,
    agree: &[&str],
) -> Result<cocoon_proxy::Settlement, cocoon_protocol::ConfigError> {
    let words = dir.join("proxy.words");
    let mnemonic = cocoon_chain::mnemonic::Mnemonic::generate().unwrap();
    std::fs::write(&words, mnemonic.phrase().as_bytes()).unwrap();
    static OPENED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = OPENED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let books = dir.join(format!("books-{n}.redb"));
    let config: cocoon_proxy::SettlementConfig = toml::from_str(&format!(
        "ton_api = {ton_api:?}\nton_api_agree = {agree:?}\nwallet_mnemonic = {words:?}\nproxy_contract = \"{}\"\nroot = \"{}\"\nbooks = {books:?}\n",
        net.proxies[0].contract, net.ton_root,
    ))
    .unwrap();
    config.connect(&net.proxies[0].identity).await
}

#[tokio::test]
async fn a_node_reading_through_a_lying_ton_endpoint_believes_nothing_other_endpoints_deny() {
    let net = devnet_with(|o| o.settle_every = None).await;
    let liar = LyingTonApi::start(&net.ton_api_url, "get_prices", 10)
        .await
        .unwrap();
    // Another party's endpoint that answers honestly (a relay that
    // changes nothing, at another address).
    let other = LyingTonApi::start(&net.ton_api_url, "get_prices", 1)
        .await
        .unwrap();
    let honest = cocoon_chain::pricing::default_prices().price_per_token;
    let dir = tempfile::tempdir().unwrap();

    // Alone, the lying endpoint is believed: a client node would accept
    // charges at ten times the price, a proxy would bill them.
    let fooled = billing(&net, &liar.url, &[])
        .unwrap()
        .prices()
        .await
        .unwrap();
    assert_eq!(fooled.price_per_token, honest * 10);
    let fooled = settlement(&net, dir.path(), &liar.url, &[]).await.unwrap();
    assert_eq!(fooled.books().prices().price_per_token, honest * 10);

    // Honest endpoints agree: the prices as set.
    let agreed = billing(&net, &net.ton_api_url, &[&other.url]).unwrap();
    assert_eq!(agreed.prices().await.unwrap().price_per_token, honest);
    let agreed = settlement(&net, dir.path(), &net.ton_api_url, &[&other.url])
        .await
        .unwrap();
    assert_eq!(agreed.books().prices().price_per_token, honest);

    // The liar beside an honest endpoint, either way round: nothing is
    // believed. The client node cannot price a request (503), the proxy
    // does not start, each naming the disagreement.
    for (api, agree) in [
        (liar.url.as_str(), other.url.as_str()),
        (net.ton_api_url.as_str(), liar.url.as_str()),
    ] {
        let refused = billing(&net, api, &[agree])
            .unwrap()
            .prices()
            .await
            .unwrap_err();
        assert_eq!(refused.kind, ErrorKind::ChainUnavailable, "{refused:?}");
        assert!(
            refused.message.contains("disagree on get_prices"),
            "{}",
            refused.message
        );
        let Err(refused) = settlement(&net, dir.path(), api, &[agree]).await else {
            panic!("a proxy started on prices its endpoints disagree on");
        };
        assert!(
            refused.to_string().contains("disagree on get_prices"),
            "{refused}"
        );
    }

    // An endpoint named twice is no second opinion: refused, naming the key.
    let refused = billing(&net, &net.ton_api_url, &[&net.ton_api_url])
        .err()
        .unwrap();
    assert_eq!(refused.field, "billing.ton_api_agree[0]", "{refused}");
    net.shutdown().await;
}
