//! The proxy's settlement against a real chain (the embedded TON devnet,
//! tycho TVM) with its books in a real redb file: client contracts checked at
//! registration, charges capped at what a contract holds, nothing charged
//! twice across a restart, vouchers only for what was served, and the books'
//! hash committed.

use std::sync::Arc;

use cocoon_chain::{Chain, ClientState, ProxyState, StdAddr};
use cocoon_protocol::tls::{Fingerprint, Identity};
use cocoon_protocol::{ErrorKind, Usage};
use cocoon_proxy::{signer_of, Books, Settlement};
use cocoon_ton_devnet::{default_prices, TonDevnet, CLIENT_DEPOSIT};

pub(crate) struct Setup {
    pub(crate) ton: TonDevnet,
    pub(crate) identity: Arc<Identity>,
    dir: tempfile::TempDir,
}

/// The devnet's chain with the client's `deposit` (all staked; the
/// network's minimum stake lowered to it when it is smaller).
pub(crate) fn setup(deposit: u128) -> Setup {
    setup_with(deposit, default_prices())
}

/// [`setup`] with the network's `prices` and parameters.
pub(crate) fn setup_with(deposit: u128, mut prices: cocoon_chain::Prices) -> Setup {
    let identity = Arc::new(Identity::generate().unwrap());
    prices.min_client_stake = prices.min_client_stake.min(deposit);
    let ton = TonDevnet::start(
        &prices,
        deposit,
        signer_of(&identity).public_key().0,
        CLIENT.0,
    )
    .unwrap();
    Setup {
        ton,
        identity,
        dir: tempfile::tempdir().unwrap(),
    }
}

impl Setup {
    pub(crate) async fn settlement(&self) -> Settlement {
        let path = self.dir.path().join("books.redb");
        let mut settlement = Settlement::connect(
            Arc::new(self.ton.embedded()),
            self.ton.wallets.proxy(),
            signer_of(&self.identity),
            self.ton.proxy_contract.clone(),
            self.ton.root.clone(),
            move |prices| Books::open(&path, prices),
        )
        .await
        .unwrap();
        // Every amount, so each test sees its charges at once.
        settlement.min_charge = 0;
        settlement
    }

    /// The client's contract with 9 TON more than [`setup`]'s 1 TON, not
    /// staked (10 TON held, 1 staked), registered with a fresh settlement.
    async fn ten_ton_one_staked(&self) -> (StdAddr, Settlement) {
        let contract = self.ton.client_contract.clone();
        owner_sends(
            self,
            &contract,
            9 * cocoon_chain::TON + cocoon_chain::client::GAS_RESERVE,
            cocoon_chain::client::top_up().unwrap(),
        );
        assert_eq!(self.client().await.balance, 10 * cocoon_chain::TON);
        let (settlement, contract) = self.registered().await;
        (contract, settlement)
    }

    /// A fresh settlement with the client's contract registered.
    pub(crate) async fn registered(&self) -> (Settlement, StdAddr) {
        let settlement = self.settlement().await;
        let contract = self.ton.client_contract.clone();
        settlement
            .open_account(CLIENT, Some(contract.to_string()))
            .await
            .unwrap();
        (settlement, contract)
    }

    /// The devnet worker's contract with this proxy, and its initial data.
    pub(crate) fn worker(&self) -> (StdAddr, cocoon_chain::Cell) {
        cocoon_chain::worker_contract(
            &self.ton.proxy_contract,
            &self.ton.wallets.worker().address,
            &self.ton.proxy_key,
        )
        .unwrap()
    }

    async fn client(&self) -> ClientState {
        ClientState::from_stack(
            &self
                .ton
                .embedded()
                .get(&self.ton.client_contract, "get_client_data", &[])
                .await
                .unwrap(),
        )
        .unwrap()
    }
}

pub(crate) const CLIENT: Fingerprint = Fingerprint([9; 32]);

