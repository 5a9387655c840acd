//! NVIDIA confidential-computing GPU evidence (Hopper H100/H200): the GPU's
//! SPDM measurement report, signed by a device key whose certificate chains
//! to NVIDIA's device identity root, checked against the Reference Integrity
//! Manifests (golden measurements) of the driver and VBIOS it runs. The
//! steps are NVIDIA's reference verifier's (`nv-local-gpu-verifier`): the
//! chain, the report's signature over request and response, the nonce, the
//! firmware ID in the leaf against the report's, the driver and VBIOS
//! versions against the RIMs, each RIM's signing chain, and every active
//! golden measurement. Each refusal names what failed.
//!
//! * `report` - the SPDM report, parsed.
//! * `certs`  - certificate chains (rustls-webpki) and the leaf's key.
//! * `rim`    - the RIMs: versions, golden values, signing chains.
//! * `xmldsig` - the RIMs' XML signatures (Canonical XML 1.1, ECDSA P-384).
//! * `evidence` - what a worker presents per GPU, and the nonce binding it
//!   to the worker's TDX report data.
//! * `references` - a verifier's roots and RIMs (a folder, NVIDIA's RIM
//!   service behind a cache).
//! * `ocsp`     - revocation of the device's and RIMs' certificates (OCSP
//!   behind a cache).
//! * `simulated` - a SIMULATED GPU for development networks.

pub mod certs;
pub mod evidence;
pub mod ocsp;
pub mod references;
pub mod report;
pub mod rim;
pub mod simulated;
pub mod xmldsig;

#[cfg(test)]
mod tests;

use ring::signature::{UnparsedPublicKey, ECDSA_P384_SHA384_FIXED};
use serde::Serialize;

pub use evidence::{binding_nonce, GpuAttester, GpuEvidence};
pub use references::GpuReferences;
pub use report::SpdmReport;
pub use rim::{Golden, Rim, RimKind};

/// What a verifier trusts for GPU evidence.
#[derive(Debug, Clone)]
pub struct GpuReference {
    /// NVIDIA's device identity root (DER).
    pub device_root: Vec<u8>,
    /// The root that RIM signing chains end at (DER).
    pub rim_root: Vec<u8>,
    /// The driver's and the VBIOS's RIMs.
    pub rims: Vec<Rim>,
}

/// What verification established.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct GpuVerdict {
    pub driver_version: String,
    pub vbios_version: String,
    /// Hex of the nonce the report answers.
    pub nonce: String,
    /// Golden measurements compared (all matched).
    pub measurements_checked: usize,
    /// Whether the leaf certificate's firmware ID was compared with the
    /// report's (a report without one skips it, as NVIDIA's verifier does).
    pub fwid_checked: bool,
    /// The evidence of the SIMULATED GPU (accepted only where the policy
    /// allows simulated evidence): it proves nothing.
    #[serde(default)]
    pub simulated: bool,
}

/// Why GPU evidence was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
pub enum GpuRefusal {
    #[error("malformed GPU evidence: {0}")]
    Malformed(String),
    #[error("certificate chain refused: {0}")]
    Chain(String),
    #[error("the report's signature does not verify with the device certificate's key")]
    Signature,
    #[error("the report answers nonce {got}, not {expected}")]
    Nonce { expected: String, got: String },
    #[error("the device certificate names firmware {certificate}, the report {report}")]
    Fwid { certificate: String, report: String },
    #[error("the GPU reports {what} version {reported}, the {what} RIM is for {rim}")]
    Version {
        what: RimKind,
        reported: String,
        rim: String,
    },
    #[error("RIM signature refused: {0}")]
    RimSignature(String),
    #[error("no {0} RIM given")]
    MissingRim(RimKind),
    #[error("no {what} RIM {id} is held (add it to attestation.gpu_rims, or set attestation.rim_service)")]
    NoRim { what: RimKind, id: String },
    #[error("RIM {0} is not held yet; it is being fetched from the RIM service (the next attempt can pass)")]
    RimPending(String),
    #[error("RIM {id} could not be had from the RIM service: {reason}")]
    RimUnavailable { id: String, reason: String },
    #[error("certificate {index} of the {what} is revoked: {reason}")]
    Revoked {
        what: String,
        index: usize,
        reason: String,
    },
    #[error("the revocation status of certificate {index} of the {what} is not known yet; it is being asked of the OCSP responder (the next attempt can pass)")]
    RevocationPending { what: String, index: usize },
    #[error(
        "the revocation status of certificate {index} of the {what} could not be had: {reason}"
    )]
    RevocationUnknown {
        what: String,
        index: usize,
        reason: String,
    },
    #[error("measurement index {0} is golden in both RIMs")]
    IndexConflict(u8),
    #[error("measurements differ from the golden values at SPDM indices {mismatched:?} (missing from the report: {missing:?})")]
    Measurements {
        mismatched: Vec<u8>,
        missing: Vec<u8>,
    },
}

