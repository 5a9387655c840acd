//! Running one role alone from its TOML configuration file: load the file,
//! start the role's node, serve until Ctrl-C.

use std::path::Path;

use anyhow::Context;
use cocoon_chain::pricing::format_ton;
use cocoon_client::{ClientConfig, ClientNode};
use cocoon_protocol::ConfigError;
use cocoon_proxy::{ProxyConfig, ProxyNode};
use cocoon_worker::{WorkerConfig, WorkerNode};

/// Read a config file and parse it; every error names the file.
fn load<S>(path: &Path, parse: impl FnOnce(&str) -> Result<S, ConfigError>) -> anyhow::Result<S> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    parse(&text).with_context(|| format!("in {}", path.display()))
}

async fn ctrl_c() {
    let _ = tokio::signal::ctrl_c().await;
    tracing::info!("shutting down");
}

fn print_status(url: Option<String>) {
    if let Some(url) = url {
        println!("status: {url}/metrics (and /healthz, /readyz, /stats)");
    }
}

pub async fn proxy(path: &Path) -> anyhow::Result<()> {
    let config = load(path, ProxyConfig::from_toml)?;
    let node = ProxyNode::from_config(config)
        .await
        .with_context(|| format!("in {}", path.display()))?;
    if let (Some(settlement), Some(every)) = (&node.handle.settlement, node.settle_every()) {
        println!(
            "settling on TON: proxy contract {}, every {} s",
            settlement.proxy_contract(),
            every.as_secs()
        );
    }
    println!(
        "proxy listening on {}; its key: {}",
        node.address(),
        node.handle.fingerprint
    );
    print_status(node.status_url());
    tokio::select! {
        _ = node.stopped() => {}
        _ = ctrl_c() => {}
    }
    node.stop().await;
    Ok(())
}

pub async fn worker(path: &Path) -> anyhow::Result<()> {
    let config = load(path, WorkerConfig::from_toml)?;
    let node = WorkerNode::from_config(config)
        .await
        .with_context(|| format!("in {}", path.display()))?;
    println!("worker key: {}", node.fingerprint());
    print_status(node.status_url());
    ctrl_c().await;
    node.stop().await;
    Ok(())
}

/// `cocoon worker doctor`: each step's finding, and what to fix; fails
/// when a step failed.
pub async fn worker_doctor(path: &Path) -> anyhow::Result<()> {
    use cocoon_worker::doctor::Outcome;
    let config = load(path, WorkerConfig::from_toml)?;
    println!("checking the worker {} describes", path.display());
    let findings = cocoon_worker::doctor::diagnose(config).await;
    for finding in &findings {
        let mark = match finding.outcome {
            Outcome::Pass => "ok  ",
            Outcome::Warn => "WARN",
            Outcome::Fail => "FAIL",
        };
        println!("{mark} {}: {}", finding.step, finding.detail);
        if let Some(fix) = &finding.fix {
            println!("     -> {fix}");
        }
    }
    let failed = findings
        .iter()
        .filter(|f| f.outcome == Outcome::Fail)
        .count();
    anyhow::ensure!(
        failed == 0,
        "{failed} step(s) failed: fix them and run the doctor again"
    );
    let warned = findings
        .iter()
        .filter(|f| f.outcome == Outcome::Warn)
        .count();
    if warned == 0 {
        println!("every step passed");
    } else {
        println!("no step failed; {warned} warning(s) above");
    }
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
    println!("payout wallet {}", earnings.payout());
    let lines = earnings.report().await.map_err(anyhow::Error::msg)?;
    if lines.is_empty() {
        println!("no vouchers yet ({} is empty)", payout.earnings.display());
    }
    let (mut pending, mut settled) = (0u128, 0u128);
    for line in &lines {
        println!("proxy {}", line.proxy);
        println!("  worker contract {}", line.contract);
        println!("  owed (signed)   {} TON", format_ton(line.owed));
        println!("  settled         {} TON", format_ton(line.paid));
        println!("  pending         {} TON", format_ton(line.pending()));
        pending += line.pending();
        settled += line.paid;
    }
    println!(
        "total: pending {} TON, settled {} TON",
        format_ton(pending),
        format_ton(settled)
    );
    Ok(())
}

pub async fn client(path: &Path) -> anyhow::Result<()> {
    let config = load(path, ClientConfig::from_toml)?;
    let node = ClientNode::from_config(config)
        .await
        .with_context(|| format!("in {}", path.display()))?;
    println!(
        "client node key: {}\nOpenAI-compatible API: {}",
        node.fingerprint,
        node.api_url()
    );
    tokio::select! {
        _ = node.stopped() => {}
        _ = ctrl_c() => {}
    }
    node.stop().await;
    Ok(())
}
