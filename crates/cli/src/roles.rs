//! Running one role alone from its TOML configuration file.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use cocoon_client::{ClientConfig, ProxyPool};
use cocoon_protocol::ConfigError;
use cocoon_proxy::ProxyConfig;
use cocoon_worker::{Worker, WorkerConfig};
use tokio::net::TcpListener;

/// Read a config file and turn it into settings; every error names the file.
fn load<S>(path: &Path, parse: impl FnOnce(&str) -> Result<S, ConfigError>) -> anyhow::Result<S> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    parse(&text).with_context(|| format!("in {}", path.display()))
}

async fn ctrl_c() {
    let _ = tokio::signal::ctrl_c().await;
    tracing::info!("shutting down");
}

pub async fn proxy(path: &Path) -> anyhow::Result<()> {
    let (listen, settings) = load(path, |text| {
        let config = ProxyConfig::from_toml(text)?;
        Ok((config.listen, config.into_settings()?))
    })?;
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding listen = {listen}"))?;
    tracing::info!(%listen, fingerprint = %settings.identity.fingerprint(), "proxy listening");
    println!(
        "proxy listening on {listen}; its key: {}",
        settings.identity.fingerprint()
    );
    cocoon_proxy::run(listener, settings, ctrl_c()).await?;
    Ok(())
}

pub async fn worker(path: &Path) -> anyhow::Result<()> {
    // Loading an embedded model hashes and maps its weights: off the async threads.
    let file = path.to_path_buf();
    let settings = tokio::task::spawn_blocking(move || {
        load(&file, |text| WorkerConfig::from_toml(text)?.into_settings())
    })
    .await??;
    println!("worker key: {}", settings.identity.fingerprint());
    let worker = Worker::start(settings).await?;
    ctrl_c().await;
    worker.stop();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    Ok(())
}

pub async fn client(path: &Path) -> anyhow::Result<()> {
    let settings = load(path, |text| ClientConfig::from_toml(text)?.into_settings())?;
    let pool = Arc::new(ProxyPool::start(
        settings.identity.clone(),
        &settings.proxies,
        settings.mux.clone(),
        settings.attestation.clone(),
    )?);
    let listener = TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("binding listen = {}", settings.listen))?;
    println!(
        "client node key: {}\nOpenAI-compatible API: http://{}/v1",
        settings.identity.fingerprint(),
        settings.listen
    );
    cocoon_client::serve(listener, pool.clone(), settings.api, ctrl_c()).await?;
    pool.stop();
    Ok(())
}
