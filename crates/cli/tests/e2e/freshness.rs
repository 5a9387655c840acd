//! Evidence is dated by the devnet's real chain: every node binds the
//! newest masterchain block it read into its evidence, and verifiers look
//! the block up through the TON HTTP API (`getBlockHeader`). Attack: a
//! proxy operator whose host makes its evidence name a block the chain
//! never had (to pass off evidence made at another time) is refused by a
//! client node; the same proxy binding the chain's real head is accepted.

use std::sync::Arc;
use std::time::Duration;

use cocoon_attestation::freshness::{BlockSource, BoxFuture};
use cocoon_attestation::simulated::SimulatedTee;
use cocoon_attestation::{AnchorBlock, BlockAnchors, Configuration, PeerRole};
use cocoon_chain::anchors::ChainBlocks;
use cocoon_devnet::kit::*;
use cocoon_protocol::tls::{self, Identity, PinnedKeys};

/// The chain as the attacker's host presents it: the real head's number,
/// with a made-up hash.
#[derive(Debug)]
struct ForgedHead(ChainBlocks);

impl BlockSource for ForgedHead {
    fn head(&self) -> BoxFuture<'_, Result<AnchorBlock, String>> {
        Box::pin(async move {
            let mut head = self.0.head().await?;
            head.anchor.root_hash[0] ^= 0xff;
            Ok(head)
        })
    }

    fn block(&self, seqno: u32) -> BoxFuture<'_, Result<Option<AnchorBlock>, String>> {
        self.0.block(seqno)
    }
}

/// A TLS server presenting `identity`'s RA-TLS certificate to `client`.
async fn serve(identity: Arc<Identity>, client: &Identity) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let config =
        tls::server_config(identity, Arc::new(PinnedKeys::new([client.fingerprint()]))).unwrap();
    tokio::spawn(async move {
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        while let Ok((tcp, _)) = listener.accept().await {
            let _ = tls::accept(tcp, &acceptor, Duration::from_secs(5)).await;
        }
    });
    addr
}

/// A proxy identity (simulated TEE, a proxy's configuration) dating its
/// evidence by `source`.
async fn proxy(source: Arc<dyn BlockSource>) -> Arc<Identity> {
    let identity = Identity::generate()
        .unwrap()
        .with_attester(Arc::new(SimulatedTee::new()));
    identity.bind_configuration(&Configuration::new(PeerRole::Proxy, "test"));
    let anchors = BlockAnchors::new(source);
    anchors.refresh_head().await.unwrap();
    identity.anchor_to(anchors);
    Arc::new(identity)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_whose_evidence_names_a_block_the_chain_never_had_is_refused() {
    let net = devnet().await;
    let check = net.peer_check.clone().expect("the devnet checks evidence");
    let chain: Arc<dyn cocoon_chain::Chain> =
        Arc::new(cocoon_chain::TonHttp::new(&net.ton_api_url, None).unwrap());
    let client = Arc::new(Identity::generate().unwrap());
    // What a client node of the devnet says of a proxy's certificate, once
    // the block it binds has been looked up on the chain.
    let verdict = |server: Arc<Identity>| {
        let (check, client) = (check.clone(), client.clone());
        async move {
            let addr = serve(server.clone(), &client).await;
            let config = tls::client_config_attested(
                client,
                Arc::new(PinnedKeys::new([server.fingerprint()])),
                Some(check),
            )
            .unwrap();
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            loop {
                match tls::connect(&addr, config.clone(), Duration::from_secs(5)).await {
                    Err(e)
                        if e.to_string().contains("being looked up")
                            && std::time::Instant::now() < deadline =>
                    {
                        tokio::time::sleep(Duration::from_millis(20)).await
                    }
                    result => return result.map(|_| ()).map_err(|e| e.to_string()),
                }
            }
        }
    };
    let honest = proxy(Arc::new(ChainBlocks(chain.clone()))).await;
    verdict(honest).await.unwrap();
    let forger = proxy(Arc::new(ForgedHead(ChainBlocks(chain)))).await;
    let err = verdict(forger).await.unwrap_err();
    assert!(err.contains("not a block of this chain"), "{err}");
    net.shutdown().await;
}
