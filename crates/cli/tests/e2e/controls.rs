//! A GPU owner's run-time controls over its worker's admin endpoint (on
//! `status_listen`, behind the admin token): draining under load loses no
//! request (running ones finish, new ones go to the other worker), resuming
//! brings the worker back, and nobody without the token, nor a web page
//! holding it, can drive the worker. A proxy operator disables a worker
//! (disconnected, refused when it redials, never routed to) and enables
//! it again, through `cocoon proxy disable-worker|enable-worker|status`.

use std::time::Duration;

use cocoon_devnet::kit::{chat_body, http, post, wait, MODEL};
use cocoon_devnet::{Devnet, DevnetOptions};
use cocoon_worker::EngineConfig;
use serde_json::{json, Value};

/// `action` on the admin endpoints under `base` (a status URL), with
/// `token`, `args`, and an `Origin` header as a web page's request has.
async fn call(
    base: &str,
    action: &str,
    token: Option<&str>,
    origin: bool,
    args: Option<Value>,
) -> (u16, Value) {
    let url = format!("{base}/admin/{action}");
    let mut request = if action == "status" {
        http().get(url)
    } else {
        http().post(url)
    };
    if let Some(args) = args {
        request = request.json(&args);
    }
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if origin {
        request = request.header("Origin", "http://evil.example");
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// `action` on the first worker's admin endpoints.
async fn admin(net: &Devnet, action: &str, token: Option<&str>, origin: bool) -> (u16, Value) {
    call(
        &net.workers[0].status_url().unwrap(),
        action,
        token,
        origin,
        None,
    )
    .await
}

/// A devnet with two instant workers at the same price, each token after
/// `token_delay_ms`, both announced.
async fn two_workers(token_delay_ms: u64) -> Devnet {
    let engine = EngineConfig::Instant {
        model: MODEL.into(),
        max_concurrent: 64,
        token_delay_ms,
    };
    let mut options = DevnetOptions::instant(MODEL);
    options.engine = engine.clone();
    options.more_workers = vec![(engine, options.price_coefficient)];
    let net = Devnet::start(options).await.expect("devnet starts");
    wait("both workers announced", || {
        net.proxy().registry.worker_count() == 2
    })
    .await;
    net
}

fn completed(net: &Devnet, i: usize) -> u64 {
    net.workers[i]
        .worker
        .stats()
        .completed
        .load(std::sync::atomic::Ordering::SeqCst)
}

#[tokio::test]
async fn draining_a_worker_under_load_loses_no_request_and_only_its_owner_can() {
    let net = two_workers(20).await;
    let token = net.admin_token.as_str();

    // Nobody else: no token, a wrong one, or a browser holding the right one.
    assert_eq!(admin(&net, "drain", None, false).await.0, 401);
    assert_eq!(
        admin(&net, "drain", Some(&"0".repeat(64)), false).await.0,
        401
    );
    assert_eq!(admin(&net, "status", None, false).await.0, 401);
    let (status, body) = admin(&net, "drain", Some(token), true).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        admin(&net, "status", Some(token), false).await.1["draining"],
        false
    );
    let (status, body) = admin(&net, "reboot", Some(token), false).await;
    assert_eq!(status, 404, "{body}");

    // Load on both workers (each answer ~40 tokens at 20 ms), and the
    // first drained while it runs: every request is answered in full.
    let url = format!("{}/chat/completions", net.api_url);
    let load: Vec<_> = (0..24)
        .map(|i| {
            let url = url.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(40 * i)).await;
                let text = format!("request {i} {}", "word ".repeat(38));
                post(&url, &chat_body(&text, json!({"max_tokens": 64}))).await
            })
        })
        .collect();
    let active = |i: usize| {
        net.workers[i]
            .worker
            .stats()
            .active
            .load(std::sync::atomic::Ordering::SeqCst)
    };
    wait("requests running on the worker to drain", || active(0) >= 2).await;
    let (status, body) = admin(&net, "drain", Some(token), false).await;
    assert!(body["active"].as_u64().unwrap() >= 1, "{body}");
    assert_eq!((status, &body["draining"]), (200, &json!(true)), "{body}");
    for request in load {
        let (status, body) = request.await.unwrap();
        assert_eq!(status, 200, "{body}");
        // The whole answer (the echo engine runs to max_tokens).
        assert_eq!(body["usage"]["completion_tokens"], 64, "{body}");
    }
    wait("the drained worker's running requests finished", || {
        active(0) == 0
    })
    .await;

    // Drained: not ready (an orchestrator sees why), and new requests all
    // go to the other worker.
    let readyz = || async {
        let response = http()
            .get(format!("{}/readyz", net.workers[0].status_url().unwrap()))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (
            status,
            response.json::<Value>().await.unwrap_or(Value::Null),
        )
    };
    let (status, body) = readyz().await;
    assert_eq!(
        (status, &body["detail"]["draining"]),
        (503, &json!(true)),
        "{body}"
    );
    let before = completed(&net, 0);
    for i in 0..6 {
        let (status, body) = post(&url, &chat_body(&format!("after {i}"), json!({}))).await;
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(
        completed(&net, 0),
        before,
        "a drained worker was given new work"
    );

    // Resumed: it serves again.
    let (status, body) = admin(&net, "resume", Some(token), false).await;
    assert_eq!((status, &body["draining"]), (200, &json!(false)), "{body}");
    assert_eq!(readyz().await.0, 200);
    let mut served = false;
    for i in 0..40 {
        let (status, body) = post(&url, &chat_body(&format!("again {i}"), json!({}))).await;
        assert_eq!(status, 200, "{body}");
        if completed(&net, 0) > before {
            served = true;
            break;
        }
    }
    assert!(served, "the resumed worker got no request");
    net.shutdown().await;
}

