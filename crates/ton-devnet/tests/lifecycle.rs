//! The life cycle recorded from TON's own emulator (`@ton/sandbox`, in
//! `contracts/tests/lifecycle.test.ts`) replayed on the Rust TVM (tycho) with
//! the same addresses, keys and inputs: every contract address, exit code,
//! gas figure and get-method result must be the same.

use std::str::FromStr;

use cocoon_chain::root::{self as root_msg, ImageRole};
use cocoon_chain::{
    client, proxy, signed, stack_int, worker, worker_data, ClientState, ClientTerms, Contract,
    HashBytes, Prices, ProxySigner, ProxyState, ProxyTerms, StdAddr, WorkerState,
};
use cocoon_ton_devnet::Emulator;
use serde_json::Value;
use tycho_types::cell::{Cell, CellBuilder, CellFamily};
use tycho_types::models::StateInit;

const TON: u128 = 1_000_000_000;

/// (name, from, to, value, body, code and data to deploy).
type Step = (
    &'static str,
    StdAddr,
    StdAddr,
    u128,
    Cell,
    Option<(Cell, Cell)>,
);

fn fixture() -> Value {
    let text = include_str!("../../../contracts/tests/fixtures/lifecycle.json");
    serde_json::from_str(text).unwrap()
}

fn addr(fixture: &Value, name: &str) -> StdAddr {
    StdAddr::from_str(fixture["addresses"][name].as_str().unwrap()).unwrap()
}

fn address_of(code: &Cell, data: &Cell) -> StdAddr {
    let init = StateInit {
        split_depth: None,
        special: None,
        code: Some(code.clone()),
        data: Some(data.clone()),
        libraries: Default::default(),
    };
    let cell = CellBuilder::build_from(init).unwrap();
    StdAddr::new(0, *cell.repr_hash())
}

fn uint256(n: u64) -> HashBytes {
    let mut bytes = [0u8; 32];
    bytes[24..].copy_from_slice(&n.to_be_bytes());
    HashBytes(bytes)
}

/// The sandbox harness's prices (contracts/tests/harness.ts): the devnet's defaults.
fn prices() -> Prices {
    cocoon_chain::pricing::default_prices()
}

