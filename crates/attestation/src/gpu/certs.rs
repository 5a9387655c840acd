//! The GPU's certificate chain (leaf first, as the driver returns it) up to
//! NVIDIA's device identity root, checked with rustls-webpki at an explicit
//! time; the leaf's P-384 key and the firmware ID its DICE extension names.

use std::time::Duration;

use rustls_pki_types::{CertificateDer, UnixTime};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::GpuRefusal;

/// TCG DICE TcbInfo (the leaf names the firmware it booted in it).
const DICE_TCB_INFO: &str = "2.23.133.5.4.1";

/// DER certificates from PEM text, in order.
pub fn from_pem(text: &str, what: &str) -> Result<Vec<Vec<u8>>, GpuRefusal> {
    let mut out = Vec::new();
    for pem in x509_parser::pem::Pem::iter_from_buffer(text.as_bytes()) {
        let pem = pem.map_err(|e| GpuRefusal::Malformed(format!("{what}: {e}")))?;
        out.push(pem.contents);
    }
    if out.is_empty() {
        return Err(GpuRefusal::Malformed(format!("{what}: no PEM certificate")));
    }
    Ok(out)
}

/// Check that `chain[0]` chains through the rest to `root` at Unix time
/// `at` (every certificate ECDSA P-384 with SHA-384, as NVIDIA signs them).
pub fn verify_chain(chain: &[Vec<u8>], root: &[u8], at: u64, what: &str) -> Result<(), GpuRefusal> {
    let refuse = |e: String| GpuRefusal::Chain(format!("{what}: {e}"));
    let (leaf, rest) = chain.split_first().ok_or_else(|| refuse("empty".into()))?;
    let root_der = CertificateDer::from(root);
    let anchor = webpki::anchor_from_trusted_cert(&root_der)
        .map_err(|e| refuse(format!("the root: {e:?}")))?;
    let leaf_der = CertificateDer::from(leaf.as_slice());
    let leaf = webpki::EndEntityCert::try_from(&leaf_der)
        .map_err(|e| refuse(format!("the leaf: {e:?}")))?;
    let intermediates: Vec<CertificateDer<'_>> = rest
        .iter()
        .map(|c| CertificateDer::from(c.as_slice()))
        .collect();
    leaf.verify_for_usage(
        &[webpki::ring::ECDSA_P384_SHA384],
        &[anchor],
        &intermediates,
        UnixTime::since_unix_epoch(Duration::from_secs(at)),
        webpki::KeyUsage::client_auth(),
        None,
        None,
    )
    .map_err(|e| refuse(format!("{e:?}")))?;
    Ok(())
}

/// The certificate's public key as an uncompressed EC point.
pub fn public_key(der: &[u8]) -> Result<Vec<u8>, GpuRefusal> {
    let (_, cert) = X509Certificate::from_der(der)
        .map_err(|e| GpuRefusal::Malformed(format!("a certificate: {e}")))?;
    Ok(cert.public_key().subject_public_key.data.to_vec())
}

/// The last 48 bytes of the certificate's DICE TcbInfo extension: the
/// firmware ID (`None` without the extension).
pub fn dice_fwid(der: &[u8]) -> Result<Option<Vec<u8>>, GpuRefusal> {
    let (_, cert) = X509Certificate::from_der(der)
        .map_err(|e| GpuRefusal::Malformed(format!("a certificate: {e}")))?;
    Ok(cert
        .extensions()
        .iter()
        .find(|e| e.oid.to_id_string().starts_with(DICE_TCB_INFO))
        .filter(|e| e.value.len() >= 48)
        .map(|e| e.value[e.value.len() - 48..].to_vec()))
}