/// Serves requests like `header` (`request_bytes` sealed), each billed
/// `used` at the base price, for as long as the proxy holds credit for the
/// next one (at most `limit`): how many it served.
async fn serve_on_credit(
    settlement: &Settlement,
    header: &cocoon_protocol::SealHeader,
    request_bytes: u64,
    used: &Usage,
    limit: usize,
) -> usize {
    let coefficient = cocoon_protocol::BASE_PRICE_COEFFICIENT;
    let worker = StdAddr::new(0, cocoon_chain::HashBytes([4; 32]));
    let payer = settlement.payer(&CLIENT).unwrap();
    for served in 0..limit {
        let Ok(held) = settlement
            .reserve(&CLIENT, header, request_bytes, coefficient)
            .await
        else {
            return served;
        };
        settlement
            .books()
            .record(&payer, &worker, used, coefficient);
        drop(held);
    }
    limit
}

pub(crate) fn usage(prompt: u64, completion: u64) -> Usage {
    Usage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        ..Usage::default()
    }
}

#[tokio::test]
async fn charges_survive_a_restart_and_are_never_made_twice() {
    let net = setup(CLIENT_DEPOSIT);
    let worker = StdAddr::new(0, cocoon_chain::HashBytes([4; 32]));
    let charged = {
        let settlement = net.settlement().await;
        let terms = settlement
            .open_account(CLIENT, Some(net.ton.client_contract.to_string()))
            .await
            .unwrap();
        assert_eq!(terms.proxy_contract, net.ton.proxy_contract.to_string());
        let payer = settlement.payer(&CLIENT).unwrap();
        assert_eq!(payer, net.ton.client_contract);
        let books = settlement.books();
        let mut total = 0;
        for (p, c) in [(100, 10), (7, 3), (1, 1)] {
            total += books.record(&payer, &worker, &usage(p, c), 1000).total;
        }
        let round = settlement.settle_once().await.unwrap();
        assert_eq!(round.charges, 1);
        assert!(round.committed);
        assert_eq!(
            round.transfers, 1,
            "one charge and the commit in one transfer"
        );
        assert_eq!(net.client().await.charged, total);
        // Nothing new: nothing sent.
        assert_eq!(settlement.settle_once().await.unwrap().transfers, 0);
        // One more request, then the proxy "crashes" before settling it.
        total += books.record(&payer, &worker, &usage(5, 5), 1500).total;
        total
    };
    // Restarted from the same database: the unsettled request is charged,
    // the settled ones are not charged again.
    let settlement = net.settlement().await;
    assert_eq!(
        settlement.books().client(&net.ton.client_contract).total,
        charged
    );
    let round = settlement.settle_once().await.unwrap();
    assert_eq!(round.charges, 1);
    assert_eq!(net.client().await.charged, charged);
    assert_eq!(settlement.settle_once().await.unwrap().transfers, 0);
    let proxy = ProxyState::from_stack(
        &net.ton
            .embedded()
            .get(&net.ton.proxy_contract, "get_proxy_data", &[])
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(proxy.received, charged);
    assert_eq!(proxy.books_seqno, 2);
    assert_eq!(proxy.books_hash, settlement.books().hash());
    // The worker's voucher is its share of all four requests.
    let voucher = settlement.voucher(&worker).unwrap();
    assert_eq!(
        voucher.amount_nano,
        settlement.books().worker(&worker).total
    );
    assert!(cocoon_chain::verify_amount(
        &signer_of(&net.identity).public_key().0,
        cocoon_chain::signed::OWED,
        &worker,
        voucher.amount_nano,
        &voucher.signature
    ));
}

#[tokio::test]
async fn a_client_is_not_served_beyond_its_balance_and_never_charged_beyond_it() {
    // 1,000 nano-TON: a request of 100 prompt tokens costs 2,000.
    let net = setup(1_000);
    let settlement = net.settlement().await;
    settlement
        .open_account(CLIENT, Some(net.ton.client_contract.to_string()))
        .await
        .unwrap();
    let payer = settlement.payer(&CLIENT).unwrap();
    let worker = StdAddr::new(0, cocoon_chain::HashBytes([4; 32]));
    settlement
        .books()
        .record(&payer, &worker, &usage(100, 0), 1000);
    let refused = settlement.payer(&CLIENT).unwrap_err();
    assert_eq!(refused.kind, ErrorKind::PaymentRequired);
    assert!(refused.message.contains("top it up"), "{}", refused.message);
    // The charge is capped at what the contract holds.
    settlement.settle_once().await.unwrap();
    let client = net.client().await;
    assert_eq!(client.charged, 1_000);
    assert_eq!(client.balance, 0);
}

#[tokio::test]
async fn registration_checks_the_contract_on_chain() {
    let net = setup(CLIENT_DEPOSIT);
    let settlement = net.settlement().await;
    // Not a contract at all.
    let nowhere = StdAddr::new(0, cocoon_chain::HashBytes([1; 32])).to_string();
    let err = settlement
        .open_account(CLIENT, Some(nowhere))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::PaymentRequired);
    assert!(err.message.contains("cannot be read"), "{}", err.message);
    // Not an address.
    let err = settlement
        .open_account(CLIENT, Some("0:zz".into()))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidRequest);
    assert!(err.message.contains("contract"), "{}", err.message);
    // A contract of another proxy (the root contract is no client contract either).
    let err = settlement
        .open_account(CLIENT, Some(net.ton.root.to_string()))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::PaymentRequired, "{}", err.message);
    // Without registering, a client is not served.
    assert_eq!(
        settlement.payer(&CLIENT).unwrap_err().kind,
        ErrorKind::PaymentRequired
    );
}

