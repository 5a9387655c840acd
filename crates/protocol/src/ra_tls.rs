//! RA-TLS: a node's TEE evidence travels inside its self-signed TLS certificate
//! (a dedicated, non-critical X.509 extension), bound to the certificate's key
//! by the quote's report data. The node's effective configuration travels in a
//! second extension, its digest in the report data's second half. The other
//! side verifies it during the handshake: evidence valid, image allowed by its
//! policy, key and configuration bound, configuration within the policy's
//! rules. Evidence is made when the certificate is issued (every few hours),
//! never per request.

use crate::sync::LockRecover;
use std::sync::Arc;

use cocoon_attestation::configuration::bind;
use cocoon_attestation::tdx::{Collateral, CollateralCache};
use cocoon_attestation::{report_data, Evidence, PeerRole, Policy, Purpose, Verdict};
use x509_parser::certificate::X509Certificate;

/// The extension's OID. Provisional: an arc under the private-enterprise tree
/// that is not registered to this project yet.
pub const EVIDENCE_OID: &[u64] = &[1, 3, 6, 1, 4, 1, 62038, 1, 1];

/// The configuration extension's OID (its content: the document's bytes,
/// see [`cocoon_attestation::Configuration`]).
pub const CONFIGURATION_OID: &[u64] = &[1, 3, 6, 1, 4, 1, 62038, 1, 2];

/// What a verifying node requires of its peers' evidence.
#[derive(Debug, Clone)]
pub struct AttestationCheck {
    pub policy: Policy,
    /// DCAP collateral for TDX evidence; without it TDX peers are refused.
    pub collateral: Option<CollateralSource>,
    /// Verify evidence as of this Unix time instead of the handshake's (for
    /// auditing recorded evidence and for tests on recorded quotes).
    pub verify_at: Option<u64>,
}

/// Where DCAP collateral comes from.
#[derive(Debug, Clone)]
pub enum CollateralSource {
    /// One fixed collateral set (a file): for a single platform, or audits.
    Fixed(Arc<Collateral>),
    /// Per platform from a PCCS, cached and refreshed in the background.
    Pccs(Arc<CollateralCache>),
}

impl CollateralSource {
    /// The collateral for `quote`'s platform, if held now.
    pub fn for_quote(&self, quote: &[u8]) -> Option<Arc<Collateral>> {
        match self {
            CollateralSource::Fixed(c) => Some(c.clone()),
            CollateralSource::Pccs(cache) => cache.for_quote(quote),
        }
    }
}

/// Why a peer's evidence was refused: carried in the TLS error and logged.
#[derive(Debug, Clone, thiserror::Error)]
#[error("RA-TLS: {0}")]
pub struct RaTlsRefusal(pub String);

/// The extensions to put in this node's certificate for `spki`: evidence
/// binding the key and `configuration`, and the configuration itself.
pub(crate) fn extensions_for(
    attester: &dyn cocoon_attestation::Attester,
    spki: &[u8],
    configuration: Option<&[u8]>,
) -> Result<Vec<rcgen::CustomExtension>, cocoon_attestation::tdx::QuoteError> {
    let binding = bind(report_data(spki, Purpose::Tls, None), configuration);
    let evidence = attester.evidence(&binding)?;
    let mut out = vec![rcgen::CustomExtension::from_oid_content(
        EVIDENCE_OID,
        evidence.to_bytes(),
    )];
    if let Some(configuration) = configuration {
        out.push(rcgen::CustomExtension::from_oid_content(
            CONFIGURATION_OID,
            configuration.to_vec(),
        ));
    }
    Ok(out)
}

/// The content of `cert`'s extension `oid`, if it has one.
fn extension<'a>(cert: &'a X509Certificate<'_>, oid: &[u64]) -> Option<&'a [u8]> {
    let oid = x509_parser::der_parser::oid::Oid::from(oid).ok()?;
    cert.extensions()
        .iter()
        .find(|e| e.oid == oid)
        .map(|e| e.value)
}

/// The configuration document in a certificate, if it carries one.
pub fn certificate_configuration(cert_der: &[u8]) -> Option<Vec<u8>> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    extension(&cert, CONFIGURATION_OID).map(<[u8]>::to_vec)
}

#[cfg(test)]
mod tests;