/// The first steps, which need no RIM: the device chain to `device_root`,
/// the report's signature by its leaf, the nonce (unless `None`). The
/// report, parsed.
pub fn verify_signed(
    report: &[u8],
    chain: &[Vec<u8>],
    device_root: &[u8],
    nonce: Option<&[u8; 32]>,
    at: u64,
) -> Result<SpdmReport, GpuRefusal> {
    certs::verify_chain(chain, device_root, at, "device certificate chain")?;
    let parsed = SpdmReport::parse(report)?;
    let key = certs::public_key(&chain[0])?;
    UnparsedPublicKey::new(&ECDSA_P384_SHA384_FIXED, &key)
        .verify(&parsed.signed, &parsed.signature)
        .map_err(|_| GpuRefusal::Signature)?;
    match nonce {
        Some(nonce) => answers(parsed, nonce),
        None => Ok(parsed),
    }
}

/// `report`, if it answers `nonce`.
pub fn answers(report: SpdmReport, nonce: &[u8; 32]) -> Result<SpdmReport, GpuRefusal> {
    if &report.nonce == nonce {
        Ok(report)
    } else {
        Err(GpuRefusal::Nonce {
            expected: hex::encode(nonce),
            got: hex::encode(report.nonce),
        })
    }
}

/// Verify GPU evidence (`report` bytes and the device `chain`, leaf first)
/// made for `nonce`, against `reference`, at Unix time `at`.
pub fn verify(
    report: &[u8],
    chain: &[Vec<u8>],
    reference: &GpuReference,
    nonce: &[u8; 32],
    at: u64,
) -> Result<GpuVerdict, GpuRefusal> {
    let parsed = verify_signed(report, chain, &reference.device_root, Some(nonce), at)?;
    verify_against_rims(&parsed, chain, reference, at)
}

/// The steps after [`verify_signed`] (whose `parsed` report and `chain`
/// passed it): the leaf's firmware ID, the RIMs' chains and signatures, the
/// versions, every golden measurement.
pub fn verify_against_rims(
    parsed: &SpdmReport,
    chain: &[Vec<u8>],
    reference: &GpuReference,
    at: u64,
) -> Result<GpuVerdict, GpuRefusal> {
    let fwid_checked = match parsed.opaque(report::opaque::FWID) {
        None => false,
        Some(reported) => {
            let certificate = certs::dice_fwid(&chain[0])?;
            if certificate.as_deref() != Some(reported) {
                return Err(GpuRefusal::Fwid {
                    certificate: certificate.map_or("none".into(), hex::encode),
                    report: hex::encode(reported),
                });
            }
            true
        }
    };
    let rim_of = |kind| {
        reference
            .rims
            .iter()
            .find(|r| r.kind == kind)
            .ok_or(GpuRefusal::MissingRim(kind))
    };
    let (driver_rim, vbios_rim) = (rim_of(RimKind::Driver)?, rim_of(RimKind::Vbios)?);
    for rim in [driver_rim, vbios_rim] {
        let what = format!("{} RIM", rim.kind);
        certs::verify_chain(&rim.chain, &reference.rim_root, at, &what)?;
        let signer = rim
            .chain
            .first()
            .ok_or_else(|| GpuRefusal::RimSignature(format!("{what}: no signing certificate")))?;
        xmldsig::verify(&rim.xml, signer, &what)?;
    }
    let driver_version = parsed
        .driver_version()
        .ok_or_else(|| GpuRefusal::Malformed("the report names no driver version".into()))?;
    let vbios_version = parsed
        .vbios_version()
        .ok_or_else(|| GpuRefusal::Malformed("the report names no VBIOS version".into()))?;
    for (rim, reported) in [(driver_rim, &driver_version), (vbios_rim, &vbios_version)] {
        if rim.version != reported.to_lowercase() {
            return Err(GpuRefusal::Version {
                what: rim.kind,
                reported: reported.clone(),
                rim: rim.version.clone(),
            });
        }
    }
    let measurements_checked = compare(parsed, &[driver_rim, vbios_rim])?;
    Ok(GpuVerdict {
        driver_version,
        vbios_version,
        nonce: hex::encode(parsed.nonce),
        measurements_checked,
        fwid_checked,
        simulated: false,
    })
}

/// Every active golden value against the report's block of the same index
/// (SPDM index = RIM index + 1); any alternative matches. The number compared.
fn compare(report: &SpdmReport, rims: &[&Rim]) -> Result<usize, GpuRefusal> {
    let mut seen = std::collections::BTreeSet::new();
    let (mut mismatched, mut missing) = (Vec::new(), Vec::new());
    for golden in rims.iter().flat_map(|r| r.golden.iter()) {
        if !seen.insert(golden.index) {
            return Err(GpuRefusal::IndexConflict(golden.index));
        }
        let spdm_index = golden.index + 1;
        match report.measurements.iter().find(|(i, _)| *i == spdm_index) {
            None => missing.push(spdm_index),
            Some((_, value)) if golden.alternatives.iter().any(|a| a == value) => {}
            Some(_) => mismatched.push(spdm_index),
        }
    }
    if mismatched.is_empty() && missing.is_empty() {
        Ok(seen.len())
    } else {
        Err(GpuRefusal::Measurements {
            mismatched,
            missing,
        })
    }
}