/// Another admitted client node (its own TLS key, `ATTACKER`) registers the
/// victim's contract (addresses are public): it is refused, so it can
/// neither spend the victim's deposit nor close the victim's channel, and
/// the victim still registers. Before client contracts named their node's
/// key, the proxy accepted it and served the attacker on the victim's money.
#[tokio::test]
async fn an_admitted_client_cannot_register_or_close_another_clients_contract() {
    const ATTACKER: Fingerprint = Fingerprint([66; 32]);
    let net = setup(CLIENT_DEPOSIT);
    let settlement = net.settlement().await;
    let victim = net.ton.client_contract.to_string();
    let err = settlement
        .open_account(ATTACKER, Some(victim.clone()))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::PaymentRequired);
    assert!(
        err.message.contains("names another client node's key"),
        "{}",
        err.message
    );
    assert_eq!(
        settlement.payer(&ATTACKER).unwrap_err().kind,
        ErrorKind::PaymentRequired
    );
    let err = settlement.close_account(&ATTACKER).await.unwrap_err();
    assert!(
        err.message.contains("registered no client contract"),
        "{}",
        err.message
    );
    // The owner's node is served on it.
    settlement.open_account(CLIENT, Some(victim)).await.unwrap();
    assert_eq!(settlement.payer(&CLIENT).unwrap(), net.ton.client_contract);
}

