//! Revocation of GPU certificates (OCSP, RFC 6960), as NVIDIA's verifier
//! checks it: every certificate of a device chain, and of each RIM's
//! signing chain, asked of an OCSP responder (NVIDIA's, or a mirror) with a
//! SHA-384 CertID and a fresh nonce; the answer must be signed by the
//! certificate's issuer, or by a responder certificate that issuer
//! certified for OCSP signing, and say "good" until its nextUpdate. Answers
//! are cached until then (an hour when a responder gives none) and fetched
//! in the background: evidence whose status is not known yet is refused as
//! "being checked" once, so verification never waits on the network, and a
//! responder that fails is not asked again for five minutes (the evidence
//! refused meanwhile, saying why).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use der::asn1::OctetString;
use der::{Decode, Encode};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{UnparsedPublicKey, ECDSA_P384_SHA384_ASN1};
use sha2::{Digest, Sha256, Sha384};
use x509_cert::ext::Extension;
use x509_cert::serial_number::SerialNumber;
use x509_ocsp::{
    BasicOcspResponse, CertId, CertStatus, OcspRequest, OcspResponse, OcspResponseStatus, Request,
    TbsRequest, Version,
};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::GpuRefusal;
use crate::sync::LockRecover;

/// NVIDIA's OCSP responder (`gpu_ocsp = "nvidia"`).
pub const NVIDIA_OCSP: &str = "https://ocsp.ndis.nvidia.com/";

const ID_PKIX_OCSP_NONCE: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1.2");
const ID_PKIX_OCSP_BASIC: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1.1");
const SHA384_OID: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.2");
const ECDSA_WITH_SHA384: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
/// id-kp-OCSPSigning (1.3.6.1.5.5.7.3.9), DER content bytes.
const OCSP_SIGNING: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x09];

/// How long a failed ask is not repeated.
const RETRY_AFTER: Duration = Duration::from_secs(300);
/// How long a status without nextUpdate is kept.
const DEFAULT_VALIDITY: u64 = 3600;
/// Clock skew allowed on thisUpdate.
const SKEW: u64 = 300;

/// A certificate's status, as a responder signed it.
#[derive(Debug, Clone)]
struct Known {
    /// Why it is revoked, if it is.
    revoked: Option<String>,
    /// Unix time the answer is good until.
    until: u64,
}

struct Inner {
    url: String,
    http: reqwest::Client,
    /// By SHA-256 of the certificate.
    known: Mutex<BTreeMap<[u8; 32], Known>>,
    fetching: Mutex<BTreeSet<[u8; 32]>>,
    failed: Mutex<BTreeMap<[u8; 32], (String, Instant)>>,
}

/// A verifier's OCSP cache; cheap to clone.
#[derive(Clone)]
pub struct Revocation {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Revocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Revocation")
            .field("url", &self.inner.url)
            .finish_non_exhaustive()
    }
}

/// (certificate, its issuer) along `chain` (leaf first) up to `root`.
fn pairs<'a>(chain: &'a [Vec<u8>], root: &'a [u8]) -> Vec<(&'a [u8], &'a [u8])> {
    chain
        .iter()
        .enumerate()
        .map(|(i, cert)| {
            let issuer = chain.get(i + 1).map_or(root, Vec::as_slice);
            (cert.as_slice(), issuer)
        })
        // A chain that ends with the root itself: the root is not asked about.
        .filter(|(cert, _)| *cert != root)
        .collect()
}

impl Revocation {
    /// Ask the OCSP responder at `url` (`nvidia` for NVIDIA's).
    pub fn new(url: &str) -> Result<Self, String> {
        let url = if url == "nvidia" { NVIDIA_OCSP } else { url };
        if !url.starts_with("https://") && !url.starts_with("http://") {
            return Err(format!("\"nvidia\" or an http(s) URL, got {url:?}"));
        }
        Ok(Self {
            inner: Arc::new(Inner {
                url: url.to_string(),
                http: reqwest::Client::builder()
                    .timeout(Duration::from_secs(30))
                    .build()
                    .map_err(|e| e.to_string())?,
                known: Mutex::new(BTreeMap::new()),
                fetching: Mutex::new(BTreeSet::new()),
                failed: Mutex::new(BTreeMap::new()),
            }),
        })
    }

