//! RA-TLS over real TLS 1.3 handshakes on loopback, with the simulated TEE:
//! evidence accepted when the policy allows it; refused, with the reason, when
//! simulated evidence is not allowed, the image is not listed, the evidence is
//! missing, tampered with, or bound to another key.

use std::sync::Arc;

use cocoon_attestation::simulated::SimulatedTee;
use cocoon_attestation::{Attester, Evidence, Policy};
use tokio::net::TcpListener;

use super::AttestationCheck;
use crate::tls::{self, Identity, PinnedKeys};

fn dev_policy() -> Policy {
    Policy {
        allow_simulated: true,
        allowed_images: [SimulatedTee::measurements().image_hash()].into(),
        ..Policy::default()
    }
}

fn check(policy: Policy) -> Option<Arc<AttestationCheck>> {
    Some(Arc::new(AttestationCheck {
        policy,
        collateral: None,
    }))
}

fn attested(attester: Arc<dyn Attester>) -> Arc<Identity> {
    Arc::new(Identity::generate().unwrap().with_attester(attester))
}

/// One handshake; returns (client's result, server's result) as strings on error.
async fn handshake(
    server: Arc<Identity>,
    server_requires: Option<Arc<AttestationCheck>>,
    client: Arc<Identity>,
    client_requires: Option<Arc<AttestationCheck>>,
) -> (Result<(), String>, Result<(), String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server_config = tls::server_config_attested(
        server.clone(),
        Arc::new(PinnedKeys::new([client.fingerprint()])),
        server_requires,
    )
    .unwrap();
    let client_config = tls::client_config_attested(
        client,
        Arc::new(PinnedKeys::new([server.fingerprint()])),
        client_requires,
    )
    .unwrap();
    let accept = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(server_config);
        tls::accept(tcp, &acceptor, std::time::Duration::from_secs(5))
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
    let client_result = tls::connect(&addr, client_config, std::time::Duration::from_secs(5))
        .await
        .map(|_| ())
        .map_err(|e| e.to_string());
    (client_result, accept.await.unwrap())
}

#[tokio::test]
async fn simulated_evidence_passes_a_development_policy_both_ways() {
    let tee: Arc<dyn Attester> = Arc::new(SimulatedTee::new());
    let (client, server) = handshake(
        attested(tee.clone()),
        check(dev_policy()),
        attested(tee),
        check(dev_policy()),
    )
    .await;
    assert_eq!(client, Ok(()));
    assert_eq!(server, Ok(()));
}

#[tokio::test]
async fn simulated_evidence_is_refused_by_a_production_policy() {
    let tee: Arc<dyn Attester> = Arc::new(SimulatedTee::new());
    let production = Policy {
        allow_simulated: false,
        ..dev_policy()
    };
    let (_, server) = handshake(
        attested(tee.clone()),
        check(production),
        attested(tee),
        None,
    )
    .await;
    let err = server.unwrap_err();
    assert!(
        err.contains("simulated TEE evidence is not allowed"),
        "{err}"
    );
}

#[tokio::test]
async fn an_image_not_on_the_list_is_refused() {
    let tee: Arc<dyn Attester> = Arc::new(SimulatedTee::new());
    let other_image = Policy {
        allowed_images: ["00".repeat(32)].into(),
        ..dev_policy()
    };
    let (client, _) = handshake(
        attested(tee.clone()),
        None,
        attested(tee),
        check(other_image),
    )
    .await;
    let err = client.unwrap_err();
    assert!(err.contains("not in the allowed list"), "{err}");
}

#[tokio::test]
async fn a_peer_without_evidence_is_refused() {
    let tee: Arc<dyn Attester> = Arc::new(SimulatedTee::new());
    let plain = Arc::new(Identity::generate().unwrap());
    let (_, server) = handshake(attested(tee), check(dev_policy()), plain, None).await;
    let err = server.unwrap_err();
    assert!(err.contains("carries no TEE evidence"), "{err}");
}

/// An attester that lies: evidence over other report data, or a broken signature.
#[derive(Debug)]
struct Forger {
    tee: SimulatedTee,
    flip_signature: bool,
}

impl Attester for Forger {
    fn evidence(&self, report_data: &[u8; 64]) -> Result<Evidence, String> {
        let mut quote = if self.flip_signature {
            self.tee.quote(report_data)
        } else {
            // Evidence made for a different key.
            self.tee.quote(&cocoon_attestation::report_data(
                b"another key",
                cocoon_attestation::Purpose::Tls,
                None,
            ))
        };
        if self.flip_signature {
            quote.signature[0] ^= 1;
        }
        Ok(Evidence::Simulated(Box::new(quote)))
    }
}

#[tokio::test]
async fn evidence_for_another_key_or_tampered_evidence_is_refused() {
    let server_tee: Arc<dyn Attester> = Arc::new(SimulatedTee::new());
    let unbound: Arc<dyn Attester> = Arc::new(Forger {
        tee: SimulatedTee::new(),
        flip_signature: false,
    });
    let (_, server) = handshake(
        attested(server_tee.clone()),
        check(dev_policy()),
        attested(unbound),
        None,
    )
    .await;
    let err = server.unwrap_err();
    assert!(err.contains("does not bind the presented key"), "{err}");

    let tampered: Arc<dyn Attester> = Arc::new(Forger {
        tee: SimulatedTee::new(),
        flip_signature: true,
    });
    let (_, server) = handshake(
        attested(server_tee),
        check(dev_policy()),
        attested(tampered),
        None,
    )
    .await;
    let err = server.unwrap_err();
    assert!(err.contains("bad signature"), "{err}");
}