/// A client deploys the genuine client contract code with forged initial
/// state (a 1,000 TON balance it never deposited, naming its own key and
/// this proxy): its getter reports the forged balance, but the address is
/// not the one its terms give, so the proxy refuses it and serves nothing
/// on it.
#[tokio::test]
async fn a_contract_with_forged_state_is_not_accepted() {
    use cocoon_chain::{ClientTerms, Contract};
    let net = setup(CLIENT_DEPOSIT);
    let settlement = net.settlement().await;
    let terms = ClientTerms {
        proxy: net.ton.proxy_contract.clone(),
        owner: net.ton.wallets.client().address,
        proxy_key: net.ton.proxy_key,
        close_delay: default_prices().client_close_delay,
        nonce: 7,
        client_key: cocoon_chain::HashBytes(CLIENT.0),
    };
    let forged = terms
        .data_with(&ClientState {
            balance: 1_000 * cocoon_chain::TON,
            stake: 0,
            charged: 0,
            close_requested_at: 0,
        })
        .unwrap();
    let code = Contract::Client.code();
    let fake = cocoon_chain::contract_address(&code, &forged).unwrap();
    sends(
        &net,
        &net.ton.wallets.client().address,
        &fake,
        cocoon_chain::TON,
        cocoon_chain::client::top_up().unwrap(),
        Some((code, forged)),
    );
    let reported = ClientState::from_stack(
        &net.ton
            .embedded()
            .get(&fake, "get_client_data", &[])
            .await
            .unwrap(),
    )
    .unwrap();
    assert!(reported.balance > 1_000 * cocoon_chain::TON);
    let err = settlement
        .open_account(CLIENT, Some(fake.to_string()))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::PaymentRequired);
    assert!(
        err.message.contains("not a genuine client contract"),
        "{}",
        err.message
    );
    assert!(settlement.payer(&CLIENT).is_err());
    // The genuine address for the same terms is another one.
    assert_ne!(terms.address().unwrap(), fake);
}

#[tokio::test]
async fn a_proxy_refuses_to_settle_with_a_contract_that_is_not_its_own() {
    let net = setup(CLIENT_DEPOSIT);
    let stranger = Arc::new(Identity::generate().unwrap());
    let err = Settlement::connect(
        Arc::new(net.ton.embedded()),
        net.ton.wallets.proxy(),
        signer_of(&stranger),
        net.ton.proxy_contract.clone(),
        net.ton.root.clone(),
        |prices| Ok(Books::new(prices)),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, cocoon_proxy::SettlementError::Contract { field, .. } if *field == "settlement.proxy_contract"),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("not this proxy's identity key"),
        "{err}"
    );
}

/// Send `body` (deploying `init` with it) with `value` from the address
/// `from` to `to` straight into the embedded chain, as an internal message
/// (a party acting by itself, no wallet transfer); it must succeed.
pub(crate) fn sends(
    net: &Setup,
    from: &StdAddr,
    to: &StdAddr,
    value: u128,
    body: cocoon_chain::Cell,
    init: Option<(cocoon_chain::Cell, cocoon_chain::Cell)>,
) {
    let reports = net
        .ton
        .chain
        .lock()
        .unwrap()
        .send(from, to, value, body, init)
        .unwrap();
    assert!(reports[0].success, "{reports:?}");
}

/// Send `body` with `value` from the client's wallet address to its contract
/// (the owner acting by itself).
pub(crate) fn owner_sends(net: &Setup, to: &StdAddr, value: u128, body: cocoon_chain::Cell) {
    sends(
        net,
        &net.ton.wallets.client().address,
        to,
        value,
        body,
        None,
    );
}

/// The owner withdraws everything above the stake right after being served,
/// before the proxy charges. The proxy extended credit only up to the stake
/// (which the owner cannot withdraw while the channel is open), so the next
/// settlement charges everything served. Before credit was capped by the
/// stake, the proxy served on the whole balance (here 10 TON, 1 staked) and
/// lost what the owner took back.
#[tokio::test]
async fn a_client_that_withdraws_between_settlements_still_pays_for_what_it_was_served() {
    use cocoon_chain::{client, TON};
    let net = setup(TON);
    let (contract, settlement) = net.ten_ton_one_staked().await;
    // Requests of 5,000,000 completion tokens: 0.4 TON each at the base price.
    let header = cocoon_protocol::SealHeader {
        request_id: [0; 16],
        model: "m".into(),
        max_tokens: Some(5_000_000),
        sent_at_ms: 0,
    };
    let served = serve_on_credit(&settlement, &header, 0, &usage(0, 5_000_000), 30).await;
    assert_eq!(served, 2, "served on credit only up to the 1 TON stake");
    // The owner takes back everything it can.
    owner_sends(
        &net,
        &contract,
        TON / 20,
        client::withdraw(9 * TON).unwrap(),
    );
    assert_eq!(net.client().await.balance, TON);
    settlement.settle_once().await.unwrap();
    let owed = settlement.books().client(&contract).total;
    assert_eq!(owed, 8 * TON / 10);
    assert_eq!(
        net.client().await.charged,
        owed,
        "everything served was charged"
    );
}