    /// Every certificate of `chain` (leaf first, whose last certificate
    /// `root` issued) must be known good at `at`; one not known is looked up
    /// in the background and the chain refused meanwhile. `what` names the
    /// chain in refusals.
    pub fn check(
        &self,
        chain: &[Vec<u8>],
        root: &[u8],
        at: u64,
        what: &str,
    ) -> Result<(), GpuRefusal> {
        for (index, (cert, issuer)) in pairs(chain, root).into_iter().enumerate() {
            let id: [u8; 32] = Sha256::digest(cert).into();
            let known = self.inner.known.locked().get(&id).cloned();
            match known {
                Some(known) if known.until > at => {
                    if let Some(reason) = known.revoked {
                        return Err(GpuRefusal::Revoked {
                            what: what.to_string(),
                            index,
                            reason,
                        });
                    }
                }
                _ => {
                    let failed = self.inner.failed.locked().get(&id).cloned();
                    if let Some((reason, when)) = failed {
                        if when.elapsed() < RETRY_AFTER {
                            return Err(GpuRefusal::RevocationUnknown {
                                what: what.to_string(),
                                index,
                                reason,
                            });
                        }
                    }
                    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                        let (this, cert, issuer) = (self.clone(), cert.to_vec(), issuer.to_vec());
                        runtime.spawn(async move { this.fetch(&cert, &issuer).await });
                    }
                    return Err(GpuRefusal::RevocationPending {
                        what: what.to_string(),
                        index,
                    });
                }
            }
        }
        Ok(())
    }

    /// Look up every certificate of `chain` not known now (async callers,
    /// before [`Revocation::check`]).
    pub async fn fetch_chain(&self, chain: &[Vec<u8>], root: &[u8], at: u64) {
        for (cert, issuer) in pairs(chain, root) {
            let id: [u8; 32] = Sha256::digest(cert).into();
            let fresh = self
                .inner
                .known
                .locked()
                .get(&id)
                .is_some_and(|k| k.until > at);
            let failed_lately = self
                .inner
                .failed
                .locked()
                .get(&id)
                .is_some_and(|(_, when)| when.elapsed() < RETRY_AFTER);
            if !fresh && !failed_lately {
                self.fetch(cert, issuer).await;
            }
        }
    }

    async fn fetch(&self, cert: &[u8], issuer: &[u8]) {
        let id: [u8; 32] = Sha256::digest(cert).into();
        if !self.inner.fetching.locked().insert(id) {
            return;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        match self.ask(cert, issuer, now).await {
            Ok(known) => {
                self.inner.failed.locked().remove(&id);
                self.inner.known.locked().insert(id, known);
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not check a GPU certificate's revocation");
                self.inner.failed.locked().insert(id, (e, Instant::now()));
            }
        }
        self.inner.fetching.locked().remove(&id);
    }

    async fn ask(&self, cert: &[u8], issuer: &[u8], now: u64) -> Result<Known, String> {
        let cert_id = cert_id(cert, issuer)?;
        let mut nonce = [0u8; 32];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| "no randomness")?;
        let request = request(&cert_id, &nonce)?;
        let url = &self.inner.url;
        let response = self
            .inner
            .http
            .post(url)
            .header("content-type", "application/ocsp-request")
            .body(request)
            .send()
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("{url}: {}", response.status()));
        }
        let body = response.bytes().await.map_err(|e| format!("{url}: {e}"))?;
        judge(&body, &cert_id, &nonce, issuer, now).map_err(|e| format!("{url}: {e}"))
    }
}

/// The CertID of `cert` (SHA-384 of the issuer's name and key).
pub fn cert_id(cert: &[u8], issuer: &[u8]) -> Result<CertId, String> {
    fn parse(der: &[u8]) -> Result<X509Certificate<'_>, String> {
        X509Certificate::from_der(der)
            .map(|(_, c)| c)
            .map_err(|e| format!("a certificate: {e}"))
    }
    let (cert, issuer) = (parse(cert)?, parse(issuer)?);
    let octets = |bytes: &[u8]| OctetString::new(bytes.to_vec()).map_err(|e| e.to_string());
    Ok(CertId {
        hash_algorithm: spki::AlgorithmIdentifierOwned {
            oid: SHA384_OID,
            parameters: None,
        },
        issuer_name_hash: octets(&Sha384::digest(issuer.subject().as_raw()))?,
        issuer_key_hash: octets(&Sha384::digest(
            &issuer.public_key().subject_public_key.data,
        ))?,
        serial_number: SerialNumber::new(cert.raw_serial()).map_err(|e| e.to_string())?,
    })
}

/// An OCSP request for `cert_id` with `nonce`, DER.
fn request(cert_id: &CertId, nonce: &[u8]) -> Result<Vec<u8>, String> {
    let nonce = OctetString::new(nonce.to_vec())
        .and_then(|n| n.to_der())
        .and_then(OctetString::new)
        .map_err(|e| e.to_string())?;
    OcspRequest {
        tbs_request: TbsRequest {
            version: Version::V1,
            requestor_name: None,
            request_list: vec![Request {
                req_cert: cert_id.clone(),
                single_request_extensions: None,
            }],
            request_extensions: Some(vec![Extension {
                extn_id: ID_PKIX_OCSP_NONCE,
                critical: false,
                extn_value: nonce,
            }]),
        },
        optional_signature: None,
    }
    .to_der()
    .map_err(|e| e.to_string())
}

