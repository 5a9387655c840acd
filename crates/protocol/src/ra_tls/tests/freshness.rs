//! Evidence is fresh: it binds a masterchain block the verifier finds on
//! its chain, no older than the policy allows. The host plays the attacker:
//! it replays evidence the enclave made long ago (in a new certificate, or
//! beside a fresh block), or names a block the chain never had. Real TLS
//! handshakes on loopback; the chain is blocks in memory.

use std::sync::Mutex;

use cocoon_attestation::freshness::FixedBlocks;
use cocoon_attestation::{Anchor, AnchorBlock, BlockAnchors, Purpose};

use super::*;

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A chain's blocks as a node sees them (perhaps a stale or forged view).
fn anchors_of(blocks: &[AnchorBlock]) -> Arc<BlockAnchors> {
    BlockAnchors::new(FixedBlocks::new(blocks))
}

fn block(seqno: u32, root: u8, gen_utime: u64) -> AnchorBlock {
    AnchorBlock {
        anchor: Anchor {
            seqno,
            root_hash: [root; 32],
        },
        gen_utime,
    }
}

/// The chain: a block two days old, and one made ten seconds ago.
fn chain() -> Vec<AnchorBlock> {
    let now = unix_now();
    vec![block(1, 0x11, now - 2 * 86_400), block(2, 0x22, now - 10)]
}

/// A proxy that requires fresh evidence, dating it by `chain`.
async fn verifier() -> Arc<AttestationCheck> {
    let anchors = anchors_of(&chain());
    anchors.ready().await.unwrap();
    Arc::new(AttestationCheck {
        anchors: Some(anchors),
        gpu: None,
        published: None,
        ..AttestationCheck::new(Policy {
            require_fresh_evidence: true,
            ..dev_policy()
        })
    })
}

/// A worker whose evidence binds the newest block of `view`, as its node
/// sees the chain.
async fn worker(attester: Arc<dyn Attester>, view: &[AnchorBlock]) -> Arc<Identity> {
    let identity = attested(attester);
    let anchors = anchors_of(view);
    anchors.refresh_head().await.unwrap();
    identity.anchor_to(anchors);
    identity
}

/// The proxy's verdict on one handshake from `worker`.
async fn proxy_verdict(worker: Arc<Identity>, check: &Arc<AttestationCheck>) -> Result<(), String> {
    let proxy = attested(Arc::new(SimulatedTee::new()));
    handshake(proxy, Some(check.clone()), worker, None).await.1
}

/// The proxy's verdict once the block `worker` binds has been looked up
/// (the worker redials while it is).
async fn settled_verdict(
    worker: Arc<Identity>,
    check: &Arc<AttestationCheck>,
) -> Result<(), String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match proxy_verdict(worker.clone(), check).await {
            Err(e) if e.contains("being looked up") && std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await
            }
            verdict => return verdict,
        }
    }
}

#[tokio::test]
async fn evidence_binding_a_recent_block_of_the_chain_passes_once_the_block_is_looked_up() {
    let check = verifier().await;
    let honest = worker(Arc::new(SimulatedTee::new()), &chain()).await;
    // The proxy read the chain's head (block 2) when it started: known.
    proxy_verdict(honest.clone(), &check).await.unwrap();

    // The chain moves on after the proxy read its head: a block the proxy
    // has not seen yet is looked up in the background (the handshake does
    // not wait for the network); the worker's next attempt passes.
    let blocks = FixedBlocks::new(&chain());
    let anchors = BlockAnchors::new(blocks.clone());
    anchors.ready().await.unwrap();
    let check = Arc::new(AttestationCheck {
        anchors: Some(anchors),
        published: None,
        gpu: None,
        ..(*check).clone()
    });
    blocks.push(block(3, 0x33, unix_now() - 1));
    let late = worker(Arc::new(SimulatedTee::new()), &blocks.blocks()).await;
    let err = proxy_verdict(late.clone(), &check).await.unwrap_err();
    assert!(err.contains("being looked up"), "{err}");
    settled_verdict(late, &check).await.unwrap();
}

/// Evidence the enclave made two days ago, shown in a certificate issued
/// today: the block it binds is on the chain, but too old.
#[tokio::test]
async fn evidence_made_long_ago_is_refused_as_stale() {
    let check = verifier().await;
    let replayed = worker(Arc::new(SimulatedTee::new()), &chain()[..1]).await;
    let err = settled_verdict(replayed, &check).await.unwrap_err();
    assert!(err.contains("older than the 86400 s"), "{err}");
}

/// A host cannot pre-date the future: a block number the chain has, with a
/// hash it made up (as if it had guessed a block to come), is not a block
/// of the chain.
#[tokio::test]
async fn evidence_naming_a_block_the_chain_never_had_is_refused() {
    let check = verifier().await;
    let mut forged = chain();
    forged[1].anchor.root_hash = [0x99; 32];
    let guesser = worker(Arc::new(SimulatedTee::new()), &forged).await;
    let err = settled_verdict(guesser, &check).await.unwrap_err();
    assert!(err.contains("not a block of this chain"), "{err}");
}