/// A contract the proxy would extend no credit on, or whose stake the
/// owner could take back before the proxy charges it, is refused at
/// registration: one staking less than the network's minimum, one whose
/// close delay is shorter than the network's.
#[tokio::test]
async fn registration_refuses_too_little_stake_or_too_short_a_close_delay() {
    use cocoon_chain::{client, ClientTerms, TON};
    let net = setup(CLIENT_DEPOSIT);
    let settlement = net.settlement().await;
    let prices = default_prices();
    let deploy = |nonce: u64, close_delay: u32, stake: u128| {
        let terms = ClientTerms {
            proxy: net.ton.proxy_contract.clone(),
            owner: net.ton.wallets.client().address,
            proxy_key: net.ton.proxy_key,
            close_delay,
            nonce,
            client_key: cocoon_chain::HashBytes(CLIENT.0),
        };
        let address = terms.address().unwrap();
        let owner = net.ton.wallets.client().address;
        let mut chain = net.ton.chain.lock().unwrap();
        let init = Some((
            cocoon_chain::Contract::Client.code(),
            terms.initial_data().unwrap(),
        ));
        let r = chain
            .send(&owner, &address, 10 * TON, client::top_up().unwrap(), init)
            .unwrap();
        assert!(r[0].success, "{r:?}");
        if stake > 0 {
            let r = chain
                .send(
                    &owner,
                    &address,
                    TON / 20,
                    client::increase_stake(stake).unwrap(),
                    None,
                )
                .unwrap();
            assert!(r[0].success, "{r:?}");
        }
        address.to_string()
    };
    let unstaked = deploy(11, prices.client_close_delay, prices.min_client_stake - 1);
    let err = settlement
        .open_account(CLIENT, Some(unstaked))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::PaymentRequired);
    assert!(
        err.message.contains("minimum client stake"),
        "{}",
        err.message
    );
    let hasty = deploy(12, 1, prices.min_client_stake);
    let err = settlement
        .open_account(CLIENT, Some(hasty))
        .await
        .unwrap_err();
    assert!(err.message.contains("close delay"), "{}", err.message);
    let fine = deploy(13, prices.client_close_delay, prices.min_client_stake);
    settlement.open_account(CLIENT, Some(fine)).await.unwrap();
}

/// A charge costs fees, so one below the proxy's minimum waits for a later
/// round; it is made at once when the owner asks to close (the stake is
/// chargeable only until the close delay ends). A round whose charges all
/// wait does not commit the books either (that costs fees too) until the
/// last commit is [`Settlement::commit_idle`] old; before, every such round
/// paid for a commit.
#[tokio::test]
async fn small_charges_wait_for_a_later_round_unless_the_contract_is_closing() {
    use cocoon_chain::{client, TON};
    let net = setup(CLIENT_DEPOSIT);
    let (mut settlement, contract) = net.registered().await;
    settlement.min_charge = TON / 100;
    let worker = StdAddr::new(0, cocoon_chain::HashBytes([4; 32]));
    let coefficient = cocoon_protocol::BASE_PRICE_COEFFICIENT;
    // 12,500 completion tokens: 0.001 TON.
    let small = usage(0, 12_500);
    settlement
        .books()
        .record(&contract, &worker, &small, coefficient);
    let round = settlement.settle_once().await.unwrap();
    assert_eq!(round.charges, 0, "0.001 TON waits");
    assert_eq!(net.client().await.charged, 0);
    for _ in 0..9 {
        settlement
            .books()
            .record(&contract, &worker, &small, coefficient);
    }
    assert_eq!(settlement.settle_once().await.unwrap().charges, 1);
    assert_eq!(net.client().await.charged, TON / 100);
    settlement
        .books()
        .record(&contract, &worker, &small, coefficient);
    let round = settlement.settle_once().await.unwrap();
    assert_eq!(round.charges, 0);
    assert!(!round.committed, "a commit just after the last one");
    settlement.commit_idle = std::time::Duration::ZERO;
    let round = settlement.settle_once().await.unwrap();
    assert!(round.committed, "the moved books are committed once idle");
    owner_sends(&net, &contract, TON / 20, client::request_close().unwrap());
    assert_eq!(settlement.settle_once().await.unwrap().charges, 1);
    assert_eq!(net.client().await.charged, TON / 100 + TON / 1000);
}

