//! A proxy contract's close against the embedded chain: the operator asks
//! (`RequestProxyClose`); the proxy serves no new request, charges every
//! client and, after the close delay, closes once its workers have claimed;
//! workers claim everything the moment they see the request, so an
//! operator who finishes the close itself takes nothing of theirs.

use std::sync::Arc;

use cocoon_chain::{
    proxy as proxy_msg, signed, Chain, Outgoing, ProxyState, StdAddr, WalletSender, TON,
};
use cocoon_protocol::ErrorKind;
use cocoon_proxy::{signer_of, Settlement};
use cocoon_ton_devnet::CLIENT_DEPOSIT;
use cocoon_worker::{Earnings, ProxyEarnings};

use crate::books::{sends, setup, setup_with, usage, Setup, CLIENT};

/// 20 TON of service recorded and charged, 18 of them owed to the devnet's
/// worker, whose earnings keep the proxy's voucher for them and claim only
/// above 100 TON: a worker that has not claimed yet.
async fn served(net: &Setup) -> (Settlement, Earnings, StdAddr, tempfile::TempDir) {
    let (mut settlement, contract) = net.registered().await;
    let chain = net.ton.chain.clone();
    settlement.clock = Arc::new(move || u64::from(chain.lock().unwrap().now));
    let (worker, _) = net.worker();
    settlement.books().record(
        &contract,
        &worker,
        &usage(0, 250_000_000),
        cocoon_protocol::BASE_PRICE_COEFFICIENT,
    );
    settlement.settle_once().await.unwrap();
    let voucher = settlement.voucher(&worker).unwrap();
    assert_eq!(voucher.amount_nano, 18 * TON);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("earnings.json");
    let kept = ProxyEarnings {
        contract: worker.to_string(),
        proxy_contract: net.ton.proxy_contract.to_string(),
        proxy_key: hex::encode(net.ton.proxy_key.0),
        owed_nano: voucher.amount_nano.to_string(),
        signature: hex::encode(&voucher.signature),
        paid_nano: "0".into(),
    };
    let book = std::collections::BTreeMap::from([("proxy".to_string(), kept)]);
    std::fs::write(&file, serde_json::to_string(&book).unwrap()).unwrap();
    let earnings = Earnings::new(
        Arc::new(net.ton.embedded()),
        net.ton.wallets.worker(),
        100 * TON,
        file,
    )
    .unwrap();
    // Below its threshold, the worker does not claim yet.
    earnings.fetch_and_claim(&[]).await;
    assert_eq!(earnings.paid_on_chain(&worker).await.unwrap(), 0);
    (settlement, earnings, worker, dir)
}

async fn proxy_state(net: &Setup) -> ProxyState {
    ProxyState::from_stack(
        &net.ton
            .embedded()
            .get(&net.ton.proxy_contract, "get_proxy_data", &[])
            .await
            .unwrap(),
    )
    .unwrap()
}

/// The operator's wallet asks to close the proxy contract.
async fn request_close(net: &Setup) {
    WalletSender::new(Arc::new(net.ton.embedded()), net.ton.wallets.proxy())
        .send(&[Outgoing {
            to: net.ton.proxy_contract.clone(),
            value: TON / 20,
            bounce: true,
            body: proxy_msg::request_close().unwrap(),
            init: None,
        }])
        .await
        .unwrap();
    assert_ne!(proxy_state(net).await.close_requested_at, 0);
}

/// Move the chain's clock past the proxy contract's close delay.
async fn pass_close_delay(net: &Setup) {
    let state = proxy_state(net).await;
    let mut chain = net.ton.chain.lock().unwrap();
    chain.now = state.close_requested_at + state.close_delay + 1;
}

/// The operator, holding the proxy's key, finishes the close the moment
/// the contract allows, without waiting for anybody. The worker saw the
/// close request in its next cycle and claimed all it was owed, far below
/// its usual threshold, so the operator's wallet gets only what is the
/// proxy's. Before workers watched for the close, the worker waited for
/// its threshold and its 18 TON went to the operator.
#[tokio::test]
async fn an_operator_closing_its_proxy_takes_nothing_its_workers_are_owed() {
    let net = setup(CLIENT_DEPOSIT);
    let (_settlement, earnings, worker, _dir) = served(&net).await;
    request_close(&net).await;
    earnings.fetch_and_claim(&[]).await;
    pass_close_delay(&net).await;
    let signature = signer_of(&net.identity)
        .sign_amount(signed::CLOSE, &net.ton.proxy_contract, 0)
        .unwrap();
    sends(
        &net,
        &net.ton.wallets.proxy().address,
        &net.ton.proxy_contract,
        TON / 20,
        proxy_msg::finish_close(&signature).unwrap(),
        None,
    );
    let chain = net.ton.embedded();
    assert!(!chain
        .account(&net.ton.proxy_contract)
        .await
        .unwrap()
        .is_active());
    assert_eq!(
        earnings.paid_on_chain(&worker).await.unwrap(),
        18 * TON,
        "the worker was paid everything it was owed before the close"
    );
}

