//! Keys are released over real RA-TLS on loopback to nodes with simulated
//! TEEs, and only to those whose evidence passes the key manager's policy
//! for the role the key is for. The attackers: a host running another
//! image, a simulated TEE offered to a production policy, evidence made
//! long ago, a node of one role asking for another role's key, another
//! owner, and a fake key manager asking for the master secret.

use std::sync::Arc;

use cocoon_attestation::freshness::FixedBlocks;
use cocoon_attestation::simulated::SimulatedTee;
use cocoon_attestation::{Anchor, AnchorBlock, BlockAnchors, Configuration, PeerRole, Policy};
use cocoon_protocol::ra_tls::AttestationCheck;
use cocoon_protocol::tls::Identity;
use ed25519_dalek::SigningKey;

use super::*;

fn image() -> String {
    SimulatedTee::measurements().image_hash()
}

/// The network's development policy: the simulated image may run every
/// role; freshness waived unless a test dates evidence.
fn policy() -> Policy {
    Policy {
        allow_simulated: true,
        worker_images: [image()].into(),
        proxy_images: [image()].into(),
        key_manager_images: [image()].into(),
        require_fresh_evidence: false,
        ..Policy::default()
    }
}

fn check(policy: Policy) -> Arc<AttestationCheck> {
    Arc::new(AttestationCheck::new(policy))
}

/// A node of `role` with a simulated TEE and a key made in memory (as a
/// TDX node's is: a new one at every start).
fn node(role: PeerRole) -> Arc<Identity> {
    let identity = Identity::generate()
        .unwrap()
        .with_attester(Arc::new(SimulatedTee::new()));
    identity.bind_configuration(&Configuration::new(role, "test"));
    Arc::new(identity)
}

fn owner(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn authorize(owner: &SigningKey, role: PeerRole, name: &str) -> Authorization {
    Authorization::sign(owner, role, "identity", name, server::unix_now() + 3600)
}

/// A key manager holding `master`, judging requesters by `policy`; its
/// address.
async fn start(master: MasterSecret, policy: Policy) -> String {
    start_checking(master, check(policy)).await
}

/// [`start`] with a whole check (a chain to date evidence by).
async fn start_checking(master: MasterSecret, check: Arc<AttestationCheck>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let km = Arc::new(KeyManager::new(master, node(PeerRole::KeyManager), check));
    tokio::spawn(km.serve(listener));
    address
}

async fn key(
    address: &str,
    node: Arc<Identity>,
    authorization: Authorization,
) -> Result<[u8; 32], String> {
    fetch_key(address, node, check(policy()), authorization)
        .await
        .map(|k| *k)
        .map_err(|e| e.to_string())
}

/// An attested proxy's key from `km`, authorized by `owner` as `name`.
async fn proxy_key(km: &str, owner: &SigningKey, name: &str) -> Result<[u8; 32], String> {
    key(
        km,
        node(PeerRole::Proxy),
        authorize(owner, PeerRole::Proxy, name),
    )
    .await
}

#[tokio::test]
async fn an_attested_node_gets_its_key_the_same_after_a_restart_and_from_a_replica() {
    let km = start(MasterSecret::generate(), policy()).await;
    let alice = owner(1);
    let first = proxy_key(&km, &alice, "eu-1").await.unwrap();
    // The node restarts: a new in-memory key and new evidence, the same
    // key released.
    let again = proxy_key(&km, &alice, "eu-1").await.unwrap();
    assert_eq!(first, again);
    // Another name, another role's key: different keys.
    let other = proxy_key(&km, &alice, "eu-2").await.unwrap();
    assert_ne!(first, other);

    // A second key manager replicates the master secret from the first
    // (how a key manager survives a restart on TDX) and releases the same key.
    let master = replicate(&km, node(PeerRole::KeyManager), check(policy()))
        .await
        .unwrap();
    let replica = start(master, policy()).await;
    let from_replica = proxy_key(&replica, &alice, "eu-1").await.unwrap();
    assert_eq!(first, from_replica);
}

#[tokio::test]
async fn another_image_a_simulated_tee_in_production_or_another_role_gets_nothing() {
    let alice = owner(1);
    // The network allows another worker image: the simulated one is refused.
    let strict = Policy {
        worker_images: ["ab".repeat(32)].into(),
        ..policy()
    };
    let km = start(MasterSecret::generate(), strict).await;
    let err = key(
        &km,
        node(PeerRole::Worker),
        authorize(&alice, PeerRole::Worker, "w"),
    )
    .await
    .unwrap_err();
    assert!(err.contains("not in the allowed worker images"), "{err}");

    // A production policy refuses simulated evidence.
    let production = Policy {
        allow_simulated: false,
        ..policy()
    };
    let km = start(MasterSecret::generate(), production).await;
    let err = key(
        &km,
        node(PeerRole::Worker),
        authorize(&alice, PeerRole::Worker, "w"),
    )
    .await
    .unwrap_err();
    assert!(err.contains("simulated"), "{err}");

    // A worker (its configuration says so) asking for a proxy's key.
    let km = start(MasterSecret::generate(), policy()).await;
    let err = key(
        &km,
        node(PeerRole::Worker),
        authorize(&alice, PeerRole::Proxy, "eu-1"),
    )
    .await
    .unwrap_err();
    assert!(err.contains("evidence as a proxy"), "{err}");
    // A node without a TEE.
    let bare = Arc::new(Identity::generate().unwrap());
    let err = key(&km, bare, authorize(&alice, PeerRole::Worker, "w"))
        .await
        .unwrap_err();
    assert!(err.contains("no TEE evidence"), "{err}");
}

#[tokio::test]
async fn another_owner_gets_another_key_and_a_forged_or_expired_authorization_nothing() {
    let km = start(MasterSecret::generate(), policy()).await;
    let (alice, mallory) = (owner(1), owner(2));
    let alices = proxy_key(&km, &alice, "eu-1").await.unwrap();
    // Mallory runs the same image and names Alice's key: hers is another.
    let mallorys = proxy_key(&km, &mallory, "eu-1").await.unwrap();
    assert_ne!(alices, mallorys);
    // Mallory puts Alice's public key on her own signature.
    let mut forged = authorize(&mallory, PeerRole::Proxy, "eu-1");
    forged.owner = alice.verifying_key().to_bytes();
    let err = key(&km, node(PeerRole::Proxy), forged).await.unwrap_err();
    assert!(err.contains("does not verify"), "{err}");
    let expired = Authorization::sign(&alice, PeerRole::Proxy, "identity", "eu-1", 1);
    let err = key(&km, node(PeerRole::Proxy), expired).await.unwrap_err();
    assert!(err.contains("expired"), "{err}");
}

#[tokio::test]
async fn only_an_attested_key_manager_gets_the_master_secret() {
    let km = start(MasterSecret::generate(), policy()).await;
    // A worker (or anything not running a key manager's configuration).
    let err = replicate(&km, node(PeerRole::Worker), check(policy()))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("evidence as a key-manager"), "{err}");
    // A key manager image the network does not list.
    let km = start(
        MasterSecret::generate(),
        Policy {
            key_manager_images: ["cd".repeat(32)].into(),
            ..policy()
        },
    )
    .await;
    let err = replicate(&km, node(PeerRole::KeyManager), check(policy()))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("not in the allowed key-manager images"),
        "{err}"
    );
}