/// The proxy's earnings are paid to its wallet, but never what its workers
/// are owed and have not claimed, nor its stake: the worker claims all of
/// its voucher afterwards, and the stake is whole.
#[tokio::test]
async fn the_proxys_earnings_are_paid_out_but_never_what_workers_are_owed() {
    use cocoon_chain::{worker as worker_msg, Outgoing, WalletSender, TON};
    let net = setup(CLIENT_DEPOSIT);
    let (mut settlement, contract) = net.registered().await;
    settlement.pay_out_above = Some(TON / 2);
    let (worker, worker_data) = net.worker();
    let worker_wallet = net.ton.wallets.worker();
    // 20 TON of service, 18 of them the worker's.
    let charge = settlement.books().record(
        &contract,
        &worker,
        &usage(0, 250_000_000),
        cocoon_protocol::BASE_PRICE_COEFFICIENT,
    );
    assert_eq!(charge.total, 20 * TON);
    let chain = net.ton.embedded();
    let proxy_wallet = net.ton.wallets.proxy().address;
    let wallet_before = chain.account(&proxy_wallet).await.unwrap().balance;
    let round = settlement.settle_once().await.unwrap();
    assert_eq!(net.client().await.charged, 20 * TON);
    // About the 2 TON commission (plus leftover gas, less the reserve).
    assert!(
        round.paid_out > 19 * TON / 10 && round.paid_out < 21 * TON / 10,
        "{}",
        round.paid_out
    );
    assert!(chain.account(&proxy_wallet).await.unwrap().balance > wallet_before + 18 * TON / 10);
    let proxy = ProxyState::from_stack(
        &chain
            .get(&net.ton.proxy_contract, "get_proxy_data", &[])
            .await
            .unwrap(),
    )
    .unwrap();
    let held = chain
        .account(&net.ton.proxy_contract)
        .await
        .unwrap()
        .balance;
    assert!(
        held >= proxy.stake + 18 * TON,
        "the proxy contract keeps its stake ({}) and the worker's 18 TON: it holds {held}",
        proxy.stake
    );
    // Nothing more to pay out.
    assert_eq!(settlement.settle_once().await.unwrap().paid_out, 0);
    // The worker claims everything it is owed.
    let voucher = settlement.voucher(&worker).unwrap();
    let signature: [u8; 64] = voucher.signature.clone().try_into().unwrap();
    let sender = WalletSender::new(Arc::new(chain.clone()), worker_wallet);
    sender
        .send(&[Outgoing {
            to: worker.clone(),
            value: TON / 10,
            bounce: false,
            body: worker_msg::claim(voucher.amount_nano, &signature).unwrap(),
            init: Some((cocoon_chain::Contract::Worker.code(), worker_data)),
        }])
        .await
        .unwrap();
    let after = ProxyState::from_stack(
        &chain
            .get(&net.ton.proxy_contract, "get_proxy_data", &[])
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(after.workers_paid, 18 * TON);
    assert_eq!(after.stake, proxy.stake, "the stake is whole");
}

/// A request holds its prompt's worst cost too (the most prompt tokens a
/// receipt may claim for its sealed size), not only its completion budget:
/// a client whose answers all claim that much prompt, and who then
/// withdraws everything above its stake, still pays for all of it. Before,
/// only the completion budget was held, the unsettled spending ran past the
/// stake by the prompts, and the withdrawal left them unpaid (the money-path
/// simulation found it, seed 4).
#[tokio::test]
async fn a_requests_prompt_counts_in_the_credit_it_holds() {
    use cocoon_chain::{client, TON};
    let net = setup(TON);
    let (contract, settlement) = net.ten_ton_one_staked().await;
    // A 1 MB sealed request: up to 2,001,024 prompt tokens, 0.04 TON.
    let request_bytes = 1_000_000;
    let prompt = cocoon_protocol::receipt::prompt_token_bound(request_bytes);
    let header = cocoon_protocol::SealHeader {
        request_id: [0; 16],
        model: "m".into(),
        max_tokens: Some(1),
        sent_at_ms: 0,
    };
    serve_on_credit(&settlement, &header, request_bytes, &usage(prompt, 1), 100).await;
    let owed = settlement.books().client(&contract).total;
    assert!(owed <= TON, "served {owed} nano-TON on a 1 TON stake");
    owner_sends(
        &net,
        &contract,
        TON / 20,
        client::withdraw(9 * TON).unwrap(),
    );
    settlement.settle_once().await.unwrap();
    assert_eq!(net.client().await.charged, owed, "every prompt paid for");
}

/// A proxy restored from an old copy of its books, made after its last
/// commit on chain (so the chain cannot tell), meets a worker that kept a
/// later voucher of the proxy's own signature: it stops serving clients and
/// says why. A voucher the proxy did not sign (a worker lying to stop it)
/// changes nothing.
#[tokio::test]
async fn a_proxy_whose_books_are_behind_a_workers_voucher_stops_serving() {
    let net = setup(CLIENT_DEPOSIT);
    let (settlement, contract) = net.registered().await;
    let worker = StdAddr::new(0, cocoon_chain::HashBytes([4; 32]));
    settlement.books().record(
        &contract,
        &worker,
        &usage(100, 100),
        cocoon_protocol::BASE_PRICE_COEFFICIENT,
    );
    let kept = settlement.voucher(&worker).unwrap();
    assert!(kept.amount_nano > 0);
    // The books reach the voucher: nothing happens.
    assert!(!settlement.check_vouched(&worker, &kept));
    assert!(settlement.payer(&CLIENT).is_ok());

    // The same proxy started from an old copy of its books (here: from
    // before that request), with no commit on chain since.
    let old_dir = tempfile::tempdir().unwrap();
    let old_path = old_dir.path().join("books.redb");
    let old = Settlement::connect(
        Arc::new(net.ton.embedded()),
        net.ton.wallets.proxy(),
        signer_of(&net.identity),
        net.ton.proxy_contract.clone(),
        net.ton.root.clone(),
        move |prices| Books::open(&old_path, prices),
    )
    .await
    .unwrap();
    old.open_account(CLIENT, Some(contract.to_string()))
        .await
        .unwrap();
    // A worker lying with a voucher of another key: ignored.
    let liar = cocoon_chain::ProxySigner::from_seed(&[7; 32]).unwrap();
    let forged = cocoon_protocol::Voucher {
        contract: worker.to_string(),
        amount_nano: kept.amount_nano * 10,
        signature: liar
            .sign_amount(cocoon_chain::signed::OWED, &worker, kept.amount_nano * 10)
            .unwrap()
            .to_vec(),
    };
    assert!(!old.check_vouched(&worker, &forged));
    assert!(old.payer(&CLIENT).is_ok());
    // The worker's real kept voucher: the books are behind, clients refused.
    assert!(old.check_vouched(&worker, &kept));
    let refused = old.payer(&CLIENT).unwrap_err();
    assert!(
        refused
            .message
            .contains("books are behind what this proxy signed"),
        "{}",
        refused.message
    );
    assert!(old.behind().is_some());
}