/// Evidence that binds no block at all (what every node made before
/// evidence was dated) is refused where the policy requires it fresh.
#[tokio::test]
async fn evidence_binding_no_block_is_refused() {
    let check = verifier().await;
    let undated = attested(Arc::new(SimulatedTee::new()));
    let err = proxy_verdict(undated, &check).await.unwrap_err();
    assert!(err.contains("binds no TON masterchain block"), "{err}");
}

/// A key (DER SPKI) and the configuration document beside it.
type Bound = (Vec<u8>, Option<Arc<[u8]>>);

/// Replays old evidence whatever it is asked for: the quote binds the key
/// and configuration, but the block of two days ago.
#[derive(Debug)]
struct OldQuote {
    tee: SimulatedTee,
    /// The key and configuration the old evidence bound.
    bound: Mutex<Option<Bound>>,
}

impl Attester for OldQuote {
    fn evidence(
        &self,
        _report_data: &[u8; 64],
    ) -> Result<Evidence, cocoon_attestation::tdx::QuoteError> {
        let (spki, configuration) = self.bound.lock().unwrap().clone().unwrap();
        let old = chain()[0].anchor.to_bytes();
        let binding = cocoon_attestation::configuration::bind(
            cocoon_attestation::report_data(&spki, Purpose::Tls, Some(&old)),
            configuration.as_deref(),
        );
        Ok(Evidence::Simulated(Box::new(self.tee.quote(&binding))))
    }
}

/// The host shows old evidence beside a fresh block (the certificate's
/// anchor extension says block 2): the quote does not bind that block.
#[tokio::test]
async fn old_evidence_beside_a_fresh_block_does_not_bind_it() {
    let check = verifier().await;
    let old = Arc::new(OldQuote {
        tee: SimulatedTee::new(),
        bound: Mutex::new(None),
    });
    let identity = worker(old.clone(), &chain()).await;
    identity.bind_configuration(&configuration(PeerRole::Worker));
    *old.bound.lock().unwrap() = Some((identity.spki().to_vec(), identity.configuration()));
    let err = settled_verdict(identity, &check).await.unwrap_err();
    assert!(err.contains("does not bind the presented key"), "{err}");
}

struct Idle;

impl crate::Handler for Idle {
    fn serve(
        &self,
        _: &crate::Connection,
        _: crate::RequestBody,
    ) -> futures::stream::BoxStream<'static, crate::Event> {
        use futures::StreamExt;
        futures::stream::empty().boxed()
    }
}

/// A live connection whose peer's evidence reaches the policy's maximum age
/// is closed, naming why (the peer redials with its re-issued certificate).
/// Without the watch it stayed up for as long as the peer kept it.
#[tokio::test]
async fn a_connection_is_closed_when_its_peers_evidence_ages_out() {
    let now = unix_now();
    let max = 3600;
    // A block made so that the evidence binding it turns too old in 2 s.
    let blocks = vec![block(7, 0x77, now - max + 2)];
    let peer = worker(Arc::new(SimulatedTee::new()), &blocks).await;
    peer.bind_configuration(&configuration(PeerRole::Worker));
    let cert = peer.issue_certificate().unwrap().to_vec();
    let anchors = anchors_of(&blocks);
    anchors.ready().await.unwrap();
    let check = Arc::new(AttestationCheck {
        anchors: Some(anchors),
        gpu: None,
        ..AttestationCheck::new(Policy {
            require_fresh_evidence: true,
            max_evidence_age_secs: max,
            ..dev_policy()
        })
    });
    let (a, b) = tokio::io::duplex(4096);
    let end = |io| {
        crate::Connection::spawn(
            tokio_util::codec::Framed::new(io, crate::codec::length_codec(1 << 20)),
            crate::Hello {
                role: crate::Role::Worker,
                software: "t".into(),
            },
            None,
            Arc::new(Idle),
            crate::MuxOptions::default(),
        )
    };
    // The proxy's end (watching) and the worker's (told why).
    let (conn, peer_end) = (end(a), end(b));
    super::super::watch_peer(check, PeerRole::Worker, cert, conn.clone());
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(!conn.is_closed(), "fresh evidence keeps the connection");
    tokio::time::timeout(std::time::Duration::from_secs(10), conn.closed())
        .await
        .expect("closed once the evidence aged out");
    tokio::time::timeout(std::time::Duration::from_secs(5), peer_end.closed())
        .await
        .expect("the peer is told");
    let reason = peer_end.close_reason().unwrap();
    assert!(reason.contains("older than"), "{reason}");
}
