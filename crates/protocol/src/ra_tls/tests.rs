//! RA-TLS over real TLS 1.3 handshakes on loopback, with the simulated TEE:
//! evidence accepted when the policy allows it; refused, with the reason, when
//! simulated evidence is not allowed, the image is not listed, the evidence is
//! missing, tampered with, or bound to another key.

use std::sync::Arc;

use cocoon_attestation::simulated::SimulatedTee;
use cocoon_attestation::{Attester, Configuration, Evidence, PeerRole, Policy};
use tokio::net::TcpListener;

use super::AttestationCheck;
use crate::tls::{self, Identity, PinnedKeys};

fn dev_policy() -> Policy {
    Policy {
        allow_simulated: true,
        worker_images: [SimulatedTee::measurements().image_hash()].into(),
        proxy_images: [SimulatedTee::measurements().image_hash()].into(),
        // Dating evidence has its own tests (`freshness`).
        require_fresh_evidence: false,
        ..Policy::default()
    }
}

fn check(policy: Policy) -> Option<Arc<AttestationCheck>> {
    Some(Arc::new(AttestationCheck::new(policy)))
}

mod freshness;

fn attested(attester: Arc<dyn Attester>) -> Arc<Identity> {
    Arc::new(Identity::generate().unwrap().with_attester(attester))
}

/// A configuration document for `role`.
fn configuration(role: PeerRole) -> Configuration {
    Configuration::new(role, "test")
}

/// One handshake between a proxy (`server`) and a worker (`client`), each
/// bound to a configuration of its role unless bound already; returns
/// (client's result, server's result) as strings on error.
async fn handshake(
    server: Arc<Identity>,
    server_requires: Option<Arc<AttestationCheck>>,
    client: Arc<Identity>,
    client_requires: Option<Arc<AttestationCheck>>,
) -> (Result<(), String>, Result<(), String>) {
    for (identity, role) in [(&server, PeerRole::Proxy), (&client, PeerRole::Worker)] {
        if identity.configuration().is_none() {
            identity.bind_configuration(&configuration(role));
        }
    }
    handshake_as_is(server, server_requires, client, client_requires).await
}

/// [`handshake`] with the identities as they are.
async fn handshake_as_is(
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
        // The dialling peer is checked as a worker.
        Arc::new(PinnedKeys::new([client.fingerprint()])),
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

/// The configuration travels in the certificate, bound by the evidence and
/// checked against the policy: a proxy's certificate without one is refused
/// (unless the policy waives it), and so is one claiming another role.
#[tokio::test]
async fn the_certificate_binds_a_configuration_for_the_peers_role() {
    let tee: Arc<dyn Attester> = Arc::new(SimulatedTee::new());
    let (client, _) = handshake_as_is(
        attested(tee.clone()),
        None,
        attested(tee.clone()),
        check(dev_policy()),
    )
    .await;
    let err = client.unwrap_err();
    assert!(err.contains("binds no configuration"), "{err}");
    let waived = Policy {
        require_configuration: false,
        ..dev_policy()
    };
    let (client, _) = handshake_as_is(
        attested(tee.clone()),
        None,
        attested(tee.clone()),
        check(waived),
    )
    .await;
    assert_eq!(client, Ok(()));
    let posing = attested(tee.clone());
    posing.bind_configuration(&configuration(PeerRole::Worker));
    let (client, _) = handshake(posing, None, attested(tee), check(dev_policy())).await;
    let err = client.unwrap_err();
    assert!(err.contains("is for a worker"), "{err}");
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
        proxy_images: ["00".repeat(32)].into(),
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
    assert!(err.contains("not in the allowed proxy images"), "{err}");
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
    fn evidence(
        &self,
        report_data: &[u8; 64],
    ) -> Result<Evidence, cocoon_attestation::tdx::QuoteError> {
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

/// An attester replaying a real recorded TDX quote (shared/testdata/tdx): the
/// quote verifies, but its report data binds nothing of ours.
#[derive(Debug)]
struct RecordedTdx(Vec<u8>);

impl Attester for RecordedTdx {
    fn evidence(
        &self,
        _report_data: &[u8; 64],
    ) -> Result<Evidence, cocoon_attestation::tdx::QuoteError> {
        Ok(Evidence::Tdx(self.0.clone()))
    }
}

#[tokio::test]
async fn a_real_tdx_quote_not_bound_to_the_key_is_refused_after_verifying() {
    let dir =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/testdata/tdx");
    let quote =
        std::fs::read(dir.join("tdx_quote")).expect("recorded quote in shared/testdata/tdx");
    let collateral = cocoon_attestation::tdx::collateral_from_json(
        &std::fs::read(dir.join("tdx_quote_collateral.json")).unwrap(),
    )
    .unwrap();
    let verdict = Evidence::Tdx(quote.clone())
        .verify(Some(&collateral), 1_750_377_600)
        .unwrap();
    let policy = Policy {
        worker_images: [verdict.image_hash.clone()].into(),
        require_fresh_evidence: false,
        ..Policy::default()
    };
    let tdx_check = |at: u64| {
        Some(Arc::new(AttestationCheck {
            policy: policy.clone(),
            collateral: Some(super::CollateralSource::Fixed(Arc::new(collateral.clone()))),
            verify_at: Some(at),
            anchors: None,
            gpu: None,
            published: None,
        }))
    };
    let peer = || attested(Arc::new(RecordedTdx(quote.clone())));
    let server = || attested(Arc::new(SimulatedTee::new()));
    // Inside the collateral's window: the quote is genuine and its image allowed,
    // but it does not bind the certificate's key.
    let (_, result) = handshake(server(), tdx_check(1_750_377_600), peer(), None).await;
    let err = result.unwrap_err();
    assert!(err.contains("does not bind the presented key"), "{err}");
    // After the window: refused for expired collateral first.
    let (_, result) = handshake(server(), tdx_check(1_754_006_400), peer(), None).await;
    let err = result.unwrap_err();
    assert!(err.contains("expired"), "{err}");
}
