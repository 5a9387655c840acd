//! Running one role alone from its TOML configuration file.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use cocoon_chain::pricing::format_ton;
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

/// Serve a node's `/healthz`, `/readyz`, `/metrics` and `/stats` on `listen`.
async fn status_server(
    listen: std::net::SocketAddr,
    metrics: Arc<cocoon_metrics::Metrics>,
    status: Arc<dyn cocoon_metrics::NodeStatus>,
) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding status_listen = {listen}"))?;
    println!("status: http://{listen}/metrics (and /healthz, /readyz, /stats)");
    tokio::spawn(async move {
        if let Err(e) = cocoon_metrics::serve(listener, metrics, status, ctrl_c()).await {
            tracing::error!(error = %e, "status endpoints stopped");
        }
    });
    Ok(())
}

pub async fn proxy(path: &Path) -> anyhow::Result<()> {
    let (listen, status_listen, settlement, mut settings) = load(path, |text| {
        let config = ProxyConfig::from_toml(text)?;
        Ok((
            config.listen,
            config.status_listen,
            config.settlement.clone(),
            config.into_settings()?,
        ))
    })?;
    let stop = tokio_util::sync::CancellationToken::new();
    if let Some(config) = settlement {
        let connected = config
            .connect(&settings.identity)
            .await
            .with_context(|| format!("in {}", path.display()))?;
        let settlement = Arc::new(connected);
        println!(
            "settling on TON: proxy contract {}, every {} s",
            settlement.proxy_contract(),
            config.every_secs
        );
        tokio::spawn(settlement.clone().run(
            std::time::Duration::from_secs(config.every_secs),
            stop.clone(),
        ));
        settings.settlement = Some(settlement);
    }
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding listen = {listen}"))?;
    tracing::info!(%listen, fingerprint = %settings.identity.fingerprint(), "proxy listening");
    println!(
        "proxy listening on {listen}; its key: {}",
        settings.identity.fingerprint()
    );
    let (handle, serve) = cocoon_proxy::start(listener, settings)?;
    if let Some(status_listen) = status_listen {
        let status = Arc::new(cocoon_proxy::ProxyStatus(handle.clone()));
        status_server(status_listen, handle.metrics.clone(), status).await?;
    }
    tokio::select! {
        _ = serve => {}
        _ = ctrl_c() => {}
    }
    // Peers get a goodbye and redial elsewhere at once.
    handle.shutdown();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    stop.cancel();
    Ok(())
}

pub async fn worker(path: &Path) -> anyhow::Result<()> {
    // Loading an embedded model hashes and maps its weights: off the async threads.
    let file = path.to_path_buf();
    let (status_listen, settings) = tokio::task::spawn_blocking(move || {
        load(&file, |text| {
            let config = WorkerConfig::from_toml(text)?;
            Ok((config.status_listen, config.into_settings()?))
        })
    })
    .await??;
    println!("worker key: {}", settings.identity.fingerprint());
    let worker = Worker::start(settings).await?;
    if let Some(status_listen) = status_listen {
        status_server(
            status_listen,
            worker.metrics().clone(),
            Arc::new(worker.status()),
        )
        .await?;
    }
    ctrl_c().await;
    worker.stop();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    Ok(())
}

/// `cocoon worker earnings`: each proxy's latest signed voucher, what the
/// worker contract has paid on chain, and what is pending.
pub async fn worker_earnings(path: &Path) -> anyhow::Result<()> {
    let config = load(path, WorkerConfig::from_toml)?;
    let payout = config.payout.clone().with_context(|| {
        format!(
            "{}: no [payout] section: this worker is not paid on TON",
            path.display()
        )
    })?;
    let earnings = payout
        .build()
        .with_context(|| format!("in {}", path.display()))?;
    let book = earnings.book();
    println!("payout wallet {}", earnings.payout());
    if book.is_empty() {
        println!("no vouchers yet ({} is empty)", payout.earnings.display());
    }
    let (mut pending, mut settled) = (0u128, 0u128);
    for (proxy, earned) in &book {
        let contract =
            cocoon_chain::ton_http::parse_address(&earned.contract).map_err(anyhow::Error::msg)?;
        // The chain is the truth for what was paid; the file may be older.
        let paid = earnings
            .paid_on_chain(&contract)
            .await
            .map_err(anyhow::Error::msg)?;
        let owed = earned.owed();
        println!("proxy {proxy}");
        println!("  worker contract {contract}");
        println!("  owed (signed)   {} TON", format_ton(owed));
        println!("  settled         {} TON", format_ton(paid));
        println!(
            "  pending         {} TON",
            format_ton(owed.saturating_sub(paid))
        );
        pending += owed.saturating_sub(paid);
        settled += paid;
    }
    println!(
        "total: pending {} TON, settled {} TON",
        format_ton(pending),
        format_ton(settled)
    );
    Ok(())
}

pub async fn client(path: &Path) -> anyhow::Result<()> {
    let settings = load(path, |text| ClientConfig::from_toml(text)?.into_settings())?;
    let pool = Arc::new(ProxyPool::start(
        settings.identity.clone(),
        &settings.proxies,
        settings.mux.clone(),
        settings.attestation.clone(),
        settings.api.billing.clone(),
    )?);
    if let Some(registry) = &settings.registry {
        pool.follow_registry(
            Arc::new(registry.chain.clone()),
            registry.root.clone(),
            registry.every,
        );
    }
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
