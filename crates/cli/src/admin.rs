//! `cocoon worker drain|resume|set-price|status --config worker.toml` and `cocoon
//! proxy disable-worker|enable-worker|status --config proxy.toml`: a
//! running node's admin endpoints (on its `status_listen`, with the token
//! in its `admin_token_file`), for its GPU owner or its operator.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use zeroize::Zeroizing;

/// Where a node's admin endpoints are: its `status_listen` and `admin_token_file`.
type AdminSettings = (Option<SocketAddr>, Option<std::path::PathBuf>);

/// The admin base URL and token of the `role` node `config` describes
/// (`settings` reads them from its text).
fn admin_of(
    config: &Path,
    role: &str,
    settings: impl FnOnce(&str) -> Result<AdminSettings, cocoon_protocol::ConfigError>,
) -> anyhow::Result<(String, Zeroizing<String>)> {
    let text = std::fs::read_to_string(config)
        .with_context(|| format!("--config {}", config.display()))?;
    let (listen, file) =
        settings(&text).map_err(|e| anyhow::anyhow!("{}: {e}", config.display()))?;
    let (Some(listen), Some(file)) = (listen, file) else {
        anyhow::bail!(
            "{}: the {role}'s admin endpoints need status_listen and admin_token_file",
            config.display()
        );
    };
    let token = Zeroizing::new(
        std::fs::read_to_string(&file)
            .with_context(|| {
                format!(
                    "admin_token_file {} (the {role} makes it at its first start)",
                    file.display()
                )
            })?
            .trim()
            .to_string(),
    );
    // A worker listening on every address answers on loopback.
    let host = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    Ok((
        format!("http://{}/admin", SocketAddr::new(host, listen.port())),
        token,
    ))
}

async fn call(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    action: &str,
    args: Option<serde_json::Value>,
) -> anyhow::Result<serde_json::Value> {
    let mut request = match action {
        "status" => http.get(format!("{base}/status")),
        _ => http.post(format!("{base}/{action}")),
    };
    if let Some(args) = args {
        request = request.json(&args);
    }
    let response = request
        .bearer_auth(token)
        .send()
        .await
        .with_context(|| format!("{base}: is the node running?"))?;
    let status = response.status();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    anyhow::ensure!(
        status.is_success(),
        "{action}: {status}: {}",
        body["error"].as_str().unwrap_or("no reason given")
    );
    Ok(body)
}

/// `action` (`drain`, `resume`, `set-price` with its `args`, `status`) on
/// the worker `config` describes; with `wait`, a drain returns once no
/// request runs.
pub async fn worker(
    action: &str,
    config: &Path,
    wait: bool,
    args: Option<serde_json::Value>,
) -> anyhow::Result<()> {
    let (base, token) = admin_of(config, "worker", |text| {
        let parsed = cocoon_worker::WorkerConfig::from_toml(text)?;
        Ok((parsed.status_listen, parsed.admin_token_file))
    })?;
    let http = client()?;
    let mut state = call(&http, &base, &token, action, args).await?;
    println!("{state}");
    if wait && action == "drain" {
        let started = std::time::Instant::now();
        while state["active"].as_u64().unwrap_or(0) > 0 {
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(3600),
                "requests still running after an hour"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
            state = call(&http, &base, &token, "status", None).await?;
        }
        println!("drained: no request running");
    }
    Ok(())
}

fn client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?)
}

/// `action` (`disable-worker`, `enable-worker` with the worker's key,
/// `status`) on the proxy `config` describes.
pub async fn proxy(action: &str, config: &Path, worker: Option<&str>) -> anyhow::Result<()> {
    let (base, token) = admin_of(config, "proxy", |text| {
        let parsed = cocoon_proxy::ProxyConfig::from_toml(text)?;
        Ok((parsed.status_listen, parsed.admin_token_file))
    })?;
    if let Some(worker) = worker {
        worker
            .parse::<cocoon_protocol::tls::Fingerprint>()
            .map_err(|e| {
                anyhow::anyhow!("WORKER: {worker:?} is not a key (sha256:<64 hex>): {e}")
            })?;
    }
    let args = worker.map(|worker| serde_json::json!({ "worker": worker }));
    let state = call(&client()?, &base, &token, action, args).await?;
    println!("{}", serde_json::to_string_pretty(&state)?);
    Ok(())
}
