//! Money through a whole devnet, settled by the roles themselves over TON's
//! HTTP API: the client node registers its contract with the proxy, the proxy
//! prices the workers' verified receipts into its books, charges the client's
//! contract and commits its books' hash, the worker claims the proxy's signed
//! voucher, and the client withdraws and closes its channel. Every amount on
//! chain is checked against the books to the nano-TON.

use cocoon_chain::pricing::TokenCounts;
use cocoon_chain::{
    client as client_msg, worker as worker_msg, Chain, ClientState, Outgoing, ProxyState,
    WalletSender,
};
use cocoon_devnet::kit::*;
use futures::StreamExt;
use serde_json::{json, Value};
use std::sync::Arc;

const TON: u128 = 1_000_000_000;

/// What the answer's usage costs at the devnet's prices: (total, worker's share).
fn priced(usage: &Value) -> (u128, u128) {
    let charge = cocoon_chain::pricing::default_prices().charge(TokenCounts {
        prompt: usage["prompt_tokens"].as_u64().unwrap(),
        cached_prompt: usage["prompt_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap_or(0),
        completion: usage["completion_tokens"].as_u64().unwrap(),
        reasoning: usage["completion_tokens_details"]["reasoning_tokens"]
            .as_u64()
            .unwrap_or(0),
    });
    (charge.total, charge.worker)
}

async fn proxy_state(net: &cocoon_devnet::Devnet) -> ProxyState {
    let chain = net.ton.embedded();
    ProxyState::from_stack(
        &chain
            .get(&net.ton.proxy_contract, "get_proxy_data", &[])
            .await
            .unwrap(),
    )
    .unwrap()
}

async fn client_state(net: &cocoon_devnet::Devnet) -> ClientState {
    let chain = net.ton.embedded();
    ClientState::from_stack(
        &chain
            .get(&net.ton.client_contract, "get_client_data", &[])
            .await
            .unwrap(),
    )
    .unwrap()
}

/// A devnet settled by hand that keeps its state in `dir/state`.
async fn with_state(
    dir: &std::path::Path,
    configure: impl FnOnce(&mut cocoon_devnet::DevnetOptions),
) -> cocoon_devnet::Devnet {
    let state = dir.join("state");
    devnet_with(move |o| {
        o.settle_every = None;
        o.state_dir = Some(state);
        configure(o);
    })
    .await
}

/// The usage chunk of a streamed answer.
fn streamed_usage(events: &[String]) -> Value {
    events
        .iter()
        .filter(|e| e.as_str() != "[DONE]")
        .map(|e| serde_json::from_str::<Value>(e).unwrap())
        .find(|v| v["usage"].is_object())
        .map(|v| v["usage"].clone())
        .expect("a usage chunk")
}

#[tokio::test]
async fn served_tokens_are_charged_on_chain_exactly_once() {
    let net = devnet_with(|o| o.settle_every = None).await;
    let url = format!("{}/chat/completions", net.api_url);
    let (mut expected, mut worker_share) = (0u128, 0u128);
    for text in ["one two three", "four five", "six seven eight nine ten"] {
        let (status, body) = post(&url, &chat_body(text, json!({"max_tokens": 8}))).await;
        assert_eq!(status, 200, "{body}");
        let (total, worker) = priced(&body["usage"]);
        expected += total;
        worker_share += worker;
    }
    // A streamed answer is billed the same way.
    let events = post_stream(
        &url,
        &chat_body(
            "eleven twelve",
            json!({"stream": true, "stream_options": {"include_usage": true}}),
        ),
    )
    .await;
    let (total, worker) = priced(&streamed_usage(&events));
    expected += total;
    worker_share += worker;
    assert!(expected > 0);

    let settled = net.settle_now().await.unwrap();
    assert_eq!(settled.charged, expected, "charged = the priced receipts");
    assert_eq!(settled.claimed, worker_share);
    assert_eq!(settled.books_seqno, 1);
    let transfers = net.settlement().totals().transfers;
    // Settling again with nothing new moves nothing and sends nothing.
    assert_eq!(net.settle_now().await.unwrap(), settled);
    assert_eq!(net.settlement().totals().transfers, transfers);

    let client = client_state(&net).await;
    assert_eq!(client.charged, expected);
    assert_eq!(client.balance, cocoon_ton_devnet::CLIENT_DEPOSIT - expected);
    let proxy = proxy_state(&net).await;
    assert_eq!(proxy.received, expected);
    assert_eq!(proxy.workers_paid, worker_share);
    // The books' hash on chain is the books'.
    assert_eq!(proxy.books_hash, net.proxy().books.as_ref().unwrap().hash());
    // Books and chain agree account by account.
    let books = net.proxy().books.as_ref().unwrap();
    assert_eq!(books.client(&net.ton.client_contract).total, expected);
    assert_eq!(books.worker(&net.ton.worker_contract).total, worker_share);
    // The client node kept every receipt it paid for: each verifies with
    // its worker's key, and together they are what the chain charged.
    let journal =
        cocoon_client::ReceiptJournal::read(&net.state_dir().join("receipts.jsonl")).unwrap();
    assert_eq!(journal.len(), 4);
    let mut paid = 0u128;
    for entry in &journal {
        entry.verify().unwrap();
        assert_eq!(entry.receipt.worker, net.worker().fingerprint());
        paid += entry.cost().unwrap();
    }
    assert_eq!(paid, settled.charged);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cocoon"))
        .arg("receipts")
        .arg(net.state_dir().join("receipts.jsonl"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("4 receipts, 4 verified, 0 refused"), "{text}");
    assert!(text.contains(&format!("{paid} nano-TON")), "{text}");
    // The worker's earnings file says the same.
    let kept = net.earnings.book();
    let earned = kept.values().next().unwrap();
    assert_eq!(earned.owed(), worker_share);
    assert_eq!(earned.pending(), 0);
    net.shutdown().await;
}

#[tokio::test]
async fn the_client_node_shows_its_balance_and_refuses_what_it_cannot_pay_for() {
    // 100,000 nano-TON deposited. A short request may claim up to 2,080
    // prompt tokens (two per byte of its 528-byte sealed size, plus the
    // template's 1,024): 41,600 nano-TON at the 20 nano-TON base price. With
    // 8 completion tokens (640 nano-TON at 4x) it fits; with 1000 (80,000)
    // it does not.
    let net = devnet_with(|o| {
        o.settle_every = None;
        o.client_deposit = 100_000;
        o.prices.min_client_stake = 100_000;
        o.chain_fresh = FRESH_IN_TESTS;
    })
    .await;
    let balance = get_json(&format!("{}/cocoon/balance", net.api_url)).await;
    assert_eq!(balance["balance_nano"], "100000", "{balance}");
    assert_eq!(balance["charged_nano"], "0");
    assert_eq!(balance["contract"], net.ton.client_contract.to_string());

    let url = format!("{}/chat/completions", net.api_url);
    let (status, body) = post(&url, &chat_body("hi there", json!({"max_tokens": 1000}))).await;
    assert_eq!(status, 402, "{body}");
    assert_error(&body, "stake at least");
    assert_eq!(body["error"]["code"], "insufficient_balance");

    // The worst case counts every answer asked for: 8 tokens, 100 times
    // (64,000 nano-TON beside the prompt's 41,600).
    let (status, body) = post(
        &url,
        &chat_body("hi there", json!({"max_tokens": 8, "n": 100})),
    )
    .await;
    assert_eq!(status, 402, "{body}");
    assert_error(&body, "stake at least");

    let (status, body) = post(&url, &chat_body("hi there", json!({"max_tokens": 8}))).await;
    assert_eq!(status, 200, "{body}");
    // What was served counts against the balance before the proxy charges it.
    past_fresh().await;
    let balance = get_json(&format!("{}/cocoon/balance", net.api_url)).await;
    let unsettled: u128 = balance["unsettled_nano"].as_str().unwrap().parse().unwrap();
    assert!(unsettled > 0, "{balance}");
    let settled = net.settle_now().await.unwrap();
    assert_eq!(settled.charged, unsettled);
    past_fresh().await;
    let balance = get_json(&format!("{}/cocoon/balance", net.api_url)).await;
    assert_eq!(balance["unsettled_nano"], "0", "{balance}");
    assert_eq!(balance["charged_nano"], unsettled.to_string());
    // The proxy charged exactly what the receipts said.
    assert_eq!(balance["overcharged_nano"], "0");
    net.shutdown().await;
}

#[tokio::test]
async fn a_channel_from_deposit_to_close_balances_to_the_nano_ton() {
    let net = devnet_with(|o| o.settle_every = None).await;
    let url = format!("{}/chat/completions", net.api_url);
    let (mut charged, mut worker_share) = (0u128, 0u128);
    for i in 0..4 {
        let (status, body) = post(
            &url,
            &chat_body(&format!("request number {i}"), json!({"max_tokens": 6})),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let (total, worker) = priced(&body["usage"]);
        charged += total;
        worker_share += worker;
    }
    net.settle_now().await.unwrap();

    // A request served after the last settlement is paid by the close.
    let (status, body) = post(&url, &chat_body("one more", json!({"max_tokens": 6}))).await;
    assert_eq!(status, 200, "{body}");
    let (total, worker) = priced(&body["usage"]);
    charged += total;
    worker_share += worker;

    // The whole genesis deposit is staked: nothing can be withdrawn while
    // open. The owner deposits 10 TON more without staking them and takes
    // them back out, through its own wallet.
    let chain: Arc<dyn Chain> = Arc::new(net.ton.embedded());
    let client_wallet = WalletSender::new(chain.clone(), net.ton.wallets.client());
    let before = client_state(&net).await;
    assert_eq!(before.stake, before.balance);
    let withdraw = |nano| Outgoing {
        to: net.ton.client_contract.clone(),
        value: TON / 20,
        bounce: true,
        body: client_msg::withdraw(nano).unwrap(),
        init: None,
    };
    // Refused by the contract: the transfer ran, the message did not, and
    // the sender says so with the contract's exit code (104: below the stake).
    let refused = client_wallet
        .send(&[withdraw(TON)])
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("exit code 104"), "{refused}");
    assert_eq!(
        client_state(&net).await.balance,
        before.balance,
        "the stake stays"
    );
    client_wallet
        .send(&client_msg::deposit(&net.ton.client_contract, 10 * TON, 0, None).unwrap())
        .await
        .unwrap();
    assert_eq!(client_state(&net).await.balance, before.balance + 10 * TON);
    client_wallet.send(&[withdraw(10 * TON)]).await.unwrap();
    assert_eq!(client_state(&net).await.balance, before.balance);

    // Cooperative close: the proxy signs the final charge; the owner sends it.
    let voucher = net.pool().close_account(0).await.unwrap();
    assert_eq!(voucher.amount_nano, charged);
    let signature: [u8; 64] = voucher.signature.clone().try_into().unwrap();
    let owner_before = chain
        .account(client_wallet.address())
        .await
        .unwrap()
        .balance;
    let left = client_state(&net).await.balance - (charged - before.charged);
    client_wallet
        .send(&[Outgoing {
            to: net.ton.client_contract.clone(),
            value: TON / 20,
            bounce: true,
            body: client_msg::cooperative_close(voucher.amount_nano, &signature).unwrap(),
            init: None,
        }])
        .await
        .unwrap();
    // The contract is gone; what was left went back to the owner.
    assert!(!chain
        .account(&net.ton.client_contract)
        .await
        .unwrap()
        .is_active());
    let owner_after = chain
        .account(client_wallet.address())
        .await
        .unwrap()
        .balance;
    assert!(
        owner_after > owner_before + left - TON / 10,
        "the owner got its balance back: {owner_before} -> {owner_after}, {left} left"
    );
    // A closed account is served no more.
    let (status, body) = post(&url, &chat_body("after close", json!({"max_tokens": 4}))).await;
    assert!(status == 402 || status == 503, "{status} {body}");

    // The worker claims its share of everything, the last request included.
    let settled = net.settle_now().await.unwrap();
    assert_eq!(settled.claimed, worker_share);
    let proxy = proxy_state(&net).await;
    // Money in = money out + the proxy's commission, to the nano-TON.
    assert_eq!(proxy.received, charged);
    assert_eq!(proxy.workers_paid, worker_share);
    let books = net.proxy().books.as_ref().unwrap();
    assert_eq!(books.client(&net.ton.client_contract).total, charged);
    assert_eq!(books.worker(&net.ton.worker_contract).total, worker_share);

    // A worker cannot claim more than the proxy signed: the contract refuses
    // a claim above its voucher, and pays nothing.
    let worker_wallet = WalletSender::new(chain.clone(), net.ton.wallets.worker());
    let kept = net.earnings.book();
    let earned = kept.values().next().unwrap();
    let signature: [u8; 64] = hex::decode(&earned.signature).unwrap().try_into().unwrap();
    let refused = worker_wallet
        .send(&[Outgoing {
            to: net.ton.worker_contract.clone(),
            value: TON / 10,
            bounce: true,
            body: worker_msg::claim(earned.owed() + 1_000_000, &signature).unwrap(),
            init: None,
        }])
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("exit code 101"), "{refused}");
    assert_eq!(proxy_state(&net).await.workers_paid, worker_share);
    net.shutdown().await;
}

/// Chain transactions and fees of settlement do not grow with the number of
/// requests: one round after 5 requests costs what one after 40 does.
#[tokio::test]
async fn settlement_costs_do_not_grow_with_requests() {
    let net = devnet_with(|o| o.settle_every = None).await;
    let url = format!("{}/chat/completions", net.api_url);
    let chain = net.ton.embedded();
    let wallets = [
        net.ton.wallets.proxy().address,
        net.ton.wallets.worker().address,
    ];
    let count = |chain: &cocoon_ton_devnet::EmbeddedChain| {
        let emulator = chain.chain.lock().unwrap();
        let mut n = 0usize;
        let mut fees = 0u128;
        for address in [
            &net.ton.client_contract,
            &net.ton.proxy_contract,
            &net.ton.worker_contract,
            &wallets[0],
            &wallets[1],
        ] {
            for tx in emulator.transactions(address) {
                n += 1;
                fees += tx.fees;
            }
        }
        (n, fees)
    };
    let mut rounds = Vec::new();
    for requests in [5usize, 40] {
        for i in 0..requests {
            let (status, body) =
                post(&url, &chat_body(&format!("r{i}"), json!({"max_tokens": 4}))).await;
            assert_eq!(status, 200, "{body}");
        }
        let (n0, f0) = count(&chain);
        net.settle_now().await.unwrap();
        let (n1, f1) = count(&chain);
        rounds.push((requests, n1 - n0, f1 - f0));
    }
    println!("settlement rounds (requests, chain transactions, fees nano-TON): {rounds:?}");
    // The first round deploys the worker contract (one more transaction).
    assert!(rounds[1].1 <= rounds[0].1, "{rounds:?}");
    assert!(rounds[1].1 <= 10, "{rounds:?}");
    net.shutdown().await;
}

/// `--state DIR`: a devnet stopped and started again resumes its chain, keys,
/// wallets, books and the worker's earnings; what was settled stays settled
/// and is not charged again, and serving and settling go on.
#[tokio::test]
async fn a_devnet_resumed_from_its_state_directory_charges_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let start = || with_state(dir.path(), |_| {});
    let net = start().await;
    let url = format!("{}/chat/completions", net.api_url);
    let (status, body) = post(&url, &chat_body("first life", json!({"max_tokens": 5}))).await;
    assert_eq!(status, 200, "{body}");
    let (first, first_worker) = priced(&body["usage"]);
    let settled = net.settle_now().await.unwrap();
    assert_eq!(settled.charged, first);
    // Served but not settled before the stop.
    let (status, body) = post(&url, &chat_body("unsettled", json!({"max_tokens": 5}))).await;
    assert_eq!(status, 200, "{body}");
    let (second, second_worker) = priced(&body["usage"]);
    let addresses = net.ton.addresses();
    net.shutdown().await;

    let net = start().await;
    assert_eq!(net.ton.addresses(), addresses, "the same contracts");
    let before = net.settled().await.unwrap();
    assert_eq!(before, settled, "the chain as it was");
    let books = net.proxy().books.as_ref().unwrap();
    assert_eq!(
        books.client(&net.ton.client_contract).total,
        first + second,
        "the books as they were"
    );
    let url = format!("{}/chat/completions", net.api_url);
    let (status, body) = post(&url, &chat_body("second life", json!({"max_tokens": 5}))).await;
    assert_eq!(status, 200, "{body}");
    let (third, third_worker) = priced(&body["usage"]);
    let after = net.settle_now().await.unwrap();
    assert_eq!(after.charged, first + second + third);
    assert_eq!(after.claimed, first_worker + second_worker + third_worker);
    assert_eq!(after.books_seqno, 2);
    net.shutdown().await;
}

