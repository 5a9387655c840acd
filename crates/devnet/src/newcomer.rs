//! A client node nobody configured: a key of its own, and a client contract
//! it deploys and stakes from a funded wallet on first use, registered with
//! the proxy as it connects. How an app developer joins an open network
//! (`cocoon devnet --open`); a proxy that pins its client nodes refuses it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use cocoon_client::{ApiSettings, ClientNode, ClientSettings};
use cocoon_protocol::tls::Identity;
use tokio::net::TcpListener;

use crate::Devnet;

impl Devnet {
    /// A new client node with a new key, dialling the first proxy, paying
    /// from a client contract it deploys (`deposit` nano-TON, all staked)
    /// from the devnet's funded client wallet. Returned once connected (an
    /// error when the proxy does not let it in within 10 s).
    pub async fn newcomer_client(&self, deposit: u128) -> anyhow::Result<ClientNode> {
        let identity = Arc::new(Identity::generate()?);
        let ton = cocoon_chain::TonHttp::new(&self.ton_api_url, None)?;
        let wallet = Arc::new(cocoon_chain::WalletSender::new(
            Arc::new(ton.clone()),
            self.ton.wallets.client(),
        ));
        let mut billing = cocoon_client::Billing::new(
            Arc::new(ton),
            Vec::new(),
            self.ton.root.clone(),
            identity.fingerprint(),
        );
        billing.deploy = Some(cocoon_client::billing::Deploy {
            wallet,
            deposit,
            file: self.state_dir().join(format!(
                "newcomer-{}-contracts.json",
                &identity.fingerprint().to_string()[7..19]
            )),
        });
        let listen: SocketAddr = "127.0.0.1:0".parse()?;
        let listener = TcpListener::bind(listen).await?;
        let client = ClientNode::start(
            ClientSettings {
                identity,
                proxies: vec![self.proxies[0].endpoint.clone()],
                registry: None,
                api: ApiSettings {
                    billing: Some(Arc::new(billing)),
                    ..ApiSettings::default()
                },
                mux: Default::default(),
                listen,
                attestation: self.peer_check.clone(),
            },
            listener,
        )?;
        tokio::time::timeout(Duration::from_secs(10), client.wait_ready(1))
            .await
            .context("the proxy did not let the newcomer client node in within 10 s")?;
        Ok(client)
    }
}