/// What a responder's `body` says of `cert_id`, checked: successful, signed
/// by `issuer` or a responder it certified, answering `nonce` (when it
/// echoes one), current at `now`.
fn judge(
    body: &[u8],
    cert_id: &CertId,
    nonce: &[u8],
    issuer: &[u8],
    now: u64,
) -> Result<Known, String> {
    let response =
        OcspResponse::from_der(body).map_err(|e| format!("not an OCSP response: {e}"))?;
    if response.response_status != OcspResponseStatus::Successful {
        return Err(format!(
            "the responder answered {:?}",
            response.response_status
        ));
    }
    let bytes = response
        .response_bytes
        .ok_or("a successful answer without a response")?;
    if bytes.response_type != ID_PKIX_OCSP_BASIC {
        return Err(format!(
            "response type {} is not basic",
            bytes.response_type
        ));
    }
    let basic = BasicOcspResponse::from_der(bytes.response.as_bytes())
        .map_err(|e| format!("not a basic OCSP response: {e}"))?;
    if basic.signature_algorithm.oid != ECDSA_WITH_SHA384 {
        return Err(format!(
            "signature algorithm {} is not ECDSA with SHA-384",
            basic.signature_algorithm.oid
        ));
    }
    let signed = basic
        .tbs_response_data
        .to_der()
        .map_err(|e| e.to_string())?;
    let signature = basic
        .signature
        .as_bytes()
        .ok_or("a signature that is not whole bytes")?;
    let responders: Vec<Vec<u8>> = basic
        .certs
        .iter()
        .flatten()
        .filter_map(|c| c.to_der().ok())
        .filter(|der| authorized_responder(der, issuer, now))
        .collect();
    let signed_by = |der: &[u8]| {
        X509Certificate::from_der(der).is_ok_and(|(_, c)| {
            UnparsedPublicKey::new(
                &ECDSA_P384_SHA384_ASN1,
                &c.public_key().subject_public_key.data,
            )
            .verify(&signed, signature)
            .is_ok()
        })
    };
    if !signed_by(issuer) && !responders.iter().any(|r| signed_by(r)) {
        return Err(
            "the answer is not signed by the certificate's issuer nor a responder it certified"
                .into(),
        );
    }
    if let Some(echoed) = basic.tbs_response_data.nonce() {
        if echoed.0.as_bytes() != nonce {
            return Err("the answer is for another request (its nonce differs)".into());
        }
    }
    let single = basic
        .tbs_response_data
        .responses
        .iter()
        .find(|r| {
            r.cert_id.issuer_key_hash == cert_id.issuer_key_hash
                && r.cert_id.issuer_name_hash == cert_id.issuer_name_hash
                && r.cert_id.serial_number == cert_id.serial_number
        })
        .ok_or("the answer says nothing of the certificate asked about")?;
    let unix = |t: &x509_ocsp::OcspGeneralizedTime| t.0.to_unix_duration().as_secs();
    if unix(&single.this_update) > now + SKEW {
        return Err("the answer's thisUpdate is in the future".into());
    }
    let until = match &single.next_update {
        Some(next) if unix(next) <= now => {
            return Err("the answer is out of date (its nextUpdate has passed)".into())
        }
        Some(next) => unix(next),
        None => now + DEFAULT_VALIDITY,
    };
    let revoked = match &single.cert_status {
        CertStatus::Good(_) => None,
        CertStatus::Revoked(info) => Some(format!(
            "revoked at Unix time {} (reason: {})",
            unix(&info.revocation_time),
            info.revocation_reason
                .map_or("unspecified".to_string(), |r| format!("{r:?}"))
        )),
        CertStatus::Unknown(_) => return Err("the responder does not know the certificate".into()),
    };
    Ok(Known { revoked, until })
}

/// Whether `responder` was issued by `issuer` for OCSP signing, at `now`.
fn authorized_responder(responder: &[u8], issuer: &[u8], now: u64) -> bool {
    let issuer = rustls_pki_types::CertificateDer::from(issuer);
    let Ok(anchor) = webpki::anchor_from_trusted_cert(&issuer) else {
        return false;
    };
    let responder = rustls_pki_types::CertificateDer::from(responder);
    let Ok(responder) = webpki::EndEntityCert::try_from(&responder) else {
        return false;
    };
    responder
        .verify_for_usage(
            &[webpki::ring::ECDSA_P384_SHA384],
            &[anchor],
            &[],
            rustls_pki_types::UnixTime::since_unix_epoch(Duration::from_secs(now)),
            webpki::KeyUsage::required(OCSP_SIGNING),
            None,
            None,
        )
        .is_ok()
}

#[cfg(test)]
mod tests;
