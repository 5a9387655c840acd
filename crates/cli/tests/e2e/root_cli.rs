//! `cocoon root` against the embedded chain's TON HTTP API on loopback, as
//! a network operator runs it: every change is signed by the owner's
//! wallet, confirmed on chain, and reads back through `cocoon root show`
//! and through TON's own SDK (`@ton/ton`'s TonClient); a wallet that is
//! not the owner changes nothing; ownership moves only when the proposed
//! owner accepts; `deploy` makes a new root contract.

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
    let words = owner_words.display().to_string();
    let stranger_words = stranger_words.display().to_string();
    // The devnet's operator proposes our wallet as the owner; only that
    // wallet can accept.
    ton.propose_root_owner(&owner).unwrap();
    assert_eq!(show(&api, &at).await["pending_owner"], owner.to_string());
    let out = root(
        &api,
        &at,
        &["accept-owner", "--mnemonic", &stranger_words, "--yes"],
    )
    .await;
    assert!(
        !out.status.success() && text(&out).contains("is not the proposed owner"),
        "{}",
        text(&out)
    );
    let out = root(&api, &at, &["accept-owner", "--mnemonic", &words, "--yes"]).await;
    assert!(out.status.success(), "{}", text(&out));
    let before = show(&api, &at).await;
    let owner_text = owner.to_string();
    assert_eq!(before["owner"], owner_text, "{before}");
    let version = before["version"].as_u64().unwrap();

    assert_eq!(before["pending_owner"], Value::Null, "{before}");
    let (image, weights) = ("ab".repeat(32), "cd".repeat(32));
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
        vec!["set-params", "--client-close-delay", "7200"],
        vec![
            "set-rules",
            "--require-configuration",
            "--upstream-loopback-only",
            "--engines",
            "embedded,openai-http",
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
    assert_eq!(after["prices"]["client_close_delay_secs"], 7200, "{after}");
    assert_eq!(
        after["rules"],
        serde_json::json!({"require_configuration": true, "upstream_loopback_only": true,
                           "worker_engines": ["embedded", "openai-http"]}),
        "{after}"
    );
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
    assert_eq!(
        seen["rules"],
        serde_json::json!({"requireConfiguration": true, "upstreamLoopbackOnly": true,
                           "workerEngines": "embedded,openai-http"}),
        "{seen}"
    );

    // Withdrawals, each read back.
    for change in [
        vec!["remove-image", "--role", "worker", image.as_str()],
        vec!["remove-model", "--sha256", weights.as_str()],
        vec!["remove-proxy", "--contract", at.as_str()],
        vec!["set-rules", "--clear"],
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
    assert_eq!(
        withdrawn["rules"]["worker_engines"],
        serde_json::json!([]),
        "{withdrawn}"
    );
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
        (vec!["set-params"], "nothing to change"),
        (vec!["set-rules"], "rules already"),
        (
            vec!["set-rules", "--engines", "vllm"],
            "--engines: \"vllm\"",
        ),
        (
            vec!["set-params", "--proxy-close-delay", "5"],
            "--proxy-close-delay: at least 60",
        ),
        (
            vec!["transfer-owner", "--cancel"],
            "no new owner is proposed",
        ),
        (
            vec!["transfer-owner", "--to", owner_text.as_str()],
            "owns the root contract already",
        ),
        (vec!["accept-owner"], "no new owner is proposed"),
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

    // Ownership moves in two steps: proposed, nothing moves (the owner
    // still rules, the proposed wallet does not yet), then accepted.
    let stranger_text = stranger.to_string();
    // A change signed by `words`, refused as not the owner's.
    let not_owner = |words: &str| {
        let (api, at, weights, words) =
            (api.clone(), at.clone(), weights.clone(), words.to_string());
        async move {
            let args = [
                "add-model",
                "--name",
                "x",
                "--sha256",
                &weights,
                "--mnemonic",
                &words,
                "--yes",
            ];
            let out = root(&api, &at, &args).await;
            assert!(
                text(&out).contains("not the root contract's owner"),
                "{}",
                text(&out)
            );
        }
    };
    let out = root(
        &api,
        &at,
        &[
            "transfer-owner",
            "--to",
            &stranger_text,
            "--mnemonic",
            &words,
            "--yes",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let proposed = show(&api, &at).await;
    assert_eq!(proposed["owner"], owner_text, "{proposed}");
    assert_eq!(proposed["pending_owner"], stranger_text, "{proposed}");
    assert_eq!(tonclient(&api, &at).await["pendingOwner"], stranger_text);
    not_owner(&stranger_words).await;
    let out = root(&api, &at, &["accept-owner", "--mnemonic", &words, "--yes"]).await;
    assert!(
        text(&out).contains("is not the proposed owner"),
        "{}",
        text(&out)
    );
    let out = root(
        &api,
        &at,
        &["accept-owner", "--mnemonic", &stranger_words, "--yes"],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let moved = tonclient(&api, &at).await;
    assert_eq!(moved["owner"], stranger_text, "{moved}");
    assert_eq!(moved["pendingOwner"], Value::Null, "{moved}");
    not_owner(&words).await;

    // A new root contract, deployed by a wallet that then owns it, with
    // the prices given; the same one again is refused.
    let deploy = |extra: &[&str]| {
        let mut args = vec![
            "root",
            "deploy",
            "--api",
            api.as_str(),
            "--mnemonic",
            words.as_str(),
            "--yes",
        ];
        args.extend(extra);
        cocoon(args.into_iter().map(String::from).collect())
    };
    let out = deploy(&["--client-close-delay", "5"]).await;
    assert!(
        text(&out).contains("--client-close-delay: at least 60"),
        "{}",
        text(&out)
    );
    let out = deploy(&["--price-per-token", "11"]).await;
    assert!(out.status.success(), "{}", text(&out));
    let new_root = text(&out)
        .split("deployed: root contract ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no address in {}", text(&out)))
        .to_string();
    let fresh = show(&api, &new_root).await;
    assert_eq!(fresh["owner"], owner_text, "{fresh}");
    assert_eq!(fresh["version"], 0, "{fresh}");
    assert_eq!(fresh["prices"]["price_per_token_nano"], "11", "{fresh}");
    let seen = tonclient(&api, &new_root).await;
    assert_eq!(
        (seen["state"].as_str(), seen["owner"].as_str()),
        (Some("active"), Some(owner_text.as_str())),
        "{seen}"
    );
    let out = deploy(&["--price-per-token", "11"]).await;
    assert!(text(&out).contains("deployed at"), "{}", text(&out));
}
