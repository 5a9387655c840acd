//! Revocation of the (simulated) GPU's device certificate, asked of a
//! responder on loopback that answers real RFC 6960 DER, signed with the
//! simulated device root's key (the certificate's issuer). The attacker: a
//! GPU owner whose device key leaked and was revoked, still showing evidence
//! that verifies; and whoever sits between verifier and responder,
//! replaying an old "good" answer or signing one with another key.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use der::asn1::{BitString, GeneralizedTime};
use ring::signature::{EcdsaKeyPair, ECDSA_P384_SHA384_ASN1_SIGNING};
use x509_ocsp::{OcspGeneralizedTime, ResponderId, ResponseBytes, ResponseData, SingleResponse};

use super::super::simulated::{self, SimulatedGpu};
use super::super::{GpuEvidence, GpuReferences, GpuRefusal};
use super::*;

/// How the responder answers.
#[derive(Clone, Copy, PartialEq)]
enum Answer {
    Good,
    Revoked,
    /// Signed with a key that is not the issuer's.
    Forged,
    /// Echoing another nonce (an old answer replayed).
    Replayed,
}

const DEVICE_ROOT_KEY: &str = include_str!("../simulated_keys/device_root.pem");
const RIM_ROOT_KEY: &str = include_str!("../simulated_keys/rim_root.pem");

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn time(unix: u64) -> OcspGeneralizedTime {
    OcspGeneralizedTime(GeneralizedTime::from_unix_duration(Duration::from_secs(unix)).unwrap())
}

fn key(pem: &str) -> EcdsaKeyPair {
    let der = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .unwrap()
        .1
        .contents;
    EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_ASN1_SIGNING, &der, &SystemRandom::new()).unwrap()
}

/// SHA-384 of a root's public key, as a CertID names its issuer.
fn key_hash(root: &[u8]) -> Vec<u8> {
    let (_, cert) = X509Certificate::from_der(root).unwrap();
    Sha384::digest(&cert.public_key().subject_public_key.data).to_vec()
}

/// The responder's answer to `request` (DER), signed with the key of the
/// simulated root that issued the certificate asked about (or, forged,
/// with the other one).
fn respond(request: &[u8], answer: Answer) -> Vec<u8> {
    let request = OcspRequest::from_der(request).unwrap();
    let asked = &request.tbs_request.request_list[0].req_cert;
    let by_device_root = asked.issuer_key_hash.as_bytes() == key_hash(&simulated::device_root());
    let (issuer, other) = if by_device_root {
        (DEVICE_ROOT_KEY, RIM_ROOT_KEY)
    } else {
        (RIM_ROOT_KEY, DEVICE_ROOT_KEY)
    };
    let mut nonce = request.tbs_request.request_extensions.clone().unwrap();
    if answer == Answer::Replayed {
        nonce[0].extn_value =
            OctetString::new(OctetString::new(vec![0u8; 32]).unwrap().to_der().unwrap()).unwrap();
    }
    let status = match answer {
        Answer::Revoked => CertStatus::Revoked(x509_ocsp::RevokedInfo {
            revocation_time: time(now() - 86_400),
            revocation_reason: Some(x509_cert::ext::pkix::crl::CrlReason::KeyCompromise),
        }),
        _ => CertStatus::Good(der::asn1::Null),
    };
    let data = ResponseData {
        version: Version::V1,
        responder_id: ResponderId::ByKey(OctetString::new(vec![1u8; 20]).unwrap()),
        produced_at: time(now()),
        responses: vec![SingleResponse {
            cert_id: asked.clone(),
            cert_status: status,
            this_update: time(now() - 60),
            next_update: Some(time(now() + 86_400)),
            single_extensions: None,
        }],
        response_extensions: Some(nonce),
    };
    let signer = key(if answer == Answer::Forged {
        other
    } else {
        issuer
    });
    let signature = signer
        .sign(&SystemRandom::new(), &data.to_der().unwrap())
        .unwrap();
    let basic = BasicOcspResponse {
        tbs_response_data: data,
        signature_algorithm: spki::AlgorithmIdentifierOwned {
            oid: ECDSA_WITH_SHA384,
            parameters: None,
        },
        signature: BitString::from_bytes(signature.as_ref()).unwrap(),
        certs: None,
    };
    OcspResponse {
        response_status: OcspResponseStatus::Successful,
        response_bytes: Some(ResponseBytes {
            response_type: ID_PKIX_OCSP_BASIC,
            response: OctetString::new(basic.to_der().unwrap()).unwrap(),
        }),
    }
    .to_der()
    .unwrap()
}

