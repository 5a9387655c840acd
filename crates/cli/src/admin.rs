//! `cocoon worker drain|resume|status --config worker.toml`: a running
//! worker's admin endpoints (on its `status_listen`, with the token in its
//! `admin_token_file`), for its GPU owner.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use zeroize::Zeroizing;

/// The worker's admin base URL and token, from its config file.
fn admin_of(config: &Path) -> anyhow::Result<(String, Zeroizing<String>)> {
    let text = std::fs::read_to_string(config)
        .with_context(|| format!("--config {}", config.display()))?;
    let parsed = cocoon_worker::WorkerConfig::from_toml(&text)
        .map_err(|e| anyhow::anyhow!("{}: {e}", config.display()))?;
    let (Some(listen), Some(file)) = (parsed.status_listen, parsed.admin_token_file) else {
        anyhow::bail!(
            "{}: the worker's admin endpoints need status_listen and admin_token_file",
            config.display()
        );
    };
    let token = Zeroizing::new(
        std::fs::read_to_string(&file)
            .with_context(|| {
                format!(
                    "admin_token_file {} (the worker makes it at its first start)",
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
) -> anyhow::Result<serde_json::Value> {
    let request = match action {
        "status" => http.get(format!("{base}/status")),
        _ => http.post(format!("{base}/{action}")),
    };
    let response = request
        .bearer_auth(token)
        .send()
        .await
        .with_context(|| format!("{base}: is the worker running?"))?;
    let status = response.status();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    anyhow::ensure!(
        status.is_success(),
        "{action}: {status}: {}",
        body["error"].as_str().unwrap_or("no reason given")
    );
    Ok(body)
}

/// `action` (`drain`, `resume`, `status`) on the worker `config` describes;
/// with `wait`, a drain returns once no request runs.
pub async fn worker(action: &str, config: &Path, wait: bool) -> anyhow::Result<()> {
    let (base, token) = admin_of(config)?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let mut state = call(&http, &base, &token, action).await?;
    println!("{state}");
    if wait && action == "drain" {
        let started = std::time::Instant::now();
        while state["active"].as_u64().unwrap_or(0) > 0 {
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(3600),
                "requests still running after an hour"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
            state = call(&http, &base, &token, "status").await?;
        }
        println!("drained: no request running");
    }
    Ok(())
}
