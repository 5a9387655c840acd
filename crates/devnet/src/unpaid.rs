//! An unpaid network assembled node by node, for tests that stop, restart
//! or relay single nodes (failover, cut connections): each node is started
//! as its role starts it ([`ProxyNode`], [`WorkerNode`], [`ClientNode`]),
//! pinned to the others' keys, with no chain and no billing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use cocoon_client::{ApiSettings, ClientNode, ClientSettings};
use cocoon_inference::{Engine, EngineConfig};
use cocoon_protocol::tls::{Fingerprint, Identity, PinnedKeys};
use cocoon_protocol::{MuxOptions, ProxyEndpoint};
use cocoon_proxy::{ProxyListeners, ProxyNode, ProxySettings};
use cocoon_worker::{WorkerNode, WorkerSettings};
use tokio::net::TcpListener;

/// The instant test engine serving `model`.
pub fn instant_engine(model: &str, max_concurrent: u32) -> anyhow::Result<Arc<dyn Engine>> {
    Ok(EngineConfig::Instant {
        model: model.to_string(),
        max_concurrent,
        token_delay_ms: 0,
    }
    .build()?)
}

/// Where to dial `node`, whose key is `identity`'s.
pub fn endpoint(node: &ProxyNode, identity: &Identity) -> ProxyEndpoint {
    ProxyEndpoint {
        address: node.address().to_string(),
        fingerprint: identity.fingerprint(),
    }
}

/// A proxy on `address` (port 0: a free one) serving `models`, admitting
/// the client nodes and workers whose keys are given.
pub async fn proxy(
    identity: Arc<Identity>,
    address: SocketAddr,
    clients: &[Fingerprint],
    workers: &[Fingerprint],
    models: &[&str],
    mux: MuxOptions,
) -> anyhow::Result<ProxyNode> {
    let listeners = ProxyListeners {
        node: TcpListener::bind(address)
            .await
            .with_context(|| format!("binding a proxy on {address}"))?,
        status: None,
    };
    let settings = ProxySettings {
        models: models.iter().map(|m| m.to_string()).collect(),
        mux,
        ..ProxySettings::pinned(
            identity,
            PinnedKeys::new(clients.iter().copied()),
            PinnedKeys::new(workers.iter().copied()),
        )
    };
    Ok(ProxyNode::start(settings, None, listeners)?)
}

/// A worker serving `engine`, dialling `proxies`, paid nothing.
pub async fn worker(
    identity: Arc<Identity>,
    proxies: Vec<ProxyEndpoint>,
    engine: Arc<dyn Engine>,
    mux: MuxOptions,
) -> anyhow::Result<WorkerNode> {
    let settings = WorkerSettings {
        identity,
        proxies,
        engine,
        mux,
        attestation: None,
        gpu: None,
        replay_window: Duration::from_secs(60),
        sealing_key_rotation: cocoon_worker::DEFAULT_SEALING_KEY_ROTATION,
        payout: None,
        price_coefficient: cocoon_protocol::BASE_PRICE_COEFFICIENT,
        coalesce: cocoon_worker::DEFAULT_COALESCE,
        admin_token: None,
    };
    Ok(WorkerNode::start(settings, None).await?)
}

/// A client node dialling `proxies`, its API on a free loopback port,
/// paying nothing.
pub async fn client(
    identity: Arc<Identity>,
    proxies: Vec<ProxyEndpoint>,
    mux: MuxOptions,
) -> anyhow::Result<ClientNode> {
    let listen: SocketAddr = "127.0.0.1:0".parse()?;
    let listener = TcpListener::bind(listen).await?;
    let settings = ClientSettings {
        identity,
        proxies,
        registry: None,
        api: ApiSettings::default(),
        mux,
        listen,
        attestation: None,
    };
    Ok(ClientNode::start(settings, listener)?)
}