type Served = (Answer, Arc<Mutex<u32>>);

/// A responder on loopback answering every request as `answer`; its URL
/// and the number of requests it had.
async fn responder(answer: Answer) -> (String, Arc<Mutex<u32>>) {
    async fn ocsp(State((answer, asked)): State<Served>, body: Bytes) -> Vec<u8> {
        *asked.lock().unwrap() += 1;
        respond(&body, answer)
    }
    let asked = Arc::new(Mutex::new(0));
    let app = axum::Router::new()
        .route("/", axum::routing::post(ocsp))
        .with_state((answer, asked.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, asked)
}

/// Verify `evidence` (the simulated GPU's, for nonce 3...) until it is not
/// "being checked".
async fn verify(references: &GpuReferences, evidence: &GpuEvidence) -> Result<(), GpuRefusal> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match references.verify(evidence, &[3; 32], true, now()) {
            Err(GpuRefusal::RevocationPending { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            other => return other.map(|_| ()),
        }
    }
}

fn references(url: &str) -> GpuReferences {
    GpuReferences::new(None, None)
        .unwrap()
        .with_revocation(Revocation::new(url).unwrap())
}

#[tokio::test]
async fn a_good_answer_from_the_issuer_is_cached_until_its_next_update() {
    let (url, asked) = responder(Answer::Good).await;
    let references = references(&url);
    let evidence = SimulatedGpu::new().evidence(&[3; 32]);
    let first = references.verify(&evidence, &[3; 32], true, now());
    assert!(
        matches!(first, Err(GpuRefusal::RevocationPending { .. })),
        "{first:?}"
    );
    verify(&references, &evidence).await.unwrap();
    // The device certificate and the RIMs' signing certificate (one for
    // both simulated RIMs).
    let after = *asked.lock().unwrap();
    assert_eq!(after, 2);
    verify(&references, &evidence).await.unwrap();
    assert_eq!(*asked.lock().unwrap(), after, "cached");
    // Async callers ask first and never see "being checked".
    let eager = self::references(&url);
    eager
        .fetch_missing(std::slice::from_ref(&evidence), now())
        .await;
    eager.verify(&evidence, &[3; 32], true, now()).unwrap();
}

/// The attack: a GPU whose device key was revoked still makes evidence
/// that verifies in every other respect. Without the revocation check it
/// is accepted (`GpuReferences` without `with_revocation`).
#[tokio::test]
async fn a_revoked_device_certificate_is_refused() {
    let (url, _) = responder(Answer::Revoked).await;
    let evidence = SimulatedGpu::new().evidence(&[3; 32]);
    let err = verify(&references(&url), &evidence).await.unwrap_err();
    assert!(
        matches!(&err, GpuRefusal::Revoked { index: 0, reason, .. } if reason.contains("KeyCompromise")),
        "{err}"
    );
    let unchecked = GpuReferences::new(None, None).unwrap();
    unchecked.verify(&evidence, &[3; 32], true, now()).unwrap();
}

#[tokio::test]
async fn a_forged_or_replayed_answer_is_not_believed() {
    for (answer, says) in [
        (Answer::Forged, "not signed by the certificate's issuer"),
        (Answer::Replayed, "nonce differs"),
    ] {
        let (url, asked) = responder(answer).await;
        let references = references(&url);
        let evidence = SimulatedGpu::new().evidence(&[3; 32]);
        let err = verify(&references, &evidence).await.unwrap_err();
        assert!(
            matches!(&err, GpuRefusal::RevocationUnknown { reason, .. } if reason.contains(says)),
            "{err}"
        );
        // Not asked again at once.
        let before = *asked.lock().unwrap();
        let _ = verify(&references, &evidence).await;
        assert_eq!(*asked.lock().unwrap(), before);
    }
}

#[test]
fn cert_ids_name_the_issuer_and_serial() {
    let evidence = SimulatedGpu::new().evidence(&[3; 32]);
    let root = simulated::device_root();
    let id = cert_id(&evidence.chain[0], &root).unwrap();
    // The root made again (another signature) names the same issuer.
    assert_eq!(
        cert_id(&evidence.chain[0], &simulated::device_root()).unwrap(),
        id
    );
    assert_eq!(id.issuer_name_hash.as_bytes().len(), 48);
    // A chain ending in its root does not ask about the root.
    let chain = vec![evidence.chain[0].clone(), root.clone()];
    assert_eq!(pairs(&chain, &root).len(), 1);
}
