//! What a worker presents for its GPUs, and how it is tied to the worker:
//! each GPU's SPDM report answers a nonce derived from the report data of
//! the worker's TDX evidence (its sealing key, identity, configuration and
//! block anchor), so the GPU evidence cannot be moved to another worker or
//! key, and is as fresh as the block it names.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// One GPU's evidence, as its driver returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuEvidence {
    /// The SPDM GET_MEASUREMENTS request and the signed MEASUREMENTS response.
    pub report: Vec<u8>,
    /// The device's attestation certificate chain, leaf first (DER).
    pub chain: Vec<Vec<u8>>,
}

const LABEL: &[u8] = b"cocoon/gpu/v1";

/// The nonce a worker asks its GPUs to answer: SHA-256 of a label and the
/// 64 bytes of report data its TDX evidence binds.
pub fn binding_nonce(report_data: &[u8; 64]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(LABEL);
    h.update(report_data);
    h.finalize().into()
}

/// Where a node's GPU evidence comes from: the driver (NVML, in the
/// `cocoon-nvml` crate) or the SIMULATED GPU of development networks.
pub trait GpuAttester: Send + Sync {
    /// Every GPU's evidence answering `nonce`; an error says why none can be
    /// had (no driver, confidential computing off, a GPU failing).
    fn gpu_evidence(&self, nonce: &[u8; 32]) -> Result<Vec<GpuEvidence>, String>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nonce_depends_on_every_byte_of_the_report_data() {
        let a = binding_nonce(&[0u8; 64]);
        for i in [0, 31, 32, 63] {
            let mut other = [0u8; 64];
            other[i] = 1;
            assert_ne!(binding_nonce(&other), a, "byte {i}");
        }
    }
}
