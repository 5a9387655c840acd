//! `cocoon root` against the embedded chain's TON HTTP API on loopback, as
//! a network operator runs it: every change is signed by the owner's
//! wallet, confirmed on chain, and reads back through `cocoon root show`
//! and through TON's own SDK (`@ton/ton`'s TonClient); a wallet that is
//! not the owner changes nothing.

use std::sync::Arc;

use cocoon_ton_devnet::{default_prices, TonDevnet, CLIENT_DEPOSIT};
use serde_json::Value;

use crate::wallet::{cocoon, new_wallet, serve, text};

const TON: u128 = 1_000_000_000;

async fn root(api: &str, root: &str, args: &[&str]) -> std::process::Output {
    let mut all = vec!["root".to_string(), args[0].to_string()];
    all.extend(["--api".into(), api.into(), "--root".into(), root.into()]);
    all.extend(args[1..].iter().map(|a| a.to_string()));
    cocoon(all).await
}

async fn show(api: &str, at: &str) -> Value {
    let out = root(api, at, &["show"]).await;
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// What `@ton/ton`'s TonClient reads of the root contract.
async fn tonclient(api: &str, at: &str) -> Value {
    let contracts = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../contracts");
    let (api, at) = (api.to_string(), at.to_string());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("node")
            .arg("scripts/tonclient-check.mjs")
            .arg(api)
            .arg(at)
            .current_dir(contracts)
            .output()
    })
    .await
    .unwrap()
    .expect("node runs (./scripts/test installs contracts/node_modules)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn the_operator_changes_the_root_contract_and_nobody_else_can() {
    let ton =
        Arc::new(TonDevnet::start(&default_prices(), CLIENT_DEPOSIT, [7; 32], [8; 32]).unwrap());
    let api = serve(ton.chain.clone()).await;
    let at = ton.root.to_string();
    let dir = tempfile::tempdir().unwrap();
    let (owner_words, owner) = new_wallet(dir.path(), "operator").await;
    let (stranger_words, stranger) = new_wallet(dir.path(), "stranger").await;
    for wallet in [&owner, &stranger] {
        ton.chain.lock().unwrap().fund(wallet, 10 * TON).unwrap();
    }
    ton.hand_root_to(&owner).unwrap();
    let before = show(&api, &at).await;
    assert_eq!(before["owner"], owner.to_string(), "{before}");
    let version = before["version"].as_u64().unwrap();

    let (image, weights) = ("ab".repeat(32), "cd".repeat(32));
    let words = owner_words.display().to_string();
    let stranger_words = stranger_words.display().to_string();
    let changes: Vec<Vec<&str>> = vec![
        vec!["add-image", "--role", "worker", &image],
        vec!["add-image", "--role", "proxy", &image],
        vec!["add-model", "--name", "smol", "--sha256", &weights],
        vec![
            "add-proxy",
            "--contract",
            &at,
            "--key",
            &image,
            "--endpoint",
            "127.0.0.1:9100",
        ],
        vec![
            "set-prices",
            "--price-per-token",
            "7",
            "--worker-share-bps",
            "9000",
        ],
    ];
    for (i, change) in changes.iter().enumerate() {
        // A stranger's wallet is refused before anything is sent.
        let mut args = change.clone();
        args.extend(["--mnemonic", stranger_words.as_str(), "--yes"]);
        let out = root(&api, &at, &args).await;
        assert!(!out.status.success(), "{}", text(&out));
        assert!(
            text(&out).contains("not the root contract's owner"),
            "{}",
            text(&out)
        );

        let mut args = change.clone();
        args.extend(["--mnemonic", words.as_str(), "--yes"]);
        let out = root(&api, &at, &args).await;
        assert!(out.status.success(), "{:?}: {}", change, text(&out));
        let expected = version + i as u64 + 1;
        assert!(
            text(&out).contains(&format!("is at version {expected}")),
            "{}",
            text(&out)
        );
    }
    let after = show(&api, &at).await;
    assert_eq!(
        after["worker_images"],
        serde_json::json!([image]),
        "{after}"
    );
    assert_eq!(after["proxy_images"], serde_json::json!([image]), "{after}");
    assert_eq!(after["models"][0]["name"], "smol", "{after}");
    assert_eq!(after["proxies"][0]["endpoint"], "127.0.0.1:9100", "{after}");
    assert_eq!(after["prices"]["price_per_token_nano"], "7", "{after}");
    assert_eq!(after["prices"]["worker_share_bps"], 9000, "{after}");
    // Other prices stay.
    assert_eq!(
        after["prices"]["min_client_stake_nano"],
        before["prices"]["min_client_stake_nano"]
    );

    // TON's own SDK reads the same contract state.
    let seen = tonclient(&api, &at).await;
    assert_eq!(
        seen["version"].as_u64(),
        after["version"].as_u64(),
        "{seen}"
    );
    assert_eq!(seen["owner"], owner.to_string(), "{seen}");
    assert_eq!(seen["pricePerToken"], "7", "{seen}");
    assert_eq!(seen["workerImages"], serde_json::json!([image]), "{seen}");
    assert_eq!(seen["proxyImages"], serde_json::json!([image]), "{seen}");
    assert_eq!(seen["models"], serde_json::json!([weights]), "{seen}");

    // Withdrawals, each read back.
    for change in [
        vec!["remove-image", "--role", "worker", image.as_str()],
        vec!["remove-model", "--sha256", weights.as_str()],
        vec!["remove-proxy", "--contract", at.as_str()],
    ] {
        let mut args = change.clone();
        args.extend(["--mnemonic", words.as_str(), "--yes"]);
        let out = root(&api, &at, &args).await;
        assert!(out.status.success(), "{:?}: {}", change, text(&out));
    }
    let withdrawn = show(&api, &at).await;
    assert_eq!(
        withdrawn["worker_images"],
        serde_json::json!([]),
        "{withdrawn}"
    );
    assert_eq!(withdrawn["models"], serde_json::json!([]), "{withdrawn}");
    assert_eq!(withdrawn["proxies"], serde_json::json!([]), "{withdrawn}");
    let seen = tonclient(&api, &at).await;
    assert_eq!(seen["workerImages"], serde_json::json!([]), "{seen}");

    // Bad input is named, and changes nothing.
    for (args, says) in [
        (vec!["add-image", "--role", "worker", "xyz"], "IMAGE_HASH"),
        (
            vec!["remove-model", "--sha256", weights.as_str()],
            "not among",
        ),
        (
            vec!["set-prices", "--worker-share-bps", "10001"],
            "--worker-share-bps",
        ),
        (vec!["set-prices"], "nothing to change"),
        (
            vec![
                "add-proxy",
                "--contract",
                at.as_str(),
                "--key",
                image.as_str(),
                "--endpoint",
                "nowhere",
            ],
            "--endpoint",
        ),
    ] {
        let mut all = args.clone();
        all.extend(["--mnemonic", words.as_str(), "--yes"]);
        let out = root(&api, &at, &all).await;
        assert!(!out.status.success(), "{args:?}");
        assert!(text(&out).contains(says), "{args:?}: {}", text(&out));
    }
    assert_eq!(show(&api, &at).await["version"], withdrawn["version"]);
    let _ = stranger;
}