impl AttestationCheck {
    /// Verify the evidence in `cert` at `now_secs`, for a peer in `role`.
    pub fn check(
        &self,
        cert: &X509Certificate<'_>,
        role: PeerRole,
        now_secs: u64,
    ) -> Result<Verdict, RaTlsRefusal> {
        let evidence = extension(cert, EVIDENCE_OID)
            .ok_or_else(|| RaTlsRefusal("the peer's certificate carries no TEE evidence".into()))?;
        let key = report_data(cert.public_key().raw, Purpose::Tls, None);
        let configuration = extension(cert, CONFIGURATION_OID);
        self.check_evidence(evidence, role, &key, configuration, now_secs)
    }

    /// Verify serialized evidence that must bind the key binding `key` and
    /// the `configuration` document sent beside it, for a peer in `role`.
    pub fn check_evidence(
        &self,
        evidence: &[u8],
        role: PeerRole,
        key: &[u8; 64],
        configuration: Option<&[u8]>,
        now_secs: u64,
    ) -> Result<Verdict, RaTlsRefusal> {
        let expected = &bind(*key, configuration);
        let evidence = Evidence::from_bytes(evidence).map_err(|e| RaTlsRefusal(e.to_string()))?;
        let collateral = match (&evidence, &self.collateral) {
            (Evidence::Tdx(quote), Some(source)) => {
                let held = source.for_quote(quote);
                if held.is_none() {
                    return Err(RaTlsRefusal(
                        "DCAP collateral for the peer's platform is not cached yet; it is being fetched from the PCCS (the peer's next attempt can pass)".into(),
                    ));
                }
                held
            }
            _ => None,
        };
        let mut verdict = evidence
            .verify(collateral.as_deref(), self.verify_at.unwrap_or(now_secs))
            .map_err(|e| RaTlsRefusal(e.to_string()))?;
        self.policy
            .check(&verdict, role, Some(expected))
            .map_err(|e| RaTlsRefusal(e.to_string()))?;
        verdict.configuration = self
            .policy
            .check_configuration(configuration, role)
            .map_err(|e| RaTlsRefusal(e.to_string()))?;
        Ok(verdict)
    }
}

/// A node's current certificate, as its TLS port presents it, without trusting
/// it: for `cocoon attest show-cert`. The handshake itself may then fail (the
/// node does not know our key); the certificate has already been seen.
pub async fn fetch_certificate(
    addr: &str,
    timeout: std::time::Duration,
) -> Result<Vec<u8>, crate::ProtocolError> {
    use crate::tls::Identity;
    let seen = Arc::new(std::sync::Mutex::new(None));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(Recorder {
        seen: seen.clone(),
        provider: provider.clone(),
    });
    let identity = Identity::generate()?;
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| crate::ProtocolError::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(
            vec![identity.issue_certificate()?],
            identity.private_key_der()?,
        )
        .map_err(|e| crate::ProtocolError::Tls(e.to_string()))?;
    let attempt = async {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let name = rustls::pki_types::ServerName::try_from(crate::tls::NODE_NAME)
            .expect("static name is valid");
        let _ = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await;
        Ok::<_, crate::ProtocolError>(())
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| crate::ProtocolError::HandshakeTimeout(timeout))??;
    let cert = seen.locked().take();
    cert.ok_or_else(|| crate::ProtocolError::Tls(format!("{addr} presented no certificate")))
}

/// The evidence in a certificate, if it carries any.
pub fn evidence_in(cert_der: &[u8]) -> Result<Option<Evidence>, RaTlsRefusal> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| RaTlsRefusal(format!("not a certificate: {e}")))?;
    let oid = x509_parser::der_parser::oid::Oid::from(EVIDENCE_OID)
        .map_err(|_| RaTlsRefusal("bad evidence OID".into()))?;
    match cert.extensions().iter().find(|e| e.oid == oid) {
        None => Ok(None),
        Some(ext) => Evidence::from_bytes(ext.value)
            .map(Some)
            .map_err(|e| RaTlsRefusal(e.to_string())),
    }
}

/// Accepts any server certificate, keeping a copy; still checks the handshake
/// signature, so the certificate is the one whose key is on the other end.
#[derive(Debug)]
struct Recorder {
    seen: Arc<std::sync::Mutex<Option<Vec<u8>>>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if let Ok(mut seen) = self.seen.lock() {
            *seen = Some(end_entity.to_vec());
        }
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &rustls::pki_types::CertificateDer<'_>,
        _dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The report data that binds a certificate's key for TLS.
pub fn key_binding(cert_der: &[u8]) -> Result<[u8; 64], RaTlsRefusal> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| RaTlsRefusal(format!("not a certificate: {e}")))?;
    Ok(report_data(cert.public_key().raw, Purpose::Tls, None))
}
