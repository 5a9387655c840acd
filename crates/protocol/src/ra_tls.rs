//! RA-TLS: a node's TEE evidence travels inside its self-signed TLS certificate
//! (a dedicated, non-critical X.509 extension), bound to the certificate's key
//! by the quote's report data. The node's effective configuration travels in a
//! second extension, its digest in the report data's second half. The other
//! side verifies it during the handshake: evidence valid, image allowed by its
//! policy, key and configuration bound, configuration within the policy's
//! rules. Evidence is made when the certificate is issued (every few hours),
//! never per request, and binds the newest TON masterchain block the node
//! knows (a third extension carries it; see [`cocoon_attestation::freshness`]):
//! a verifier refuses evidence older than its policy allows, and
//! [`watch_peer`] closes a connection whose peer's evidence has aged out or
//! no longer passes (a TCB status changed with new collateral), so the peer
//! redials with its re-issued certificate.

use crate::sync::LockRecover;
use std::sync::Arc;

use cocoon_attestation::configuration::bind;
use cocoon_attestation::freshness::{self, Anchor, BlockAnchors};
use cocoon_attestation::gpu::{binding_nonce, GpuEvidence, GpuReferences, GpuVerdict};
use cocoon_attestation::tdx::{Collateral, CollateralCache};
use cocoon_attestation::{
    report_data, Evidence, PeerRole, Policy, Published, Purpose, Refusal, Verdict,
};
use x509_parser::certificate::X509Certificate;

/// The extension's OID. Provisional: an arc under the private-enterprise tree
/// that is not registered to this project yet.
pub const EVIDENCE_OID: &[u64] = &[1, 3, 6, 1, 4, 1, 62038, 1, 1];

/// The configuration extension's OID (its content: the document's bytes,
/// see [`cocoon_attestation::Configuration`]).
pub const CONFIGURATION_OID: &[u64] = &[1, 3, 6, 1, 4, 1, 62038, 1, 2];

/// The block anchor extension's OID (its content: [`Anchor::to_bytes`], the
/// report data's nonce).
pub const ANCHOR_OID: &[u64] = &[1, 3, 6, 1, 4, 1, 62038, 1, 3];

/// The most GPUs a worker's key may carry evidence for (each is verified).
pub const MAX_GPUS: usize = 16;

/// What a verifying node requires of its peers' evidence.
#[derive(Debug, Clone)]
pub struct AttestationCheck {
    pub policy: Policy,
    /// DCAP collateral for TDX evidence; without it TDX peers are refused.
    pub collateral: Option<CollateralSource>,
    /// Verify evidence as of this Unix time instead of the handshake's (for
    /// auditing recorded evidence and for tests on recorded quotes).
    pub verify_at: Option<u64>,
    /// The chain's masterchain blocks, to check when evidence was made;
    /// without them evidence is refused where the policy requires it fresh.
    pub anchors: Option<Arc<BlockAnchors>>,
    /// What GPU evidence is checked against (NVIDIA's roots, RIMs);
    /// without it workers are refused where the policy requires GPUs.
    pub gpu: Option<GpuReferences>,
    /// The root contract's lists (images, models) this node follows
    /// (`[attestation] root`): they decide what the network trusts, and
    /// `policy` only narrows them. Without it `policy` alone decides.
    pub published: Option<Arc<Published>>,
}

impl AttestationCheck {
    /// A check against `policy` alone: no collateral (TDX peers are
    /// refused) and no chain (fresh evidence cannot be told from old).
    pub fn new(policy: Policy) -> Self {
        Self {
            policy,
            collateral: None,
            verify_at: None,
            anchors: None,
            gpu: None,
            published: None,
        }
    }

    /// Whether workers may serve `name` with weights `sha256`: the local
    /// policy's models and, when this node follows the root contract, the
    /// models it publishes.
    pub fn check_model(&self, name: &str, sha256: Option<&str>) -> Result<(), Refusal> {
        self.policy.check_model(name, sha256)?;
        match &self.published {
            Some(published) => published.check_model(name, sha256),
            None => Ok(()),
        }
    }

    /// The root contract this node follows, if any (bound into its
    /// configuration: which chain it trusts bears on whom it serves).
    pub fn trust_root(&self) -> Option<String> {
        self.published.as_ref().map(|p| p.root().to_string())
    }

    /// The root contract's lists when this node follows them and they
    /// decide on `role`'s images.
    fn published_for(&self, role: PeerRole) -> Option<&Published> {
        self.published
            .as_deref()
            .filter(|_| Published::governs(role))
    }
}

