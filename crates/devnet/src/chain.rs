//! The devnet's embedded TON chain: a new genesis or one resumed from a
//! state directory, blocks made on a timer (and saved), TON's HTTP API
//! served over it with a switch that cuts it off, and the client node's
//! billing through that API.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use cocoon_ton_devnet::TonDevnet;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::DevnetOptions;

/// The client node pays from its contract on the embedded chain: the one
/// made at genesis, or (`client_auto_deploy`) one it deploys itself from its
/// wallet on first use of the proxy.
pub(crate) fn client_billing(
    options: &DevnetOptions,
    ton: &TonDevnet,
    ton_api_url: &str,
    state_dir: &std::path::Path,
    node_key: cocoon_protocol::tls::Fingerprint,
) -> anyhow::Result<cocoon_client::Billing> {
    let ton_http = cocoon_chain::TonHttp::new(ton_api_url, None)?;
    // One sender for the client's wallet (deployment and top-ups): two would
    // race for its seqno.
    let sender = Arc::new(cocoon_chain::WalletSender::new(
        Arc::new(ton_http.clone()),
        ton.wallets.client(),
    ));
    let wallet = || sender.clone();
    let contracts = if options.client_auto_deploy {
        Vec::new()
    } else {
        vec![ton.client_contract.clone()]
    };
    let mut billing =
        cocoon_client::Billing::new(Arc::new(ton_http), contracts, ton.root.clone(), node_key);
    billing.fresh = options.chain_fresh;
    // A contract per proxy: the others' are deployed on first use.
    if options.client_auto_deploy || options.more_proxies > 0 {
        billing.deploy = Some(cocoon_client::billing::Deploy {
            wallet: wallet(),
            deposit: options.client_deposit,
            file: state_dir.join("client-contracts.json"),
        });
    }
    if let Some((below, amount)) = options.client_top_up {
        billing.top_up = Some(cocoon_client::billing::TopUp {
            wallet: wallet(),
            below,
            amount,
        });
    }
    billing.journal = Some(cocoon_client::ReceiptJournal::new(
        state_dir.join("receipts.jsonl"),
    ));
    Ok(billing)
}

/// The TON API, unless the devnet's chain is cut off.
async fn ton_unless_out(
    axum::extract::State(out): axum::extract::State<Arc<AtomicBool>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if out.load(Ordering::SeqCst) {
        return (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "the devnet's chain is cut off (ton_outage)",
        )
            .into_response();
    }
    next.run(request).await
}

/// The embedded chain: resumed from `state_dir` when it holds one, else a
/// new genesis (saved there when given).
pub(crate) fn ton_chain(
    options: &DevnetOptions,
    prices: &cocoon_chain::Prices,
    proxy_key: [u8; 32],
    client_key: [u8; 32],
) -> anyhow::Result<TonDevnet> {
    use cocoon_ton_devnet::{Addresses, Genesis, Wallets};
    let dir = options.state_dir.as_deref();
    if let Some(dir) = dir.filter(|d| d.join("chain.json").exists()) {
        let read = |name: &str| {
            std::fs::read_to_string(dir.join(name))
                .with_context(|| format!("--state: {}", dir.join(name).display()))
        };
        let chain = cocoon_ton_devnet::Emulator::load(&dir.join("chain.json"))?;
        let addresses: Addresses = serde_json::from_str(&read("devnet.json")?)
            .with_context(|| format!("--state: {}", dir.join("devnet.json").display()))?;
        let wallets = Wallets::from_hex(&zeroize::Zeroizing::new(read("wallets.hex")?))?;
        let ton = TonDevnet::resume(chain, &addresses, wallets)?;
        anyhow::ensure!(
            ton.proxy_key.0 == proxy_key,
            "--state {}: the saved chain's proxy contract has another key than proxy.pem",
            dir.display()
        );
        return Ok(ton);
    }
    let ton = TonDevnet::genesis(
        prices,
        options.client_deposit,
        proxy_key,
        client_key,
        &Genesis {
            wallets: None,
            accounts: options.genesis_accounts.clone(),
            now: None,
        },
    )?;
    if let Some(dir) = dir {
        std::fs::write(
            dir.join("devnet.json"),
            serde_json::to_string_pretty(&ton.addresses())?,
        )?;
        cocoon_protocol::tls::write_secret_file(
            &dir.join("wallets.hex"),
            ton.wallets.to_hex().as_bytes(),
        )?;
        save_chain(&ton, dir)?;
    }
    Ok(ton)
}

pub(crate) fn save_chain(ton: &TonDevnet, dir: &std::path::Path) -> anyhow::Result<()> {
    let chain = ton
        .chain
        .lock()
        .map_err(|_| anyhow::anyhow!("chain poisoned"))?;
    chain.save(&dir.join("chain.json"))
}

/// Make a block every `every`; with a state directory, save the chain after
/// each block that had transactions.
pub async fn produce_blocks(
    ton: Arc<TonDevnet>,
    every: Duration,
    state_dir: Option<std::path::PathBuf>,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let block = {
            let Ok(mut chain) = ton.chain.lock() else {
                return;
            };
            chain.now = chain.now.max(cocoon_ton_devnet::unix_now());
            chain.produce_block()
        };
        if block.dropped > 0 {
            tracing::info!(
                seqno = block.seqno,
                dropped = block.dropped,
                "block dropped messages no longer accepted"
            );
        }
        if let (Some(dir), true) = (&state_dir, block.transactions > 0) {
            if let Err(e) = save_chain(&ton, dir) {
                tracing::error!(error = %e, "could not save the chain");
            }
        }
    }
}

/// Serve TON's HTTP API over `ton` on `listen` until `stop`; while `outage`
/// is set every call is answered 503, as a TON API that is down or
/// unreachable answers. Returns its base URL (`http://.../api/v2`).
pub(crate) async fn serve_api(
    ton: &TonDevnet,
    listen: SocketAddr,
    outage: Arc<AtomicBool>,
    stop: CancellationToken,
) -> anyhow::Result<(String, JoinHandle<()>)> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding the TON API on {listen}"))?;
    let address = listener.local_addr()?;
    let app = cocoon_ton_devnet::api::router(ton.chain.clone(), cocoon_ton_devnet::unix_now)
        .layer(axum::middleware::from_fn_with_state(outage, ton_unless_out));
    let task = tokio::spawn(async move {
        let shutdown = async move { stop.cancelled().await };
        let limits = cocoon_metrics::http::HttpLimits::default();
        if let Err(e) = cocoon_metrics::http::serve(listener, app, limits, shutdown).await {
            tracing::error!(error = %e, "TON API server failed");
        }
    });
    Ok((format!("http://{address}/api/v2"), task))
}

/// Make blocks every `every` in a task of its own (with a state directory,
/// the chain is saved after each block that had transactions).
pub(crate) fn start_blocks(
    ton: &Arc<TonDevnet>,
    every: Duration,
    state_dir: Option<std::path::PathBuf>,
    stop: CancellationToken,
) -> anyhow::Result<JoinHandle<()>> {
    ton.chain
        .lock()
        .map_err(|_| anyhow::anyhow!("chain poisoned"))?
        .in_blocks = true;
    Ok(tokio::spawn(produce_blocks(
        ton.clone(),
        every,
        state_dir,
        stop,
    )))
}
