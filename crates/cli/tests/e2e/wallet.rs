//! `cocoon wallet` against a TON HTTP API on loopback (the embedded chain,
//! served by this test): a new wallet from a fresh mnemonic, its balance, a
//! transfer confirmed on chain, and bad input named.

use std::path::Path;
use std::process::Output;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use cocoon_chain::StdAddr;
use cocoon_ton_devnet::Emulator;

const TON: u128 = 1_000_000_000;

pub(crate) async fn cocoon(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_cocoon"))
            .args(&args)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

pub(crate) fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Serve TON's HTTP API from `chain` on loopback; its base URL.
pub(crate) async fn serve(chain: cocoon_ton_devnet::api::SharedChain) -> String {
    let app = cocoon_ton_devnet::api::router(chain, cocoon_ton_devnet::unix_now);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = format!("http://{}/api/v2", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    api
}

/// `cocoon wallet new` into `dir/NAME.words`: the file and the address.
pub(crate) async fn new_wallet(dir: &Path, name: &str) -> (std::path::PathBuf, StdAddr) {
    let words = dir.join(format!("{name}.words"));
    let out = cocoon(vec![
        "wallet".into(),
        "new".into(),
        "--out".into(),
        words.display().to_string(),
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let address = StdAddr::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
    (words, address)
}

#[tokio::test]
async fn a_new_wallet_is_funded_and_sends_ton() {
    let chain = Arc::new(Mutex::new(
        Emulator::new(cocoon_ton_devnet::unix_now()).unwrap(),
    ));
    let api = serve(chain.clone()).await;

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("wallet.words");
    let f = file.display().to_string();
    let out = cocoon(vec![
        "wallet".into(),
        "new".into(),
        "--out".into(),
        f.clone(),
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let address = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let wallet = StdAddr::from_str(&address).unwrap();
    assert_eq!(
        std::fs::read_to_string(&file)
            .unwrap()
            .split_whitespace()
            .count(),
        24
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let again = cocoon(vec![
        "wallet".into(),
        "new".into(),
        "--out".into(),
        f.clone(),
    ])
    .await;
    assert!(
        !again.status.success() && text(&again).contains("exists"),
        "{}",
        text(&again)
    );
    let out = cocoon(vec![
        "wallet".into(),
        "address".into(),
        "--mnemonic".into(),
        f.clone(),
    ])
    .await;
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), address);

    chain.lock().unwrap().fund(&wallet, 10 * TON).unwrap();
    let out = cocoon(vec![
        "wallet".into(),
        "balance".into(),
        "--mnemonic".into(),
        f.clone(),
        "--api".into(),
        api.clone(),
    ])
    .await;
    assert!(text(&out).contains("10.000000000 TON"), "{}", text(&out));

    let to = StdAddr::new(0, cocoon_chain::HashBytes([5; 32]));
    let send = |amount: &str| {
        vec![
            "wallet".into(),
            "send".into(),
            "--mnemonic".into(),
            f.clone(),
            "--api".into(),
            api.clone(),
            "--to".into(),
            to.to_string(),
            "--amount".into(),
            amount.to_string(),
        ]
    };
    let out = cocoon(send("1.5")).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("seqno 1"), "{}", text(&out));
    assert_eq!(chain.lock().unwrap().balance(&to).unwrap(), 1_500_000_000);
    let out = cocoon(send("0.25")).await;
    assert!(out.status.success(), "{}", text(&out));
    // Less a few nano-TON of storage fees on the (uninitialised) recipient.
    let got = chain.lock().unwrap().balance(&to).unwrap();
    assert!((1_749_999_000..=1_750_000_000).contains(&got), "{got}");

    for (amount, needle) in [("1,5", "--amount"), ("100", "not enough")] {
        let out = cocoon(send(amount)).await;
        assert!(
            !out.status.success() && text(&out).contains(needle),
            "{amount}: {}",
            text(&out)
        );
    }
    let garbage = dir.path().join("garbage.words");
    std::fs::write(&garbage, "not a mnemonic").unwrap();
    let out = cocoon(vec![
        "wallet".into(),
        "address".into(),
        "--mnemonic".into(),
        garbage.display().to_string(),
    ])
    .await;
    assert!(
        !out.status.success() && text(&out).contains("24 words"),
        "{}",
        text(&out)
    );
    assert!(Path::new(&f).exists());
}

/// `cocoon wallet deploy-client|top-up|withdraw|contract`: a client's payment
/// channel with the devnet's proxy, driven from the command line.
#[tokio::test]
async fn a_client_contract_is_deployed_topped_up_and_withdrawn_from() {
    let ton = cocoon_ton_devnet::TonDevnet::start(
        &cocoon_chain::pricing::default_prices(),
        cocoon_ton_devnet::CLIENT_DEPOSIT,
        [3; 32],
        [8; 32],
    )
    .unwrap();
    let api = serve(ton.chain.clone()).await;

    let dir = tempfile::tempdir().unwrap();
    let (words, owner) = new_wallet(dir.path(), "client").await;
    ton.chain.lock().unwrap().fund(&owner, 50 * TON).unwrap();
    let args = |cmd: &str, extra: &[&str]| {
        let mut v: Vec<String> = vec![
            "wallet".into(),
            cmd.into(),
            "--mnemonic".into(),
            words.display().to_string(),
            "--api".into(),
            api.clone(),
        ];
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let proxy = ton.proxy_contract.to_string();
    let node_key = format!("sha256:{}", "08".repeat(32));
    let out = cocoon(args(
        "deploy-client",
        &[
            "--proxy-contract",
            &proxy,
            "--client-key",
            "08",
            "--deposit",
            "5",
        ],
    ))
    .await;
    assert!(!out.status.success());
    assert!(text(&out).contains("--client-key"), "{}", text(&out));
    let out = cocoon(args(
        "deploy-client",
        &[
            "--proxy-contract",
            &proxy,
            "--client-key",
            &node_key,
            "--deposit",
            "5",
            "--stake",
            "4",
        ],
    ))
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let contract = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let address = StdAddr::from_str(&contract).unwrap();
    let channel = |chain: &Mutex<Emulator>| {
        cocoon_chain::ClientChannel::from_stack(
            &chain
                .lock()
                .unwrap()
                .get(&address, "get_client_data", vec![])
                .unwrap(),
        )
        .unwrap()
    };
    let c = channel(&ton.chain);
    assert_eq!(c.state.balance, 5 * TON);
    assert_eq!(c.owner, owner);
    assert_eq!(c.proxy, ton.proxy_contract);
    assert_eq!(c.proxy_key, ton.proxy_key);
    assert_eq!(c.client_key.0, [8; 32]);
    assert_eq!(c.state.stake, 4 * TON);

    let out = cocoon(args(
        "top-up",
        &["--contract", &contract, "--amount", "2.5"],
    ))
    .await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(channel(&ton.chain).state.balance, 7_500_000_000);
    let out = cocoon(args(
        "withdraw",
        &["--contract", &contract, "--amount", "1"],
    ))
    .await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("6.500000000 TON"), "{}", text(&out));
    // More than is there, and a contract that is none, are refused by name.
    let out = cocoon(args(
        "withdraw",
        &["--contract", &contract, "--amount", "100"],
    ))
    .await;
    assert!(
        !out.status.success() && text(&out).contains("--amount"),
        "{}",
        text(&out)
    );
    // 6.5 TON held, 4 staked: 2.5 more can be staked, not 3.
    let out = cocoon(args("stake", &["--contract", &contract, "--amount", "3"])).await;
    assert!(
        !out.status.success() && text(&out).contains("--amount"),
        "{}",
        text(&out)
    );
    let out = cocoon(args("stake", &["--contract", &contract, "--amount", "2.5"])).await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(channel(&ton.chain).state.stake, 6_500_000_000);
    let root = ton.root.to_string();
    let out = cocoon(args("top-up", &["--contract", &root, "--amount", "1"])).await;
    assert!(
        !out.status.success() && text(&out).contains("not a client contract"),
        "{}",
        text(&out)
    );
    let out = cocoon(vec![
        "wallet".into(),
        "contract".into(),
        "--api".into(),
        api.clone(),
        "--contract".into(),
        contract.clone(),
    ])
    .await;
    assert!(
        text(&out).contains("charged        0.000000000 TON"),
        "{}",
        text(&out)
    );
    // Only the proxy contract's owner may ask to close it, and only a
    // proxy contract.
    let out = cocoon(args("close-proxy", &["--contract", &proxy])).await;
    assert!(
        !out.status.success() && text(&out).contains("is not the proxy contract's owner"),
        "{}",
        text(&out)
    );
    let out = cocoon(args("close-proxy", &["--contract", &contract])).await;
    assert!(
        !out.status.success() && text(&out).contains("not a proxy contract"),
        "{}",
        text(&out)
    );
}

/// `cocoon worker earnings`: the kept vouchers against the chain; a config
/// without `[payout]` is refused by name.
#[tokio::test]
async fn worker_earnings_shows_owed_settled_and_pending() {
    let chain = Arc::new(Mutex::new(
        Emulator::new(cocoon_ton_devnet::unix_now()).unwrap(),
    ));
    let api = serve(chain.clone()).await;

    let dir = tempfile::tempdir().unwrap();
    let (words, owner) = new_wallet(dir.path(), "worker").await;
    let owner = owner.to_string();
    let earnings = dir.path().join("earnings.json");
    let base = format!(
        "profile = \"development\"\nidentity_key = \"{}\"\n[[proxies]]\naddress = \"127.0.0.1:9\"\nfingerprint = \"sha256:{}\"\n[engine]\nkind = \"instant\"\nmodel = \"m\"\n",
        dir.path().join("worker.pem").display(),
        "00".repeat(32)
    );
    let config = dir.path().join("worker.toml");
    std::fs::write(
        &config,
        format!(
            "{base}[payout]\nton_api = \"{api}\"\nwallet_mnemonic = \"{}\"\nearnings = \"{}\"\n",
            words.display(),
            earnings.display()
        ),
    )
    .unwrap();
    let earn = |config: &Path| {
        vec![
            "worker".into(),
            "earnings".into(),
            "--config".into(),
            config.display().to_string(),
        ]
    };
    let out = cocoon(earn(&config)).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains(&owner), "{}", text(&out));
    assert!(text(&out).contains("no vouchers yet"), "{}", text(&out));

    // A kept voucher for a contract not deployed yet: all of it pending.
    let contract = StdAddr::new(0, cocoon_chain::HashBytes([6; 32])).to_string();
    std::fs::write(
        &earnings,
        serde_json::json!({"sha256:ab": {
            "contract": contract, "proxy_contract": contract, "proxy_key": "00".repeat(32),
            "owed_nano": "2500000000", "signature": "00".repeat(64), "paid_nano": "0"}})
        .to_string(),
    )
    .unwrap();
    let out = cocoon(earn(&config)).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("pending         2.500000000 TON"),
        "{}",
        text(&out)
    );
    assert!(
        text(&out).contains("settled         0.000000000 TON"),
        "{}",
        text(&out)
    );

    let bare = dir.path().join("bare.toml");
    std::fs::write(&bare, &base).unwrap();
    let out = cocoon(earn(&bare)).await;
    assert!(
        !out.status.success() && text(&out).contains("[payout]"),
        "{}",
        text(&out)
    );
}

/// Two senders on one wallet (two processes, or a misconfigured one) each
/// sign a transfer with the same seqno; only one can run. The seqno moving
/// proves only that *some* transfer ran: each sender finds its own
/// transaction by its message's hash, so the one whose transfer never ran
/// says so instead of reporting a payment that did not happen. Before, both
/// counted as done.
#[tokio::test]
async fn a_transfer_counts_as_done_only_when_its_own_transaction_ran() {
    use cocoon_chain::{Chain, Outgoing, WalletSender};
    let ton = cocoon_ton_devnet::TonDevnet::start(
        &cocoon_chain::pricing::default_prices(),
        cocoon_ton_devnet::CLIENT_DEPOSIT,
        [3; 32],
        [8; 32],
    )
    .unwrap();
    ton.chain.lock().unwrap().in_blocks = true;
    let chain = ton.chain.clone();
    let blocks = tokio::spawn(async move {
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            let mut chain = chain.lock().unwrap();
            chain.now = chain.now.max(cocoon_ton_devnet::unix_now());
            chain.produce_block();
        }
    });
    let embedded: Arc<dyn Chain> = Arc::new(ton.embedded());
    let sender = || {
        let mut s = WalletSender::new(embedded.clone(), ton.wallets.client());
        s.confirm_timeout = std::time::Duration::from_secs(3);
        s
    };
    let (a, b) = (sender(), sender());
    let payee = StdAddr::new(0, cocoon_chain::HashBytes([42; 32]));
    let pay = |nano| {
        [Outgoing {
            to: payee.clone(),
            value: nano,
            bounce: false,
            body: cocoon_chain::Cell::default(),
            init: None,
        }]
    };
    let (first, second) = (pay(TON), pay(2 * TON));
    let (ra, rb) = tokio::join!(a.send(&first), b.send(&second));
    blocks.abort();
    let received = embedded.account(&payee).await.unwrap().balance;
    let (done, failed) = match (&ra, &rb) {
        (Ok(_), Err(e)) => (TON, e.to_string()),
        (Err(e), Ok(_)) => (2 * TON, e.to_string()),
        other => panic!("exactly one transfer can run: {other:?}"),
    };
    assert_eq!(received, done);
    assert!(failed.contains("not by this transfer"), "{failed}");
}
