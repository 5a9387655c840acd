//! RA-TLS: a node's TEE evidence travels inside its self-signed TLS certificate
//! (a dedicated, non-critical X.509 extension), bound to the certificate's key
//! by the quote's report data. The other side verifies it during the handshake:
//! evidence valid, image allowed by its policy, key bound. Evidence is made when
//! the certificate is issued (every few hours), never per request.

use std::sync::Arc;

use cocoon_attestation::tdx::Collateral;
use cocoon_attestation::{report_data, Evidence, Policy, Purpose, Verdict};
use x509_parser::certificate::X509Certificate;

/// The extension's OID. Provisional: an arc under the private-enterprise tree
/// that is not registered to this project yet.
pub const EVIDENCE_OID: &[u64] = &[1, 3, 6, 1, 4, 1, 62038, 1, 1];

/// What a verifying node requires of its peers' evidence.
#[derive(Debug, Clone)]
pub struct AttestationCheck {
    pub policy: Policy,
    /// DCAP collateral for TDX evidence (from the PCCS cache); without it TDX
    /// peers are refused.
    pub collateral: Option<Arc<Collateral>>,
    /// Verify evidence as of this Unix time instead of the handshake's (for
    /// auditing recorded evidence and for tests on recorded quotes).
    pub verify_at: Option<u64>,
}

/// Why a peer's evidence was refused: carried in the TLS error and logged.
#[derive(Debug, Clone, thiserror::Error)]
#[error("RA-TLS: {0}")]
pub struct RaTlsRefusal(pub String);

/// The evidence to put in this node's certificate for `spki`.
pub(crate) fn extension_for(
    attester: &dyn cocoon_attestation::Attester,
    spki: &[u8],
) -> Result<rcgen::CustomExtension, String> {
    let evidence = attester.evidence(&report_data(spki, Purpose::Tls, None))?;
    Ok(rcgen::CustomExtension::from_oid_content(
        EVIDENCE_OID,
        evidence.to_bytes(),
    ))
}

#[cfg(test)]
mod tests;

impl AttestationCheck {
    /// Verify the evidence in `cert` at `now_secs`.
    pub fn check(
        &self,
        cert: &X509Certificate<'_>,
        now_secs: u64,
    ) -> Result<Verdict, RaTlsRefusal> {
        let oid = x509_parser::der_parser::oid::Oid::from(EVIDENCE_OID)
            .map_err(|_| RaTlsRefusal("bad evidence OID".into()))?;
        let ext = cert
            .extensions()
            .iter()
            .find(|e| e.oid == oid)
            .ok_or_else(|| RaTlsRefusal("the peer's certificate carries no TEE evidence".into()))?;
        let evidence = Evidence::from_bytes(ext.value).map_err(|e| RaTlsRefusal(e.to_string()))?;
        let verdict = evidence
            .verify(
                self.collateral.as_deref(),
                self.verify_at.unwrap_or(now_secs),
            )
            .map_err(|e| RaTlsRefusal(e.to_string()))?;
        let expected = report_data(cert.public_key().raw, Purpose::Tls, None);
        self.policy
            .check(&verdict, Some(&expected))
            .map_err(|e| RaTlsRefusal(e.to_string()))?;
        Ok(verdict)
    }
}