#[test]
fn the_sandbox_life_cycle_replays_identically_on_tycho() {
    let f = fixture();
    for contract in Contract::ALL {
        assert_eq!(
            f["codeHashes"][contract.name()].as_str().unwrap(),
            hex::encode(contract.code().repr_hash().as_slice()),
            "the fixture was recorded from other code"
        );
    }
    let (operator, proxy_owner, client_owner, worker_owner, relay) = (
        addr(&f, "operator"),
        addr(&f, "proxyOwner"),
        addr(&f, "clientOwner"),
        addr(&f, "workerOwner"),
        addr(&f, "relay"),
    );
    let key = ProxySigner::from_seed(&[b'p'; 32]).unwrap();
    let mut chain = Emulator::new(f["now"].as_u64().unwrap() as u32).unwrap();

    // Deploy as the sandbox harness does; the derived addresses must agree.
    let root_data = prices().root_data(&operator).unwrap();
    let root = address_of(&Contract::Root.code(), &root_data);
    assert_eq!(root, addr(&f, "root"));
    let r = chain
        .send(
            &operator,
            &root,
            TON,
            Cell::empty_cell(),
            Some((Contract::Root.code(), root_data)),
        )
        .unwrap();
    assert!(r[0].success, "{r:?}");

    let proxy_data = ProxyTerms {
        owner: proxy_owner.clone(),
        proxy_key: key.public_key(),
        root: root.clone(),
        close_delay: 86400,
        nonce: 1,
    }
    .initial_data()
    .unwrap();
    let proxy_addr = address_of(&Contract::Proxy.code(), &proxy_data);
    assert_eq!(proxy_addr, addr(&f, "proxy"));
    let r = chain
        .send(
            &proxy_owner,
            &proxy_addr,
            100 * TON,
            proxy::add_stake().unwrap(),
            Some((Contract::Proxy.code(), proxy_data)),
        )
        .unwrap();
    assert!(r[0].success, "{r:?}");

    let client_data = ClientTerms {
        proxy: proxy_addr.clone(),
        owner: client_owner.clone(),
        proxy_key: key.public_key(),
        close_delay: 3600,
        nonce: 1,
        client_key: uint256(0xc1),
    }
    .initial_data()
    .unwrap();
    let client_addr = address_of(&Contract::Client.code(), &client_data);
    assert_eq!(client_addr, addr(&f, "client"));
    let r = chain
        .send(
            &client_owner,
            &client_addr,
            10_020_000_000,
            client::top_up().unwrap(),
            Some((Contract::Client.code(), client_data)),
        )
        .unwrap();
    assert!(r[0].success, "{r:?}");

    let worker_init = worker_data(&proxy_addr, &worker_owner, &key.public_key()).unwrap();
    let worker_addr = address_of(&Contract::Worker.code(), &worker_init);
    assert_eq!(worker_addr, addr(&f, "worker"));

    let charge = |amount: u128| {
        client::charge(
            amount,
            &key.sign_amount(signed::CHARGE, &client_addr, amount)
                .unwrap(),
        )
        .unwrap()
    };
    let owed = TON / 2;
    // The books hash 0xabc as a uint256.
    let mut books = [0u8; 32];
    books[30] = 0x0a;
    books[31] = 0xbc;
    let books = HashBytes(books);
    let steps: Vec<Step> = vec![
        (
            "increase stake",
            client_owner.clone(),
            client_addr.clone(),
            TON / 20,
            client::increase_stake(2 * TON).unwrap(),
            None,
        ),
        (
            "charge 1.5",
            relay.clone(),
            client_addr.clone(),
            TON / 20,
            charge(3 * TON / 2),
            None,
        ),
        (
            "replayed charge",
            relay.clone(),
            client_addr.clone(),
            TON / 20,
            charge(3 * TON / 2),
            None,
        ),
        (
            "charge 2",
            relay.clone(),
            client_addr.clone(),
            TON / 20,
            charge(2 * TON),
            None,
        ),
        (
            "worker claim",
            worker_owner.clone(),
            worker_addr.clone(),
            TON / 10,
            worker::claim(
                owed,
                &key.sign_amount(signed::OWED, &worker_addr, owed).unwrap(),
            )
            .unwrap(),
            Some((Contract::Worker.code(), worker_init.clone())),
        ),
        (
            // Enough to run the worker contract, not the payout: refused.
            "starved claim",
            relay.clone(),
            worker_addr.clone(),
            TON / 250,
            worker::claim(
                TON,
                &key.sign_amount(signed::OWED, &worker_addr, TON).unwrap(),
            )
            .unwrap(),
            None,
        ),
        (
            "commit books",
            relay.clone(),
            proxy_addr.clone(),
            TON / 20,
            proxy::commit_books(1, &books, &key.sign_books(&proxy_addr, 1, &books).unwrap())
                .unwrap(),
            None,
        ),
        (
            "withdraw",
            client_owner.clone(),
            client_addr.clone(),
            TON / 20,
            client::withdraw(3 * TON).unwrap(),
            None,
        ),
        (
            "withdraw into stake",
            client_owner.clone(),
            client_addr.clone(),
            TON / 20,
            client::withdraw(4 * TON).unwrap(),
            None,
        ),
        (
            "signed pay",
            relay.clone(),
            proxy_addr.clone(),
            TON / 20,
            proxy::pay(
                &proxy_owner,
                TON / 2,
                1,
                &key.sign_pay(&proxy_addr, &proxy_owner, TON / 2, 1).unwrap(),
            )
            .unwrap(),
            None,
        ),
    ];
    let root_steps: Vec<Step> = vec![
        (
            "root: set worker image",
            operator.clone(),
            root.clone(),
            TON / 20,
            root_msg::set_image(ImageRole::Worker, &uint256(0x1234), true).unwrap(),
            None,
        ),
        (
            "root: set model",
            operator.clone(),
            root.clone(),
            TON / 20,
            root_msg::set_model(&uint256(0x5678), Some("smollm2-135m-instruct")).unwrap(),
            None,
        ),
        (
            "root: set proxy",
            operator.clone(),
            root.clone(),
            TON / 20,
            root_msg::set_proxy(&proxy_addr, Some((&key.public_key(), 3, "127.0.0.1:9100")))
                .unwrap(),
            None,
        ),
        (
            "root: set prices",
            operator.clone(),
            root.clone(),
            TON / 20,
            root_msg::set_prices(&Prices {
                price_per_token: 25,
                ..prices()
            })
            .unwrap(),
            None,
        ),
        (
            "root: stranger",
            relay.clone(),
            root.clone(),
            TON / 20,
            root_msg::change_owner(&relay).unwrap(),
            None,
        ),
    ];
    let steps: Vec<_> = steps.into_iter().chain(root_steps).collect();
    let recorded = f["steps"].as_array().unwrap();
    assert_eq!(recorded.len(), steps.len());
    for ((name, from, to, value, body, init), expected) in steps.into_iter().zip(recorded) {
        assert_eq!(expected["name"], name);
        // The same bytes as @ton/core builds (signatures are deterministic).
        assert_eq!(
            hex::encode(body.repr_hash().as_slice()),
            expected["bodyHash"].as_str().unwrap(),
            "{name}: message encoding"
        );
        let reports = chain.send(&from, &to, value, body, init).unwrap();
        let first = &reports[0];
        assert_eq!(
            first.exit_code,
            Some(expected["exit"].as_i64().unwrap() as i32),
            "{name}: {reports:?}"
        );
        assert_eq!(
            first.gas_used.to_string(),
            expected["gas"].as_str().unwrap(),
            "{name}: gas"
        );
        // Fees too: the embedded chain runs TON mainnet's configuration, as
        // the sandbox does.
        let tx = chain.latest_transactions(&to, None, 1);
        let fee = cocoon_chain::TxSummary::from_cell(&tx[0].cell).unwrap().fee;
        assert_eq!(
            fee.to_string(),
            expected["fee"].as_str().unwrap(),
            "{name}: total fees"
        );

        let c =
            ClientState::from_stack(&chain.get(&client_addr, "get_client_data", vec![]).unwrap())
                .unwrap();
        assert_eq!(
            c.balance.to_string(),
            expected["client"]["balance"].as_str().unwrap(),
            "{name}"
        );
        assert_eq!(
            c.stake.to_string(),
            expected["client"]["stake"].as_str().unwrap(),
            "{name}"
        );
        assert_eq!(
            c.charged.to_string(),
            expected["client"]["charged"].as_str().unwrap(),
            "{name}"
        );
        let p = ProxyState::from_stack(&chain.get(&proxy_addr, "get_proxy_data", vec![]).unwrap())
            .unwrap();
        assert_eq!(
            p.stake.to_string(),
            expected["proxy"]["stake"].as_str().unwrap(),
            "{name}"
        );
        assert_eq!(
            p.received.to_string(),
            expected["proxy"]["received"].as_str().unwrap(),
            "{name}"
        );
        assert_eq!(
            p.workers_paid.to_string(),
            expected["proxy"]["workersPaid"].as_str().unwrap(),
            "{name}"
        );
        assert_eq!(
            p.books_seqno.to_string(),
            expected["proxy"]["booksSeqno"].as_str().unwrap(),
            "{name}"
        );
        assert_eq!(
            p.pay_seqno.to_string(),
            expected["proxy"]["paySeqno"].as_str().unwrap(),
            "{name}"
        );
        let paid = if chain.is_active(&worker_addr).unwrap() {
            WorkerState::from_stack(&chain.get(&worker_addr, "get_worker_data", vec![]).unwrap())
                .unwrap()
                .paid
        } else {
            0
        };
        assert_eq!(
            paid.to_string(),
            expected["workerPaid"].as_str().unwrap(),
            "{name}"
        );
        let version = stack_int(&chain.get(&root, "get_version", vec![]).unwrap()).unwrap();
        assert_eq!(
            version as u64,
            expected["rootVersion"].as_u64().unwrap(),
            "{name}"
        );
    }
    // The proxy registry as client nodes read it.
    let proxies = cocoon_chain::RegisteredProxy::list_from_stack(
        &chain.get(&root, "get_proxies", vec![]).unwrap(),
    )
    .unwrap();
    assert_eq!(
        proxies,
        vec![cocoon_chain::RegisteredProxy {
            contract: proxy_addr.clone(),
            key: key.public_key(),
            version: 3,
            endpoint: "127.0.0.1:9100".into(),
        }]
    );
    let prices_now = Prices::from_stack(&chain.get(&root, "get_prices", vec![]).unwrap()).unwrap();
    assert_eq!(
        prices_now,
        Prices {
            price_per_token: 25,
            ..prices()
        }
    );
    // The worker's owner received the payout from the proxy contract.
    assert!(chain.balance(&worker_owner).unwrap() > 2 * TON / 5);
}
