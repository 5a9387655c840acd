//! The nodes' pages in a real headless browser (Debian's `chromium`, driven
//! over WebDriver by `chromedriver`): the client node's playground streams
//! a chat and shows its cost and verified receipt, the worker's page counts
//! the request, the proxy's page lists its workers, clients and settlement.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cocoon_devnet::kit::*;
use fantoccini::{Client, ClientBuilder, Locator};

/// `chromedriver` on a free port, killed when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn driver() -> Driver {
    let port = cocoon_devnet::process_net::free_port().unwrap();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver (Debian's chromium-driver; ./scripts/setup installs it)");
    Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    }
}

async fn browser(driver: &Driver) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({"args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=420,900"]}),
    );
    let started = Instant::now();
    loop {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(connector)
            .capabilities(caps.clone())
            .connect(&driver.url)
            .await
        {
            Ok(client) => return client,
            Err(e) if started.elapsed() < Duration::from_secs(20) => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("cannot start headless chromium: {e}"),
        }
    }
}

/// The text of `css`, once `ok` holds for it (within 20 s).
async fn text_when(page: &Client, css: &str, ok: impl Fn(&str) -> bool) -> String {
    let started = Instant::now();
    loop {
        if let Ok(element) = page.find(Locator::Css(css)).await {
            if let Ok(text) = element.text().await {
                if ok(&text) {
                    return text;
                }
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{css}: not as expected within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn the_pages_show_a_chat_streaming_and_the_nodes_counting_it() {
    let net = devnet_with(|o| {
        o.engine = slow_engine(40, 8);
        o.settle_every = None;
    })
    .await;
    let driver = driver();
    let page = browser(&driver).await;
    let base = net.api_url.trim_end_matches("/v1").to_string();

    // The worker's page, before: nothing completed.
    page.goto(&format!("{}/", net.worker_status_url()))
        .await
        .unwrap();
    text_when(&page, "#attestation", |t| t.contains("SIMULATED")).await;
    let image = text_when(&page, "#image-hash", |t| t.len() == 64).await;
    assert!(image.chars().all(|c| c.is_ascii_hexdigit()), "{image}");
    text_when(&page, "#completed", |t| t == "0").await;
    text_when(&page, "#proxies", |t| t.contains("connected")).await;

    // The playground: pick the model, send, watch the answer stream in.
    page.goto(&format!("{base}/")).await.unwrap();
    text_when(&page, "#model", |t| t.contains(MODEL)).await;
    let prompt =
        "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen";
    page.find(Locator::Css("#prompt"))
        .await
        .unwrap()
        .send_keys(prompt)
        .await
        .unwrap();
    page.find(Locator::Css("#send"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    // Part of the answer is on screen before all of it (and before its receipt).
    let partial = text_when(&page, ".answer", |t| !t.is_empty()).await;
    assert!(
        partial.len() < prompt.len() && !partial.contains("receipt"),
        "the answer did not stream: {partial:?}"
    );
    let done = text_when(&page, ".answer", |t| t.contains("receipt")).await;
    assert!(done.starts_with(prompt), "{done}");
    assert!(done.contains("receipt verified"), "{done}");
    assert!(done.contains(" TON"), "the cost is shown: {done}");

    // The worker's page counted it.
    page.goto(&format!("{}/", net.worker_status_url()))
        .await
        .unwrap();
    text_when(&page, "#completed", |t| t == "1").await;
    text_when(&page, "#tokens", |t| t == "15").await;

    // The proxy's page: its worker, its client, and a settlement round.
    net.settle_now().await.unwrap();
    page.goto(&format!("{}/", net.proxy_status_url()))
        .await
        .unwrap();
    text_when(&page, "#workers", |t| {
        t.contains(MODEL) && t.contains("healthy")
    })
    .await;
    let contract = net.ton.client_contract.to_string();
    text_when(&page, "#clients", |t| t.contains(&contract[..14])).await;
    text_when(&page, "#history", |t| t.contains("committed")).await;
    page.close().await.unwrap();
    net.shutdown().await;
}

/// A page served by another site, open in the same browser as the
/// playground, tries to spend the node's TON with a "simple" cross-origin
/// POST (text/plain, so no CORS preflight) to the chat API. The DNS
/// rebinding half (a name of the attacker's resolving to 127.0.0.1, so the
/// browser sends `Host: evil.example`) is sent over HTTP as such a browser
/// would send it: the test cannot change the machine's resolver.
#[tokio::test]
async fn a_page_from_another_site_cannot_spend_the_nodes_ton() {
    let net = devnet().await;
    let api = format!("{}/chat/completions", net.api_url);
    let body = serde_json::to_string(&chat_body("spend it", serde_json::json!({}))).unwrap();
    let page_html = format!(
        r#"<!doctype html><title>cat pictures</title><script>
        fetch({api:?}, {{method: "POST", mode: "no-cors", headers: {{"Content-Type": "text/plain"}}, body: {body:?}}})
          .then(() => {{ document.title = "sent"; }}, () => {{ document.title = "failed"; }});
        </script>"#
    );
    let evil = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let evil_url = format!("http://localhost:{}/", evil.local_addr().unwrap().port());
    let site = axum::Router::new().route(
        "/",
        axum::routing::get(move || async move { axum::response::Html(page_html) }),
    );
    tokio::spawn(async move { axum::serve(evil, site).await });

    let driver = driver();
    let page = browser(&driver).await;
    page.goto(&evil_url).await.unwrap();
    let started = Instant::now();
    while page.title().await.unwrap() != "sent" {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the page's request never finished"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    page.close().await.unwrap();
    // The request reached the node and was refused before any worker ran it.
    let served = net
        .worker()
        .stats()
        .started
        .load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(served, 0, "a cross-site page had the node spend TON");

    // What the browser sent, and a rebound name: 403 in OpenAI's shape.
    let http = http();
    for (name, value) in [
        ("origin", evil_url.trim_end_matches('/').to_string()),
        ("host", "evil.example".to_string()),
    ] {
        let resp = http
            .post(&api)
            .header(name, value)
            .header("content-type", "text/plain")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 403, "{name}");
        let err: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(err["error"]["code"], "forbidden_origin", "{err}");
    }
    // An app (no Origin) is served.
    let (status, _) = post(&api, &chat_body("fine", serde_json::json!({}))).await;
    assert_eq!(status, 200);
    net.shutdown().await;
}