/// What a peer presents: its evidence, and beside it what the evidence's
/// report data binds besides a key (its configuration document and the
/// block anchor, both as received).
#[derive(Debug, Clone, Copy)]
pub struct Presented<'a> {
    pub evidence: &'a [u8],
    pub configuration: Option<&'a [u8]>,
    pub anchor: Option<&'a [u8]>,
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
/// binding the key, `configuration` and `anchor`, and those two themselves.
pub(crate) fn extensions_for(
    attester: &dyn cocoon_attestation::Attester,
    spki: &[u8],
    configuration: Option<&[u8]>,
    anchor: Option<&Anchor>,
) -> Result<Vec<rcgen::CustomExtension>, cocoon_attestation::tdx::QuoteError> {
    let anchor = anchor.map(Anchor::to_bytes);
    let binding = bind(
        report_data(spki, Purpose::Tls, anchor.as_ref().map(|a| &a[..])),
        configuration,
    );
    let evidence = attester.evidence(&binding)?;
    let mut out = vec![rcgen::CustomExtension::from_oid_content(
        EVIDENCE_OID,
        evidence.to_bytes(),
    )];
    if let Some(anchor) = anchor {
        out.push(rcgen::CustomExtension::from_oid_content(
            ANCHOR_OID,
            anchor.to_vec(),
        ));
    }
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
    /// [`AttestationCheck::check`] of a DER certificate.
    pub fn check_der(
        &self,
        cert_der: &[u8],
        role: PeerRole,
        now_secs: u64,
    ) -> Result<Verdict, RaTlsRefusal> {
        let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
            .map_err(|e| RaTlsRefusal(format!("the peer's certificate: {e}")))?;
        self.check(&cert, role, now_secs)
    }

    /// Verify the evidence in `cert` at `now_secs`, for a peer in `role`.
    pub fn check(
        &self,
        cert: &X509Certificate<'_>,
        role: PeerRole,
        now_secs: u64,
    ) -> Result<Verdict, RaTlsRefusal> {
        let evidence = extension(cert, EVIDENCE_OID)
            .ok_or_else(|| RaTlsRefusal("the peer's certificate carries no TEE evidence".into()))?;
        let presented = Presented {
            evidence,
            configuration: extension(cert, CONFIGURATION_OID),
            anchor: extension(cert, ANCHOR_OID),
        };
        self.check_evidence(
            &presented,
            role,
            (cert.public_key().raw, Purpose::Tls),
            now_secs,
        )
    }

    /// Verify `presented` evidence, which must bind the key `material` for
    /// `purpose`, the configuration and the block anchor sent beside it,
    /// for a peer in `role`; and, where the policy says so, be fresh.
    pub fn check_evidence(
        &self,
        presented: &Presented<'_>,
        role: PeerRole,
        (material, purpose): (&[u8], Purpose),
        now_secs: u64,
    ) -> Result<Verdict, RaTlsRefusal> {
        let anchor = presented
            .anchor
            .map(Anchor::from_bytes)
            .transpose()
            .map_err(|e| RaTlsRefusal(format!("the evidence's block anchor: {e}")))?;
        let expected = &bind(
            report_data(material, purpose, presented.anchor),
            presented.configuration,
        );
        let evidence =
            Evidence::from_bytes(presented.evidence).map_err(|e| RaTlsRefusal(e.to_string()))?;
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
        let now = self.verify_at.unwrap_or(now_secs);
        let mut verdict = evidence
            .verify(collateral.as_deref(), now)
            .map_err(|e| RaTlsRefusal(e.to_string()))?;
        let published = self.published_for(role);
        self.policy
            .check_under(&verdict, role, Some(expected), published.is_some())
            .map_err(|e| RaTlsRefusal(e.to_string()))?;
        if let Some(published) = published {
            published
                .check_image(role, &verdict.image_hash)
                .map_err(|e| RaTlsRefusal(e.to_string()))?;
        }
        // Under the root contract's configuration rules too, when this
        // node follows it (its lists were read: the image check above
        // refuses before then).
        let rules = published.and_then(Published::current);
        verdict.configuration = self
            .policy
            .check_configuration_under(
                presented.configuration,
                role,
                rules.as_deref().map(|lists| &lists.rules),
            )
            .map_err(|e| RaTlsRefusal(e.to_string()))?;
        if self.policy.require_fresh_evidence {
            let made_after = freshness::check(
                self.anchors.as_deref(),
                anchor.as_ref(),
                now,
                self.policy.max_evidence_age_secs,
            )
            .map_err(|e| RaTlsRefusal(Refusal::from(e).to_string()))?;
            verdict.made_after = Some(made_after);
        }
        Ok(verdict)
    }

    /// Verify a worker's GPU evidence: each must answer the nonce derived
    /// from `report_data` (its TDX evidence's, already checked to bind its
    /// keys), verify against NVIDIA's roots and RIMs, and run versions the
    /// policy allows; some are required where the policy says so.
    pub fn check_gpus(
        &self,
        gpus: &[GpuEvidence],
        report_data: &[u8; 64],
        now_secs: u64,
    ) -> Result<Vec<GpuVerdict>, RaTlsRefusal> {
        let refuse = |e: Refusal| RaTlsRefusal(e.to_string());
        if gpus.len() > MAX_GPUS {
            return Err(RaTlsRefusal(format!(
                "the worker presents evidence for {} GPUs; at most {MAX_GPUS} are accepted",
                gpus.len()
            )));
        }
        if gpus.is_empty() {
            self.policy.check_gpus(&[]).map_err(refuse)?;
            return Ok(Vec::new());
        }
        let Some(references) = &self.gpu else {
            if self.policy.require_gpu {
                return Err(RaTlsRefusal(
                    "the policy requires GPU evidence, and this node holds no GPU references to check it (attestation.gpu_rims)".into(),
                ));
            }
            return Ok(Vec::new());
        };
        let nonce = binding_nonce(report_data);
        let at = self.verify_at.unwrap_or(now_secs);
        let verdicts = gpus
            .iter()
            .enumerate()
            .map(|(index, gpu)| {
                references
                    .verify(gpu, &nonce, self.policy.allow_simulated, at)
                    .map_err(|refusal| refuse(Refusal::Gpu { index, refusal }))
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.policy.check_gpus(&verdicts).map_err(refuse)?;
        Ok(verdicts)
    }

    /// Fetch the RIMs `gpus` need and the revocation status of their
    /// certificates, where this node lacks them (async callers, so a check
    /// right after does not find them pending).
    pub async fn fetch_gpu_references(&self, gpus: &[GpuEvidence]) {
        if let Some(references) = &self.gpu {
            references
                .fetch_missing(gpus, self.verify_at.unwrap_or_else(unix_now))
                .await;
        }
    }

    /// The block `presented` evidence binds, looked up now (so a check
    /// right after does not find it pending). Does nothing where there is
    /// no anchor or no chain; a failed lookup is left for the check to
    /// refuse.
    pub async fn look_up_anchor(&self, anchor: Option<&[u8]>) {
        let (Some(anchors), Some(anchor)) = (&self.anchors, anchor) else {
            return;
        };
        if let Ok(anchor) = Anchor::from_bytes(anchor) {
            if let Err(e) = anchors.fetch(&anchor).await {
                tracing::warn!(error = %e, "could not look up a peer's block anchor");
            }
        }
    }
}

/// How often a live connection's peer evidence is checked again (new
/// collateral may change its TCB status; the policy may have changed).
pub const RECHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(600);

/// Keep checking the certificate `cert_der` that `conn`'s peer (in `role`)
/// presented, until the connection closes: at [`RECHECK_EVERY`] and when its
/// evidence reaches the policy's maximum age. A peer that no longer passes
/// is disconnected with the reason; an honest one redials with the
/// certificate it has re-issued meanwhile (every 12 h, fresh evidence).
pub fn watch_peer(
    check: Arc<AttestationCheck>,
    role: PeerRole,
    cert_der: Vec<u8>,
    conn: crate::Connection,
) {
    tokio::spawn(async move {
        let anchor = certificate_anchor(&cert_der);
        let mut published = check.published.as_ref().map(|p| p.changes());
        loop {
            // A block dropped from memory is looked up again first; while
            // the chain cannot be reached the peer is given the benefit of
            // the doubt, and asked again in a minute.
            if let (Some(anchors), Some(anchor)) = (&check.anchors, &anchor) {
                let _ = anchors.fetch(anchor).await;
                if anchors.lookup(anchor) == freshness::Lookup::Pending {
                    tokio::select! {
                        _ = conn.closed() => return,
                        _ = tokio::time::sleep(std::time::Duration::from_secs(60)) => continue,
                    }
                }
            }
            let now = unix_now();
            let verdict = x509_parser::parse_x509_certificate(&cert_der)
                .map_err(|e| RaTlsRefusal(format!("not a certificate: {e}")))
                .and_then(|(_, cert)| check.check(&cert, role, now));
            let verdict = match verdict {
                Ok(verdict) => verdict,
                Err(refusal) => {
                    tracing::warn!(%role, reason = %refusal, "peer's evidence no longer passes; disconnecting");
                    conn.close(&format!("your evidence no longer passes: {refusal}"));
                    return;
                }
            };
            let mut wait = RECHECK_EVERY;
            if let Some(made_after) = verdict.made_after {
                let expires = made_after + check.policy.max_evidence_age_secs + 1;
                wait = wait.min(std::time::Duration::from_secs(expires.saturating_sub(now)));
            }
            // The root contract's lists changing (an image withdrawn) is
            // checked at once, not at the next round.
            let published_changed = async {
                match &mut published {
                    Some(changes) => {
                        if changes.changed().await.is_err() {
                            std::future::pending::<()>().await
                        }
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = conn.closed() => return,
                _ = tokio::time::sleep(wait) => {}
                _ = published_changed => {}
            }
        }
    });
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
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
        let mut tcp = tokio::net::TcpStream::connect(addr).await?;
        crate::pow::prove(&mut tcp).await?;
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

/// The report data that binds a certificate's key for TLS (with the block
/// anchor it carries, if any).
pub fn key_binding(cert_der: &[u8]) -> Result<[u8; 64], RaTlsRefusal> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| RaTlsRefusal(format!("not a certificate: {e}")))?;
    Ok(report_data(
        cert.public_key().raw,
        Purpose::Tls,
        extension(&cert, ANCHOR_OID),
    ))
}

/// The block anchor a certificate carries, if any.
pub fn certificate_anchor(cert_der: &[u8]) -> Option<Anchor> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    extension(&cert, ANCHOR_OID).and_then(|a| Anchor::from_bytes(a).ok())
}