fn blocks(view: &[AnchorBlock]) -> Arc<BlockAnchors> {
    BlockAnchors::new(FixedBlocks::new(view))
}

/// Evidence the enclave made two days ago is refused; evidence binding the
/// chain's recent block passes.
#[tokio::test]
async fn stale_evidence_gets_nothing() {
    let now = server::unix_now();
    let chain = vec![
        AnchorBlock {
            anchor: Anchor {
                seqno: 1,
                root_hash: [1; 32],
            },
            gen_utime: now - 2 * 86_400,
        },
        AnchorBlock {
            anchor: Anchor {
                seqno: 2,
                root_hash: [2; 32],
            },
            gen_utime: now - 10,
        },
    ];
    let dated = Policy {
        require_fresh_evidence: true,
        ..policy()
    };
    let km_check = Arc::new(AttestationCheck {
        anchors: Some(blocks(&chain)),
        gpu: None,
        published: None,
        ..AttestationCheck::new(dated)
    });
    let address = start_checking(MasterSecret::generate(), km_check).await;
    let dated_node = |view: &[AnchorBlock]| {
        let identity = node(PeerRole::Worker);
        let anchors = blocks(view);
        (identity, anchors)
    };
    let alice = owner(1);
    for (view, ok) in [(&chain[..1], false), (&chain[..], true)] {
        let (identity, anchors) = dated_node(view);
        anchors.refresh_head().await.unwrap();
        identity.anchor_to(anchors);
        let got = key(&address, identity, authorize(&alice, PeerRole::Worker, "w")).await;
        match (got, ok) {
            (Ok(_), true) => {}
            (Err(e), false) => assert!(e.contains("older than"), "{e}"),
            (got, _) => panic!("{got:?}"),
        }
    }
}