/// `cocoon proxy ACTION --config proxy.toml` (the real binary), pointed at
/// the devnet proxy's status port and token.
async fn proxy_cli(net: &Devnet, dir: &std::path::Path, args: &[&str]) -> (bool, String) {
    let token_file = dir.join("proxy-admin.token");
    std::fs::write(&token_file, net.admin_token.as_bytes()).unwrap();
    let status = net.proxy_status_url();
    let config = format!(
        "listen = \"127.0.0.1:1\"\nstatus_listen = \"{}\"\nadmin_token_file = {:?}\nidentity_key = {:?}\nallowed_workers = []\nallowed_clients = []\n",
        status.trim_start_matches("http://"),
        token_file,
        dir.join("proxy.pem"),
    );
    cocoon_cli(dir, "proxy", &config, args).await
}

/// `cocoon ROLE ARGS --config FILE` (the real binary), FILE in `dir`
/// holding `config`: success, and what it printed.
pub(crate) async fn cocoon_cli(
    dir: &std::path::Path,
    role: &str,
    config: &str,
    args: &[&str],
) -> (bool, String) {
    let file = dir.join(format!("{role}.toml"));
    std::fs::write(&file, config).unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_cocoon"));
    command.arg(role).args(args).arg("--config").arg(&file);
    // Off the runtime's thread: the devnet answers on it meanwhile.
    let out = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

async fn proxy_admin(
    net: &Devnet,
    action: &str,
    token: &str,
    origin: bool,
    args: Value,
) -> (u16, Value) {
    call(
        &net.proxy_status_url(),
        action,
        Some(token),
        origin,
        Some(args),
    )
    .await
}

#[tokio::test]
async fn a_proxy_operator_disables_a_worker_it_keeps_refusing_and_only_the_operator_can() {
    let net = two_workers(10).await;
    // Eight requests at once: spread over both workers when both serve.
    let url = format!("{}/chat/completions", net.api_url);
    let burst = |round: usize| {
        let url = url.clone();
        async move {
            let load: Vec<_> = (0..8)
                .map(|i| {
                    let url = url.clone();
                    tokio::spawn(async move {
                        let text = format!("r{round} q{i}");
                        post(&url, &chat_body(&text, json!({"max_tokens": 16}))).await
                    })
                })
                .collect();
            for request in load {
                let (status, body) = request.await.unwrap();
                assert_eq!(status, 200, "{body}");
            }
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let bad = net.workers[0].worker.fingerprint().to_string();
    let token = net.admin_token.as_str();

    // Nobody but the operator: a wrong token, or a web page holding the
    // right one, disables nothing.
    let (status, _) = proxy_admin(
        &net,
        "disable-worker",
        &"0".repeat(64),
        false,
        json!({"worker": bad}),
    )
    .await;
    assert_eq!(status, 401);
    let (status, _) =
        proxy_admin(&net, "disable-worker", token, true, json!({"worker": bad})).await;
    assert_eq!(status, 403);
    // A malformed key is refused naming the argument, by the endpoint and by the CLI.
    let (status, body) = proxy_admin(
        &net,
        "disable-worker",
        token,
        false,
        json!({"worker": "sha256:zz"}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().starts_with("worker:"),
        "{body}"
    );
    let (ok, out) = proxy_cli(&net, dir.path(), &["disable-worker", "nonsense"]).await;
    assert!(!ok && out.contains("WORKER"), "{out}");
    assert_eq!(net.proxy().registry.worker_count(), 2);

    // The operator lists the workers, then disables one: it is
    // disconnected, its redials are refused, and every request goes to
    // the other worker.
    let (ok, out) = proxy_cli(&net, dir.path(), &["status"]).await;
    assert!(ok && out.contains(&bad), "{out}");
    let (ok, out) = proxy_cli(&net, dir.path(), &["disable-worker", &bad]).await;
    assert!(ok, "{out}");
    let state: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(state["disconnected"], 1, "{state}");
    assert_eq!(state["disabled"], json!([bad]), "{state}");
    wait("the disabled worker is gone", || {
        net.proxy().registry.worker_count() == 1
    })
    .await;
    let before = completed(&net, 0);
    // Long enough for the worker to redial several times (backoff from 100 ms).
    let started = std::time::Instant::now();
    let mut round = 0;
    while started.elapsed() < Duration::from_secs(3) || round < 4 {
        burst(round).await;
        round += 1;
        assert_eq!(
            net.proxy().registry.worker_count(),
            1,
            "a disabled worker was admitted again"
        );
    }
    assert_eq!(
        completed(&net, 0),
        before,
        "a disabled worker was given work"
    );

    // Enabled again: it redials (backoff at most 10 s) and serves.
    let (ok, out) = proxy_cli(&net, dir.path(), &["enable-worker", &bad]).await;
    assert!(ok && out.contains("\"was_disabled\": true"), "{out}");
    wait("the enabled worker is back", || {
        net.proxy().registry.worker_count() == 2
    })
    .await;
    // The client node's key list may be a few seconds old (fetched while
    // the worker was away): bursts until it is fetched again and seals to
    // both.
    let started = std::time::Instant::now();
    let mut served = false;
    let mut round = 100;
    while !served && started.elapsed() < Duration::from_secs(20) {
        burst(round).await;
        round += 1;
        served = completed(&net, 0) > before;
    }
    assert!(served, "the enabled worker got no request in 20 s");
    net.shutdown().await;
}