/// The honest path, driven by the proxy node: after the request no new
/// request is served (a 503 that says why) and every client is charged
/// whatever the amount; the node does not close before the delay, nor
/// while a worker has not claimed; then it closes, and the contract's
/// balance goes to the operator's wallet. (The contract's close delay is
/// 0 here and the node's clock is held back instead: wallets sign their
/// transfers valid until a system time, which a chain clock moved ahead
/// would call expired.)
#[tokio::test]
async fn a_closing_proxy_serves_nobody_new_charges_everyone_and_closes_once_workers_are_paid() {
    let mut prices = cocoon_ton_devnet::default_prices();
    prices.proxy_close_delay = 0;
    let net = setup_with(CLIENT_DEPOSIT, prices);
    let (mut settlement, earnings, worker, _dir) = served(&net).await;
    // A node clock a day behind the chain's: the close is not due for it.
    let chain = net.ton.chain.clone();
    settlement.clock = Arc::new(move || u64::from(chain.lock().unwrap().now) - 86_400);
    // 0.001 TON more served: below the minimum charge until the close.
    settlement.min_charge = TON / 100;
    let contract = net.ton.client_contract.clone();
    settlement.books().record(
        &contract,
        &worker,
        &usage(0, 12_500),
        cocoon_protocol::BASE_PRICE_COEFFICIENT,
    );
    assert_eq!(settlement.settle_once().await.unwrap().charges, 0);
    request_close(&net).await;
    let round = settlement.settle_once().await.unwrap();
    assert_eq!(round.charges, 1, "the small charge is made at the close");
    assert!(!round.closed, "not before the close delay");
    assert!(settlement.closing().is_some());
    let header = cocoon_protocol::SealHeader {
        request_id: [0; 16],
        model: "m".into(),
        max_tokens: Some(10),
        sent_at_ms: 0,
    };
    let Err(refused) = settlement
        .reserve(&CLIENT, &header, 0, cocoon_protocol::BASE_PRICE_COEFFICIENT)
        .await
    else {
        panic!("a closing proxy served a new request");
    };
    assert_eq!(refused.kind, ErrorKind::NoWorker);
    assert!(refused.message.contains("closing"), "{}", refused.message);
    let chain = net.ton.chain.clone();
    settlement.clock = Arc::new(move || u64::from(chain.lock().unwrap().now));
    // The worker has not claimed (it has not run a cycle since the request).
    assert!(!settlement.settle_once().await.unwrap().closed);
    earnings.fetch_and_claim(&[]).await;
    let owed = settlement.voucher(&worker).unwrap().amount_nano;
    assert_eq!(earnings.paid_on_chain(&worker).await.unwrap(), 18 * TON);
    assert!(owed > 18 * TON, "the later 0.001 TON is owed too");
    // The worker fetches the newest voucher when connected; here it claims
    // the rest from a voucher it is handed.
    let operator = net.ton.wallets.proxy().address;
    let chain = net.ton.embedded();
    let before = chain.account(&operator).await.unwrap().balance;
    let unclaimed_round = settlement.settle_once().await.unwrap();
    assert!(
        !unclaimed_round.closed,
        "the worker's last 0.0009 TON is not claimed yet"
    );
    let signature: [u8; 64] = settlement
        .voucher(&worker)
        .unwrap()
        .signature
        .try_into()
        .unwrap();
    WalletSender::new(Arc::new(chain.clone()), net.ton.wallets.worker())
        .send(&[Outgoing {
            to: worker.clone(),
            value: TON / 10,
            bounce: true,
            body: cocoon_chain::worker::claim(owed, &signature).unwrap(),
            init: None,
        }])
        .await
        .unwrap();
    let round = settlement.settle_once().await.unwrap();
    assert!(round.closed);
    assert!(!chain
        .account(&net.ton.proxy_contract)
        .await
        .unwrap()
        .is_active());
    assert!(chain.account(&operator).await.unwrap().balance > before);
    assert_eq!(earnings.paid_on_chain(&worker).await.unwrap(), owed);
    assert!(settlement.settle_once().await.unwrap().closed);
}