/// `[billing]` with a wallet: a client node whose contract runs low tops it
/// up from its owner's wallet by itself.
#[tokio::test]
async fn a_client_node_tops_its_contract_up_by_itself() {
    let net = devnet_with(|o| {
        o.settle_every = None;
        o.client_deposit = 10_000;
        o.prices.min_client_stake = 10_000;
        o.client_top_up = Some((TON, 3 * TON));
        o.chain_fresh = FRESH_IN_TESTS;
    })
    .await;
    // The first read of the balance sees 10,000 nano-TON and starts a top-up.
    let balance = get_json(&format!("{}/cocoon/balance", net.api_url)).await;
    assert_eq!(balance["balance_nano"], "10000", "{balance}");
    let mut now = 0u128;
    for _ in 0..100 {
        now = client_state(&net).await.balance;
        if now > 10_000 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(now, 10_000 + 3 * TON, "topped up by exactly 3 TON");
    // Now a request that did not fit before is served (the proxy, which
    // holds its worst cost against the contract, rereads a contract that
    // looks short at most once a second).
    let url = format!("{}/chat/completions", net.api_url);
    past_fresh().await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (status, body) = post(&url, &chat_body("hi there", json!({"max_tokens": 1000}))).await;
    assert_eq!(status, 200, "{body}");
    net.shutdown().await;
}

/// A client node without a contract deploys one from its wallet on first
/// use of its proxy, pays from it, and finds it again after a restart
/// instead of deploying a second one.
#[tokio::test]
async fn a_client_node_deploys_its_contract_on_first_use() {
    let dir = tempfile::tempdir().unwrap();
    let start = || {
        with_state(dir.path(), |o| {
            o.client_auto_deploy = true;
            o.client_deposit = 2 * TON;
        })
    };
    let net = start().await;
    let balance = get_json(&format!("{}/cocoon/balance", net.api_url)).await;
    let contract = balance["contract"].as_str().unwrap().to_string();
    assert_ne!(
        contract,
        net.ton.client_contract.to_string(),
        "a new contract"
    );
    assert_eq!(balance["balance_nano"], (2 * TON).to_string(), "{balance}");
    let url = format!("{}/chat/completions", net.api_url);
    let (status, body) = post(&url, &chat_body("on my own", json!({"max_tokens": 5}))).await;
    assert_eq!(status, 200, "{body}");
    let (total, _) = priced(&body["usage"]);
    net.settle_now().await.unwrap();
    let address = cocoon_chain::ton_http::parse_address(&contract).unwrap();
    let channel = cocoon_chain::ClientChannel::from_stack(
        &net.ton
            .embedded()
            .get(&address, "get_client_data", &[])
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(channel.state.charged, total);
    assert_eq!(channel.owner, net.ton.wallets.client().address);
    net.shutdown().await;

    let net = start().await;
    let balance = get_json(&format!("{}/cocoon/balance", net.api_url)).await;
    assert_eq!(
        balance["contract"], contract,
        "found again, not deployed again"
    );
    assert_eq!(balance["charged_nano"], total.to_string());
    net.shutdown().await;
}

/// The attack: a client reads most of a streamed answer, then closes its
/// connection before the end. Before running totals nothing was billed
/// (the worker signed only finished answers): 0 nano-TON after 30 and
/// after 100 of up to 200 tokens. Now the worker signs a running total
/// with the first chunk and every `PROGRESS_TOKENS`, the proxy bills the
/// last one when the answer ends without `Done`, and the client node
/// counts the same one as spent: it pays for what it received, at most
/// one total behind, never more (the client node checks each total
/// against the chunks and bytes that reached it).
#[tokio::test]
async fn a_client_that_hangs_up_mid_stream_pays_for_what_it_received() {
    let net = devnet_with(|o| {
        o.engine = slow_engine(5, 4);
        o.settle_every = None;
        o.chain_fresh = FRESH_IN_TESTS;
    })
    .await;
    let books = net.proxy().books.clone().unwrap();
    let owed = || books.client(&net.ton.client_contract).total;
    let mut billed_before = 0;
    for cut in [30usize, 100] {
        let body = chat_body(
            "one two three four",
            json!({"stream": true, "max_tokens": 200}),
        );
        let resp = open_stream_with(&net, &body).await;
        let mut events = eventsource_stream::Eventsource::eventsource(resp.bytes_stream());
        let (mut chunks, mut words) = (0, 0);
        while chunks < cut {
            let data = events.next().await.unwrap().unwrap().data;
            let chunk: Value = serde_json::from_str(&data).unwrap();
            if let Some(text) = chunk["choices"][0]["delta"]["content"].as_str() {
                if !text.is_empty() {
                    chunks += 1;
                    words += text.split_whitespace().count() as u64;
                }
            }
        }
        // Hang up.
        drop(events);
        // The proxy bills the last running total once it sees the stream end.
        let mut billed = owed();
        for _ in 0..100 {
            if billed > billed_before {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            billed = owed();
        }
        assert!(billed > billed_before, "nothing billed after {cut} chunks");
        let receipt = net
            .proxy()
            .receipts
            .recent()
            .pop()
            .expect("the running total billed");
        let r = &receipt.receipt;
        assert!(r.partial, "{r:?}");
        // Every token the app read is paid for, bar at most one running
        // total's worth; no more than the worker had sent.
        let progress = cocoon_worker::PROGRESS_TOKENS;
        assert!(
            r.usage.completion_tokens + progress + 8 >= words,
            "{} tokens billed for {words} read",
            r.usage.completion_tokens
        );
        assert!(r.usage.completion_tokens < 200);
        assert!(
            r.usage.prompt_tokens > 0,
            "the prompt is billed from the first chunk"
        );
        let charge = cocoon_chain::pricing::default_prices()
            .charge(TokenCounts {
                prompt: r.usage.prompt_tokens,
                cached_prompt: r.usage.cached_prompt_tokens,
                completion: r.usage.completion_tokens,
                reasoning: r.usage.reasoning_tokens,
            })
            .total;
        assert_eq!(billed - billed_before, charge);
        // The client node counts the last running total it opened as
        // spent: the proxy's, or (when the proxy had forwarded one more
        // as the client hung up, unread in its buffers) the one before.
        past_fresh().await;
        let balance = get_json(&format!("{}/cocoon/balance", net.api_url)).await;
        let counted: u128 = balance["unsettled_nano"].as_str().unwrap().parse().unwrap();
        let one_total = cocoon_chain::pricing::default_prices()
            .charge(TokenCounts {
                prompt: 0,
                cached_prompt: 0,
                completion: progress + 8,
                reasoning: 0,
            })
            .total;
        let rounds = if cut == 30 { 1 } else { 2 };
        assert!(
            counted <= billed && billed - counted <= one_total * rounds,
            "the client node counts {counted}, the proxy billed {billed}: {balance}"
        );
        billed_before = billed;
    }
    net.shutdown().await;
}

/// The attack: a client with a small deposit starts many long answers at
/// once. Each alone passes the balance check (nothing is billed until it
/// ends), so together they could spend far beyond the contract. The proxy
/// holds each running answer's worst cost (its whole `max_tokens` at the
/// chosen worker's price) against the
/// client's credit until it ends: the third concurrent answer is refused
/// (402), and once the first two end their reservations are released.
#[tokio::test]
async fn answers_running_at_once_cannot_spend_beyond_the_deposit() {
    let net = devnet_with(|o| {
        o.engine = slow_engine(20, 8);
        o.settle_every = None;
        o.client_deposit = 300_000;
        o.prices.min_client_stake = 300_000;
        o.chain_fresh = FRESH_IN_TESTS;
    })
    .await;
    let url = format!("{}/chat/completions", net.api_url);
    // 121,600 nano-TON at worst each (1,000 completion tokens, 80,000, and
    // the most prompt its sealed size allows, 41,600): two fit in 300,000,
    // a third does not.
    let long = chat_body("hi", json!({"stream": true, "max_tokens": 1000}));
    let mut running = Vec::new();
    for _ in 0..2 {
        let resp = open_stream_with(&net, &long).await;
        let mut events = eventsource_stream::Eventsource::eventsource(resp.bytes_stream());
        events.next().await.unwrap().unwrap();
        running.push(events);
    }
    let resp = http().post(&url).json(&long).send().await.unwrap();
    let status = resp.status();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(status, 402, "{body}");
    assert_error(&body, "reserved by requests running");
    // The first two end (hung up): their credit is free again.
    drop(running);
    let short = chat_body("hi", json!({"max_tokens": 8}));
    let mut status = 0;
    for _ in 0..100 {
        let (s, _) = post(&url, &short).await;
        status = s;
        if s == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(status, 200);
    net.shutdown().await;
}

/// The attack (or accident): a proxy restored from an old copy of its books
/// would charge clients only what that copy knows, and its workers would
/// lose the difference. The books record each commit of their hash to the
/// proxy contract; at start the proxy compares the contract's last commit
/// with its books' and, finding one its books never made, refuses to start,
/// naming both and the way out. The newest copy starts again.
#[tokio::test]
async fn a_proxy_restored_from_old_books_refuses_to_serve() {
    let dir = tempfile::tempdir().unwrap();
    let books = dir.path().join("state").join("books.redb");
    let old = dir.path().join("books-old.redb");
    let start = || with_state(dir.path(), |_| {});
    let net = start().await;
    let url = format!("{}/chat/completions", net.api_url);
    let (status, body) = post(&url, &chat_body("first", json!({"max_tokens": 5}))).await;
    assert_eq!(status, 200, "{body}");
    net.settle_now().await.unwrap();
    net.shutdown().await;
    // A backup, taken after commit #1.
    std::fs::copy(&books, &old).unwrap();

    let net = start().await;
    let url = format!("{}/chat/completions", net.api_url);
    let (status, body) = post(&url, &chat_body("second", json!({"max_tokens": 5}))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(net.settle_now().await.unwrap().books_seqno, 2);
    net.shutdown().await;
    let newest = dir.path().join("books-newest.redb");
    std::fs::copy(&books, &newest).unwrap();

    // Restored from the backup: the chain holds commit #2, the books #1.
    std::fs::copy(&old, &books).unwrap();
    let mut options = cocoon_devnet::DevnetOptions::instant(MODEL);
    options.settle_every = None;
    options.state_dir = Some(dir.path().join("state"));
    let refused = match cocoon_devnet::Devnet::start(options).await {
        Ok(net) => {
            net.shutdown().await;
            panic!("a proxy with books older than the chain started")
        }
        Err(e) => format!("{e:#}"),
    };
    assert!(refused.contains("books commit #2"), "{refused}");
    assert!(refused.contains("commit #1"), "{refused}");
    assert!(refused.contains("Refusing to serve"), "{refused}");

    // The newest copy is accepted.
    std::fs::copy(&newest, &books).unwrap();
    let net = start().await;
    let (status, body) = post(
        &format!("{}/chat/completions", net.api_url),
        &chat_body("third", json!({"max_tokens": 5})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    net.shutdown().await;
}
